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
    from gpu_preflight.estimators.arch import parse_llm
    from gpu_preflight.estimators.engines.transformers import Workload, estimate_transformers
    from gpu_preflight.estimators.overheads import process_overhead
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


ARCH_WEIGHTS_BAR = 0.01  # issue 19: weights within 1 %
ARCH_PEAK_BAR = 0.05  # ... and peak process memory within 5 %, on every case


def arch_files(root: str) -> list[str]:
    """The issue 19 records: calibration/raw/arch-h200*.jsonl (one file per GPU call)."""
    raw = os.path.join(cal_dir(root), "raw")
    return sorted(os.path.join(raw, f) for f in os.listdir(raw) if f.startswith("arch-h200") and f.endswith(".jsonl"))


def arch_matrix(root: str) -> dict[str, dict[str, Any]]:
    with open(os.path.join(root, "bench", "matrix_arch.json"), encoding="utf-8") as fh:
        matrix = json.load(fh)
    return {m["id"]: {**m, "_workloads": matrix["workloads"]} for m in matrix["models"]}


def arch_set(m: dict[str, Any]) -> str:
    """"training" (looked at while the family replays were written), "held out" (chosen before the
    run, never used to write a replay) or "held out, seen" (a held-out model whose replay was changed
    after its comparison with these records: no longer a blind case; the matrix says what changed)."""
    if not m.get("held_out"):
        return "training"
    return "held out, seen" if m.get("held_out_seen") else "held out"


def compare_arch_records(records: list[dict[str, Any]], root: str) -> list[dict[str, Any]]:
    """Issue 19 set (bench/matrix_arch.json, configs carried in the matrix): per finished phase, the
    weights error (parameters + buffers of the built model vs the estimate) and the peak process and
    allocated errors. `prefill` is generate() with one new token, `generate` the whole run."""
    from gpu_preflight.estimators.arch import parse_llm
    from gpu_preflight.estimators.engines.transformers import Workload, estimate_transformers
    from gpu_preflight.estimators.overheads import process_overhead

    models = arch_matrix(root)
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
        rows.append({"model": rec["model"], "workload": wl["name"], "phase": rec["phase"], "batch": w.batch,
                     "input_len": w.input_len, "output_len": w.output_len, "set": arch_set(m),
                     "held_out": bool(m.get("held_out")), "attn_used": rec.get("attn_used"),
                     "weights_error": (est_w - meas_w) / meas_w if meas_w else None,
                     "process_error": (est_proc - rec["peak_process_bytes"]) / rec["peak_process_bytes"],
                     "allocated_error": (est.peak_allocated_bytes - rec["peak_allocated_bytes"])
                     / rec["peak_allocated_bytes"],
                     "measured_process_bytes": rec["peak_process_bytes"], "estimated_process_bytes": est_proc,
                     "measured_allocated_bytes": rec["peak_allocated_bytes"],
                     "estimated_allocated_bytes": est.peak_allocated_bytes, "file": rec.get("_file"),
                     "gpu": env.get("gpu"), "driver": env.get("driver"), "torch": env.get("torch"),
                     "transformers": env.get("transformers")})
    return rows


def within_arch_bars(row: dict[str, Any]) -> bool:
    return (row["weights_error"] is not None and abs(row["weights_error"]) <= ARCH_WEIGHTS_BAR
            and abs(row["process_error"]) <= ARCH_PEAK_BAR)


