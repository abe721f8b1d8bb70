"""Platform checks PF120-PF127: Jetson, kernel-module flavour, Triton's minimum GPU, glibc vs the
wheel's manylinux tag, extension wheels vs torch, CUDA base images vs the host driver, WSL /
Windows / aarch64, conda builds. Pure functions of the snapshot and the fact tables."""

from __future__ import annotations

import re

from gpu_preflight.checks import Finding, check
from gpu_preflight.checks.context import driver_version, gpu_views, jetpack_of, platform_of, torch_view
from gpu_preflight.compatibility import facts
from gpu_preflight.compatibility.rules import driver_for_cuda
from gpu_preflight.snapshots.schema import fact

BLACKWELL_OPEN_URL = "https://developer.nvidia.com/blog/nvidia-transitions-fully-towards-open-source-gpu-kernel-modules/"


def _F(status, title, message, fix=None, **evidence):  # noqa: N802
    return Finding("", status, title, message, fix, evidence)


def _described(snap) -> bool:
    return snap.get("origin") == "described"


@check("PF120", "jetson-stack", "torch", "Jetson: JetPack and its PyTorch wheel")
def jetson_stack(snap):
    """
    What it checks:
    On a Jetson (Jetson Linux / L4T from /etc/nv_tegra_release, or --platform jetson): which JetPack
    it runs, its CUDA, and whether the installed PyTorch is a build for it: NVIDIA's Jetson wheel
    for that JetPack (version like 2.5.0a0+872d972e41.nv24.08), or on JetPack 7 an SBSA wheel.

    Why it matters:
    Before JetPack 7 a Jetson has no usable CUDA with PyPI's torch: the aarch64 PyPI wheels are
    CPU-only (torch <= 2.10) or built for desktop/SBSA GPUs, and NVIDIA's binary compatibility does
    not extend from desktop GPUs to Tegra (a sm_80/sm_86 cubin does not run on Orin's 8.7), so
    torch.cuda.is_available() is False or kernels fail with "no kernel image is available".

    Example:
    Jetson AGX Orin on JetPack 6.1 (L4T 36.4, CUDA 12.6) with torch installed from PyPI.

    Fix:
    Install NVIDIA's wheel for the JetPack (e.g. JetPack 6.1/6.2: torch 2.5.0a0+872d972e41.nv24.08
    from developer.download.nvidia.com/compute/redist/jp/v61/pytorch, or the jp6/cu126 index), or
    move to JetPack 7.2 (CUDA 13.2), where SBSA wheels built with CUDA >= 13.2 run on Orin.

    Sources:
    https://forums.developer.nvidia.com/t/pytorch-for-jetson/72048
    https://developer.nvidia.com/embedded/jetpack-archive
    https://pypi.org/project/torch/2.13.0/
    https://nvidia.github.io/TensorRT-Edge-LLM/0.10.1/user_guide/getting_started/support-matrix.html
    """
    title = "Jetson: JetPack and its PyTorch wheel"
    if platform_of(snap) != "jetson":
        return _F("skip", title, "not a Jetson")
    jp = jetpack_of(snap)
    l4t = fact(snap, "platform.l4t").get()
    if jp is None:
        return _F("warn", title, f"a Jetson with an unknown JetPack (L4T {l4t or '?'}): the CUDA version and the "
                                 f"matching PyTorch wheel cannot be told", "pass --jetpack X.Y (compat) or check "
                                 "`cat /etc/nv_tegra_release`", l4t=l4t)
    head = f"JetPack {jp['jetpack']} (L4T {l4t or '/'.join(jp['l4t'])}, CUDA {jp['cuda']})"
    tv = torch_view(snap)
    ev = {"jetpack": jp["jetpack"], "cuda": jp["cuda"], "source": jp["source"]}
    if not tv.installed:
        return _F("ok", title, f"{head}; PyTorch not installed", **ev)
    if tv.local and facts.is_jetson_local(tv.local):
        names = [w["torch"] for w in jp["torch_wheels"]]
        if any(w.endswith("+" + tv.local) or w.endswith("." + tv.local) for w in names) or not names:
            return _F("ok", title, f"{head}; torch {tv.version}+{tv.local} is NVIDIA's Jetson build", **ev)
        return _F("warn", title, f"{head}; torch {tv.version}+{tv.local} is a Jetson build, but not the one listed for "
                                 f"this JetPack ({', '.join(names)}): it may be built for another CUDA",
                  f"install the wheel for JetPack {jp['jetpack']}: {names[-1]}", **ev)
    if jp.get("sbsa"):
        return _F("ok", title, f"{head}: an SBSA platform; the PyPI aarch64 wheel's architectures decide (PF104)", **ev)
    kind = "a CPU-only build" if tv.variant == "cpu" or not tv.cuda else f"a desktop/SBSA build ({tv.variant})"
    return _F("fail", title, f"{head}; torch {tv.version} is {kind}, not NVIDIA's Jetson wheel: PyPI wheels have no "
                             f"kernels for Tegra before JetPack 7, so CUDA is unusable",
              f"pip uninstall torch && install NVIDIA's wheel for JetPack {jp['jetpack']}"
              + (f": {jp['torch_wheels'][-1]['torch']} ({jp['torch_wheels'][-1]['url']})" if jp["torch_wheels"] else
                 " (https://forums.developer.nvidia.com/t/pytorch-for-jetson/72048)"), **ev)


