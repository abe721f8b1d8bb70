"""The stack checks PF101-PF119. Each is a pure function of the snapshot (+ the fact tables)."""

from __future__ import annotations

import re

from gpu_preflight.compatibility import facts
from gpu_preflight.checks import Finding, check
from gpu_preflight.checks.context import GIB, driver_version, gib, gpu_views, jetpack_of, platform_of, torch_view
from gpu_preflight.compatibility.rules import arch_coverage, driver_for_cuda
from gpu_preflight.compatibility.recommend import recommend
from gpu_preflight.snapshots.schema import fact

NVIDIA_DOWNLOAD = "https://www.nvidia.com/Download/index.aspx"


def _F(status, title, message, fix=None, **evidence):  # noqa: N802 - short constructor
    return Finding("", status, title, message, fix, evidence)


def _described(snap) -> bool:
    return snap.get("origin") == "described"


def _python(snap) -> str | None:
    return fact(snap, "host.python_version").get()


def recommendation(snap):
    """The install recommendation for this snapshot's platform, driver, GPUs, Python and glibc."""
    from gpu_preflight.compatibility.recommend import recommend as _rec

    views = gpu_views(snap)
    return _rec(driver_version(snap), [g.cc for g in views if g.cc], _python(snap), platform_of(snap),
                fact(snap, "platform.glibc").get(), [g.catalog for g in views if g.catalog], jetpack_of(snap))


def _recommended_fix(snap, why: str) -> str:
    from gpu_preflight.compatibility.recommend import driver_knows_gpus

    rec = recommendation(snap)
    if rec is None:
        views = gpu_views(snap)
        stale = driver_knows_gpus(driver_version(snap), [g.catalog for g in views if g.catalog])
        if stale:
            return f"{why}; {stale}: {NVIDIA_DOWNLOAD}"
        if platform_of(snap) == "jetson":
            return (f"{why}; on Jetson install NVIDIA's PyTorch wheel for your JetPack "
                    f"(https://forums.developer.nvidia.com/t/pytorch-for-jetson/72048), or upgrade to JetPack 7")
        return f"{why}; no PyTorch release in the tables runs on this driver and GPU: upgrade the driver ({NVIDIA_DOWNLOAD})"
    req = rec.get("requires") or {}
    needs = [f"driver >= {req['driver_full_features'] or req['driver_floor']}" if req.get("driver_floor") else None,
             f"Python {req['python']}" if req.get("python") else None]
    needs_s = ", ".join(n for n in needs if n)
    return f"{why}: {rec['command']}   (torch {rec['torch']}, CUDA {rec['cuda']}" + (f"; needs {needs_s}" if needs_s else "") + ")"


@check("PF101", "nvidia-driver", "driver", "NVIDIA driver")
def nvidia_driver(snap):
    """
    What it checks:
    That an NVIDIA driver is installed and loaded (NVML answers) and sees at least one GPU.

    Why it matters:
    Without libnvidia-ml / libcuda from the driver no CUDA program can start; PyTorch then warns
    "Found no NVIDIA driver on your system" and torch.cuda.is_available() is False.

    Example:
    A fresh cloud VM without the driver package, or `docker run` without `--gpus all`.

    Fix:
    Install the NVIDIA driver for your GPU (distribution package or nvidia.com); in containers
    install the NVIDIA Container Toolkit and start the container with `--gpus all`.

    Sources:
    https://docs.nvidia.com/deploy/nvml-api/index.html
    https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html
    """
    avail = fact(snap, "nvml.available").get(False)
    gpus = gpu_views(snap)
    drv = driver_version(snap)
    if avail or (_described(snap) and drv):
        cuda = fact(snap, "nvml.cuda_driver_version").get()
        cuda_s = f" (supports CUDA {facts.cuda_int_to_str(cuda)})" if isinstance(cuda, int) else ""
        if not gpus and _described(snap):
            return _F("ok", "NVIDIA driver", f"driver {drv}{cuda_s} (no GPU described)", driver=drv)
        if not gpus:
            return _F("fail", "NVIDIA driver", f"driver {drv}{cuda_s} is loaded but NVML sees no GPU",
                      "check `nvidia-smi`; on a VM the GPU may not be passed through", driver=drv)
        names = ", ".join(sorted({g.name or "?" for g in gpus}))
        return _F("ok", "NVIDIA driver", f"driver {drv}{cuda_s}, {len(gpus)} GPU(s): {names}", driver=drv)
    if _described(snap):
        return _F("skip", "NVIDIA driver", "no driver version described (pass --driver)")
    reason = fact(snap, "nvml.error").get() or fact(snap, "nvml.driver_version").unavailable or "unknown"
    if "mismatch" in reason.lower():
        return _F("skip", "NVIDIA driver", "NVML refused to start: see PF102", reason=reason)
    nodes = fact(snap, "container.nvidia_device_nodes").get([]) or []
    kmod = fact(snap, "kernel_module.version").get()
    if nodes or kmod:
        return _F("fail", "NVIDIA driver",
                  f"NVIDIA hardware signs found (kernel module {kmod or '-'}, /dev/{', /dev/'.join(nodes) or '-'}) "
                  f"but NVML cannot be used: {reason}",
                  "install the user-space driver libraries matching the kernel module, or in a container "
                  "start it with `--gpus all` (NVIDIA Container Toolkit)", reason=reason)
    return _F("warn", "NVIDIA driver", f"no NVIDIA driver or GPU found ({reason}); models will run on the CPU",
              f"if this machine has an NVIDIA GPU, install its driver: {NVIDIA_DOWNLOAD}", reason=reason)


