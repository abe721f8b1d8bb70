"""Install hints that work from where the user is.

gpu-preflight may be installed from a source tree (editable or not), from a wheel file, from a VCS
URL or from an index; `pip install 'gpu-preflight[hub]'` only works in the last case. So a hint
first names the real packages an extra stands for, read from this installation's own metadata
(the `Requires-Dist` lines of the extra), and the pip that belongs to the running interpreter;
then, where it can, how to reinstall gpu-preflight with the extra in the form that matches how it
was installed (the distribution's `direct_url.json`, PEP 610: a source tree gets
`pip install -e '/its/path[hub]'`, a wheel file or a VCS URL `'gpu-preflight[hub] @ URL'`, and
only an index install the plain `'gpu-preflight[hub]'`).

Standard library only, and `importlib.metadata` is imported inside the functions: this module is
imported by error paths and must not slow down `preflight --help`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from typing import Any
from urllib.parse import unquote, urlparse

DIST = "gpu-preflight"
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")

# The extras of pyproject.toml, for when this code runs without installed metadata (a source tree
# on PYTHONPATH). tests/test_hints.py keeps it equal to pyproject.toml.
EXTRAS: dict[str, tuple[str, ...]] = {
    "hub": ("huggingface_hub>=0.23",),
    "measure": ("torch>=2.0", "transformers>=4.40", "safetensors>=0.4"),
    "diffusion": ("diffusers>=0.30",),
    "watch": ("plotly>=5", "matplotlib>=3.7", "psutil>=5.9"),
    "fleet": ("ray>=2.9",),
    "test": ("pytest>=7", "psutil>=5.9", "huggingface_hub>=0.23", "ray>=2.9", "hypothesis>=6.100", "mypy>=1.8",
             "selenium>=4.20"),
}


def _distribution():
    from importlib import metadata

    try:
        return metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        return None


def extra_requirements(extra: str) -> list[str]:
    """The requirement strings of one extra (`hub` -> ["huggingface_hub>=0.23"]), from the
    installed distribution's metadata, else from EXTRAS; [] when the extra is unknown."""
    dist = _distribution()
    out = []
    for r in (dist.requires or []) if dist else []:
        req, _, marker = r.partition(";")
        m = _EXTRA.search(marker)
        if m and m.group(1) == extra:
            out.append(req.strip().replace(" ", ""))
    return out or list(EXTRAS.get(extra, ()))


def extra_package(extra: str, name: str) -> str:
    """The requirement of one package of an extra (`watch`, `plotly` -> "plotly>=5"), or `name`."""
    for req in extra_requirements(extra):
        if re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-") == name.lower().replace("_", "-"):
            return req
    return name


def pip_command() -> str:
    """`pip` when the pip on PATH installs into this interpreter, else `<this python> -m pip`."""
    pip = shutil.which("pip")
    if pip and os.path.dirname(os.path.abspath(pip)) == os.path.dirname(os.path.abspath(sys.executable)):
        return "pip"
    return f"{shlex.quote(sys.executable)} -m pip"


def install_command(*packages: str, options: tuple[str, ...] = ()) -> str:
    return " ".join([pip_command(), "install", *options, *(shlex.quote(p) for p in packages)])


def install_extra(extra: str, fallback: tuple[str, ...] = ()) -> str:
    """The command that installs what extra `extra` stands for into this environment."""
    return install_command(*(extra_requirements(extra) or fallback))


# ---- how this gpu-preflight was installed (PEP 610 direct_url.json) ----


def installation() -> dict[str, Any]:
    """{"from": "index" | "source" | "archive" | "vcs" | "unknown", "editable": bool, "url": str|None,
    "path": str|None}. "unknown": no installed metadata (e.g. a source tree on PYTHONPATH)."""
    dist = _distribution()
    if dist is None:
        return {"from": "unknown", "editable": False, "url": None, "path": None}
    text = dist.read_text("direct_url.json")
    if not text:
        return {"from": "index", "editable": False, "url": None, "path": None}
    return parse_direct_url(text)


def parse_direct_url(text: str) -> dict[str, Any]:
    """The fields of a direct_url.json (https://packaging.python.org/en/latest/specifications/direct-url/)."""
    try:
        data = json.loads(text)
    except ValueError:
        return {"from": "unknown", "editable": False, "url": None, "path": None}
    url = data.get("url") if isinstance(data, dict) else None
    if not isinstance(url, str):
        return {"from": "unknown", "editable": False, "url": None, "path": None}
    parsed = urlparse(url)
    path = unquote(parsed.path) if parsed.scheme == "file" else None
    if "vcs_info" in data:
        info = data["vcs_info"] if isinstance(data["vcs_info"], dict) else {}
        return {"from": "vcs", "editable": False, "url": f"{info.get('vcs', 'git')}+{url}", "path": None,
                "commit": info.get("commit_id")}
    if "dir_info" in data:
        editable = bool(isinstance(data["dir_info"], dict) and data["dir_info"].get("editable"))
        return {"from": "source", "editable": editable, "url": url, "path": path}
    return {"from": "archive", "editable": False, "url": url, "path": path}


def reinstall_extra(extra: str, where: dict[str, Any] | None = None) -> str | None:
    """The command that reinstalls gpu-preflight with `extra`, in the form that matches how it was
    installed; None where that source is gone or unknown."""
    where = where or installation()
    kind = where["from"]
    if kind == "index":
        from gpu_preflight import __version__

        return install_command(f"{DIST}[{extra}]=={__version__}")
    if kind == "source" and where.get("path") and os.path.isdir(where["path"]):
        target = f"{where['path']}[{extra}]"
        return install_command(target, options=("-e",) if where.get("editable") else ())
    if kind == "archive" and where.get("path") and not os.path.isfile(where["path"]):
        return None
    if kind == "vcs" and where.get("url"):
        pin = f"@{where['commit']}" if where.get("commit") else ""
        return install_command(f"{DIST}[{extra}] @ {where['url']}{pin}")
    if kind == "archive" and where.get("url"):
        return install_command(f"{DIST}[{extra}] @ {where['url']}")
    return None


def install_hint(extra: str, where: dict[str, Any] | None = None) -> str:
    """The hint printed when an extra is missing: its packages, and the reinstall where known."""
    text = install_extra(extra)
    again = reinstall_extra(extra, where)
    return f"{text}  (or reinstall gpu-preflight with the extra: {again})" if again else text


def hint_commands(extra: str, where: dict[str, Any] | None = None) -> list[str]:
    """Every command install_hint(extra) can print (for tests and for a renderer that lists them)."""
    again = reinstall_extra(extra, where)
    return [install_extra(extra)] + ([again] if again else [])


def upgrade_hint(where: dict[str, Any] | None = None) -> str:
    """How to get a newer gpu-preflight, in the form that matches how this one was installed."""
    where = where or installation()
    if where["from"] == "index":
        return "upgrade gpu-preflight: " + install_command(DIST, options=("-U",))
    if where["from"] == "source" and where.get("path") and os.path.isdir(where["path"]):
        again = install_command(where["path"], options=("-e",) if where.get("editable") else ())
        return f"update the source tree {where['path']} (e.g. git pull) and reinstall it: {again}"
    if where["from"] == "vcs" and where.get("url"):
        return "upgrade gpu-preflight: " + install_command(f"{DIST} @ {where['url']}", options=("-U",))
    from gpu_preflight import __version__

    return f"install a gpu-preflight newer than {__version__} (from where you got this one)"
