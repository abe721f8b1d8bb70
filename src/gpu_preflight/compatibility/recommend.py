"""Recommend the PyTorch wheel to install for a driver + GPUs (+ Python, platform, glibc).

The newest release that has a wheel which runs on this driver and these GPUs wins; within that
release a wheel without limitations is preferred, and a remaining limitation is named. Candidates
per release: the PyPI default first, then the other CUDA variants from newest CUDA down.

A recommendation states its own requirements (driver floor and full-feature driver, Python range,
glibc, platform) so following it cannot produce a finding the user was not told about; a wheel
whose compiled architectures are unknown is never treated as fitting (its verdict is
"unverified"); and nothing is recommended for a GPU the driver does not know.
"""

from __future__ import annotations

from typing import Any

from gpu_preflight.compatibility import facts
from gpu_preflight.compatibility.rules import arch_coverage, driver_for_cuda

ORDER = {"ok": 0, "warn": 1, "unknown": 2}


def _python_ok(release: dict[str, Any], python: str | None) -> bool:
    if not python or not release.get("python"):
        return True
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return SpecifierSet(release["python"]).contains(python, prereleases=True)
    except InvalidSpecifier:
        return True


def _glibc_ok(release: dict[str, Any], platform: str | None, glibc: str | None) -> bool:
    need = facts.parse_glibc((facts.release_wheels(release, platform) or {}).get("glibc"))
    have = facts.parse_glibc(glibc)
    return need is None or have is None or have >= need


def evaluate(driver: str | None, ccs: list[str], variant: dict[str, Any], platform: str | None = None) -> tuple[str, list[str]]:
    """('ok'|'warn'|'unknown'|'fail', reasons) for one wheel variant on this machine."""
    reasons: list[str] = []
    status = "ok"
    cuda = variant.get("cuda")
    if not cuda:
        return "fail", ["CPU-only build"]
    os_name = facts.driver_os(platform)
    if driver:
        v = driver_for_cuda(driver, cuda, os_name)
        if v.status == "fail":
            return "fail", [v.message]
        if v.status in ("warn", "unknown"):
            status = "warn"
            reasons.append(v.message)
    sass, ptx, _src = facts.variant_arch(variant, platform)
    for cc in ccs:
        cov, detail = arch_coverage(cc, sass, ptx, cuda)
        if cov == "none":
            return "fail", [f"GPU {cc}: {detail}"]
        if cov == "unknown":
            status = "unknown"
            reasons.append(f"the compiled architectures of this wheel ({variant['variant']}) are not verified, so it is "
                           f"not known to run on GPU {cc}")
        if cov == "ptx":
            if driver:
                full, _ = facts.toolkit_driver(cuda, os_name)
                if full and not facts.driver_ge(driver, full):
                    return "fail", [f"GPU {cc}: {detail}, but driver {driver} is older than CUDA {cuda}'s "
                                    f"driver {full}, so the PTX cannot be JIT-compiled (error 222)"]
            status = "warn" if status == "ok" else status
            reasons.append(f"GPU {cc}: {detail} (slow first start while kernels compile)")
    return status, reasons


def candidates(release: dict[str, Any], platform: str | None = None) -> list[dict[str, Any]]:
    cuda_variants = [v for v in release.get("variants", []) if v.get("cuda")
                     and facts.variant_available(release, v, platform)]
    default = (facts.release_wheels(release, platform) or {}).get("pypi") or release.get("pypi_default")
    cuda_variants.sort(key=lambda v: (v["variant"] != default, v.get("status") not in ("stable", None),
                                      tuple(-x for x in facts.parse_cuda(v["cuda"]))))
    return cuda_variants


def _requirements(release: dict[str, Any], variant: dict[str, Any], platform: str | None) -> dict[str, Any]:
    os_name = facts.driver_os(platform)
    major = facts.parse_cuda(variant["cuda"])[0]
    fam = facts.cuda_family(major) or {}
    full, _ = facts.toolkit_driver(variant["cuda"], os_name)
    whl = facts.release_wheels(release, platform) or {}
    return {"driver_floor": fam.get(f"{os_name}_floor") or fam.get("linux_floor"),
            "driver_full_features": full, "python": release.get("python"),
            "glibc": whl.get("glibc"), "platform": facts.wheel_platform(platform), "wheel_tag": whl.get("tag")}