@check("PF102", "driver-library-mismatch", "driver", "Driver / library versions")
def driver_library_mismatch(snap):
    """
    What it checks:
    That the loaded kernel module (/proc/driver/nvidia/version), the user-space driver library
    (libcuda.so.X files) and NVML agree on the driver version.

    Why it matters:
    After a driver upgrade without a reboot the old kernel module stays loaded: nvidia-smi says
    "Failed to initialize NVML: Driver/library version mismatch" and CUDA programs fail.

    Example:
    Kernel module 550.54.14 loaded, libcuda.so.550.90.07 installed by the package manager.

    Fix:
    Reboot, or unload and reload the nvidia kernel modules once no process uses the GPU.

    Sources:
    https://docs.nvidia.com/deploy/nvml-api/group__nvmlReturn.html
    https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/index.html
    """
    if _described(snap):
        return _F("skip", "Driver / library versions", "not applicable to a described machine")
    reason = fact(snap, "nvml.error").get() or ""
    kmod = fact(snap, "kernel_module.version").get()
    libs = fact(snap, "user_space.libcuda_files").get([]) or []
    lib_versions = sorted({f["version"] for f in libs})
    nvml_drv = driver_version(snap)
    if "mismatch" in reason.lower():
        return _F("fail", "Driver / library versions",
                  f"{reason} (kernel module {kmod or '?'}, libcuda {', '.join(lib_versions) or '?'})",
                  "reboot (or `sudo rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia && sudo modprobe nvidia` "
                  "when no process uses the GPU)", kernel_module=kmod, libcuda=lib_versions)
    if not kmod:
        return _F("skip", "Driver / library versions", "no NVIDIA kernel module loaded")
    others = [v for v in lib_versions if v != kmod]
    if others and kmod not in lib_versions:
        return _F("fail", "Driver / library versions",
                  f"kernel module {kmod} but user-space libcuda {', '.join(others)}",
                  "reboot so the kernel module matches the installed driver libraries",
                  kernel_module=kmod, libcuda=lib_versions)
    if nvml_drv and nvml_drv != kmod:
        return _F("warn", "Driver / library versions", f"NVML reports {nvml_drv}, kernel module is {kmod}",
                  "reboot after driver upgrades", kernel_module=kmod, nvml=nvml_drv)
    return _F("ok", "Driver / library versions", f"kernel module and libraries agree ({kmod})", kernel_module=kmod)


@check("PF103", "driver-vs-torch-cuda", "torch", "Driver vs PyTorch's CUDA")
def driver_vs_torch_cuda(snap):
    """
    What it checks:
    The driver against the CUDA version the installed PyTorch wheel was built with: below the
    CUDA major's minor-version-compatibility floor fails; between the floor and that CUDA
    release's own driver ("Table 3") works with a limited feature set.

    Why it matters:
    Below the floor CUDA cannot initialize: PyTorch warns "The NVIDIA driver on your system is too
    old" and torch.cuda.is_available() is False (error 35, cudaErrorInsufficientDriver). Above the
    floor but below the release driver, precompiled kernels run but PTX from the newer toolkit
    cannot be JIT-compiled (error 222) and newer-driver APIs fail (error 36).

    Example:
    torch 2.11.0 from PyPI (CUDA 13.0) on driver 550.54.15: 550 is below the CUDA 13.x floor 580.

    Fix:
    Upgrade the driver to at least the release driver, or install the same PyTorch built for an
    older CUDA that the driver supports, e.g. `pip install torch==2.11.0 --index-url
    https://download.pytorch.org/whl/cu126`. On datacenter GPUs the cuda-compat package is another
    way (forward compatibility).

    Sources:
    https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html
    https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html
    https://github.com/pytorch/pytorch/blob/main/RELEASE.md
    """
    tv = torch_view(snap)
    title = "Driver vs PyTorch's CUDA"
    if not tv.installed:
        return _F("skip", title, "PyTorch is not installed")
    if not tv.cuda:
        return _F("skip", title, "PyTorch is a CPU-only build (see PF105)")
    drv = driver_version(snap)
    if not drv:
        return _F("skip", title, "driver version unknown")
    plat = platform_of(snap)
    jp = jetpack_of(snap) if plat == "jetson" else None
    if plat == "jetson" and (jp or {}).get("sbsa") is not True:
        return _F("skip", title, "Jetson before JetPack 7: the driver is part of Jetson Linux (see PF120)")
    if jp and facts.parse_cuda(tv.cuda) <= facts.parse_cuda(jp["cuda"]):
        return _F("ok", title, f"torch {tv.version} uses CUDA {tv.cuda}; JetPack {jp['jetpack']}'s driver {drv} "
                               f"provides CUDA {jp['cuda']}", driver=drv, torch_cuda=tv.cuda, jetpack=jp["jetpack"])
    v = driver_for_cuda(drv, tv.cuda, facts.driver_os(plat))
    ev = {"driver": drv, "torch": tv.version, "torch_cuda": tv.cuda, "floor": v.floor, "release_driver": v.full,
          "platform": plat}
    if v.status == "fail":
        return _F("fail", title, f"torch {tv.version} uses CUDA {tv.cuda}; {v.message}",
                  _recommended_fix(snap, f"upgrade the driver to >= {v.full or v.floor}, or install a build "
                                         f"this driver runs"), **ev)
    if v.status == "warn":
        return _F("warn", title, f"torch {tv.version} uses CUDA {tv.cuda}; {v.message}",
                  f"upgrade the driver to >= {v.full} for the full CUDA {tv.cuda} feature set", **ev)
    if v.status == "unknown":
        return _F("skip", title, v.message, **ev)
    return _F("ok", title, f"torch {tv.version} uses CUDA {tv.cuda}; {v.message}", **ev)


