"""Host facts: OS, CPU, RAM, Python; environment variables; container signals."""

from __future__ import annotations

import os
import platform
import re
import sys

from gpu_preflight.snapshots.field import Fact, attempt, known, unknown
from gpu_preflight.probes.context import ProbeContext

GPU_ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "NVIDIA_REQUIRE_CUDA",
    "CUDA_VERSION",
    "CUDA_HOME",
    "CUDA_PATH",
    "LD_LIBRARY_PATH",
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_NVML_BASED_CUDA_CHECK",
    "CUDA_MODULE_LOADING",
)


def _meminfo(ctx: ProbeContext) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in ctx.read_text("/proc/meminfo").splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            out[m.group(1)] = int(m.group(2)) * 1024
    if "MemTotal" not in out:
        raise ValueError("/proc/meminfo has no MemTotal line")
    return out


def _os_name(ctx: ProbeContext) -> str:
    for line in ctx.read_text("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise ValueError("/etc/os-release has no PRETTY_NAME")


def _cpu_model(ctx: ProbeContext) -> str:
    for line in ctx.read_text("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    raise ValueError("/proc/cpuinfo has no model name")


def probe_host(ctx: ProbeContext) -> dict[str, Fact]:
    mem = attempt("/proc/meminfo", lambda: _meminfo(ctx))
    return {
        "os": attempt("/etc/os-release", lambda: _os_name(ctx)),
        "platform": known(sys.platform, "python"),
        "kernel": known(platform.release(), "uname"),
        "machine": known(platform.machine(), "uname"),
        "cpu_model": attempt("/proc/cpuinfo", lambda: _cpu_model(ctx)),
        "cpu_count": known(os.cpu_count(), "python"),
        "ram_total_bytes": Fact(mem.value["MemTotal"], mem.source) if mem.ok else mem,
        "ram_available_bytes": Fact(mem.value.get("MemAvailable"), mem.source) if mem.ok else mem,
        "python_version": known(platform.python_version(), "python"),
        "python_executable": known(sys.executable, "python"),
    }


def probe_env(ctx: ProbeContext) -> dict[str, Fact]:
    """GPU-related environment variables; an unset variable is a value (null), not unknown."""
    return {name: known(ctx.environ.get(name), "environment") for name in GPU_ENV_VARS}


def probe_container(ctx: ProbeContext) -> dict[str, Fact]:
    def runtime() -> str | None:
        if ctx.exists("/.dockerenv"):
            return "docker"
        if ctx.exists("/run/.containerenv"):
            return "podman"
        if ctx.environ.get("KUBERNETES_SERVICE_HOST"):
            return "kubernetes"
        try:
            cgroup = ctx.read_text("/proc/1/cgroup")
        except OSError:
            return None
        for word in ("docker", "kubepods", "containerd", "lxc"):
            if word in cgroup:
                return word
        return None

    def device_nodes() -> list[str]:
        try:
            return [n for n in ctx.listdir("/dev") if n.startswith("nvidia")]
        except FileNotFoundError:
            return []

    return {
        "runtime": attempt("filesystem", runtime),
        "nvidia_device_nodes": attempt("/dev", device_nodes),
    }
