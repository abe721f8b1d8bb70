"""vLLM's published start-up logs (calibration/vllm/logs.jsonl) against the vLLM engine's estimate.

Three checks, as far as each log allows:
- budget (records with a GPU): the predicted "Available KV cache memory" minus the logged one, as a
  share of the budget (gpu_memory_utilization x total), the weights, and the start / refuse verdict;
- layout (records with "Available KV cache memory" and the token / concurrency / refusal lines):
  from the LOGGED available memory, do the block layout (block size, hybrid state pages), "GPU KV
  cache size", "Maximum concurrency" and the refusal's needed memory and estimated length come out
  as vLLM printed them;
- cuda_graph (records with vLLM's "Estimated CUDA graph memory" and "Profiling CUDA graph memory"
  lines): the modelled estimate for the logged graph counts against the logged one.
Every record carries its split ("training" or "held_out"), fixed when the record was added
(sha256 of its id, before any comparison); the report keeps the two apart.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

GIB = 1 << 30


def load(root: Path | str) -> list[dict[str, Any]]:
    path = Path(root) / "calibration" / "vllm" / "logs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def held_out(rec: dict[str, Any]) -> bool:
    return rec.get("split") == "held_out"


def _source(rec: dict[str, Any], root: Path | str):
    from gpu_preflight.models import load_model_source

    spec = str(Path(root) / rec["config"]) if rec.get("config") else rec["model"]
    return load_model_source(spec, offline=True)


def _arch(rec: dict[str, Any], root: Path | str):
    from gpu_preflight.estimators.arch import parse_llm

    src = _source(rec, root)
    return parse_llm(src.config), src.config


def _settings(rec: dict[str, Any]):
    from gpu_preflight.estimators.engines.vllm import VllmSettings

    f = rec["flags"]
    return VllmSettings(gpu_memory_utilization=f.get("gpu_memory_utilization"), max_model_len=f.get("max_model_len"),
                        tensor_parallel=f.get("tensor_parallel_size", 1), pipeline_parallel=f.get("pipeline_parallel_size", 1),
                        quantization=f.get("quantization"), kv_cache_dtype=f.get("kv_cache_dtype", "auto"),
                        max_num_seqs=f.get("max_num_seqs"), max_num_batched_tokens=f.get("max_num_batched_tokens"),
                        cuda_graphs=not f.get("enforce_eager", False), block_size=f.get("block_size"),
                        version=rec.get("vllm_modelled_as") or rec.get("vllm"), entrypoint=rec.get("entrypoint", "serve"))


def _gpu(rec: dict[str, Any]):
    from gpu_preflight.compatibility import facts
    from gpu_preflight.estimators.engines.vllm import cuda_total_bytes

    row, _ = facts.parse_gpu_spec(rec["gpu"])
    total = int(rec["total_gib"] * GIB) if rec.get("total_gib") else cuda_total_bytes(row["id"], facts.gpu_memory_bytes(row))[0]
    return row, total, facts.parse_cc(row["compute_capability"])


def budget_case(rec: dict[str, Any], root: Path | str) -> dict[str, Any] | None:
    from gpu_preflight.estimators.engines.vllm import estimate_vllm

    if rec.get("check", "budget") != "budget" or not rec.get("gpu"):
        return None
    row, total, cc = _gpu(rec)
    arch, config = _arch(rec, root)
    est = estimate_vllm(arch, total, _settings(rec), gpu_name=row["name"], cc=cc, config=config)
    lg = rec["logged"]
    out = {"id": rec["id"], "held_out": held_out(rec), "budget_gib": est.budget_bytes / GIB,
           "pred_available_gib": est.kv_cache_bytes / GIB, "logged_available_gib": lg.get("available_kv_gib"),
           "pred_weights_gib": est.weights_bytes / GIB, "logged_weights_gib": lg.get("weights_gib"),
           "pred_activation_gib": est.activation_bytes / GIB, "logged_activation_gib": lg.get("activation_gib"),
           "pred_starts": est.starts, "logged_starts": lg.get("starts"), "refusal": est.refusal,
           "version": est.version, "runner": est.runner,
           "pred_graphs_gib": est.cuda_graph_bytes / GIB if est.cuda_graphs_in_budget else 0.0}
    logged_av = lg.get("available_kv_gib")
    if logged_av is None and lg.get("kv_tokens") and est.state_bytes_per_request == 0 and est.num_blocks:
        # "GPU KV cache size" alone: whole blocks of every layer, plus half a block of rounding
        per_block = est.kv_bytes_per_token * est.block_size
        logged_av = (lg["kv_tokens"] // est.block_size + 0.5) * per_block / GIB
        out["logged_available_gib"], out["available_from_tokens"] = round(logged_av, 3), True
    if logged_av is not None:
        out["error_pct_of_budget"] = 100 * (est.kv_cache_bytes / GIB - logged_av) / (est.budget_bytes / GIB)
    if lg.get("kv_tokens") is not None:
        out["pred_kv_tokens"], out["logged_kv_tokens"] = est.max_tokens_in_cache, lg["kv_tokens"]
    out["verdict_right"] = lg.get("starts") is None or lg["starts"] == est.starts
    return out


def layout_case(rec: dict[str, Any], root: Path | str) -> dict[str, Any] | None:
    """From the logged available memory (2 decimals of GiB: +-0.005 GiB), the logged block size,
    tokens, concurrency, needed memory and estimated length must be reachable."""
    from gpu_preflight.estimators.engines.vllm import (
        default_block_size, hybrid_block_size, hybrid_state, kv_layout, largest_max_model_len, resolve_release)

    lg = rec["logged"]
    if lg.get("available_kv_gib") is None or rec.get("check") != "layout":
        return None
    arch, config = _arch(rec, root)
    s = _settings(rec)
    _, row, _ = resolve_release(s.version)
    kv_b = 1 if (s.kv_cache_dtype or "auto").startswith("fp8") else 2
    state = hybrid_state(config, s.tensor_parallel, 2) if row.get("hybrid_mamba") else None
    bs = s.block_size or default_block_size(arch, None)
    if state:
        bs = hybrid_block_size(arch, kv_b, s.tensor_parallel, bs, state)
    lay = kv_layout(arch, kv_b, s.tensor_parallel, s.pipeline_parallel, bs, bool(row["hybrid_allocator"]), state)
    groups = lay.groups()
    size = max(n for _, n in groups)
    max_len = s.max_model_len or arch.max_positions
    batched = s.max_num_batched_tokens or 2048
    checks: dict[str, bool] = {}
    lo, hi = int((lg["available_kv_gib"] - 0.005) * GIB), int((lg["available_kv_gib"] + 0.005) * GIB)

    def tokens(av: int) -> int:
        nb = av // lay.page_bytes // size
        return nb // len(groups) * bs if len(groups) > 1 else nb * bs

    if "block_size" in lg:
        checks["block_size"] = bs == lg["block_size"]
    if "kv_tokens" in lg:
        checks["kv_tokens"] = tokens(lo) <= lg["kv_tokens"] <= tokens(hi)
    if "max_concurrency" in lg:
        per = sum(lay.layer_blocks(k, lg["concurrency_len"], batched) for k, _ in groups)
        nbs = [lo // lay.page_bytes // size, hi // lay.page_bytes // size]
        checks["max_concurrency"] = any(abs(round(nb / per, 2) - lg["max_concurrency"]) < 0.006
                                        for nb in range(nbs[0], nbs[1] + 1))
    if "needed_kv_gib" in lg:
        checks["needed_kv_gib"] = abs(round(lay.needed_bytes(max_len, batched) / GIB, 2) - lg["needed_kv_gib"]) < 0.006
    if "estimated_max_model_len" in lg:
        a, b = largest_max_model_len(lay, lo, batched, max_len), largest_max_model_len(lay, hi, batched, max_len)
        checks["estimated_max_model_len"] = a <= lg["estimated_max_model_len"] <= b
    return {"id": rec["id"], "held_out": held_out(rec), "checks": checks, "all_right": all(checks.values()),
            "block_size": bs}


def cuda_graph_case(rec: dict[str, Any]) -> dict[str, Any] | None:
    """vLLM's logged CUDA-graph estimate against the model for the logged graph counts."""
    from gpu_preflight.estimators.engines.vllm import cuda_graph_estimate, resolve_release

    lg = rec["logged"]
    if rec.get("check") != "cuda_graph" or lg.get("cuda_graph_estimate_gib") is None or not lg.get("cuda_graph_counts"):
        return None
    _, row, _ = resolve_release("0.20.0")  # the estimate's rule is the same from 0.18 on (gpu_model_runner.py)
    pw, full = lg["cuda_graph_counts"]
    pred, _, _ = cuda_graph_estimate(row, "v1", (pw, full))
    out = {"id": rec["id"], "held_out": held_out(rec), "counts": [pw, full], "pred_gib": pred / GIB,
           "logged_gib": lg["cuda_graph_estimate_gib"], "error_gib": pred / GIB - lg["cuda_graph_estimate_gib"]}
    if rec.get("total_gib"):
        out["error_pct_of_total"] = 100 * out["error_gib"] / rec["total_gib"]
    return out