@check("PF104", "gpu-arch-in-wheel", "torch", "GPU architecture in the PyTorch wheel")
def gpu_arch_in_wheel(snap):
    """
    What it checks:
    Each GPU's compute capability against the architectures the PyTorch wheel was compiled for
    (torch.cuda.get_arch_list() with --deep, else the wheel table): a cubin sm_XY runs on X.Z for
    Z >= Y (same major only); `a` targets only on that exact capability; otherwise the wheel needs
    PTX at or below the GPU's capability, which the driver JIT-compiles.

    Why it matters:
    Without a matching cubin or PTX every kernel fails with "CUDA error: no kernel image is
    available for execution on the device" (error 209) - not a driver problem.

    Example:
    RTX 5090 (12.0) with torch 2.6.0+cu124 (compiled up to 9.0, no PTX for 12.0); V100 (7.0)
    with torch 2.11.0+cu130 (7.5 and newer).

    Fix:
    Install a variant whose list covers the GPU: Blackwell needs cu128 or newer; Maxwell,
    Pascal and Volta need cu126 or older builds.

    Sources:
    https://docs.nvidia.com/cuda/blackwell-compatibility-guide/index.html
    https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__TYPES.html
    https://github.com/pytorch/pytorch/blob/main/RELEASE.md
    """
    tv = torch_view(snap)
    title = "GPU architecture in the PyTorch wheel"
    gpus = gpu_views(snap)
    if not tv.installed or not tv.cuda:
        return _F("skip", title, "no CUDA build of PyTorch installed")
    if not gpus:
        return _F("skip", title, "no GPU seen")
    out = []
    drv = driver_version(snap)
    for g in gpus:
        if not g.cc:
            out.append(_F("skip", title, f"GPU {g.index} ({g.name}): compute capability unknown"))
            continue
        cov, detail = arch_coverage(g.cc, tv.sass, tv.ptx, tv.cuda)
        ev = {"gpu": g.name, "compute_capability": g.cc, "sass": tv.sass, "ptx": tv.ptx, "arch_source": tv.arch_source}
        head = f"GPU {g.index} {g.name} ({g.cc}), torch {tv.version}+{tv.variant}"
        if cov == "sass":
            out.append(_F("ok", title, f"{head}: {detail}", **ev))
        elif cov == "unknown":
            out.append(_F("skip", title, f"{head}: {detail}" + (f" ({tv.arch_note})" if tv.arch_note else "")
                          + "; run `preflight doctor --deep` to read it from torch", **ev))
        elif cov == "ptx":
            full, _ = facts.toolkit_driver(tv.cuda)
            if drv and full and not facts.driver_ge(drv, full):
                out.append(_F("fail", title, f"{head}: {detail}, but driver {drv} is older than CUDA {tv.cuda}'s "
                                             f"driver {full}, so the JIT fails (error 222)",
                              _recommended_fix(snap, "install a build with native kernels for this GPU"), **ev))
            else:
                out.append(_F("warn", title, f"{head}: {detail}; the first run compiles kernels (slow start, "
                                             f"no cubin-level tuning)",
                              _recommended_fix(snap, "for native kernels install"), **ev))
        else:
            out.append(_F("fail", title, f"{head}: {detail} -> \"no kernel image is available for execution "
                                         f"on the device\"",
                          _recommended_fix(snap, "install a build compiled for this GPU"), **ev))
    return out


@check("PF105", "cpu-only-torch", "torch", "PyTorch build has CUDA")
def cpu_only_torch(snap):
    """
    What it checks:
    Whether the installed PyTorch is a CPU-only (or ROCm) build while NVIDIA GPUs are present.

    Why it matters:
    A CPU build raises "AssertionError: Torch not compiled with CUDA enabled" at the first
    .cuda(); Windows PyPI wheels and `--index-url .../whl/cpu` installs are CPU-only.

    Example:
    torch 2.9.1+cpu on a machine with an RTX 4090.

    Fix:
    Reinstall from a CUDA index, e.g. `pip install torch==2.9.1 --index-url
    https://download.pytorch.org/whl/cu128` (preflight prints the one for your driver and GPU).

    Sources:
    https://pytorch.org/get-started/locally/
    https://github.com/pytorch/pytorch/blob/main/RELEASE.md
    """
    tv = torch_view(snap)
    title = "PyTorch build has CUDA"
    if not tv.installed:
        if not gpu_views(snap):
            return _F("skip", title, "PyTorch is not installed")
        fix = _recommended_fix(snap, "to install it")
        return _F("skip", title, f"PyTorch is not installed; {fix}", fix)
    hip = fact(snap, "torch.hip").get()
    gpus = gpu_views(snap)
    if tv.cuda:
        return _F("ok", title, f"torch {tv.version} is built with CUDA {tv.cuda}")
    kind = f"a ROCm (HIP {hip}) build" if hip else "a CPU-only build"
    if not gpus:
        return _F("ok" if not hip else "warn", title, f"torch {tv.version} is {kind}; no NVIDIA GPU seen")
    return _F("fail", title, f"torch {tv.version} is {kind} but this machine has {len(gpus)} NVIDIA GPU(s): "
                             f"\"Torch not compiled with CUDA enabled\"",
              _recommended_fix(snap, "reinstall with CUDA"), torch=tv.version, local=tv.local)


@check("PF106", "dtype-support", "gpu", "Data types the GPU runs natively")
def dtype_support(snap):
    """
    What it checks:
    Which reduced-precision formats each GPU supports in hardware: bf16 needs compute capability
    8.0+, fp8 8.9+, fp4 Blackwell (10.x / 12.x).

    Why it matters:
    Most current LLM and diffusion checkpoints ship in bf16. On a T4 or V100 they must run in
    fp16 (risk of overflow to inf/NaN) or fp32 (twice the memory); vLLM refuses bf16 there.
    `torch.cuda.is_bf16_supported()` can say True through emulation, so it is not proof.

    Example:
    Tesla T4 (7.5): "Bfloat16 is only supported on GPUs with compute capability of at least 8.0".

    Fix:
    Load the model with `torch_dtype=torch.float16` (vLLM: `--dtype half`) or float32, or use an
    Ampere or newer GPU.

    Sources:
    https://developer.nvidia.com/cuda-gpus
    https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html#arithmetic-instructions
    """
    title = "Data types the GPU runs natively"
    gpus = gpu_views(snap)
    if not gpus:
        return _F("skip", title, "no GPU seen")
    out = []
    for g in gpus:
        if not g.cc:
            out.append(_F("skip", title, f"GPU {g.index}: compute capability unknown"))
            continue
        cc = facts.parse_cc(g.cc)
        kinds = ["fp32", "fp16"] + (["bf16", "tf32"] if cc >= (8, 0) else []) + (["fp8"] if cc >= (8, 9) else []) \
            + (["fp4"] if cc[0] in (10, 11, 12) else [])
        ev = {"gpu": g.name, "compute_capability": g.cc, "dtypes": kinds}
        if cc < (8, 0):
            out.append(_F("warn", title, f"GPU {g.index} {g.name} ({g.cc}) has no bf16: bf16 checkpoints must run "
                                         f"as fp16 or fp32", "load with torch_dtype=torch.float16 (vLLM: --dtype half)",
                          **ev))
        else:
            out.append(_F("ok", title, f"GPU {g.index} {g.name} ({g.cc}): {', '.join(kinds)}", **ev))
    return out


