"""Which platform this is, from cheap file reads (no subprocess): Jetson/L4T, WSL, Windows,
aarch64 SBSA or x86_64 Linux; glibc; conda; the kernel module's flavour (open or proprietary);
a container image's CUDA and its forward-compatibility libraries; installed extension wheels.

Sources for the signals:
- /etc/nv_tegra_release ("# R36 (release), REVISION: 4.3, ...") and /proc/device-tree/model name
  the Jetson board and its Jetson Linux (L4T) release.
- WSL2 mounts the Windows driver's libraries at /usr/lib/wsl/lib (NVIDIA's CUDA on WSL guide).
- /proc/driver/nvidia/version says "Open Kernel Module" for the open flavour; /sys/module/nvidia/taint
  has "P" when a proprietary-licensed module is loaded (kernel taint flags).
- os.confstr("CS_GNU_LIBC_VERSION") is the running glibc (what pip compares to manylinux tags).
"""

from __future__ import annotations

import json
import os
import re
import sys
from importlib import metadata
from typing import Any

from gpu_preflight.probes.context import ProbeContext
from gpu_preflight.snapshots.field import Fact, attempt, known, unknown

EXTENSIONS = ("torchvision", "torchaudio", "xformers", "vllm", "flash-attn", "bitsandbytes", "torch-tensorrt",
              "triton")


def _tegra_release(ctx: ProbeContext) -> str | None:
    if not ctx.exists("/etc/nv_tegra_release"):
        return None
    text = ctx.read_text("/etc/nv_tegra_release", 4096)
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not m:
        raise ValueError(f"unrecognized /etc/nv_tegra_release: {text[:80]!r}")
    return f"{m.group(1)}.{m.group(2)}"


def _board(ctx: ProbeContext) -> str | None:
    if not ctx.exists("/proc/device-tree/model"):
        return None
    return ctx.read_text("/proc/device-tree/model", 256).strip("\x00\n ")


def _wsl(ctx: ProbeContext) -> bool:
    if ctx.exists("/usr/lib/wsl/lib"):
        return True
    try:
        return "microsoft" in ctx.read_text("/proc/version", 4096).lower()
    except OSError:
        return False


def _glibc() -> str | None:
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION")  # 'glibc 2.36'
    except (AttributeError, ValueError, OSError):
        return None
    m = re.search(r"(\d+\.\d+)", value or "")
    return m.group(1) if m else None


def classify(os_platform: str, machine: str, l4t: str | None, wsl: bool) -> str:
    if os_platform.startswith("win"):
        return "windows"
    if l4t:
        return "jetson"
    if wsl:
        return "wsl"
    return "linux-aarch64" if machine.lower() in ("aarch64", "arm64") else "linux-x86_64"


def probe_platform(ctx: ProbeContext, os_platform: str | None = None, machine: str | None = None) -> dict[str, Fact]:
    import platform as _pf

    os_platform = os_platform or sys.platform
    machine = machine or _pf.machine()
    l4t = attempt("/etc/nv_tegra_release", lambda: _tegra_release(ctx))
    wsl = attempt("/usr/lib/wsl/lib", lambda: _wsl(ctx))
    kind = classify(os_platform, machine, l4t.get(), bool(wsl.get(False)))
    out = {
        "kind": known(kind, "filesystem+python"),
        "l4t": l4t,
        "board": attempt("/proc/device-tree/model", lambda: _board(ctx)) if l4t.get() else known(None, "filesystem"),
        "wsl": wsl,
        "glibc": known(_glibc(), "os.confstr") if os_platform.startswith("linux") else unknown("not Linux", "python"),
    }
    return out


def probe_kernel_flavor(ctx: ProbeContext) -> dict[str, Fact]:
    """open | proprietary kernel module, from its version banner and the module's taint flags."""
    def flavor() -> str | None:
        if not ctx.exists("/proc/driver/nvidia/version"):
            return None
        text = ctx.read_text("/proc/driver/nvidia/version", 4096)
        if "Open Kernel Module" in text:
            return "open"
        if ctx.exists("/sys/module/nvidia/taint"):
            taint = ctx.read_text("/sys/module/nvidia/taint", 64).strip()
            return "proprietary" if "P" in taint else "open"
        return "proprietary" if "Kernel Module" in text else None

    return {"flavor": attempt("/proc/driver/nvidia/version", flavor)}


def _conda_torch(prefix: str) -> dict[str, Any] | None:
    meta = os.path.join(prefix, "conda-meta")
    if not os.path.isdir(meta):
        return None
    for name in sorted(os.listdir(meta)):
        if re.match(r"^(pytorch|pytorch-gpu|libtorch)-\d", name) and name.endswith(".json"):
            with open(os.path.join(meta, name), encoding="utf-8") as fh:
                data = json.load(fh)
            return {"name": data.get("name"), "version": data.get("version"), "build": data.get("build"),
                    "channel": data.get("channel"), "file": name}
    return None


def probe_conda(ctx: ProbeContext, prefix: str | None = None) -> dict[str, Fact]:
    prefix = prefix or sys.prefix
    is_conda = os.path.isdir(os.path.join(prefix, "conda-meta"))
    return {
        "prefix": known(ctx.environ.get("CONDA_PREFIX"), "environment"),
        "env_is_conda": known(is_conda, "filesystem"),
        "torch_package": attempt(f"{prefix}/conda-meta", lambda: _conda_torch(prefix)) if is_conda
        else known(None, "filesystem"),
    }


def _compat_libs(ctx: ProbeContext) -> list[dict[str, str]]:
    out = []
    for base in ("/usr/local/cuda/compat",) + tuple(f"/usr/local/cuda-{v}/compat" for v in
                                                     _cuda_dirs(ctx)):
        if not ctx.exists(base):
            continue
        for n in ctx.listdir(base):
            m = re.fullmatch(r"libcuda\.so\.(\d+\.\d+(?:\.\d+)?)", n)
            if m:
                out.append({"dir": base, "version": m.group(1)})
    return out


def _cuda_dirs(ctx: ProbeContext) -> list[str]:
    try:
        return [n[5:] for n in ctx.listdir("/usr/local") if re.fullmatch(r"cuda-\d+\.\d+", n)]
    except OSError:
        return []


def probe_image(ctx: ProbeContext) -> dict[str, Fact]:
    """A CUDA base image's own facts: CUDA_VERSION / NVIDIA_REQUIRE_CUDA and its cuda-compat libs."""
    return {"cuda_version": known(ctx.environ.get("CUDA_VERSION"), "environment"),
            "require_cuda": known(ctx.environ.get("NVIDIA_REQUIRE_CUDA"), "environment"),
            "compat_libcuda": attempt("/usr/local/cuda*/compat", lambda: _compat_libs(ctx))}


def _dist_info(name: str) -> dict[str, Any] | None:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    pins = []
    for req in dist.requires or ():
        m = re.match(r"\s*torch\s*\(?\s*(==|>=|<=|~=|<|>|!=)\s*([^;,)\s]+)", req)
        if m and ";" not in req.split(m.group(0), 1)[0]:
            if "extra ==" in req:
                continue
            pins.append(f"{m.group(1)}{m.group(2)}")
    return {"version": dist.version, "torch_requirement": pins}


def probe_extensions() -> Fact:
    def collect() -> dict[str, Any]:
        return {n: info for n in EXTENSIONS if (info := _dist_info(n)) is not None}

    return attempt("package metadata", collect)