@check("PF121", "kernel-module-flavor", "driver", "Open or proprietary kernel module")
def kernel_module_flavor(snap):
    """
    What it checks:
    Which flavour of NVIDIA kernel module is loaded ("Open Kernel Module" in
    /proc/driver/nvidia/version, or the proprietary taint flag "P" in /sys/module/nvidia/taint)
    against the GPUs: Blackwell and Grace Hopper need the open modules; Maxwell, Pascal and Volta
    work only with the proprietary ones.

    Why it matters:
    With the proprietary module a Blackwell GPU (RTX 50, B200, RTX PRO 6000) is not initialized:
    nvidia-smi reports no device and CUDA finds none. The open modules cannot drive pre-Turing
    GPUs (they need the GSP introduced with Turing).

    Example:
    An RTX 5090 with the proprietary 570 driver (nvidia-driver-570 instead of nvidia-driver-570-open).

    Fix:
    Install the -open flavour of the same driver branch (e.g. `apt install nvidia-driver-570-open`,
    or the runfile's `-m=kernel-open`); for pre-Turing GPUs install the proprietary flavour.

    Sources:
    https://developer.nvidia.com/blog/nvidia-transitions-fully-towards-open-source-gpu-kernel-modules/
    https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/kernel-modules.html
    """
    title = "Open or proprietary kernel module"
    flavor = fact(snap, "kernel_module.flavor").get()
    gpus = [g for g in gpu_views(snap) if g.catalog or g.cc]
    if not flavor or not gpus:
        return _F("skip", title, "kernel module flavour or GPUs unknown")
    out = []
    for g in gpus:
        arch = (g.catalog or {}).get("architecture", "")
        name = g.name or arch
        needs_open = arch == "Blackwell" or (g.catalog or {}).get("id", "").startswith(("gh200", "gb200", "gb300"))
        pre_turing = bool(g.cc) and facts.parse_cc(g.cc) < (7, 5)
        if needs_open and flavor == "proprietary":
            out.append(_F("fail", title, f"GPU {g.index} {name} ({arch}) needs NVIDIA's open kernel modules; the loaded "
                                         f"module is proprietary, which does not support it", "install the -open flavour "
                                         "of your driver branch (e.g. nvidia-driver-570-open) and reboot",
                          gpu=name, flavor=flavor, source=BLACKWELL_OPEN_URL))
        elif pre_turing and flavor == "open":
            out.append(_F("fail", title, f"GPU {g.index} {name} (CC {g.cc}) is older than Turing; the open kernel "
                                         f"modules cannot drive it", "install the proprietary flavour of the driver",
                          gpu=name, flavor=flavor))
    return out or _F("ok", title, f"{flavor} kernel module; it supports these GPUs", flavor=flavor)