@check("PF107", "flash-attention", "libraries", "FlashAttention")
def flash_attention(snap):
    """
    What it checks:
    Whether the flash-attn package (FlashAttention-2) is installed and whether the GPUs can run
    it (Ampere, Ada, Hopper: compute capability 8.0+); with --deep, which PyTorch SDPA backends
    actually run on the GPU.

    Why it matters:
    `attn_implementation="flash_attention_2"` on a T4/V100 fails with "FlashAttention only
    supports Ampere GPUs or newer"; PyTorch's own flash SDPA kernel also needs sm80+, and falls back
    to the memory-efficient or math kernels, which use more memory for long sequences.

    Example:
    flash-attn 2.7.4 installed on a Tesla T4.

    Fix:
    Use `attn_implementation="sdpa"` (or "eager") on pre-Ampere GPUs.

    Sources:
    https://github.com/Dao-AILab/flash-attention#installation-and-features
    https://pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html
    """
    title = "FlashAttention"
    fa = fact(snap, "packages.flash-attn").get()
    gpus = gpu_views(snap)
    out = []
    if fa and gpus:
        old = [g for g in gpus if g.cc and facts.parse_cc(g.cc) < (8, 0)]
        if old:
            out.append(_F("fail", title, f"flash-attn {fa} is installed but GPU {old[0].index} {old[0].name} "
                                         f"({old[0].cc}) is older than Ampere: \"FlashAttention only supports "
                                         f"Ampere GPUs or newer\"", "use attn_implementation=\"sdpa\"", flash_attn=fa))
        else:
            out.append(_F("ok", title, f"flash-attn {fa} installed; GPUs are Ampere or newer", flash_attn=fa))
    deep = fact(snap, "torch_deep.result").get() or {}
    backends = (deep.get("sdpa_backends") or {}).get("value")
    if isinstance(backends, dict) and "error" not in backends:
        failed = [k for k, v in backends.items() if not v.get("ok")]
        ran = [k for k, v in backends.items() if v.get("ok")]
        status = "warn" if "flash_attention" in failed and any(
            g.cc and facts.parse_cc(g.cc) >= (8, 0) for g in gpus) else "ok"
        out.append(_F(status, title, f"SDPA backends that ran: {', '.join(ran) or 'none'}"
                                     + (f"; failed: {', '.join(failed)}" if failed else ""),
                      None if status == "ok" else "check `preflight doctor --deep --json` for the backend errors",
                      sdpa=backends))
    if not out:
        return _F("skip", title, "flash-attn is not installed (PyTorch SDPA is used; run --deep to test its backends)")
    return out


@check("PF108", "cuda-visible-devices", "environment", "CUDA_VISIBLE_DEVICES")
def cuda_visible_devices(snap):
    """
    What it checks:
    CUDA_VISIBLE_DEVICES against the GPUs the driver sees: empty or -1 hides every GPU, an index
    past the last GPU or an unknown UUID hides the GPUs from there on.

    Why it matters:
    CUDA stops parsing the list at the first invalid entry, so `CUDA_VISIBLE_DEVICES=""` or a
    stale value left by a job scheduler makes torch.cuda.is_available() False on a healthy box.

    Example:
    CUDA_VISIBLE_DEVICES=1 on a single-GPU machine.

    Fix:
    `unset CUDA_VISIBLE_DEVICES`, or set it to valid indexes / GPU UUIDs (`nvidia-smi -L`).

    Sources:
    https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html#cuda-environment-variables
    """
    title = "CUDA_VISIBLE_DEVICES"
    value = fact(snap, "env.CUDA_VISIBLE_DEVICES").get()
    gpus = gpu_views(snap)
    if value is None:
        return _F("ok", title, "not set: all GPUs are visible") if gpus else _F("skip", title, "not set")
    entries = [e.strip() for e in value.split(",")]
    if value.strip() == "" or entries[0] in ("-1", "none", "NoDevFiles"):
        st = "fail" if gpus else "warn"
        return _F(st, title, f"CUDA_VISIBLE_DEVICES={value!r} hides every GPU from CUDA programs",
                  "unset CUDA_VISIBLE_DEVICES", value=value)
    uuids = {(g.raw.get("uuid").get() or "") for g in gpus if g.raw.get("uuid")}
    visible = 0
    for e in entries:
        if e.isdigit() and int(e) < len(gpus):
            visible += 1
            continue
        if e.startswith(("GPU-", "MIG-")) and any(u.startswith(e) for u in uuids):
            visible += 1
            continue
        if e.startswith("MIG-") and not uuids:
            visible += 1
            continue
        msg = (f"CUDA_VISIBLE_DEVICES={value!r}: entry {e!r} matches no GPU, so CUDA sees only the "
               f"{visible} GPU(s) before it")
        return _F("fail" if visible == 0 else "warn", title, msg,
                  f"use indexes 0..{max(len(gpus) - 1, 0)} or UUIDs from `nvidia-smi -L`", value=value)
    return _F("ok", title, f"CUDA_VISIBLE_DEVICES={value!r}: {visible} of {len(gpus)} GPU(s) visible", value=value)


def _torch_is_pip_wheel(snap) -> bool:
    pkgs = fact(snap, "torch.nvidia_packages").get({}) or {}
    return bool(pkgs)


@check("PF109", "ld-library-path-shadowing", "libraries", "LD_LIBRARY_PATH")
def ld_library_path(snap):
    """
    What it checks:
    LD_LIBRARY_PATH entries that hold CUDA user-space libraries (libcudart, libcublas, libcudnn,
    libnvJitLink, libcusparse...) which can be loaded instead of the ones the PyTorch wheel brings
    in its nvidia-* packages.

    Why it matters:
    The dynamic loader searches LD_LIBRARY_PATH before the wheel's RPATH, so an older system copy
    wins and import fails with errors like "libcusparse.so.12: undefined symbol:
    __nvJitLinkAddData_12_1, version libnvJitLink.so.12".

    Example:
    LD_LIBRARY_PATH=/usr/local/cuda-12.1/lib64 with torch 2.5.1 (CUDA 12.4 libraries from pip).

    Fix:
    Remove the CUDA directories from LD_LIBRARY_PATH for the Python process
    (`env -u LD_LIBRARY_PATH python ...`), or keep them only in the shells that build software.

    Sources:
    https://github.com/pytorch/pytorch/issues/111469
    https://man7.org/linux/man-pages/man8/ld.so.8.html
    """
    title = "LD_LIBRARY_PATH"
    entries = fact(snap, "ld_library_path.entries").get([]) or []
    if not entries:
        return _F("ok", title, "not set (or empty): the wheel's own CUDA libraries are used")
    hits = [e for e in entries if e.get("libs")]
    if not hits:
        return _F("ok", title, f"{len(entries)} entries, none holds CUDA libraries")
    if not fact(snap, "torch.installed").get(False):
        return _F("skip", title, "CUDA libraries on LD_LIBRARY_PATH, but PyTorch is not installed")
    if not _torch_is_pip_wheel(snap):
        return _F("ok", title, "CUDA libraries on LD_LIBRARY_PATH; this PyTorch brings no nvidia-* packages "
                               "(e.g. a conda or source build) and may rely on them")
    listing = "; ".join(f"{e['path']}: {', '.join(e['libs'][:4])}" for e in hits)
    return _F("warn", title, f"LD_LIBRARY_PATH holds CUDA libraries that can shadow the PyTorch wheel's own: {listing}",
              f"run Python without them: env -u LD_LIBRARY_PATH python ...  (or drop {hits[0]['path']} from it)",
              entries=[e["path"] for e in hits])


