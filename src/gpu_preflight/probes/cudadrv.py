"""The CUDA driver API through ctypes: can libcuda be loaded, does cuInit succeed, its version.

cuInit initializes the driver but creates no context. It runs in a daemon thread with a
timeout because a wedged GPU can make it block.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from gpu_preflight.snapshots.field import Fact, known, unknown

SOURCE = "cuda driver api"

# CUresult names the checks explain (values from cuda.h).
CU_RESULTS = {
    0: "CUDA_SUCCESS",
    3: "CUDA_ERROR_NOT_INITIALIZED",
    35: "CUDA_ERROR_INSUFFICIENT_DRIVER",  # runtime-API name cudaErrorInsufficientDriver
    100: "CUDA_ERROR_NO_DEVICE",
    101: "CUDA_ERROR_INVALID_DEVICE",
    304: "CUDA_ERROR_OPERATING_SYSTEM",
    801: "CUDA_ERROR_NOT_SUPPORTED",
    802: "CUDA_ERROR_SYSTEM_NOT_READY",
    803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
    804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
    999: "CUDA_ERROR_UNKNOWN",
}


def _libcuda_path() -> str | None:
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            for line in fh:
                if "libcuda.so" in line:
                    return line.split()[-1]
    except OSError:
        return None
    return None


def _collect(init: bool = True) -> dict[str, Any]:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return {"error": f"libcuda.so.1 could not be loaded: {exc}"}
    version = ctypes.c_int(0)
    rc_version = lib.cuDriverGetVersion(ctypes.byref(version))
    if not init:  # cuDriverGetVersion needs no initialization; cuInit can take a second on big boxes
        return {"path": _libcuda_path(), "driver_version": version.value if rc_version == 0 else None,
                "cu_init": None, "device_count": None}
    rc_init = lib.cuInit(0)
    count = ctypes.c_int(0)
    rc_count = lib.cuDeviceGetCount(ctypes.byref(count)) if rc_init == 0 else None
    return {
        "path": _libcuda_path(),
        "driver_version": version.value if rc_version == 0 else None,
        "cu_init": rc_init,
        "device_count": count.value if rc_count == 0 else None,
    }


def probe_cuda_driver(timeout_s: float = 5.0, collect: Any = None, init: bool = True) -> dict[str, Fact]:
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result.update(collect() if collect else _collect(init))
        except Exception as exc:  # noqa: BLE001
            result["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=work, name="preflight-libcuda", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        reason = f"cuInit timed out after {timeout_s:g} s (GPU or driver not responding)"
        return {k: unknown(reason, SOURCE) for k in ("path", "driver_version", "cu_init", "device_count")}
    if "error" in result:
        return {k: unknown(result["error"], SOURCE) for k in ("path", "driver_version", "cu_init", "device_count")}
    rc = result.get("cu_init")
    if rc is None:
        return {"path": known(result.get("path"), SOURCE), "driver_version": known(result.get("driver_version"), SOURCE),
                "cu_init": unknown("not run (cuInit runs with --deep)", SOURCE),
                "device_count": unknown("not run (cuInit runs with --deep)", SOURCE)}
    return {
        "path": known(result.get("path"), SOURCE),
        "driver_version": known(result.get("driver_version"), SOURCE),
        "cu_init": known({"code": rc, "name": CU_RESULTS.get(rc, f"CUresult {rc}")}, SOURCE),
        "device_count": known(result.get("device_count"), SOURCE),
    }
