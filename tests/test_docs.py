"""The check catalog's documentation: every docstring complete, docs/checks.md current."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from gpu_preflight.checks import DOC_SECTIONS, all_checks

ROOT = Path(__file__).resolve().parent.parent
CHECKS = all_checks()


def _generator():
    spec = importlib.util.spec_from_file_location("gen_checks_doc", ROOT / "bench" / "gen_checks_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_registry_is_not_empty():
    assert CHECKS, "no checks registered"


@pytest.mark.parametrize("chk", CHECKS, ids=[c.code for c in CHECKS])
def test_docstring_has_every_section(chk):
    sections = chk.sections()
    missing = [name for name in DOC_SECTIONS if name not in sections]
    empty = [name for name in DOC_SECTIONS if name in sections and not sections[name].strip()]
    assert not missing, f"{chk.code} docstring lacks sections {missing}"
    assert not empty, f"{chk.code} docstring has empty sections {empty}"


@pytest.mark.parametrize("chk", CHECKS, ids=[c.code for c in CHECKS])
def test_sources_cite_a_url(chk):
    assert re.search(r"https://\S+", chk.sections().get("Sources", "")), \
        f"{chk.code}: the Sources section needs at least one https:// URL"


def test_checks_md_is_current():
    path = ROOT / "docs" / "checks.md"
    assert path.exists(), "docs/checks.md is missing: run python bench/gen_checks_doc.py"
    assert path.read_text(encoding="utf-8") == _generator().render(), \
        "docs/checks.md is out of date: run python bench/gen_checks_doc.py"
