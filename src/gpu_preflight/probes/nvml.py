"""NVML facts through nvidia-ml-py: driver, its max CUDA version, and each GPU's state.

NVML can hang (a wedged GPU, a driver in recovery): the whole probe runs in a daemon thread
with a timeout, and each per-GPU query is isolated, so one failing call becomes one
unavailable field, never a crashed report.
"""

from __future__ import annotations

from typing import Any, Callable

from gpu_preflight.snapshots.field import Fact, describe_exception, known, unknown
from gpu_preflight.probes.context import ProbeContext, call_with_timeout

SOURCE = "nvml"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_reason(exc: BaseException) -> str:
    name = type(exc).__name__
    hints = {
        "NVMLError_LibraryNotFound": "NVML library not found (libnvidia-ml.so.1: no NVIDIA driver installed, "
        "or the container was started without GPU access)",
        "NVMLError_DriverNotLoaded": "NVIDIA driver not loaded (kernel module missing)",
        "NVMLError_NoPermission": "permission denied opening the NVIDIA device files",
        "NVMLError_LibRmVersionMismatch": "Driver/library version mismatch: the user-space NVIDIA "
        "libraries and the loaded kernel module are different versions",
        "NVMLError_NotSupported": "not supported on this GPU or driver",
    }
    return hints.get(name, describe_exception(exc))


def _field(fn: Callable[[], Any]) -> Fact:
    try:
        return known(fn(), SOURCE)
    except Exception as exc:  # noqa: BLE001
        return unknown(_nvml_reason(exc), SOURCE)


def _gpu(nv: Any, index: int) -> dict[str, Fact]:
    h = nv.nvmlDeviceGetHandleByIndex(index)
    mem = _field(lambda: nv.nvmlDeviceGetMemoryInfo(h))

    def mem_part(attr: str) -> Fact:
        return Fact(getattr(mem.value, attr), SOURCE) if mem.ok else mem

    def processes() -> list[dict[str, Any]]:
        procs = []
        for p in nv.nvmlDeviceGetComputeRunningProcesses(h):
            used = getattr(p, "usedGpuMemory", None)
            procs.append({"pid": int(p.pid), "used_bytes": int(used) if used is not None else None})
        return procs

    def mig() -> dict[str, bool]:
        current, pending = nv.nvmlDeviceGetMigMode(h)
        return {"current": bool(current), "pending": bool(pending)}

    def ecc_uncorrected() -> int:
        return int(nv.nvmlDeviceGetTotalEccErrors(h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC))

    def remapped() -> dict[str, Any]:
        corr, unc, pending, failure = nv.nvmlDeviceGetRemappedRows(h)
        return {"correctable": int(corr), "uncorrectable": int(unc), "pending": bool(pending),
                "failure": bool(failure)}

    def ecc_mode() -> bool:
        current, _pending = nv.nvmlDeviceGetEccMode(h)
        return bool(current)

    return {
        "index": known(index, SOURCE),
        "name": _field(lambda: _text(nv.nvmlDeviceGetName(h))),
        "uuid": _field(lambda: _text(nv.nvmlDeviceGetUUID(h))),
        "pci_bus_id": _field(lambda: _text(nv.nvmlDeviceGetPciInfo(h).busId)),
        "compute_capability": _field(lambda: "%d.%d" % tuple(nv.nvmlDeviceGetCudaComputeCapability(h))),
        "memory_total_bytes": mem_part("total"),
        "memory_used_bytes": mem_part("used"),
        "memory_free_bytes": mem_part("free"),
        "mig_mode": _field(mig),
        "ecc_enabled": _field(ecc_mode),
        "ecc_uncorrected_volatile": _field(ecc_uncorrected),
        "retired_pages_pending": _field(lambda: bool(nv.nvmlDeviceGetRetiredPagesPendingStatus(h))),
        "remapped_rows": _field(remapped),
        "processes": _field(processes),
    }


def _collect(nv: Any) -> dict[str, Fact]:
    nv.nvmlInit()
    try:
        out = {
            "available": known(True, SOURCE),
            "driver_version": _field(lambda: _text(nv.nvmlSystemGetDriverVersion())),
            "cuda_driver_version": _field(lambda: int(nv.nvmlSystemGetCudaDriverVersion_v2())),
            "nvml_version": _field(lambda: _text(nv.nvmlSystemGetNVMLVersion())),
        }
        count = nv.nvmlDeviceGetCount()
        gpus = []
        for i in range(count):
            try:
                gpus.append(_gpu(nv, i))
            except Exception as exc:  # noqa: BLE001 - e.g. GPU fell off the bus
                gpus.append({"index": known(i, SOURCE), "error": unknown(_nvml_reason(exc), SOURCE)})
        out["gpus"] = known(gpus, SOURCE)
        return out
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _all_unknown(reason: str) -> dict[str, Fact]:
    fact = unknown(reason, SOURCE)
    return {"available": Fact(False, SOURCE, None), "driver_version": fact, "cuda_driver_version": fact,
            "nvml_version": fact, "gpus": fact, "error": known(reason, SOURCE)}


def probe_nvml(ctx: ProbeContext) -> dict[str, Fact]:
    nv = ctx.nvml
    if nv is None:
        try:
            import pynvml as nv  # nvidia-ml-py
        except ImportError:
            from gpu_preflight.hints import install_command

            return _all_unknown(f"nvidia-ml-py is not installed ({install_command('nvidia-ml-py')})")
    data, reason = call_with_timeout(lambda: _collect(nv), ctx.timeout_s, "preflight-nvml", _nvml_reason)
    return _all_unknown(reason) if reason else data