@check("PF110", "cuda-compat", "driver", "CUDA forward-compatibility libraries")
def cuda_compat(snap):
    """
    What it checks:
    A cuda-compat libcuda (from /usr/local/cuda-X.Y/compat, often baked into container images) on
    LD_LIBRARY_PATH against the installed kernel driver and the GPU, and cuInit's result.

    Why it matters:
    A compat libcuda older than the kernel driver, or one used on a GPU that does not support
    forward compatibility (GeForce), breaks CUDA: error 803 "system has unsupported display driver
    / cuda driver combination" or 804 "forward compatibility was attempted on non supported HW".

    Example:
    An image built for driver 535 with /usr/local/cuda-12.8/compat on LD_LIBRARY_PATH, run on a host
    with driver 570.

    Fix:
    Remove the compat directory from LD_LIBRARY_PATH when the host driver is already new enough;
    use forward compatibility only on datacenter GPUs with a supported driver branch.

    Sources:
    https://docs.nvidia.com/deploy/cuda-compatibility/forward-compatibility.html
    https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__TYPES.html
    """
    title = "CUDA forward-compatibility libraries"
    out = []
    init = fact(snap, "cuda_driver.cu_init").get()
    if isinstance(init, dict) and init.get("code") in (803, 804):
        out.append(_F("fail", title, f"cuInit failed with {init['name']} ({init['code']})",
                      "remove /usr/local/cuda*/compat from LD_LIBRARY_PATH (or match the compat package to the driver)",
                      cu_init=init))
    entries = fact(snap, "ld_library_path.entries").get([]) or []
    drv = driver_version(snap) or fact(snap, "kernel_module.version").get()
    # The driver's own library directory (e.g. /usr/local/nvidia/lib64 mounted into containers)
    # holds libcuda of exactly the driver version: that is not forward compatibility.
    compat = [e for e in entries if e.get("libcuda_version")
              and (e.get("compat") or (drv and e["libcuda_version"] != drv))]
    for e in compat:
        cv = e["libcuda_version"]
        ev = {"path": e["path"], "compat_libcuda": cv, "driver": drv}
        if not drv:
            out.append(_F("warn", title, f"{e['path']} provides libcuda {cv}; the driver version is unknown", **ev))
            continue
        if facts.parse_driver(cv) <= facts.parse_driver(drv):
            out.append(_F("warn" if cv == drv else "fail", title,
                          f"{e['path']} provides libcuda {cv}, not newer than the installed driver {drv}: it is not "
                          f"needed" + ("" if cv == drv else " and an older compat libcuda fails with error 803"),
                          f"remove {e['path']} from LD_LIBRARY_PATH", **ev))
            continue
        rules = facts.table("cuda").get("forward_compat_rules", {})
        allowed = set(rules.get("gpu_segments") or ["datacenter", "jetson"])
        segs = {g.catalog.get("segment"): g for g in gpu_views(snap) if g.catalog}
        if "consumer" in segs:
            g = segs["consumer"]
            out.append(_F("fail", title, f"forward compatibility ({e['path']}, libcuda {cv}) on {g.name}: "
                                         f"only datacenter, select NGC-ready RTX and Jetson GPUs support it (error 804)",
                          f"upgrade the host driver instead, and remove {e['path']} from LD_LIBRARY_PATH", **ev))
        elif "workstation" in segs and "workstation" not in allowed:
            g = segs["workstation"]
            out.append(_F("warn", title, f"forward compatibility ({e['path']}, libcuda {cv}) on {g.name}: supported "
                                         f"only on select NGC Server Ready RTX systems, otherwise error 804",
                          "if CUDA fails with error 804, upgrade the host driver instead", **ev))
        else:
            out.append(_F("ok", title, f"forward compatibility in use: libcuda {cv} from {e['path']} over driver {drv}",
                          **ev))
    if not out:
        return _F("ok", title, "no cuda-compat libcuda on LD_LIBRARY_PATH") if not _described(snap) \
            else _F("skip", title, "not described")
    return out