@check("PF122", "triton-min-cc", "gpu", "torch.compile / Triton on this GPU")
def triton_min_cc(snap):
    """
    What it checks:
    Each GPU's compute capability against the minimum of torch.compile's default backend
    (Inductor generates Triton kernels): compute capability 7.0.

    Why it matters:
    On older GPUs torch.compile stops with "Found <GPU> which is too old to be supported by the
    triton GPU compiler, which is used as the backend. Triton only supports devices of CUDA
    Capability >= 7.0" - eager PyTorch still works.

    Example:
    torch.compile(model) on a Tesla P100 (6.0) or GTX 1080 (6.1).

    Fix:
    Run without torch.compile (eager), or use `torch.compile(backend="eager")` / "aot_eager" for
    debugging; compiled kernels need a Volta (7.0) or newer GPU.

    Sources:
    https://pypi.org/project/torch/2.13.0/
    https://pytorch.org/docs/stable/torch.compiler.html
    """
    title = "torch.compile / Triton on this GPU"
    gpus = [g for g in gpu_views(snap) if g.cc]
    if not gpus:
        return _F("skip", title, "no GPU seen")
    old = [g for g in gpus if facts.parse_cc(g.cc) < (7, 0)]
    if not old:
        return _F("ok", title, "every GPU meets Triton's minimum compute capability 7.0")
    g = old[0]
    return _F("warn", title, f"GPU {g.index} {g.name} ({g.cc}) is below Triton's minimum 7.0: torch.compile fails "
                             f"(\"too old to be supported by the triton GPU compiler\"); eager mode works",
              "run without torch.compile, or with backend=\"eager\"", gpu=g.name, compute_capability=g.cc,
              source="torch/_inductor/exc.py of torch 2.13.0")


@check("PF123", "glibc-wheel-tag", "host", "glibc vs PyTorch's manylinux wheels")
def glibc_wheel_tag(snap):
    """
    What it checks:
    The C library (glibc) version against the manylinux tag of PyTorch's Linux wheels: torch 2.7 and
    newer are manylinux_2_28 on x86_64 (2.6 and newer on aarch64), i.e. they need glibc 2.28+.

    Why it matters:
    pip skips wheels whose manylinux tag the system does not satisfy and silently installs the
    newest release that still has a compatible wheel (torch 2.6.0 on x86_64 with glibc 2.27), which
    may lack kernels for a new GPU or need another driver.

    Example:
    Ubuntu 18.04 (glibc 2.27) or CentOS 7 (glibc 2.17): installing torch from PyPI gives 2.6.0.

    Fix:
    Use a newer distribution or a container with glibc >= 2.28 (e.g. Ubuntu 20.04+), or pin a
    release whose wheels fit and check it covers your GPU.

    Sources:
    https://pypi.org/project/torch/#files
    https://peps.python.org/pep-0600/
    """
    title = "glibc vs PyTorch's manylinux wheels"
    plat = platform_of(snap)
    glibc = fact(snap, "platform.glibc").get()
    if plat in ("windows", "jetson") or not glibc:
        return _F("skip", title, "not a glibc Linux platform, or glibc unknown")
    have = facts.parse_glibc(glibc)
    newest = facts.torch_releases()[0]
    need_s = (facts.release_wheels(newest, plat) or {}).get("glibc")
    if not need_s or have >= facts.parse_glibc(need_s):
        return _F("ok", title, f"glibc {glibc} meets the newest torch wheels (glibc {need_s or '?'})", glibc=glibc)
    fit = next((r for r in facts.torch_releases() if (w := facts.release_wheels(r, plat)) and w.get("glibc")
                and have >= facts.parse_glibc(w["glibc"])), None)
    last = fit.get("latest_patch") if fit else None
    return _F("warn", title, f"glibc {glibc} is older than {need_s}, which torch {newest['latest_patch']}'s "
                             f"{(facts.release_wheels(newest, plat) or {}).get('tag')} wheels need: pip silently installs "
                             + (f"torch {last}, the newest release with a compatible wheel" if last else
                                "no torch at all"),
              "use a distribution or container with glibc >= " + need_s, glibc=glibc, needed=need_s, fallback=last)