def driver_knows_gpus(driver: str | None, gpu_rows: list[dict[str, Any]] | None) -> str | None:
    """A reason when the driver is older than a GPU's first supporting branch, else None."""
    if not driver:
        return None
    for row in gpu_rows or []:
        need, _src = facts.gpu_min_driver(row)
        if need and not facts.driver_ge(driver, need):
            return f"driver {driver} predates the {row['name']} (needs >= {need}): no PyTorch wheel can use it until the driver is upgraded"
    return None


def recommend_jetson(jp: dict[str, Any] | None, python: str | None = None) -> dict[str, Any] | None:
    """Before JetPack 7 a Jetson needs NVIDIA's own wheel for its JetPack (PyPI's aarch64 wheels
    are CPU-only or built for desktop/SBSA GPUs): the newest one listed in jetson.json."""
    if not jp or not jp.get("torch_wheels"):
        return None
    wheels = [w for w in jp["torch_wheels"] if not python or facts.parse_cuda(python) == facts.parse_cuda(w["python"])]
    if not wheels:
        return None
    w = wheels[-1]
    return {"torch": w["torch"], "variant": f"jetpack{jp['jetpack']}", "cuda": jp["cuda"],
            "command": facts.jetson_install_command(w, jp),
            "limitations": [], "verdict": "runs",
            "requires": {"driver_floor": None, "driver_full_features": None, "python": f"=={w['python']}.*",
                         "glibc": None, "platform": f"jetson (JetPack {jp['jetpack']}, L4T {'/'.join(jp['l4t'])})",
                         "wheel_tag": "linux_aarch64"},
            "source": w["source"]}


def recommend(driver: str | None, ccs: list[str], python: str | None = None, platform: str | None = None,
              glibc: str | None = None, gpu_rows: list[dict[str, Any]] | None = None,
              jetpack: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The newest release with a wheel that runs here; within it, a wheel without limitations
    if there is one (else the one with the fewest), the PyPI default first on ties. None when no
    wheel runs (or the driver does not know a GPU, or the platform has no such wheels)."""
    if driver_knows_gpus(driver, gpu_rows):
        return None
    if platform == "jetson":
        if not jetpack:
            return None
        if not jetpack.get("sbsa"):
            return recommend_jetson(jetpack, python)
        platform = "linux-aarch64"  # JetPack 7: SBSA wheels, judged with the Tegra rule
    best_unknown = None
    for release in facts.torch_releases():
        if not _python_ok(release, python) or not _glibc_ok(release, platform, glibc):
            continue
        best = None
        for variant in candidates(release, platform):
            status, reasons = evaluate(driver, ccs, variant, platform)
            if status == "fail":
                continue
            rank = (ORDER[status], len(reasons))
            if best is None or rank < best[0]:
                best = (rank, variant, reasons, status)
        if best is None:
            continue
        rec = _recommendation(release, best, platform, driver, python)
        if best[3] != "unknown":
            return rec
        best_unknown = best_unknown or rec
    return best_unknown


def _recommendation(release: dict[str, Any], best: tuple, platform: str | None, driver: str | None = None,
                    python: str | None = None) -> dict[str, Any]:
    _, variant, reasons, status = best
    version = release.get("latest_patch") or release["torch"]
    req = _requirements(release, variant, platform)
    reasons = list(reasons)
    unstated = []
    if not driver and req["driver_floor"]:
        unstated.append(f"an NVIDIA driver >= {req['driver_full_features'] or req['driver_floor']}"
                        + (f" (>= {req['driver_floor']} runs it with a limited feature set)"
                           if req["driver_full_features"] else ""))
    if not python and req["python"]:
        unstated.append(f"Python {req['python']}")
    if req.get("glibc") and facts.wheel_platform(platform) != "windows":
        unstated.append(f"glibc >= {req['glibc']} ({req['wheel_tag']} wheels)")
    if unstated:
        reasons.append("requires " + ", ".join(unstated))
    return {
        "torch": version,
        "variant": variant["variant"],
        "cuda": variant["cuda"],
        "command": facts.platform_install_command(version, variant["variant"], release, platform),
        "limitations": reasons,
        "verdict": {"ok": "runs", "warn": "runs with limitations", "unknown": "unverified"}[status],
        "requires": req,
        "source": variant.get("source") or release.get("source"),
    }
