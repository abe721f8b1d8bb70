"""Compatibility rules as pure functions of versions; shared by the checks and the recommender.

Rules and where they come from:
- A CUDA application runs on a driver at or above its CUDA major's minor-version-compatibility
  floor, with a limited feature set below the toolkit's own driver (no PTX JIT of newer PTX,
  newer-driver APIs fail): NVIDIA CUDA Compatibility guide, "Minor Version Compatibility".
- A cubin for compute capability X.y runs on X.z with z >= y, never across majors; `a` targets
  run only on that exact capability; PTX is JIT-compiled for the same or newer capability:
  NVIDIA Blackwell/Hopper compatibility guides, "Application Compatibility".
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_preflight.compatibility import facts

COMPAT_URL = "https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html"
BINARY_URL = "https://docs.nvidia.com/cuda/blackwell-compatibility-guide/index.html"


@dataclass
class Verdict:
    status: str  # ok | warn | fail | unknown
    message: str
    floor: str | None = None
    full: str | None = None


def driver_for_cuda(driver: str, cuda: str, os_name: str = "linux") -> Verdict:
    """Can this driver run a CUDA `cuda` (e.g. '12.8') application? `os_name` 'windows' reads the
    Windows columns (Windows and WSL report the Windows driver's version numbers)."""
    major, _minor = facts.parse_cuda(cuda)
    fam = facts.cuda_family(major)
    full, _row = facts.toolkit_driver(cuda, os_name)
    if fam is None:
        return Verdict("unknown", f"no minor-version-compatibility floor is known for CUDA {major}.x")
    floor = fam.get(f"{os_name}_floor") or fam.get("linux_floor")
    floor_txt = f"R{floor.split('.')[0]} (any {floor.split('.')[0]}.x driver)" if fam.get("floor_is_branch") else floor
    if floor and not facts.driver_ge(driver, floor):
        return Verdict("fail", f"driver {driver} is below {floor_txt}, the lowest driver that runs any CUDA "
                               f"{major}.x application: CUDA cannot initialize (error 35, \"CUDA driver version "
                               f"is insufficient for CUDA runtime version\")", floor, full)
    if full is None and os_name == "windows" and major >= 13:
        return Verdict("ok", f"driver {driver} is in the R{floor.split('.')[0]}+ range that runs every CUDA {major}.x "
                             f"application (Windows drivers have no per-release number for {major}.x)", floor, None)
    if full is None:
        max_cuda = facts.driver_max_cuda(driver)
        if max_cuda and facts.parse_cuda(max_cuda) >= (major, _minor):
            return Verdict("ok", f"driver {driver} supports CUDA {max_cuda} >= {cuda}", floor, None)
        return Verdict("warn", f"driver {driver} runs CUDA {major}.x applications (floor {floor}); the exact "
                               f"driver for CUDA {cuda}'s full feature set is not in the tables", floor, None)
    if facts.driver_ge(driver, full):
        return Verdict("ok", f"driver {driver} meets CUDA {cuda}'s driver {full}", floor, full)
    return Verdict("warn", f"driver {driver} is between the CUDA {major}.x floor ({floor}) and CUDA {cuda}'s "
                           f"driver ({full}): it runs through minor-version compatibility, so precompiled "
                           f"kernels (SASS) work, but PTX built by CUDA {cuda} cannot be JIT-compiled "
                           f"(error 222, \"the provided PTX was compiled with an unsupported toolchain\") "
                           f"and APIs that need a newer driver fail (error 36)", floor, full)


def _cc_tuple(cc: str) -> tuple[int, int, str]:
    base = cc.rstrip("af")
    major, minor = facts.parse_cc(base)
    return major, minor, cc[len(base):]


TEGRA_URL = "https://pypi.org/project/torch/2.13.0/"


def tegra_sbsa_ok(cuda: str | None) -> bool:
    """CUDA >= 13.2 builds may run SBSA (desktop) cubins on Jetson Orin (JetPack 7.2); see jetson.json."""
    return bool(cuda) and facts.parse_cuda(cuda) >= (13, 2)


def arch_coverage(cc: str, sass: list[str] | None, ptx: list[str] | None, cuda: str | None = None) -> tuple[str, str]:
    """('sass'|'ptx'|'none'|'unknown', detail) for a GPU of capability `cc`.

    Tegra iGPUs (5.3, 6.2, 7.2, 8.7) are not binary compatible with desktop cubins of the same
    major (PyTorch's DEVICE_REQUIREMENT, torch/cuda/__init__.py): only their own cubin counts,
    except sm_80/sm_86 cubins of CUDA >= 13.2 builds on Orin."""
    if sass is None:
        return "unknown", "the wheel's compiled architectures are not known"
    gmaj, gmin, _ = _cc_tuple(cc)
    tegra = cc in facts.TEGRA_CCS
    best = None  # the closest cubin: same major, highest minor not above the GPU's
    for entry in sass:
        maj, mnr, suffix = _cc_tuple(entry)
        if tegra and (maj, mnr) != (gmaj, gmin) and not (cc == "8.7" and (maj, mnr) in ((8, 0), (8, 6))
                                                         and tegra_sbsa_ok(cuda)):
            continue  # a desktop cubin never runs on a Tegra iGPU
        if not tegra and f"{maj}.{mnr}" in facts.TEGRA_CCS and (maj, mnr) != (gmaj, gmin):
            continue  # and a Tegra cubin never runs on a desktop GPU
        if suffix == "a" and (maj, mnr) == (gmaj, gmin):
            return "sass", f"cubin sm_{maj}{mnr}a matches exactly"
        if suffix in ("", "f") and maj == gmaj and mnr <= gmin and (best is None or mnr > best[1]):
            best = (maj, mnr, suffix)
    if best is not None:
        maj, mnr, suffix = best
        if mnr == gmin:
            return "sass", f"cubin sm_{maj}{mnr}{suffix} matches exactly"
        return "sass", f"cubin sm_{maj}{mnr}{suffix} runs on {cc} (same major, minor {mnr} <= {gmin})"
    candidates = [p for p in (ptx or []) if _cc_tuple(p)[2] == "" and _cc_tuple(p)[:2] <= (gmaj, gmin)]
    if candidates:
        best = max(candidates, key=_cc_tuple)
        return "ptx", f"only PTX compute_{best.replace('.', '')} covers {cc}: the driver JIT-compiles it"
    listed = " ".join(sass) or "none"
    if tegra:
        return "none", (f"{cc} is a Jetson (Tegra) GPU: desktop cubins do not run on it (NVIDIA's binary compatibility "
                        f"excludes Tegra; PyTorch's DEVICE_REQUIREMENT), and the wheel has no sm_{cc.replace('.', '')}: "
                        f"{listed}")
    return "none", f"no cubin for {cc} (same major, lower or equal minor) and no PTX at or below it; wheel has: {listed}"