def fit_first_capture(root: Path | str) -> dict[str, Any]:
    """The first-capture constant from the TRAINING cuda_graph records: the median of the logged
    estimate minus vLLM's 1 MiB per further graph (how data/vllm.json's value was set)."""
    vals = []
    for r in load(root):
        lg = r["logged"]
        if r.get("check") == "cuda_graph" and not held_out(r) and lg.get("cuda_graph_estimate_gib") is not None:
            pw, full = lg["cuda_graph_counts"]
            vals.append(lg["cuda_graph_estimate_gib"] - (max(pw - 1, 0) + max(full - 1, 0)) / 1024)
    return {"records": len(vals), "median_gib": round(statistics.median(vals), 3) if vals else None,
            "values": sorted(round(v, 3) for v in vals)}


def _stats(cases: list[dict[str, Any]], key: str = "error_pct_of_budget") -> dict[str, Any]:
    errs = [abs(c[key]) for c in cases if key in c]
    return {"cases": len(cases), "with_available": len(errs),
            "median_abs_error_pct": statistics.median(errs) if errs else None,
            "worst_abs_error_pct": max(errs) if errs else None,
            "verdicts_right": sum(c.get("verdict_right", True) for c in cases), "verdicts": len(cases)}


def summarize(root: Path | str) -> dict[str, Any]:
    recs = load(root)
    budget = [c for c in (budget_case(r, root) for r in recs) if c]
    layout = [c for c in (layout_case(r, root) for r in recs) if c]
    graphs = [c for c in (cuda_graph_case(r) for r in recs) if c]

    def gstats(cases):
        errs = [abs(c["error_gib"]) for c in cases]
        pct = [abs(c["error_pct_of_total"]) for c in cases if "error_pct_of_total" in c]
        return {"cases": len(cases), "median_abs_error_gib": statistics.median(errs) if errs else None,
                "worst_abs_error_gib": max(errs) if errs else None,
                "median_abs_error_pct_of_total": statistics.median(pct) if pct else None,
                "worst_abs_error_pct_of_total": max(pct) if pct else None}

    return {"records": len(recs),
            "budget": {"training": _stats([c for c in budget if not c["held_out"]]),
                       "held_out": _stats([c for c in budget if c["held_out"]]), "cases": budget},
            "layout": {"cases": layout, "right": sum(c["all_right"] for c in layout),
                       "held_out_right": sum(c["all_right"] for c in layout if c["held_out"]),
                       "held_out": sum(c["held_out"] for c in layout)},
            "cuda_graph": {"training": gstats([c for c in graphs if not c["held_out"]]),
                           "held_out": gstats([c for c in graphs if c["held_out"]]), "cases": graphs,
                           "fit": fit_first_capture(root)}}
