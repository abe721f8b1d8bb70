"""Recommend the PyTorch wheel to install for a driver + GPUs (+ Python), from the fact tables.

The newest release that has a wheel which runs on this driver and these GPUs wins; within that
release a wheel without limitations is preferred, and a remaining limitation is named. Candidates
per release: the PyPI default first, then the other CUDA variants from newest CUDA down.
"""

from __future__ import annotations

from typing import Any

from gpu_preflight.compat import facts
from gpu_preflight.compat.rules import arch_coverage, driver_for_cuda


def _python_ok(release: dict[str, Any], python: str | None) -> bool:
    if not python or not release.get("python"):
        return True
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return SpecifierSet(release["python"]).contains(python, prereleases=True)
    except InvalidSpecifier:
        return True


def evaluate(driver: str | None, ccs: list[str], variant: dict[str, Any]) -> tuple[str, list[str]]:
    """('ok'|'warn'|'fail'|'unknown', reasons) for one wheel variant on this machine."""
    reasons: list[str] = []
    status = "ok"
    cuda = variant.get("cuda")
    if not cuda:
        return "fail", ["CPU-only build"]
    if driver:
        v = driver_for_cuda(driver, cuda)
        if v.status == "fail":
            return "fail", [v.message]
        if v.status in ("warn", "unknown"):
            status = "warn"
            reasons.append(v.message)
    for cc in ccs:
        cov, detail = arch_coverage(cc, variant.get("sass"), variant.get("ptx"))
        if cov == "none":
            return "fail", [f"GPU {cc}: {detail}"]
        if cov == "unknown":
            status = "warn" if status == "ok" else status
            reasons.append(f"compiled architectures of this wheel are not verified")
        if cov == "ptx":
            if driver:
                full, _ = facts.toolkit_driver(cuda)
                if full and not facts.driver_ge(driver, full):
                    return "fail", [f"GPU {cc}: {detail}, but driver {driver} is older than CUDA {cuda}'s "
                                    f"driver {full}, so the PTX cannot be JIT-compiled (error 222)"]
            status = "warn"
            reasons.append(f"GPU {cc}: {detail} (slow first start while kernels compile)")
    return status, reasons


def candidates(release: dict[str, Any]) -> list[dict[str, Any]]:
    cuda_variants = [v for v in release.get("variants", []) if v.get("cuda")]
    default = release.get("pypi_default")
    cuda_variants.sort(key=lambda v: (v["variant"] != default, v.get("status") == "experimental",
                                      tuple(-x for x in facts.parse_cuda(v["cuda"]))))
    return cuda_variants


def recommend(driver: str | None, ccs: list[str], python: str | None = None) -> dict[str, Any] | None:
    """The newest release with a wheel that runs here; within it, a wheel without limitations
    if there is one (else the one with the fewest), the PyPI default first on ties."""
    for release in facts.torch_releases():
        if not _python_ok(release, python):
            continue
        best = None
        for variant in candidates(release):
            status, reasons = evaluate(driver, ccs, variant)
            if status == "fail":
                continue
            rank = (status != "ok", len(reasons))
            if best is None or rank < best[0]:
                best = (rank, variant, reasons)
        if best is not None:
            _, variant, reasons = best
            version = release.get("latest_patch") or release["torch"]
            return {
                "torch": version,
                "variant": variant["variant"],
                "cuda": variant["cuda"],
                "command": facts.install_command(version, variant["variant"], release),
                "limitations": reasons,
                "source": variant.get("source") or release.get("source"),
            }
    return None
