"""Calibration data: real measurements (calibration/raw/*.jsonl) vs the estimator.

Used by bench/accuracy.py (the docs/accuracy.md table) and by the CPU tests that keep the
estimator honest. Held-out cases (calibration/held_out.json) were never used to set any
constant; they are reported separately.
"""

from __future__ import annotations

import json
import os
from typing import Any

# The measurements live in the repository, not in the installed package: every function that
# reads them takes `root`, the repository's top folder (tests pass it from their own location,
# bench scripts from theirs).


def cal_dir(root: str) -> str:
    return os.path.join(root, "calibration")


def load_records(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        with open(p, encoding="utf-8") as fh:
            env = None
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                rec = json.loads(line)
                if rec.get("type") == "env":
                    env = rec
                rec["_env"] = env
                rec["_file"] = os.path.basename(p)
                out.append(rec)
    return out


def _matrix_models(root: str) -> dict[str, dict[str, Any]]:
    with open(os.path.join(root, "bench", "matrix_llm.json"), encoding="utf-8") as fh:
        matrix = json.load(fh)
    return {m.get("tag") or m["id"]: {**matrix.get("defaults", {}), **m} for m in matrix["models"]}


def held_out(root: str) -> set[str]:
    with open(os.path.join(cal_dir(root), "held_out.json"), encoding="utf-8") as fh:
        return set(json.load(fh)["models"])


def compare_records(records: list[dict[str, Any]], root: str) -> list[dict[str, Any]]:
    from gpu_preflight.estimate.arch import parse_llm
    from gpu_preflight.estimate.engines.transformers import Workload, estimate_transformers
    from gpu_preflight.estimate.overheads import process_overhead
    from gpu_preflight.models.catalog import load_catalog

    catalog = load_catalog()
    models = _matrix_models(root)
    hold = held_out(root)
    rows = []
    cache: dict[tuple, Any] = {}
    for rec in records:
        if rec.get("type") != "phase" or rec.get("phase") not in ("prefill", "generate") or rec.get("oom"):
            continue
        tag = rec["model"]
        m = models.get(tag)
        if m is None:
            continue
        entry = catalog.find(m["id"])
        config = dict(entry.config)
        if m.get("config_overrides"):
            if "text_config" in config:
                config["text_config"] = {**config["text_config"], **m["config_overrides"]}
            else:
                config.update(m["config_overrides"])
        wl = rec["workload"]
        env = rec.get("_env") or {}
        cc = tuple(int(x) for x in env.get("capability", "9.0").split("."))
        w = Workload(batch=wl["batch"], input_len=wl["input_len"],
                     output_len=1 if rec["phase"] == "prefill" else wl["output_len"],
                     dtype=rec.get("dtype", "bfloat16"), attn=rec.get("attn", "sdpa"))
        key = (tag, w.batch, w.input_len, w.output_len, w.attn)
        if key not in cache:
            cache[key] = estimate_transformers(parse_llm(config), w, cc)
        est = cache[key]
        overhead, _src = process_overhead(cc, (env.get("torch") or "").split("+")[0])
        est_proc = est.peak_reserved_bytes + overhead
        meas_proc = rec["peak_process_bytes"]
        rows.append({
            "model": tag, "catalog_id": m["id"], "workload": wl["name"], "phase": rec["phase"],
            "batch": w.batch, "input_len": wl["input_len"], "output_len": w.output_len, "attn": w.attn,
            "measured_process_bytes": meas_proc, "estimated_process_bytes": est_proc,
            "process_error": (est_proc - meas_proc) / meas_proc,
            "measured_allocated_bytes": rec["peak_allocated_bytes"],
            "estimated_allocated_bytes": est.peak_allocated_bytes,
            "allocated_error": (est.peak_allocated_bytes - rec["peak_allocated_bytes"]) / rec["peak_allocated_bytes"],
            "measured_reserved_bytes": rec["peak_reserved_bytes"], "estimated_reserved_bytes": est.peak_reserved_bytes,
            "held_out": tag in hold, "gpu": env.get("gpu"), "torch": env.get("torch"),
            "transformers": env.get("transformers"), "driver": env.get("driver"), "file": rec["_file"],
        })
    return rows


def compare_arch_records(records: list[dict[str, Any]], root: str) -> list[dict[str, Any]]:
    """Issue 19 set (bench/matrix_arch.json, configs carried in the matrix): per case, weights error
    (parameters + buffers of the built model vs the estimate) and peak process error; `held_out` as
    marked in the matrix."""
    from gpu_preflight.estimate.arch import parse_llm
    from gpu_preflight.estimate.engines.transformers import Workload, estimate_transformers
    from gpu_preflight.estimate.overheads import process_overhead

    with open(os.path.join(root, "bench", "matrix_arch.json"), encoding="utf-8") as fh:
        models = {m["id"]: m for m in json.load(fh)["models"]}
    loads = {r["model"]: r for r in records if r.get("phase") == "load" and r.get("model") in models}
    rows = []
    for rec in records:
        m = models.get(rec.get("model"))
        if m is None or rec.get("type") != "phase" or rec.get("phase") not in ("prefill", "generate") or rec.get("oom"):
            continue
        wl, env = rec["workload"], rec.get("_env") or {}
        cc = tuple(int(x) for x in env.get("capability", "9.0").split("."))
        w = Workload(batch=wl["batch"], input_len=wl["input_len"],
                     output_len=1 if rec["phase"] == "prefill" else wl["output_len"], attn=rec.get("attn", "sdpa"))
        est = estimate_transformers(parse_llm(m["config"]), w, cc)
        overhead, _src = process_overhead(cc, (env.get("torch") or "").split("+")[0])
        load = loads.get(rec["model"], {})
        meas_w = load.get("param_bytes", 0) + load.get("buffer_bytes", 0)
        est_w = est.breakdown["weights"] + est.breakdown.get("buffers", 0)
        est_proc = est.peak_reserved_bytes + overhead
        rows.append({"model": rec["model"], "workload": wl["name"], "phase": rec["phase"],
                     "held_out": bool(m.get("held_out")), "attn_used": rec.get("attn_used"),
                     "weights_error": (est_w - meas_w) / meas_w if meas_w else None,
                     "process_error": (est_proc - rec["peak_process_bytes"]) / rec["peak_process_bytes"],
                     "allocated_error": (est.peak_allocated_bytes - rec["peak_allocated_bytes"])
                     / rec["peak_allocated_bytes"],
                     "measured_process_bytes": rec["peak_process_bytes"], "estimated_process_bytes": est_proc})
    return rows
