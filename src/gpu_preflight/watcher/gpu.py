"""GPU readings through NVML (nvidia-ml-py), never by parsing nvidia-smi.

`open_gpu_source()` returns a `GpuSource` or the reason there is none ("NVML library not found
...", "nvidia-ml-py not installed"), so the watcher can still run the command and say why
nothing was sampled. The NVML module is injected (`nv=`) so tests can script a fake GPU.

Per tick the sampler asks for memory (device used/total) and the compute processes with their
memory; utilization, temperature, power and clocks are read on the slower "aux" cadence. A
reading that the GPU does not support is asked once and then skipped, so it costs nothing later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from gpu_preflight.errors import UsageError

_NVML_REASONS = {
    "NVMLError_LibraryNotFound": "NVML library not found (libnvidia-ml.so.1: no NVIDIA driver "
    "installed, or the container was started without GPU access, e.g. no --gpus)",
    "NVMLError_DriverNotLoaded": "NVIDIA driver not loaded (kernel module missing)",
    "NVMLError_NoPermission": "permission denied opening the NVIDIA device files",
    "NVMLError_LibRmVersionMismatch": "driver/library version mismatch: the user-space NVIDIA "
    "libraries and the loaded kernel module differ (reboot or reload the module)",
    "NVMLError_NotSupported": "not supported on this GPU or driver",
}


def nvml_reason(exc: BaseException) -> str:
    """Words for an NVML failure that point at the fix."""
    name = type(exc).__name__
    return _NVML_REASONS.get(name, f"{name}: {exc}".strip().rstrip(":"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class DeviceInfo:
    """Static facts about one GPU, read once at start."""

    index: int
    name: str | None
    uuid: str | None
    pci_bus_id: str | None
    memory_total_bytes: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "uuid": self.uuid,
                "pci_bus_id": self.pci_bus_id, "memory_total_bytes": self.memory_total_bytes}


@dataclass
class GpuSource:
    """Live NVML readings for a chosen set of GPUs. Every method returns plain values."""

    nv: Any
    handles: dict[int, Any]
    devices: list[DeviceInfo]
    _unsupported: set[tuple[int, str]] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)  # reading -> first failure, for the record

    def memory(self, index: int) -> tuple[int | None, int | None]:
        """(used_bytes, total_bytes) of the whole device, or (None, None) when unreadable."""
        try:
            info = self.nv.nvmlDeviceGetMemoryInfo(self.handles[index])
            return int(info.used), int(info.total)
        except Exception as exc:  # noqa: BLE001 - one failed reading, not a failed run
            self.errors.setdefault("memory", nvml_reason(exc))
            return None, None

    def processes(self, index: int) -> list[tuple[int, int | None]] | None:
        """[(pid, used_bytes or None)] of compute processes; None when NVML cannot list them.

        PIDs are as the driver reports them: in a container without --pid=host older drivers
        report host PIDs, which match nothing in the container (the analysis then falls back to
        device memory minus the level before the command started).
        """
        if (index, "processes") in self._unsupported:
            return None
        try:
            procs = self.nv.nvmlDeviceGetComputeRunningProcesses(self.handles[index])
        except Exception as exc:  # noqa: BLE001
            self._remember_failure(index, "processes", exc)
            return None
        out = []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            out.append((int(p.pid), int(used) if used is not None else None))
        return out

    def aux(self, index: int) -> list[float | int | None]:
        """[util %, memory-controller util %, temperature C, power W, SM clock MHz, memory clock
        MHz] (the order of sampler.AUX_KEYS); None where unreadable."""
        nv, h = self.nv, self.handles[index]
        out: list[float | int | None] = [None] * 6
        if (index, "util") not in self._unsupported:
            try:
                util = nv.nvmlDeviceGetUtilizationRates(h)
                out[0], out[1] = int(util.gpu), int(util.memory)
            except Exception as exc:  # noqa: BLE001
                self._remember_failure(index, "util", exc)
        for slot, key, read in self._aux_readers:
            if (index, key) in self._unsupported:
                continue
            try:
                out[slot] = read(nv, h)
            except Exception as exc:  # noqa: BLE001
                self._remember_failure(index, key, exc)
        return out

    _aux_readers = (
        (2, "temperature_c", lambda nv, h: nv.nvmlDeviceGetTemperature(h, getattr(nv, "NVML_TEMPERATURE_GPU", 0))),
        (3, "power_w", lambda nv, h: round(nv.nvmlDeviceGetPowerUsage(h) / 1000.0, 1)),
        (4, "sm_clock_mhz", lambda nv, h: nv.nvmlDeviceGetClockInfo(h, getattr(nv, "NVML_CLOCK_SM", 1))),
        (5, "mem_clock_mhz", lambda nv, h: nv.nvmlDeviceGetClockInfo(h, getattr(nv, "NVML_CLOCK_MEM", 2))),
    )

    def _remember_failure(self, index: int, key: str, exc: BaseException) -> None:
        self.errors.setdefault(key, nvml_reason(exc))
        if type(exc).__name__ in ("NVMLError_NotSupported", "NVMLError_FunctionNotFound", "NVMLError_NoPermission"):
            self._unsupported.add((index, key))

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def open_gpu_source(nv: Any = None, indices: list[int] | None = None) -> tuple[GpuSource | None, str | None]:
    """Initialise NVML and pick GPUs. Returns (source, None) or (None, reason nothing is sampled)."""
    if nv is None:
        try:
            import pynvml as nv  # nvidia-ml-py
        except ImportError:
            from gpu_preflight.hints import install_command

            return None, f"nvidia-ml-py (pynvml) is not installed: {install_command('nvidia-ml-py')}"
    try:
        nv.nvmlInit()
    except Exception as exc:  # noqa: BLE001
        return None, nvml_reason(exc)
    try:
        count = int(nv.nvmlDeviceGetCount())
    except Exception as exc:  # noqa: BLE001
        return None, nvml_reason(exc)
    if count == 0:
        return None, "NVML works but reports no GPU (none visible to this process or container)"
    wanted = list(range(count)) if not indices else indices
    missing = [i for i in wanted if i < 0 or i >= count]
    if missing:
        raise UsageError(f"--gpu-index {','.join(map(str, missing))}: NVML sees {count} GPU(s)",
                         hint=f"use indices 0..{count - 1} (NVML order, as in nvidia-smi)")
    handles, devices = {}, []
    for i in wanted:
        try:
            h = nv.nvmlDeviceGetHandleByIndex(i)
        except Exception as exc:  # noqa: BLE001
            return None, f"GPU {i}: {nvml_reason(exc)}"
        handles[i] = h
        devices.append(DeviceInfo(
            index=i,
            name=_safe(lambda: _text(nv.nvmlDeviceGetName(h))),
            uuid=_safe(lambda: _text(nv.nvmlDeviceGetUUID(h))),
            pci_bus_id=_safe(lambda: _text(nv.nvmlDeviceGetPciInfo(h).busId)),
            memory_total_bytes=_safe(lambda: int(nv.nvmlDeviceGetMemoryInfo(h).total)),
        ))
    return GpuSource(nv=nv, handles=handles, devices=devices), None


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return None
