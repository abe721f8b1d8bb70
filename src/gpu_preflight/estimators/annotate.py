"""Keys every estimate report gets after its engine built it, whatever the engine: what limits the
largest context, whether a fit is tight, and (pipelines) what the peak is made of.

`commands/estimate.py` calls `annotate()` on every report before printing it, so the JSON and
the text say the same thing; the renderer reads these keys. Standard library only.
"""

from __future__ import annotations

from typing import Any

# A fit with less headroom than this fraction of the GPU's memory is a warning, not a plain "fits":
# allocator fragmentation, another process or a longer prompt can push it over.
TIGHT_FRACTION = 0.02
# transformers: the largest-context search stops here when the config has no max_position_embeddings
# (estimators/plan.py, _max_context).
CONTEXT_SEARCH_CAP = 131072


def annotate(report: dict[str, Any]) -> dict[str, Any]:
    for row in report.get("fits") or []:
        row["tight"] = is_tight(row)
    if report.get("kind") == "llm":
        report["max_context_limited_by"] = context_limited_by(report)
    if report.get("kind") == "diffusion" and report.get("phases") and report.get("peak_phase"):
        overhead = int((report.get("breakdown") or {}).get("cuda_context_and_libraries") or 0)
        for phase in report["phases"].values():
            reserve = phase["peak_reserved_bytes"] - phase["peak_allocated_bytes"]
            phase["allocator_reserve_bytes"] = reserve
            phase["peak_process_bytes"] = phase["peak_reserved_bytes"] + overhead
        report["peak_breakdown"] = pipeline_peak_breakdown(report)
    return report


def is_tight(row: dict[str, Any]) -> bool:
    """It fits, with less than TIGHT_FRACTION of the GPU's memory to spare."""
    memory = row.get("memory_bytes") or 0
    return bool(row.get("fits") and memory and row.get("headroom_bytes", 0) < TIGHT_FRACTION * memory)


def context_limited_by(report: dict[str, Any]) -> str | None:
    """"model": the largest context is the model's own limit (max_position_embeddings), memory would
    allow more; "memory": the GPU's memory is what stops it; "search_limit": the config names no
    limit and the search stopped at CONTEXT_SEARCH_CAP; None: no largest context (no target, or
    nothing fits)."""
    ctx = report.get("max_context_tokens")
    if not ctx:
        return None
    limit = (report.get("architecture") or {}).get("max_position_embeddings")
    if limit:
        return "model" if ctx >= limit else "memory"
    return "search_limit" if ctx >= CONTEXT_SEARCH_CAP else "memory"


def pipeline_peak_breakdown(report: dict[str, Any]) -> dict[str, Any]:
    """The peak phase's parts; they add up to peak_process_bytes."""
    name = report["peak_phase"]
    p = report["phases"][name]
    overhead = int((report.get("breakdown") or {}).get("cuda_context_and_libraries") or 0)
    parts = {"resident_bytes": p["resident_bytes"], "transient_bytes": p["transient_bytes"],
             "allocator_reserve_bytes": p["peak_reserved_bytes"] - p["peak_allocated_bytes"],
             "cuda_context_and_libraries": overhead}
    return {"phase": name, **parts, "total_bytes": sum(parts.values())}
