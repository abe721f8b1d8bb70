"""docs/api.md: every python block runs (in order, each in a fresh namespace), the public names
match __all__, and the public API passes mypy --strict when mypy is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gpu_preflight

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", DOC, re.S)


def test_the_page_has_the_examples_the_api_promises():
    text = "\n".join(BLOCKS)
    assert len(BLOCKS) >= 6
    for needle in ("max_model_len", "require_fit", "csv.DictReader", "gp.explain", "gp.watch"):
        assert needle in text, needle


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"docs/api.md block {index + 1}", "exec"), {"__name__": "__api_doc__"})
    assert capsys.readouterr().out.strip()  # each example prints its answer


def test_every_public_name_resolves_and_is_documented():
    for name in gpu_preflight.__all__:
        obj = getattr(gpu_preflight, name)
        assert obj is not None
        if not name[0].isupper() and name not in ("phase",):
            assert callable(obj) and f"`{name}(" in DOC, name


def test_root_names_stay_functions_after_the_subpackages_load():
    import gpu_preflight.cluster.judge  # noqa: F401
    import gpu_preflight.estimators.plan  # noqa: F401
    import gpu_preflight.snapshots.collector  # noqa: F401

    for name in ("estimate", "snapshot", "compat", "measure", "watch", "fleet"):
        assert callable(getattr(gpu_preflight, name)) and not isinstance(getattr(gpu_preflight, name), type(sys))


@pytest.mark.skipif(shutil.which("mypy") is None and not any(
    (Path(p) / "mypy").exists() for p in sys.path), reason="mypy not installed")
def test_public_api_type_checks_strictly():
    pytest.importorskip("mypy")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                           "--ignore-missing-imports", "--no-error-summary",
                           str(ROOT / "src" / "gpu_preflight" / "api.py"),
                           str(ROOT / "src" / "gpu_preflight" / "__init__.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