def summarize_arch(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per set (training, held out, held out seen, all): models, cases, how many meet each bar, and
    the median and worst absolute peak errors."""
    out = []
    for name in ("training", "held out", "held out, seen", "all"):
        sel = [r for r in rows if name == "all" or r["set"] == name]
        if not sel:
            continue
        errs = sorted(abs(r["process_error"]) for r in sel)
        worst = max(sel, key=lambda r: abs(r["process_error"]))
        out.append({"set": name, "models": len({r["model"] for r in sel}), "cases": len(sel),
                    "weights_within": sum(1 for r in sel if r["weights_error"] is not None
                                          and abs(r["weights_error"]) <= ARCH_WEIGHTS_BAR),
                    "peak_within": sum(1 for r in sel if abs(r["process_error"]) <= ARCH_PEAK_BAR),
                    "median_abs_process_error": errs[len(errs) // 2] if len(errs) % 2 else
                    (errs[len(errs) // 2 - 1] + errs[len(errs) // 2]) / 2,
                    "worst_abs_process_error": abs(worst["process_error"]),
                    "worst_case": f"{worst['model']} {worst['workload']} {worst['phase']}"})
    return out


def arch_crashes(records: list[dict[str, Any]], root: str) -> list[dict[str, Any]]:
    """Runs of the matrix that ended in an error record: what finished before it, the error's first line,
    the phase it ended (the one after the last finished phase, in the order of the workloads that run
    used: the model's `ran` list in the matrix, else its workloads), and what the estimate says about
    that phase and about the finished ones (estimators/plan.py position_check)."""
    from gpu_preflight.estimators.arch import parse_llm
    from gpu_preflight.estimators.engines.transformers import Workload
    from gpu_preflight.estimators.plan import position_check

    models = arch_matrix(root)
    out: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []
    for rec in records:
        if rec.get("type") == "env":
            run = []
        elif rec.get("type") == "phase" and rec.get("model") in models:
            run.append(rec)
        elif rec.get("type") == "error" and run:
            m = models[run[-1]["model"]]
            order = [(w, ph) for w in (m.get("ran") or m["workloads"]) for ph in ("prefill", "generate")]
            done = [(r["workload"]["name"], r["phase"]) for r in run if r.get("phase") in ("prefill", "generate")]
            nxt = order[order.index(done[-1]) + 1] if done else order[0]

            def verdict(wname: str, phase: str) -> bool:
                wl = m["_workloads"][wname]
                w = Workload(batch=wl["batch"], input_len=wl["input_len"],
                             output_len=1 if phase == "prefill" else wl["output_len"])
                return not position_check(parse_llm(m["config"]), w)[0]

            out.append({"model": m["id"], "finished": done, "crashed_in": nxt,
                        "error": rec["error"].splitlines()[0][:160], "file": rec.get("_file"),
                        "estimate_runs_finished": [verdict(*d) for d in done],
                        "estimate_runs_crashed": verdict(*nxt)})
            run = []
    return out


# ---- issue 19, encoder-decoders (estimators/encdec.py) ----

# Encoder-decoder models whose replay was changed after comparing with their H200 records (no longer blind)
ENCDEC_SEEN = {"flan-t5-base": "T5 self-attention under SDPA runs torch's math backend on CUDA "
                               "(estimators/encdec.py _t5_sdpa_math), written after the first comparison: -21.0 % "
                               "(prefill) / -21.1 % (generate) peak process memory, -38.5 % allocated"}


def encdec_files(root: str) -> list[str]:
    """The encoder-decoder / vision-language records: calibration/raw/arch-mm-h200*.jsonl."""
    raw = os.path.join(cal_dir(root), "raw")
    return sorted(os.path.join(raw, f) for f in os.listdir(raw) if f.startswith("arch-mm-h200") and f.endswith(".jsonl"))


def encdec_matrix(root: str) -> dict[str, dict[str, Any]]:
    """bench/matrix_arch.json multimodal_models (run with bench/calibrate.py --list multimodal_models)."""
    with open(os.path.join(root, "bench", "matrix_arch.json"), encoding="utf-8") as fh:
        matrix = json.load(fh)
    return {m["id"]: {**m, "_workloads": matrix["multimodal_workloads"]} for m in matrix.get("multimodal_models", [])}


def compare_encdec_records(records: list[dict[str, Any]], root: str) -> list[dict[str, Any]]:
    """The encoder-decoders of the multimodal matrix (T5, BART, Whisper) through estimators/encdec.py:
    rows with compare_arch_records' keys. `prefill` is generate() with one new token (the encoder pass and
    the first decoder step), `generate` the whole run. The encoder-decoder replay was written from CPU
    allocation traces before these records; models whose replay changed after comparing are "held out,
    seen" (ENCDEC_SEEN), the others "held out". Vision-language models are skipped here (none measured)."""
    from gpu_preflight.estimators.encdec import estimate_encdec, parse_encdec
    from gpu_preflight.estimators.engines.transformers import Workload
    from gpu_preflight.estimators.overheads import process_overhead

    models = encdec_matrix(root)
    loads = {r["model"]: r for r in records if r.get("phase") == "load" and r.get("model") in models}
    rows = []
    for rec in records:
        m = models.get(rec.get("model"))
        if m is None or rec.get("type") != "phase" or rec.get("phase") not in ("prefill", "generate") or rec.get("oom"):
            continue
        if m["config"].get("model_type") not in ("t5", "mt5", "umt5", "bart", "mbart", "whisper"):
            continue
        wl, env = rec["workload"], rec.get("_env") or {}
        cc = tuple(int(x) for x in env.get("capability", "9.0").split("."))
        w = Workload(batch=wl["batch"], input_len=wl["input_len"],
                     output_len=1 if rec["phase"] == "prefill" else wl["output_len"], attn=rec.get("attn", "sdpa"))
        est = estimate_encdec(parse_encdec(m["config"]), w, cc)
        overhead, _src = process_overhead(cc, (env.get("torch") or "").split("+")[0])
        load = loads.get(rec["model"], {})
        meas_w = load.get("param_bytes", 0) + load.get("buffer_bytes", 0)
        est_w = est.breakdown["weights"] + est.breakdown.get("buffers", 0)
        est_proc = est.peak_reserved_bytes + overhead
        rows.append({"model": rec["model"], "workload": wl["name"], "phase": rec["phase"], "batch": w.batch,
                     "input_len": w.input_len, "output_len": w.output_len,
                     "set": "held out, seen" if rec["model"] in ENCDEC_SEEN else "held out", "held_out": True,
                     "attn_used": rec.get("attn_used"), "model_type": m["config"].get("model_type"),
                     "verified_config": bool(m.get("verified")),
                     "weights_error": (est_w - meas_w) / meas_w if meas_w else None,
                     "process_error": (est_proc - rec["peak_process_bytes"]) / rec["peak_process_bytes"],
                     "allocated_error": (est.peak_allocated_bytes - rec["peak_allocated_bytes"])
                     / rec["peak_allocated_bytes"],
                     "measured_process_bytes": rec["peak_process_bytes"], "estimated_process_bytes": est_proc,
                     "measured_allocated_bytes": rec["peak_allocated_bytes"],
                     "estimated_allocated_bytes": est.peak_allocated_bytes,
                     "measured_reserved_bytes": rec["peak_reserved_bytes"],
                     "estimated_reserved_bytes": est.peak_reserved_bytes, "file": rec.get("_file"),
                     "gpu": env.get("gpu"), "driver": env.get("driver"), "torch": env.get("torch"),
                     "transformers": env.get("transformers")})
    return rows


def encdec_skipped(root: str, records: list[dict[str, Any]]) -> list[str]:
    """Multimodal matrix models with no finished phase in the records (the call's budget ran out)."""
    seen = {r.get("model") for r in records if r.get("type") == "phase" and r.get("phase") in ("prefill", "generate")}
    return [mid for mid in encdec_matrix(root) if mid not in seen]
