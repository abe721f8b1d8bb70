"""System CUDA facts outside Python: kernel module, libcuda files, toolkit, LD_LIBRARY_PATH."""

from __future__ import annotations

import glob
import json
import os
import re

from gpu_preflight.snapshots.field import Fact, attempt, known, unknown
from gpu_preflight.probes.context import ProbeContext

# Libraries whose presence in an LD_LIBRARY_PATH entry can shadow the ones pip wheels bring.
CUDA_LIBS = ("libcudart", "libcublas", "libcublasLt", "libcudnn", "libnvJitLink", "libcusparse",
             "libcufft", "libcurand", "libcusolver", "libnccl", "libnvrtc")
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/aarch64-linux-gnu",
            "/usr/local/nvidia/lib64", "/usr/lib/wsl/lib")


def _kernel_module_version(ctx: ProbeContext) -> str:
    text = ctx.read_text("/proc/driver/nvidia/version")
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    if not m:
        raise ValueError(f"unrecognized /proc/driver/nvidia/version: {text[:80]!r}")
    return m.group(1)


def probe_kernel_module(ctx: ProbeContext) -> dict[str, Fact]:
    if not ctx.exists("/proc/driver/nvidia/version"):
        return {"version": unknown("/proc/driver/nvidia/version not found (no NVIDIA kernel module loaded)",
                                   "/proc/driver/nvidia/version")}
    return {"version": attempt("/proc/driver/nvidia/version", lambda: _kernel_module_version(ctx))}


def _libcuda_files(ctx: ProbeContext) -> list[dict[str, str]]:
    found = []
    for d in LIB_DIRS:
        for path in sorted(glob.glob(ctx.path(os.path.join(d, "libcuda.so.*")))):
            name = os.path.basename(path)
            m = re.fullmatch(r"libcuda\.so\.(\d+\.\d+(?:\.\d+)?)", name)
            if m:
                found.append({"dir": d, "version": m.group(1)})
    return found


def probe_user_space(ctx: ProbeContext) -> dict[str, Fact]:
    """Versions of the user-space driver library (libcuda.so.X.Y.Z files)."""
    return {"libcuda_files": attempt("filesystem", lambda: _libcuda_files(ctx))}


def _scan_dir(ctx: ProbeContext, d: str) -> dict:
    entry: dict = {"path": d, "exists": ctx.exists(d), "libs": [], "libcuda_version": None}
    if not entry["exists"]:
        return entry
    try:
        names = ctx.listdir(d)
    except OSError as exc:
        entry["error"] = str(exc)
        return entry
    libs = set()
    for n in names:
        stem = n.split(".so", 1)[0]
        if stem in CUDA_LIBS and ".so" in n:
            libs.add(n)
        m = re.fullmatch(r"libcuda\.so\.(\d+\.\d+(?:\.\d+)?)", n)
        if m:
            entry["libcuda_version"] = m.group(1)
    entry["libs"] = sorted(libs)
    entry["compat"] = "compat" in d.split(os.sep)
    return entry


def probe_ld_library_path(ctx: ProbeContext) -> Fact:
    value = ctx.environ.get("LD_LIBRARY_PATH")
    if not value:
        return known([], "environment")
    return attempt("environment+filesystem",
                   lambda: [_scan_dir(ctx, d) for d in value.split(":") if d])


def _nvcc_version(ctx: ProbeContext, nvcc: str) -> str:
    res = ctx.run([nvcc, "--version"], ctx.timeout_s)
    m = re.search(r"release (\d+\.\d+), V(\d+\.\d+\.\d+)", res.stdout)
    if res.returncode != 0 or not m:
        raise ValueError(f"`nvcc --version` gave no version (exit {res.returncode})")
    return m.group(2)


def _version_json(ctx: ProbeContext, home: str) -> str:
    data = json.loads(ctx.read_text(os.path.join(home, "version.json")))
    return str(data["cuda"]["version"])


def probe_toolkit(ctx: ProbeContext) -> dict[str, Fact]:
    out: dict[str, Fact] = {}
    if ctx.exists("/usr/local/cuda"):
        target = ctx.realpath("/usr/local/cuda")
        out["cuda_home_target"] = known(target, "/usr/local/cuda")
        out["cuda_home_version"] = attempt(f"{target}/version.json", lambda: _version_json(ctx, "/usr/local/cuda"))
    else:
        out["cuda_home_target"] = unknown("/usr/local/cuda does not exist", "filesystem")
        out["cuda_home_version"] = unknown("/usr/local/cuda does not exist", "filesystem")
    nvcc = ctx.which("nvcc")
    if nvcc:
        out["nvcc_path"] = known(nvcc, "PATH")
        out["nvcc_version"] = attempt("nvcc --version", lambda: _nvcc_version(ctx, nvcc))
    else:
        out["nvcc_path"] = unknown("nvcc is not on PATH", "PATH")
        out["nvcc_version"] = unknown("nvcc is not on PATH", "PATH")
    return out
