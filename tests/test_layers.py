"""Imports point one way (docs/ARCHITECTURE.md): probes -> snapshots -> compatibility / checks / models /
estimators -> measurement / watcher -> render -> commands -> cli. Every import in src/ is read from the
AST, lazy ones inside functions included, so a shortcut back up the layers fails here."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "gpu_preflight"
TOP = {"cli", "commands", "serve"}  # nothing below them imports them (serve: the local page, a front end)
FORBIDDEN = {
    "errors": {"*"},
    "hints": {"*"},
    "fileio": {"*"},  # bounded reads of user files: imports only errors
    "safetext": {"*"},  # escaping text from files for the terminal: imports nothing
    "probes": TOP | {"render", "compatibility", "checks", "models", "estimators", "measurement", "watcher"},
    "snapshots": TOP | {"render", "compatibility", "checks", "models", "estimators", "measurement", "watcher"},
    "compatibility": TOP | {"render", "probes", "checks", "models", "estimators", "measurement", "watcher"},
    "checks": TOP | {"render", "probes", "models", "estimators", "measurement", "watcher", "cluster"},
    "models": TOP | {"render", "probes", "snapshots", "compatibility", "checks", "estimators", "measurement", "watcher"},
    "estimators": TOP | {"render", "probes", "checks", "measurement", "watcher"},
    "measurement": TOP | {"render", "checks", "watcher"},
    "watcher": TOP | {"render", "checks", "estimators", "measurement"},
    "cluster": TOP | {"render", "models", "estimators", "measurement", "watcher"},
    "render": TOP | {"probes", "measurement"},
    "api": TOP,  # the public Python API: the commands call it (it builds the JSON reports with render/)
    "commands": {"cli"},
    "serve": {"cli", "commands"},
}
ALLOWED_ANYWHERE = {"errors", "hints", "__version__"}
# Known back-imports, each with what would remove it. The test fails when one disappears, so the
# list only shrinks.
KNOWN: dict[tuple[str, str], str] = {}


def layer_of(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0] if len(rel) > 1 else rel[0][:-3]


def imported_layers(path: Path):
    """(line, layer) for every gpu_preflight module the file imports."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "gpu_preflight" else [f"gpu_preflight.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import at line {node.lineno}; use gpu_preflight.…")
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "gpu_preflight" and len(parts) > 1:
                yield node.lineno, parts[1]


def test_imports_point_one_way():
    bad, seen = [], set()
    files = list(SRC.rglob("*.py"))
    assert len(files) > 50
    for path in files:
        me = layer_of(path)
        rules = FORBIDDEN.get(me, set())
        for line, target in imported_layers(path):
            if target == me or target == "__version__" or (target in ALLOWED_ANYWHERE and me not in ("errors", "hints")):
                continue
            if "*" in rules or target in rules:
                key = (path.relative_to(SRC).as_posix(), target)
                if key in KNOWN:
                    seen.add(key)
                    continue
                bad.append(f"{key[0]}:{line} ({me}) imports {target}")
    assert bad == []
    assert set(KNOWN) == seen, f"no longer imported, remove from KNOWN: {set(KNOWN) - seen}"


def test_every_layer_has_a_rule():
    layers = {layer_of(p) for p in SRC.rglob("*.py")} - {"__init__", "__main__", "cli"}
    assert layers <= set(FORBIDDEN), layers - set(FORBIDDEN)


def test_the_rule_catches_a_back_import(tmp_path, monkeypatch):
    fake = tmp_path / "gpu_preflight"
    (fake / "estimators").mkdir(parents=True)
    (fake / "estimators" / "x.py").write_text("def f():\n    from gpu_preflight.checks.context import gpu_views\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    assert list(imported_layers(fake / "estimators" / "x.py")) == [(2, "checks")]
    assert "checks" in FORBIDDEN[layer_of(fake / "estimators" / "x.py")]
