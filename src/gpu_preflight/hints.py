"""Install hints that work from where the user is.

gpu-preflight may be installed from a source tree (editable or not), from a wheel file, or from an
index; `pip install 'gpu-preflight[hub]'` only works in the last case. So a hint names the real
packages an extra stands for, read from this installation's own metadata (the `Requires-Dist`
lines of the extra), and the pip that belongs to the running interpreter. Standard library only:
this module is imported by error paths.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys

DIST = "gpu-preflight"
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def extra_requirements(extra: str) -> list[str]:
    """The requirement strings of one extra (`hub` -> ["huggingface_hub>=0.23"]), from the
    installed distribution's metadata; [] when the extra or the metadata is unknown."""
    from importlib import metadata

    try:
        reqs = metadata.distribution(DIST).requires or []
    except metadata.PackageNotFoundError:
        return []
    out = []
    for r in reqs:
        req, _, marker = r.partition(";")
        m = _EXTRA.search(marker)
        if m and m.group(1) == extra:
            out.append(req.strip().replace(" ", ""))
    return out


def pip_command() -> str:
    """`pip` when the pip on PATH installs into this interpreter, else `<this python> -m pip`."""
    pip = shutil.which("pip")
    if pip and os.path.dirname(os.path.abspath(pip)) == os.path.dirname(os.path.abspath(sys.executable)):
        return "pip"
    return f"{shlex.quote(sys.executable)} -m pip"


def install_command(*packages: str) -> str:
    return f"{pip_command()} install " + " ".join(shlex.quote(p) for p in packages)


def install_extra(extra: str, fallback: tuple[str, ...] = ()) -> str:
    """The command that installs what extra `extra` stands for into this environment."""
    return install_command(*(extra_requirements(extra) or fallback or (f"{DIST}[{extra}]",)))
