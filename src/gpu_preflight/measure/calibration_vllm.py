"""vLLM's published start-up logs (calibration/vllm/logs.jsonl) against the vLLM engine's estimate.

Two checks per record, as far as its log allows:
- budget (records with a GPU): the predicted "Available KV cache memory" minus the logged one, as a
  share of the budget (gpu_memory_utilization x total), and the start / refuse verdict;
- layout (records with "Available KV cache memory" and the token / concurrency / refusal lines):
  from the LOGGED available memory, do the block layout, "GPU KV cache size", "Maximum concurrency"
  and the refusal's needed memory and estimated length come out as vLLM printed them.
Records say whether they were used to set a constant ("training") or collected after the rules
were fixed ("held out"); the report keeps the two apart.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

GIB = 1 << 30


def load(root: Path | str) -> list[dict[str, Any]]:
    path = Path(root) / "calibration" / "vllm" / "logs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def held_out(rec: dict[str, Any]) -> bool:
    return "held out" in rec.get("used_for", "")


def _arch(model: str):
    from gpu_preflight.estimate.arch import parse_llm
    from gpu_preflight.models import load_model_source

    return parse_llm(load_model_source(model, offline=True).config)


def _settings(rec: dict[str, Any]):
    from gpu_preflight.estimate.engines.vllm import VllmSettings

    f = rec["flags"]
    return VllmSettings(gpu_memory_utilization=f.get("gpu_memory_utilization"), max_model_len=f.get("max_model_len"),
                        tensor_parallel=f.get("tensor_parallel_size", 1), pipeline_parallel=f.get("pipeline_parallel_size", 1),
                        quantization=f.get("quantization"), kv_cache_dtype=f.get("kv_cache_dtype", "auto"),
                        max_num_seqs=f.get("max_num_seqs"), max_num_batched_tokens=f.get("max_num_batched_tokens"),
                        cuda_graphs=not f.get("enforce_eager", False), version=rec.get("vllm_modelled_as"))


def budget_case(rec: dict[str, Any]) -> dict[str, Any] | None:
    from gpu_preflight.compat import facts
    from gpu_preflight.estimate.engines.vllm import cuda_total_bytes, estimate_vllm

    if not rec.get("gpu"):
        return None
    row, _ = facts.parse_gpu_spec(rec["gpu"])
    total = int(rec["total_gib"] * GIB) if rec.get("total_gib") else cuda_total_bytes(row["id"], facts.gpu_memory_bytes(row))[0]
    arch = _arch(rec["model"])
    est = estimate_vllm(arch, total, _settings(rec), gpu_name=row["name"], cc=facts.parse_cc(row["compute_capability"]))
    lg = rec["logged"]
    out = {"id": rec["id"], "held_out": held_out(rec), "budget_gib": est.budget_bytes / GIB,
           "pred_available_gib": est.kv_cache_bytes / GIB, "logged_available_gib": lg.get("available_kv_gib"),
           "pred_weights_gib": est.weights_bytes / GIB, "logged_weights_gib": lg.get("weights_gib"),
           "pred_activation_gib": est.activation_bytes / GIB, "logged_activation_gib": lg.get("activation_gib"),
           "pred_starts": est.starts, "logged_starts": lg.get("starts"), "refusal": est.refusal}
    if lg.get("available_kv_gib") is not None:
        out["error_pct_of_budget"] = 100 * (est.kv_cache_bytes / GIB - lg["available_kv_gib"]) / (est.budget_bytes / GIB)
    out["verdict_right"] = lg.get("starts") is None or lg["starts"] == est.starts
    return out


def layout_case(rec: dict[str, Any]) -> dict[str, Any] | None:
    """From the logged available memory (2 decimals of GiB: +-0.005 GiB), the logged tokens,
    concurrency, needed memory and estimated length must be reachable."""
    from gpu_preflight.estimate.engines.vllm import kv_layout, largest_max_model_len, resolve_release

    lg = rec["logged"]
    if lg.get("available_kv_gib") is None or rec.get("check") != "layout":
        return None
    arch = _arch(rec["model"])
    s = _settings(rec)
    _, row, _ = resolve_release(s.version)
    lay = kv_layout(arch, 2, s.tensor_parallel, s.pipeline_parallel, 16, bool(row["hybrid_allocator"]))
    groups = lay.groups()
    size = max(n for _, n in groups)
    max_len = s.max_model_len or arch.max_positions
    batched = s.max_num_batched_tokens or 2048
    checks: dict[str, bool] = {}
    lo, hi = int((lg["available_kv_gib"] - 0.005) * GIB), int((lg["available_kv_gib"] + 0.005) * GIB)

    def tokens(av: int) -> int:
        nb = av // lay.page_bytes // size
        return nb // len(groups) * 16 if len(groups) > 1 else nb * 16

    if "kv_tokens" in lg:
        checks["kv_tokens"] = tokens(lo) <= lg["kv_tokens"] <= tokens(hi)
    if "max_concurrency" in lg:
        per = sum(lay.layer_blocks(k, lg["concurrency_len"], batched) for k, _ in groups)
        nb = lg["kv_tokens"] // 16 if "kv_tokens" in lg else lo // lay.page_bytes // size
        checks["max_concurrency"] = abs(round(nb / per, 2) - lg["max_concurrency"]) < 0.006
    if "needed_kv_gib" in lg:
        checks["needed_kv_gib"] = abs(round(lay.needed_bytes(max_len, batched) / GIB, 2) - lg["needed_kv_gib"]) < 0.006
    if "estimated_max_model_len" in lg:
        a, b = largest_max_model_len(lay, lo, batched, max_len), largest_max_model_len(lay, hi, batched, max_len)
        checks["estimated_max_model_len"] = a <= lg["estimated_max_model_len"] <= b
    return {"id": rec["id"], "held_out": held_out(rec), "checks": checks, "all_right": all(checks.values())}


def summarize(root: Path | str) -> dict[str, Any]:
    recs = load(root)
    budget = [c for c in (budget_case(r) for r in recs) if c]
    layout = [c for c in (layout_case(r) for r in recs) if c]

    def stats(cases):
        errs = [abs(c["error_pct_of_budget"]) for c in cases if "error_pct_of_budget" in c]
        return {"cases": len(cases), "with_available": len(errs),
                "median_abs_error_pct": statistics.median(errs) if errs else None,
                "worst_abs_error_pct": max(errs) if errs else None,
                "verdicts_right": sum(c["verdict_right"] for c in cases), "verdicts": len(cases)}

    return {"records": len(recs),
            "budget": {"training": stats([c for c in budget if not c["held_out"]]),
                       "held_out": stats([c for c in budget if c["held_out"]]), "cases": budget},
            "layout": {"cases": layout, "right": sum(c["all_right"] for c in layout)}}
