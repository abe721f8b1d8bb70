"""The documentation says nothing false that a test can catch: every module ARCHITECTURE.md names
exists, accuracy.md says what its "all" row leaves out, and no doc speaks in the project's
internal words (its issue tracker, its bars) instead of the reader's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "gpu_preflight"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(SRC.rglob("*.md"))]
INTERNAL = re.compile(r"\bthe issue\b|\bissue's\b|\bissue \d+\b|\bthe lead\b|\bhelper engineer\b|\bthe brief\b",
                      re.I)


def test_docs_speak_to_the_reader():
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()[:100]}" for p in DOCS
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if INTERNAL.search(line)]
    assert hits == []


def test_every_module_architecture_names_exists():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    inline = re.sub(r"```.*?```", "", text, flags=re.S)
    names = {n for code in re.findall(r"`([^`\n]+)`", inline) for n in re.findall(r"([\w/]+\.py)\b", code)
             if "<" not in code} - {"torch/version.py"}  # torch's own file, read by probes/torchmeta.py
    missing = []
    for name in names:
        here = [ROOT / name, SRC / name, *SRC.rglob(Path(name).name)]
        if not any(p.is_file() and p.as_posix().endswith(name) for p in here):
            missing.append(name)
    assert len(names) > 40 and missing == []


def test_dotted_names_in_the_estimate_flow_exist():
    """`module.function` in the estimate data flow resolve (the flow once named a module that had moved)."""
    import importlib

    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    flow = text.split("### estimate\n", 1)[1].split("### measure", 1)[0]
    refs = set(re.findall(r"\b((?:[a-z_]+/)*[a-z_]+(?:\.[a-z_]+)+)\b", flow)) - {"json.dumps", "engine.run"}
    refs = {r for r in refs if r.rsplit(".", 1)[1] not in ("json", "py", "gguf", "md")}
    for ref in refs:
        parts = ref.replace("/", ".").split(".")
        found = False
        for prefix in ("gpu_preflight.", "gpu_preflight.estimators.", "gpu_preflight.estimators.engines."):
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(prefix + ".".join(parts[:cut]))
                except ModuleNotFoundError:
                    continue
                rest = parts[cut:]
                while rest and hasattr(obj, rest[0]):
                    obj, rest = getattr(obj, rest[0]), rest[1:]
                found = found or not rest
                break
        assert found, f"ARCHITECTURE.md's estimate flow names {ref}, which does not exist"
    assert len(refs) >= 8


def test_accuracy_all_row_says_it_excludes_eager():
    text = (ROOT / "docs" / "accuracy.md").read_text(encoding="utf-8")
    (row,) = [ln for ln in text.splitlines() if ln.startswith("| all")]
    assert "except eager" in row