@check("PF124", "extension-wheels", "libraries", "Extension wheels vs the installed torch")
def extension_wheels(snap):
    """
    What it checks:
    Installed packages with compiled PyTorch extensions (torchvision, torchaudio, xformers, vLLM,
    torch-tensorrt, flash-attn, bitsandbytes) against the installed torch: the exact torch version
    their metadata pins (Requires-Dist: torch==X), the torch/CUDA a flash-attn wheel was built for
    (its local version), and with --deep whether each one imports.

    Why it matters:
    An extension built for another torch fails at import with "undefined symbol" (C++ ABI) or
    "operator torchvision::nms does not exist"; one built for another CUDA major fails with
    "libcudart.so.12: cannot open shared object file".

    Example:
    torch 2.11.0 upgraded under torchvision 0.24.1 (which pins torch==2.9.1).

    Fix:
    Install the extension release built for your torch (torchvision from the same cuXXX index,
    together with torch), or reinstall torch at the version the extension pins.

    Sources:
    https://pypi.org/project/torchvision/0.24.1/
    https://pypi.org/project/xformers/0.0.33/
    https://github.com/Dao-AILab/flash-attention#installation-and-features
    """
    title = "Extension wheels vs the installed torch"
    exts = fact(snap, "extensions.installed").get() or {}
    tv = torch_view(snap)
    if not exts or not tv.installed:
        return _F("skip", title, "no extension packages (or no torch) installed")
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    out = []
    for name, info in sorted(exts.items()):
        if name == "triton":
            continue
        for req in info.get("torch_requirement") or []:
            try:
                ok = SpecifierSet(req).contains(tv.version, prereleases=True)
            except InvalidSpecifier:
                continue
            if not ok:
                out.append(_F("fail", title, f"{name} {info['version']} requires torch{req}, installed torch is "
                                             f"{tv.version}: import fails (\"undefined symbol\" / missing operators)",
                              f"install the {name} release built for torch {tv.version} (same index as torch), "
                              f"or torch{req}", package=name, requires=req, torch=tv.version))
        m = re.search(r"\+cu(\d+)torch(\d+\.\d+)", info.get("version") or "")
        if m and not tv.version.startswith(m.group(2) + "."):
            out.append(_F("fail", title, f"{name} {info['version']} was built for torch {m.group(2)}, installed torch "
                                         f"is {tv.version}", f"install the {name} wheel built for torch {tv.version}",
                          package=name))
        if m and tv.cuda and m.group(1)[:2] != tv.cuda.split(".")[0]:
            out.append(_F("fail", title, f"{name} {info['version']} was built for CUDA {m.group(1)}, torch uses CUDA "
                                         f"{tv.cuda}", f"install the {name} wheel built for CUDA {tv.cuda}", package=name))
    deep = (fact(snap, "torch_deep.result").get() or {}).get("extensions") or {}
    for name, res in sorted(deep.items()):
        if isinstance(res, dict) and res.get("error"):
            out.append(_F("fail", title, f"import {name} failed: {res['error'][:200]}",
                          f"reinstall {name} for torch {tv.version}", package=name))
    if out:
        return out
    return _F("ok", title, "extensions match torch " + tv.version + ": " +
              ", ".join(f"{n} {i['version']}" for n, i in sorted(exts.items())))


def _image_cuda(snap) -> str | None:
    v = fact(snap, "image.cuda_version").get() or fact(snap, "env.CUDA_VERSION").get()
    m = re.match(r"(\d+\.\d+)", str(v or ""))
    return m.group(1) if m else None