@check("PF111", "toolkit-nvcc", "libraries", "CUDA toolkit (nvcc) for building extensions")
def toolkit_nvcc(snap):
    """
    What it checks:
    The system CUDA toolkit: nvcc on PATH vs /usr/local/cuda, and their CUDA major vs PyTorch's.
    This matters only for building CUDA extensions from source (flash-attn, xformers, custom
    ops); pip wheels of PyTorch bring their own CUDA runtime and ignore the system toolkit.

    Why it matters:
    torch.utils.cpp_extension refuses to build when nvcc's CUDA major differs from the one
    PyTorch was built with, a PATH nvcc that differs from /usr/local/cuda mixes headers
    and compiler versions, and an nvcc too old for the GPU cannot emit code for it.

    Example:
    nvcc 11.8 on PATH, /usr/local/cuda -> cuda-12.4, torch 2.7.1+cu126; or nvcc 12.6 on an RTX 5090
    (sm_120 needs CUDA 12.8 or newer).

    Fix:
    Point PATH and CUDA_HOME at one toolkit whose major matches torch.version.cuda, e.g.
    `export CUDA_HOME=/usr/local/cuda-12.6 PATH=/usr/local/cuda-12.6/bin:$PATH`.

    Sources:
    https://pytorch.org/docs/stable/cpp_extension.html
    https://docs.nvidia.com/cuda/cuda-installation-guide-linux/index.html
    """
    title = "CUDA toolkit (nvcc) for building extensions"
    if _described(snap):
        return _F("skip", title, "not described")
    nvcc = fact(snap, "toolkit.nvcc_version").get()
    home_v = fact(snap, "toolkit.cuda_home_version").get()
    if not nvcc and not home_v:
        return _F("ok", title, "no system CUDA toolkit: fine for running models (the PyTorch wheel brings its own "
                               "CUDA); needed only to build extensions from source")
    out = []
    if nvcc and home_v and facts.parse_cuda(nvcc) != facts.parse_cuda(home_v):
        out.append(_F("warn", title, f"nvcc on PATH is {nvcc} but /usr/local/cuda is {home_v} (matters only for "
                                     f"building extensions)",
                      "use one toolkit: export CUDA_HOME=/usr/local/cuda PATH=/usr/local/cuda/bin:$PATH",
                      nvcc=nvcc, cuda_home=home_v))
    tv = torch_view(snap)
    tk = nvcc or home_v
    if tv.cuda and tk and facts.parse_cuda(tk)[0] != facts.parse_cuda(tv.cuda)[0]:
        out.append(_F("warn", title, f"system CUDA {tk} and torch's CUDA {tv.cuda} differ in major version: building "
                                     f"CUDA extensions against this torch will fail (running models is unaffected)",
                      f"install a CUDA {facts.parse_cuda(tv.cuda)[0]}.x toolkit for builds, or prefer prebuilt wheels",
                      toolkit=tk, torch_cuda=tv.cuda))
    targets = facts.sm_targets(tk) if tk else None
    if targets and targets.get("sm"):
        for g in gpu_views(snap):
            if g.cc and g.cc not in targets["sm"]:
                out.append(_F("warn", title, f"nvcc {tk} cannot compile for GPU {g.index} {g.name} (sm_{g.cc.replace('.', '')}): "
                                             f"its targets are {', '.join(targets['sm'])} (building extensions only)",
                              "install a CUDA toolkit that lists this architecture", toolkit=tk, gpu=g.name,
                              compute_capability=g.cc, source=targets.get("source")))
    return out or _F("ok", title, f"system toolkit {tk}" + (f", matches torch's CUDA {tv.cuda} major" if tv.cuda else ""))


@check("PF112", "mig", "gpu", "MIG partitioning")
def mig(snap):
    """
    What it checks:
    Whether Multi-Instance GPU mode is enabled (or pending a reset) on any GPU.

    Why it matters:
    With MIG on, CUDA programs see MIG instances, each with a fraction of the memory and SMs;
    plain GPU indexes in CUDA_VISIBLE_DEVICES do not select instances and a model sized for the
    whole card does not fit one slice.

    Example:
    An A100 80GB split into 7 x 1g.10gb instances: each gets about 10 GB.

    Fix:
    Pick an instance with `CUDA_VISIBLE_DEVICES=MIG-<uuid>` (from `nvidia-smi -L`) and size the model
    to its memory, or ask the administrator for a larger profile / MIG disabled.

    Sources:
    https://docs.nvidia.com/datacenter/tesla/mig-user-guide/index.html
    """
    title = "MIG partitioning"
    out = []
    for g in gpu_views(snap):
        m = g.raw.get("mig_mode")
        mode = m.get() if m is not None else None
        if not isinstance(mode, dict):
            continue
        if mode.get("current"):
            out.append(_F("warn", title, f"GPU {g.index} {g.name} has MIG enabled: programs see MIG instances with a "
                                         f"fraction of its {gib(g.memory_total_bytes)}",
                          "select an instance with CUDA_VISIBLE_DEVICES=MIG-<uuid> (nvidia-smi -L)", gpu=g.name))
        elif mode.get("pending"):
            out.append(_F("warn", title, f"GPU {g.index} {g.name}: MIG mode change is pending a GPU reset",
                          "ask the administrator to reset the GPU", gpu=g.name))
    return out or _F("ok" if gpu_views(snap) else "skip", title, "MIG is off" if gpu_views(snap) else "no GPU seen")


@check("PF113", "ecc-health", "gpu", "GPU memory health")
def ecc_health(snap):
    """
    What it checks:
    Volatile uncorrectable ECC errors, retired pages pending a reset, and row-remapping state
    (pending / failure) of each GPU, through NVML.

    Why it matters:
    Uncorrectable errors crash jobs with "uncorrectable ECC error encountered"; a pending
    remap or retirement needs a GPU reset before the bad memory is isolated, and a remapping
    failure means the GPU should be serviced.

    Example:
    An A100 with remapped_rows.pending = true after an uncorrectable error.

    Fix:
    Drain the GPU and reset it (`nvidia-smi -r` by an administrator, or reboot); replace the
    GPU when row remapping fails.

    Sources:
    https://docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/index.html
    https://docs.nvidia.com/deploy/dynamic-page-retirement/index.html
    """
    title = "GPU memory health"
    out = []
    for g in gpu_views(snap):
        ev = {"gpu": g.name}
        rr = g.raw.get("remapped_rows").get() if g.raw.get("remapped_rows") else None
        unc = g.raw.get("ecc_uncorrected_volatile").get() if g.raw.get("ecc_uncorrected_volatile") else None
        pend = g.raw.get("retired_pages_pending").get() if g.raw.get("retired_pages_pending") else None
        if isinstance(rr, dict) and rr.get("failure"):
            out.append(_F("fail", title, f"GPU {g.index} {g.name}: row remapping failed", "have the GPU serviced", **ev))
        elif isinstance(rr, dict) and rr.get("pending"):
            out.append(_F("warn", title, f"GPU {g.index} {g.name}: a row remap is pending a GPU reset",
                          "reset the GPU (administrator) or reboot", **ev))
        if pend:
            out.append(_F("warn", title, f"GPU {g.index} {g.name}: retired pages pending a reset",
                          "reset the GPU (administrator) or reboot", **ev))
        if isinstance(unc, int) and unc > 0:
            out.append(_F("warn", title, f"GPU {g.index} {g.name}: {unc} uncorrectable ECC error(s) since the driver "
                                         f"loaded", "watch for Xid errors in `dmesg`; reset the GPU", **ev))
    if out:
        return out
    return _F("ok", title, "no ECC or remapping problems reported") if gpu_views(snap) and not _described(snap) \
        else _F("skip", title, "no GPU state to read")


