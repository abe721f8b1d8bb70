"""The installed PyTorch and friends, read from package metadata without importing them."""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

from gpu_preflight.snapshots.field import Fact, attempt, known, unknown

SOURCE = "package metadata"
RELATED = ("transformers", "diffusers", "accelerate", "flash-attn", "flash_attn", "xformers", "vllm",
           "bitsandbytes", "triton", "nvidia-ml-py", "huggingface-hub")


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _torch_version_py(dist: metadata.Distribution) -> dict[str, Any]:
    """torch/version.py holds `cuda = '12.8'` and `git_version`; read it as text. Located directly
    (dist.files would stat every one of torch's ~12,000 files)."""
    path = dist.locate_file("torch/version.py")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(65536)
    except OSError as exc:
        raise FileNotFoundError(f"torch/version.py not readable next to the torch distribution: {exc}") from None
    out: dict[str, Any] = {}
    for key in ("cuda", "hip", "git_version", "__version__"):
        m = re.search(rf"^{re.escape(key)}\s*(?::[^=]+)?=\s*(.+)$", text, re.M)
        if m:
            raw = m.group(1).strip()
            out[key.strip("_")] = None if raw == "None" else raw.strip("'\"")
    return out


def _nvidia_packages(requires: list[str] | None) -> dict[str, str]:
    """Installed versions of the nvidia-* / cuda-toolkit packages torch depends on (by name,
    not by scanning every distribution: that is slow in big environments)."""
    out = {}
    for req in requires or ():
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)", req)
        name = m.group(1).lower() if m else ""
        if name.startswith("nvidia-") or name == "cuda-toolkit":
            version = _dist_version(name)
            if version:
                out[name] = version
    return dict(sorted(out.items()))


def probe_torch(find_dist=metadata.distribution) -> dict[str, Fact]:
    try:
        dist = find_dist("torch")
    except metadata.PackageNotFoundError:
        reason = "torch is not installed in this Python environment"
        return {"installed": known(False, SOURCE), "version": unknown(reason, SOURCE),
                "local": unknown(reason, SOURCE), "cuda": unknown(reason, SOURCE),
                "nvidia_packages": known({}, SOURCE)}
    try:
        version = dist.version
    except Exception:  # noqa: BLE001 - newer Pythons raise KeyError for a missing Version field
        version = None
    if not isinstance(version, str) or not version:
        # a torch-*.dist-info without METADATA (an interrupted pip install/uninstall)
        from gpu_preflight.hints import install_command

        reason = ("torch's package metadata has no version (broken install: "
                  f"{install_command('torch', options=('--force-reinstall',))})")
        return {"installed": unknown(reason, SOURCE), "version": unknown(reason, SOURCE),
                "local": unknown(reason, SOURCE), "cuda": unknown(reason, SOURCE),
                "nvidia_packages": known({}, SOURCE)}
    local = version.split("+", 1)[1] if "+" in version else None
    vpy = attempt("torch/version.py", lambda: _torch_version_py(dist))
    cuda = Fact(vpy.value.get("cuda"), vpy.source) if vpy.ok else vpy
    return {
        "installed": known(True, SOURCE),
        "version": known(version, SOURCE),
        "local": known(local, SOURCE),
        "cuda": cuda,
        "hip": Fact(vpy.value.get("hip"), vpy.source) if vpy.ok else vpy,
        "requires": known([r for r in (dist.requires or []) if r.lower().startswith(("nvidia-", "cuda-", "triton"))],
                          SOURCE),
        "nvidia_packages": attempt(SOURCE, lambda: _nvidia_packages(dist.requires)),
    }


def probe_related() -> dict[str, Fact]:
    seen: dict[str, Fact] = {}
    for name in RELATED:
        key = name.replace("_", "-")
        if key in seen and seen[key].value:
            continue
        seen[key] = known(_dist_version(name), SOURCE)
    return seen
