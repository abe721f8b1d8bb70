"""gpu-preflight: will this AI model run on this GPU machine, will it fit, and what to change.

The public API (docs/api.md) is imported lazily, so `import gpu_preflight` stays instant:

    import gpu_preflight as gp
    est = gp.estimate("qwen2.5-7b-instruct", gpus="rtx-4090", batch=4)
    est.fits, est.peak_process_bytes, est.to_json()
"""

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "estimate", "curve", "compat", "doctor", "snapshot", "explain", "fleet", "measure", "watch", "phase",
    "Estimate", "Curve", "TargetFit", "Report", "Finding", "CheckDoc", "FleetReport", "Snapshot", "Measurement",
    "WatchResult",
    "PreflightError", "UsageError", "ModelSourceError", "SnapshotError", "DependencyMissing", "DeviceUnavailable",
]

_API = {"estimate", "curve", "compat", "doctor", "snapshot", "explain", "fleet", "measure", "watch", "Estimate", "Curve",
        "TargetFit", "Report", "Finding", "CheckDoc", "FleetReport", "Snapshot", "Measurement", "WatchResult"}
_ERRORS = {"PreflightError", "UsageError", "ModelSourceError", "SnapshotError", "DependencyMissing",
           "DeviceUnavailable"}


def __getattr__(name: str) -> Any:
    if name == "phase":  # markers for scripts run under `preflight watch` (a no-op otherwise)
        from gpu_preflight.watcher.phase import phase

        return phase
    if name in _API:
        from gpu_preflight import api

        return getattr(api, name)
    if name in _ERRORS:
        from gpu_preflight import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'gpu_preflight' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