@check("PF114", "gpu-memory-in-use", "gpu", "GPU memory already in use")
def gpu_memory_in_use(snap):
    """
    What it checks:
    Memory already used on each GPU and the processes holding it.

    Why it matters:
    Memory held by another job (or a forgotten notebook kernel) is not available to your model:
    an estimate that fits an empty card OOMs on a shared one.

    Example:
    A Jupyter kernel holding 18 GiB of a 24 GiB card.

    Fix:
    Stop the other processes (`nvidia-smi` lists them), or pick a free GPU with
    CUDA_VISIBLE_DEVICES.

    Sources:
    https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceQueries.html
    """
    title = "GPU memory already in use"
    out = []
    for g in gpu_views(snap):
        used = g.raw.get("memory_used_bytes").get() if g.raw.get("memory_used_bytes") else None
        procs = g.raw.get("processes").get() if g.raw.get("processes") else None
        total = g.memory_total_bytes
        if used is None or total is None:
            continue
        procs = procs or []
        ev = {"gpu": g.name, "used_bytes": used, "total_bytes": total, "processes": procs}
        if procs or used > max(GIB, 0.05 * total):
            pids = ", ".join(str(p["pid"]) for p in procs[:5]) or "not visible from here"
            out.append(_F("warn", title, f"GPU {g.index} {g.name}: {gib(used)} of {gib(total)} in use "
                                         f"(processes: {pids}); {gib(total - used)} free",
                          "stop those processes or choose another GPU with CUDA_VISIBLE_DEVICES", **ev))
        else:
            out.append(_F("ok", title, f"GPU {g.index} {g.name}: {gib(total - used)} free of {gib(total)}", **ev))
    return out or _F("skip", title, "no GPU memory state")


@check("PF115", "host-ram", "host", "Host RAM for loading weights")
def host_ram(snap):
    """
    What it checks:
    Host RAM against the memory of the largest GPU.

    Why it matters:
    Loaders stage weights in host memory on their way to the GPU; with less RAM than one GPU's
    worth of weights, loading a model that fills the GPU swaps or gets OOM-killed by the kernel
    before the GPU is ever full.

    Example:
    A 16 GB RAM VM with an 80 GB A100.

    Fix:
    Load with safetensors (memory-mapped) and `device_map="cuda"` / `low_cpu_mem_usage=True`,
    add swap, or use a machine with more RAM.

    Sources:
    https://huggingface.co/docs/accelerate/concept_guides/big_model_inference
    """
    title = "Host RAM for loading weights"
    ram = fact(snap, "host.ram_total_bytes").get()
    gpus = gpu_views(snap)
    mems = [g.memory_total_bytes for g in gpus if g.memory_total_bytes]
    if not ram or not mems:
        return _F("skip", title, "host RAM or GPU memory unknown")
    biggest = max(mems)
    ev = {"ram_total_bytes": ram, "largest_gpu_bytes": biggest}
    if ram < biggest:
        return _F("warn", title, f"host RAM {gib(ram)} is less than one GPU's memory ({gib(biggest)}): loading a model "
                                 f"that fills the GPU can run out of host memory",
                  "load safetensors with device_map=\"cuda\" (streams to the GPU), or add RAM/swap", **ev)
    return _F("ok", title, f"host RAM {gib(ram)} >= largest GPU {gib(biggest)}", **ev)


@check("PF116", "container-gpu-access", "environment", "Container GPU access")
def container_gpu_access(snap):
    """
    What it checks:
    Inside a container: whether the NVIDIA device files and driver libraries were passed in, and
    whether NVIDIA_VISIBLE_DEVICES hides the GPUs.

    Why it matters:
    A container started without `--gpus` has no /dev/nvidia* and no libnvidia-ml; everything
    looks like a machine without a GPU even though the host has one.

    Example:
    `docker run pytorch/pytorch python -c "import torch; print(torch.cuda.is_available())"` prints False.

    Fix:
    Install the NVIDIA Container Toolkit on the host and run with `docker run --gpus all ...`
    (Kubernetes: request nvidia.com/gpu resources).

    Sources:
    https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/docker-specialized.html
    """
    title = "Container GPU access"
    rt = fact(snap, "container.runtime").get()
    if not rt:
        return _F("skip", title, "not in a container")
    nvd = fact(snap, "env.NVIDIA_VISIBLE_DEVICES").get()
    nodes = fact(snap, "container.nvidia_device_nodes").get([]) or []
    nvml_ok = fact(snap, "nvml.available").get(False)
    if nvd is not None and nvd.strip().lower() in ("", "void", "none"):
        return _F("warn", title, f"in a {rt} container with NVIDIA_VISIBLE_DEVICES={nvd!r}: no GPU is exposed",
                  "run with --gpus all (or NVIDIA_VISIBLE_DEVICES=all)", runtime=rt)
    if not nodes and not nvml_ok:
        expects = [v for v in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VERSION", "NVIDIA_REQUIRE_CUDA")
                   if fact(snap, f"env.{v}").get() is not None]
        fix = "start the container with `docker run --gpus all ...` (NVIDIA Container Toolkit on the host)"
        if expects:
            return _F("fail", title, f"in a {rt} container built for GPUs ({', '.join(expects)} set) but started "
                                     f"without NVIDIA device files (/dev/nvidia*) or driver libraries", fix, runtime=rt)
        return _F("warn", title, f"in a {rt} container with no GPU passed in (no /dev/nvidia*, no driver libraries); "
                                 f"fine for CPU work", "if the host has a GPU: " + fix, runtime=rt)
    return _F("ok", title, f"in a {rt} container with GPU access", runtime=rt)


