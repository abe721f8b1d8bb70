"""gpu-preflight: will this AI model run on this GPU machine, will it fit, and what to change."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import gpu_preflight` stays instant: `gpu_preflight.phase("load")` for scripts
    # run under `preflight watch` (a no-op otherwise).
    if name == "phase":
        from gpu_preflight.watch.phase import phase

        return phase
    raise AttributeError(f"module 'gpu_preflight' has no attribute {name!r}")