@check("PF125", "image-cuda-vs-driver", "environment", "Container image CUDA vs the host driver")
def image_cuda_vs_driver(snap):
    """
    What it checks:
    A CUDA base image's CUDA version (CUDA_VERSION / NVIDIA_REQUIRE_CUDA of nvidia/cuda images, or
    `compat --image nvidia/cuda:12.8.0-runtime-ubuntu22.04`) against the host driver, and whether
    the image carries the forward-compatibility libraries (/usr/local/cuda/compat) that let a newer
    CUDA run on an older data-center driver.

    Why it matters:
    The container uses the host's kernel driver. An image whose CUDA needs a newer driver family
    fails at start ("nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.8")
    or at cuInit (error 35), unless forward compatibility applies (data-center GPUs, supported
    branches, compat package present).

    Example:
    nvidia/cuda:12.8.0-runtime-ubuntu22.04 on a host with driver 535.54.03: minor-version
    compatibility (12.x floor 525.60.13) runs it with a limited feature set.

    Fix:
    Upgrade the host driver to the image CUDA's driver, pick an image with an older CUDA, or on
    data-center GPUs use the image's cuda-compat package (forward compatibility).

    Sources:
    https://docs.nvidia.com/deploy/cuda-compatibility/forward-compatibility.html
    https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html
    https://hub.docker.com/r/nvidia/cuda
    """
    title = "Container image CUDA vs the host driver"
    cuda = _image_cuda(snap)
    drv = driver_version(snap) or fact(snap, "kernel_module.version").get()
    if not cuda:
        return _F("skip", title, "no CUDA base image (CUDA_VERSION not set)")
    if not drv:
        return _F("skip", title, f"image CUDA {cuda}; host driver unknown")
    v = driver_for_cuda(drv, cuda, facts.driver_os(platform_of(snap)))
    compat_f = fact(snap, "image.compat_libcuda")
    compat = compat_f.get() or []
    ev = {"image_cuda": cuda, "driver": drv, "compat_libcuda": compat}
    if v.status != "fail":
        return _F("ok" if v.status == "ok" else "warn", title, f"image CUDA {cuda}: {v.message}",
                  None if v.status == "ok" else f"upgrade the host driver to >= {v.full} for the full feature set", **ev)
    branch = str(facts.parse_driver(drv)[0])
    pkg = next((r for r in facts.table("cuda")["forward_compat"] if facts.parse_cuda(r["cuda"]) == facts.parse_cuda(cuda)), None)
    segs = {(g.catalog or {}).get("segment") for g in gpu_views(snap)}
    fc_ok = pkg is not None and branch in pkg["supported_branches"] and segs and segs <= {"datacenter", "jetson"}
    if fc_ok and compat:
        return _F("ok", title, f"image CUDA {cuda} needs a newer driver family than {drv}, but the image carries "
                               f"{pkg['package']} libraries and R{branch} on data-center GPUs is a supported forward-"
                               f"compatibility target", **ev)
    if fc_ok and not compat_f.ok:
        return _F("warn", title, f"image CUDA {cuda} needs a newer driver family than {drv}; it runs only through "
                                 f"forward compatibility: {pkg['package']} in the image (nvidia/cuda images ship it "
                                 f"under /usr/local/cuda/compat), a data-center GPU and a supported branch (R{branch})",
                  "if CUDA fails with error 803/804, upgrade the host driver", **ev)
    if fc_ok:
        return _F("fail", title, f"image CUDA {cuda}: {v.message}; forward compatibility would work here (R{branch}, "
                                 f"data-center GPU) but the image has no cuda-compat libraries",
                  f"install {pkg['package']} in the image and add /usr/local/cuda/compat to LD_LIBRARY_PATH, or "
                  f"upgrade the host driver", **ev)
    return _F("fail", title, f"image CUDA {cuda}: {v.message}", f"upgrade the host driver to >= {v.full or v.floor}, "
                                                                 f"or use an image with CUDA the driver supports", **ev)


