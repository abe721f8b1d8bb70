"""Every install hint the tool can print is a command that works from where the user is: valid
shell words, a pip that belongs to this interpreter (or plain `pip` for another machine's torch),
requirements that parse, packages that are this project's own dependencies, and the
`gpu-preflight[extra]` form only when gpu-preflight came from an index."""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gpu_preflight import hints

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "gpu_preflight"


def _project() -> tuple[list[str], dict[str, list[str]]]:
    """pyproject.toml's dependencies and extras (on Python 3.10, from the installed metadata)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the test run installed the project, so its metadata is pyproject's
        from importlib import metadata

        core, extras = [], {}
        for r in metadata.distribution("gpu-preflight").requires or []:
            req = Requirement(r)
            m = re.search(r'extra == "([^"]+)"', str(req.marker or ""))
            req.marker = None
            (extras.setdefault(m.group(1), []) if m else core).append(str(req).replace(" ", ""))
        return core, extras
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["dependencies"], project["optional-dependencies"]


CORE, EXTRAS = _project()
KNOWN = {canonicalize_name(Requirement(r).name) for r in CORE} | {
    canonicalize_name(Requirement(r).name) for reqs in EXTRAS.values() for r in reqs} | {"gpu-preflight"}

# Places allowed to spell "pip install" themselves: the torch install commands built from the
# torch table for a (possibly described) machine, and check docstrings that quote an example.
ALLOWED = {"hints.py": None, "compatibility/facts.py": "torch", "checks/stack.py": "docstring",
           "probes/torchmeta.py": "comment", "data/README.md": "doc",
           "estimators/engines/vllm.py": "a fact about vLLM's packaging in an assumption, not a hint"}


def check_command(cmd: str, allow_dist_extra: bool = False) -> list[Requirement]:
    """Assert that `cmd` is a pip install command a shell runs as is; return its requirements."""
    words = shlex.split(cmd)
    if words[0] == "pip":
        rest = words[1:]
    else:
        assert words[1:3] == ["-m", "pip"], cmd
        assert os.path.isabs(words[0]) and os.path.basename(words[0]).startswith("python"), cmd
        rest = words[3:]
    assert rest[0] == "install", cmd
    reqs: list[Requirement] = []
    args = iter(rest[1:])
    editable = False
    for a in args:
        if a in ("-U", "--upgrade", "--force-reinstall"):
            continue
        if a == "-e":
            editable = True
            continue
        if a == "--index-url":
            assert next(args).startswith("https://download.pytorch.org/whl/"), cmd
            continue
        assert not a.startswith("-"), f"unexpected option {a} in {cmd}"
        m = re.fullmatch(r"(/[^\[\]]+?)(\[[\w,-]+\])?", a)
        if m:  # a source tree, optionally with extras: it must be this project
            assert (Path(m.group(1)) / "pyproject.toml").is_file(), cmd
            req = Requirement(f"gpu-preflight{m.group(2) or ''} @ file://{m.group(1)}")
        else:
            assert not editable, f"-e needs a source tree: {cmd}"
            req = Requirement(a)
        name = canonicalize_name(req.name)
        assert name in KNOWN, f"{req.name} is not a dependency of gpu-preflight: {cmd}"
        if name == "gpu-preflight" and req.extras and not req.url:
            assert allow_dist_extra, f"'gpu-preflight[...]' only resolves from an index: {cmd}"
        assert req.extras <= set(EXTRAS), cmd
        reqs.append(req)
    assert reqs, cmd
    return reqs


def commands_in(text: str) -> list[str]:
    """The install commands inside a hint (each one ends at a closing parenthesis, `;` or the end)."""
    pip = re.escape(hints.pip_command())
    return [m.group(0).rstrip() for m in re.finditer(pip + r" install [^();]+", text)]


def installations(tmp_path: Path) -> dict[str, dict]:
    wheel = tmp_path / "gpu_preflight-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    return {
        "index": {"from": "index", "editable": False, "url": None, "path": None},
        "editable": hints.parse_direct_url(json.dumps({"url": ROOT.as_uri(), "dir_info": {"editable": True}})),
        "source": hints.parse_direct_url(json.dumps({"url": ROOT.as_uri(), "dir_info": {}})),
        "gone": hints.parse_direct_url(json.dumps({"url": "file:///nonexistent/gpu-preflight", "dir_info": {}})),
        "wheel": hints.parse_direct_url(json.dumps({"url": wheel.as_uri(), "archive_info": {}})),
        "vcs": hints.parse_direct_url(json.dumps({"url": "https://example.org/gpu-preflight.git",
                                                  "vcs_info": {"vcs": "git", "commit_id": "a" * 40}})),
        "unknown": {"from": "unknown", "editable": False, "url": None, "path": None},
    }


def test_no_install_hint_is_written_by_hand():
    offenders = []
    for path in SRC.rglob("*"):
        if path.suffix not in (".py", ".md") or "pip install" not in path.read_text(encoding="utf-8"):
            continue
        rel = path.relative_to(SRC).as_posix()
        if rel not in ALLOWED:
            offenders.append(rel)
    assert offenders == [], f"use gpu_preflight.hints instead of a literal 'pip install' in {offenders}"


def test_extras_fallback_matches_pyproject():
    assert {k: tuple(v) for k, v in EXTRAS.items()} == hints.EXTRAS, "update hints.EXTRAS to match pyproject.toml"


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_every_extra_hint_in_every_kind_of_installation(extra, tmp_path):
    wanted = {canonicalize_name(Requirement(r).name) for r in EXTRAS[extra]}
    for kind, where in installations(tmp_path).items():
        cmds = hints.hint_commands(extra, where)
        text = hints.install_hint(extra, where)
        assert [c for c in cmds if c not in text] == [], (kind, text)
        assert commands_in(text) == cmds, (kind, text)
        first = check_command(cmds[0])
        assert {canonicalize_name(r.name) for r in first} == wanted, (kind, cmds[0])
        for cmd in cmds[1:]:
            (req,) = check_command(cmd, allow_dist_extra=kind == "index")
            assert canonicalize_name(req.name) == "gpu-preflight" and req.extras == {extra}, (kind, cmd)
        expect_reinstall = kind in ("index", "editable", "source", "wheel", "vcs")
        assert (len(cmds) == 2) == expect_reinstall, (kind, cmds)
        if kind == "editable":
            assert " -e " in cmds[1]
        if kind == "vcs":
            assert cmds[1].endswith("@" + "a" * 40 + "'")


def test_upgrade_hint_in_every_kind_of_installation(tmp_path):
    for kind, where in installations(tmp_path).items():
        text = hints.upgrade_hint(where)
        cmds = commands_in(text)
        assert len(cmds) == (1 if kind in ("index", "editable", "source", "vcs") else 0), (kind, text)
        for cmd in cmds:
            check_command(cmd, allow_dist_extra=kind == "index")


def test_this_installation_is_recognised():
    where = hints.installation()
    # the test run installs the project (README: pip install -e '.[test]'), so its metadata is there
    assert where["from"] in ("source", "index", "archive", "vcs")
    for extra in EXTRAS:
        for cmd in hints.hint_commands(extra):
            check_command(cmd, allow_dist_extra=where["from"] == "index")


def test_pip_command_belongs_to_this_interpreter():
    words = shlex.split(hints.pip_command())
    if words != ["pip"]:
        assert words == [sys.executable, "-m", "pip"]


# ---- the sites that print a hint use the hint functions ----


def test_hub_missing_prints_the_hub_hint(monkeypatch):
    import builtins

    from gpu_preflight.errors import DependencyMissing
    from gpu_preflight.models import hub

    real = builtins.__import__

    def no_hub(name, *a, **k):
        if name == "huggingface_hub":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(DependencyMissing) as exc:
        hub.import_hub()
    assert exc.value.hint == hints.install_hint("hub")
    for cmd in commands_in(exc.value.hint):
        check_command(cmd, allow_dist_extra=hints.installation()["from"] == "index")


def test_watch_reports_print_the_real_packages(monkeypatch):
    import builtins

    from gpu_preflight.watcher import render_html, render_png

    real = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    reason = render_png.write_png({}, Path("/nonexistent.png"))
    (cmd,) = commands_in(reason)
    assert [r.name for r in check_command(cmd)] == ["matplotlib"]
    svg = render_html._svg({"memory": [], "panels": [], "phases": [], "markers": []})
    (cmd,) = commands_in(html.unescape(re.sub(r"<[^>]+>", "  ", svg)))
    assert [r.name for r in check_command(cmd)] == ["plotly"]


def test_newer_snapshot_prints_the_upgrade_hint(tmp_path):
    from gpu_preflight import snapshots
    from gpu_preflight.errors import SnapshotError

    p = tmp_path / "new.json"
    p.write_text(json.dumps({"schema": "gpu-preflight.snapshot", "schema_version": 999}), encoding="utf-8")
    with pytest.raises(SnapshotError) as exc:
        snapshots.load(str(p))
    assert exc.value.hint == hints.upgrade_hint()
    assert "pip install -U gpu-preflight" not in exc.value.hint or hints.installation()["from"] == "index"


def test_missing_nvml_module_names_its_package(monkeypatch):
    from gpu_preflight.probes import nvml
    from gpu_preflight.probes.context import ProbeContext

    ctx = ProbeContext()
    monkeypatch.setattr(ctx, "nvml", None, raising=False)
    import builtins

    real = builtins.__import__

    def no_pynvml(name, *a, **k):
        if name == "pynvml":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    out = nvml.probe_nvml(ctx)
    reason = out["error"].get()
    assert "nvidia-ml-py is not installed" in reason
    (cmd,) = commands_in(reason)
    assert [r.name for r in check_command(cmd)] == ["nvidia-ml-py"]


def test_torch_install_commands_of_every_release_parse():
    from gpu_preflight.compatibility import facts

    n = 0
    for release in facts.torch_releases():
        for v in release["variants"]:
            check_command(facts.install_command(release["latest_patch"], v["variant"], release))
            n += 1
    assert n > 20
