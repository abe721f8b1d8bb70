"""Probe this machine into a snapshot (the probes -> snapshot step)."""

from __future__ import annotations

import datetime as _dt
from concurrent.futures import ThreadPoolExecutor

from gpu_preflight import __version__
from gpu_preflight.snapshots.schema import SCHEMA, SCHEMA_VERSION, Snapshot


def collect(ctx=None, deep: bool = False, python: str | None = None) -> Snapshot:
    """Probe this machine. Cheap probes run concurrently; nothing here creates a CUDA context
    unless `deep` is set (which imports torch in a child process)."""
    from gpu_preflight.probes import cudadrv, host, interconnect, nvml, platform as plat, system_cuda, torchmeta
    from gpu_preflight.probes.context import ProbeContext

    ctx = ctx or ProbeContext()
    with ThreadPoolExecutor(max_workers=4) as pool:
        f_nvml = pool.submit(nvml.probe_nvml, ctx)
        f_cuda = pool.submit(cudadrv.probe_cuda_driver, ctx.timeout_s, ctx.cuda_driver, deep)
        f_link = pool.submit(interconnect.probe_interconnect, ctx)
        f_deep = None
        if deep:
            from gpu_preflight.probes import torchdeep

            f_deep = pool.submit(torchdeep.probe_torch_deep, ctx, python)
        snap: Snapshot = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "tool_version": __version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "origin": "probe",
            "host": host.probe_host(ctx),
            "env": host.probe_env(ctx),
            "container": host.probe_container(ctx),
            "kernel_module": system_cuda.probe_kernel_module(ctx),
            "user_space": system_cuda.probe_user_space(ctx),
            "toolkit": system_cuda.probe_toolkit(ctx),
            "ld_library_path": {"entries": system_cuda.probe_ld_library_path(ctx)},
            "torch": torchmeta.probe_torch(),
            "packages": torchmeta.probe_related(),
            "platform": plat.probe_platform(ctx),
            "conda": plat.probe_conda(ctx),
            "image": plat.probe_image(ctx),
            "extensions": {"installed": plat.probe_extensions()},
        }
        snap["kernel_module"].update(plat.probe_kernel_flavor(ctx))
        snap["nvml"] = f_nvml.result()
        snap["cuda_driver"] = f_cuda.result()
        snap["interconnect"] = f_link.result()
        if f_deep is not None:
            snap["torch_deep"] = {"result": f_deep.result()}
    return snap