@check("PF126", "platform", "host", "Platform (Linux, aarch64, Jetson, WSL, Windows)")
def platform_check(snap):
    """
    What it checks:
    The platform and what it changes: Windows (PyPI's torch wheels are CPU-only; CUDA builds come
    from download.pytorch.org; driver numbers are Windows ones), WSL2 (the Windows driver serves
    CUDA through /usr/lib/wsl/lib; a Linux driver must not be installed inside WSL), Linux aarch64
    (PyPI has CUDA wheels for aarch64 only from torch 2.11; GH200/GB200/DGX Spark use SBSA builds
    with their own arch lists) and Jetson.

    Why it matters:
    Advice written for x86_64 Linux PyPI wheels is wrong elsewhere: PyPI's torch is a CPU build on
    Windows and on aarch64 before 2.11, and a Linux driver inside WSL breaks CUDA.

    Example:
    WSL2 with libcuda.so.1 from a Linux driver package in /usr/lib/x86_64-linux-gnu.

    Fix:
    Windows: install torch from a CUDA index (`--index-url https://download.pytorch.org/whl/cu128`);
    WSL: remove Linux NVIDIA driver packages inside WSL and keep the Windows driver up to date;
    aarch64: torch >= 2.11 from PyPI, or a cuXXX index that publishes aarch64 wheels.

    Sources:
    https://docs.nvidia.com/cuda/wsl-user-guide/index.html
    https://pypi.org/project/torch/#files
    https://github.com/pytorch/pytorch/blob/main/RELEASE.md
    """
    title = "Platform (Linux, aarch64, Jetson, WSL, Windows)"
    plat = platform_of(snap)
    tv = torch_view(snap)
    if plat == "wsl":
        libs = [f for f in (fact(snap, "user_space.libcuda_files").get([]) or []) if f.get("dir") != "/usr/lib/wsl/lib"]
        if libs:
            return _F("fail", title, f"WSL2 with a Linux libcuda in {libs[0]['dir']} ({libs[0]['version']}): a Linux "
                                     f"NVIDIA driver inside WSL shadows the Windows driver's /usr/lib/wsl/lib/libcuda",
                      "remove the Linux NVIDIA driver packages inside WSL (keep only the Windows driver)", libs=libs)
        return _F("ok", title, "WSL2: CUDA comes from the Windows driver (/usr/lib/wsl/lib); driver versions are "
                               "Windows numbers")
    if plat == "windows":
        if tv.installed and tv.variant == "cpu":
            return _F("warn", title, "Windows: the installed torch is CPU-only (PyPI's Windows wheels have no CUDA)",
                      facts.index_install_command("cu128") + "   (or the variant PF105 names)")
        return _F("ok", title, "Windows: CUDA builds of torch come from download.pytorch.org, not PyPI")
    if plat == "linux-aarch64":
        if tv.installed and tv.variant == "cpu" and gpu_views(snap):
            return _F("warn", title, f"Linux aarch64 (SBSA) with a CPU-only torch {tv.version}: PyPI's aarch64 wheels "
                                     f"before 2.11 are CPU-only", facts.index_install_command(None, "torch>=2.11") + "   (CUDA 13.0 aarch64 "
                                                                 "wheels on PyPI), or a cuXXX index with aarch64 builds")
        return _F("ok", title, "Linux aarch64 (SBSA): arch lists of aarch64 builds apply (8.0, 9.0, 10.0, 11.0, 12.0)")
    if plat == "jetson":
        return _F("ok", title, "Jetson: see PF120")
    return _F("ok", title, "Linux x86_64")


@check("PF127", "conda-torch", "torch", "PyTorch from conda")
def conda_torch(snap):
    """
    What it checks:
    Whether torch was installed by conda (conda-meta/pytorch-*.json in the environment) and from
    which channel and build (e.g. pytorch channel `py3.11_cuda12.1_cudnn8.9.2_0`, conda-forge
    `cuda126_...`), since conda builds have their own CUDA libraries and arch lists.

    Why it matters:
    The fact tables describe the pip wheels; a conda build's architectures can differ (judge it
    with `preflight doctor --deep`, which reads torch.cuda.get_arch_list()). The pytorch channel
    stopped publishing after 2.5, and mixing pip and conda installs of torch breaks imports.

    Example:
    `conda install pytorch pytorch-cuda=12.1 -c pytorch -c nvidia` (torch 2.5.1, CUDA 12.1).

    Fix:
    Run `preflight doctor --deep` for the real arch list; for newer torch use conda-forge's builds or
    pip inside the conda environment (not both at once).

    Sources:
    https://github.com/pytorch/pytorch/issues/138506
    https://conda-forge.org/docs/user/tipsandtricks/#installing-cuda-enabled-packages-like-tensorflow-and-pytorch
    """
    title = "PyTorch from conda"
    pkg = fact(snap, "conda.torch_package").get()
    if not pkg:
        return _F("skip", title, "torch is not a conda package here")
    tv = torch_view(snap)
    deep = "torch_deep" in snap
    ch = pkg.get("channel") or "?"
    msg = f"torch {pkg.get('version')} from conda ({ch}, build {pkg.get('build')})"
    if tv.installed and fact(snap, "torch.nvidia_packages").get():
        return _F("warn", title, msg + " and pip's nvidia-* packages are both present: two CUDA stacks in one env",
                  "keep one installer: remove the pip torch (pip uninstall torch) or the conda one", **pkg)
    if not deep:
        return _F("warn", title, msg + ": its compiled architectures are not in the wheel tables",
                  "run `preflight doctor --deep` to read them from torch", **pkg)
    return _F("ok", title, msg + "; architectures read with --deep", **pkg)