@check("PF117", "torch-runtime", "torch", "PyTorch on the GPU (live test)")
def torch_runtime(snap):
    """
    What it checks:
    With --deep only: imports torch in a child process, calls torch.cuda.is_available(), and runs
    a small matrix product per dtype (fp32, tf32, fp16, bf16) on each GPU against a float64 CPU
    reference; records the warnings torch printed.

    Why it matters:
    It is the ground truth the static checks predict: it catches what tables cannot (a broken
    install, a wedged GPU, a library that fails to load).

    Example:
    is_available() False with "CUDA initialization: The NVIDIA driver on your system is too old".

    Fix:
    Follow the failing static check's fix (PF103/PF104/PF105); reinstall torch with its
    dependencies if import fails.

    Sources:
    https://pytorch.org/docs/stable/cuda.html
    """
    title = "PyTorch on the GPU (live test)"
    res = fact(snap, "torch_deep.result")
    if "torch_deep" not in snap:
        return _F("skip", title, "not run (use `preflight doctor --deep`)")
    if not res.ok:
        if not fact(snap, "torch.installed").get(False) and "No module named 'torch'" in (res.unavailable or ""):
            return _F("skip", title, "PyTorch is not installed in this environment (see PF105 for the install command)")
        return _F("fail", title, res.unavailable or "torch probe failed", "run `python -c \"import torch\"` to see the error")
    data = res.value
    warns = data.get("warnings") or []
    avail = (data.get("is_available") or {}).get("value")
    gpus = gpu_views(snap)
    if not avail:
        return _F("fail" if gpus else "ok", title,
                  "torch.cuda.is_available() is False" + (f": {warns[0]}" if warns else ""),
                  "see the failing checks above" if gpus else None, warnings=warns)
    out = []
    for dev in data.get("devices") or []:
        smoke = (dev.get("smoke") or {}).get("value") or {}
        bad = {k: v for k, v in smoke.items() if not v.get("ok")}
        cap = (dev.get("capability") or {}).get("value")
        if cap and facts.parse_cc(cap) < (8, 0):
            bad.pop("bf16", None)  # emulated or unsupported: PF106 reports it
            bad.pop("tf32", None)
        name = (dev.get("name") or {}).get("value")
        if bad:
            detail = "; ".join(f"{k}: {v.get('error') or 'rel_error %.2g' % v.get('rel_error', float('nan'))}"
                               for k, v in bad.items())
            out.append(_F("fail", title, f"GPU {dev['index']} {name}: {detail}", "check dmesg for Xid errors", smoke=smoke))
        else:
            out.append(_F("ok", title, f"GPU {dev['index']} {name}: {', '.join(smoke)} matmuls correct "
                                       f"(torch {data.get('version')}, cuDNN {cudnn_text((data.get('cudnn_version') or {}).get('value'))})",
                          smoke=smoke))
    return out or _F("ok", title, "torch sees the GPU")


def cudnn_text(value) -> str:
    """torch.backends.cudnn.version(): 91900 -> '9.19.0' (cuDNN 9 encodes M*10000 + m*100 + p;
    cuDNN 8 M*1000 + m*100 + p, e.g. 8902 -> '8.9.2')."""
    if not isinstance(value, int) or value <= 0:
        return str(value)
    if value >= 90000:
        return f"{value // 10000}.{value % 10000 // 100}.{value % 100}"
    return f"{value // 1000}.{value % 1000 // 100}.{value % 100}"


@check("PF118", "python-vs-torch", "torch", "Python version for PyTorch")
def python_vs_torch(snap):
    """
    What it checks:
    The Python version against the versions the PyTorch release ships wheels for.

    Why it matters:
    pip cannot install a release for an unsupported Python and silently picks an older release,
    which may not support the GPU or driver.

    Example:
    Python 3.8 with `pip install torch==2.5.1` (needs 3.9+).

    Fix:
    Use a supported Python (a fresh virtualenv), or the release range that supports yours.

    Sources:
    https://github.com/pytorch/pytorch/blob/main/RELEASE.md
    """
    title = "Python version for PyTorch"
    py = _python(snap)
    tv = torch_view(snap)
    if not py or not tv.installed or not tv.release or not tv.release.get("python"):
        return _F("skip", title, "Python or PyTorch release not known")
    from packaging.specifiers import SpecifierSet

    spec = tv.release["python"]
    if SpecifierSet(spec).contains(py, prereleases=True):
        return _F("ok", title, f"Python {py} is supported by torch {tv.version} ({spec})")
    return _F("warn", title, f"Python {py} is outside torch {tv.version}'s supported range {spec}",
              f"create a virtualenv with a Python matching {spec}", python=py, supported=spec)


@check("PF119", "gpu-driver-support", "driver", "Driver knows the GPU")
def gpu_driver_support(snap):
    """
    What it checks:
    The driver against the minimum driver an official NVIDIA page states for the GPU, else the
    first driver branch of its architecture: the Table 3 driver branch of the first CUDA toolkit
    that compiles for its compute capability (Blackwell R570, Hopper and Ada R520, Ampere R450/R455,
    Turing R410, ...), so every GPU in the catalog has a floor.

    Why it matters:
    A driver older than the GPU does not initialize it at all; nvidia-smi may not list it and
    CUDA reports no device.

    Example:
    RTX 5090 with driver 550.

    Fix:
    Install a driver at or above the GPU's minimum from nvidia.com or your distribution.

    Sources:
    https://docs.nvidia.com/deeplearning/cudnn/latest/reference/support-matrix.html
    https://developer.nvidia.com/cuda-gpus
    https://docs.nvidia.com/cuda/archive/13.2.2/cuda-toolkit-release-notes/index.html
    """
    title = "Driver knows the GPU"
    drv = driver_version(snap)
    out = []
    for g in gpu_views(snap):
        need, src = facts.gpu_min_driver(g.catalog) if g.catalog else (None, None)
        if not need or not drv:
            continue
        stated = bool((g.catalog or {}).get("min_driver_linux"))
        kind = "its stated minimum" if stated else f"the first driver branch for {g.catalog['architecture']} " \
                                                  f"(CC {g.cc})"
        if facts.driver_ge(drv, need):
            out.append(_F("ok", title, f"GPU {g.index} {g.name}: driver {drv} >= {need} ({kind})", source=src))
        else:
            out.append(_F("fail", title, f"GPU {g.index} {g.name} needs driver >= {need} ({kind}); installed {drv}: "
                                         f"the driver cannot drive this GPU",
                          f"install NVIDIA driver {need} or newer: {NVIDIA_DOWNLOAD}", gpu=g.name, needed=need,
                          source=src))
    return out or _F("skip", title, "no stated minimum driver for these GPUs")
