"""Compare bench/quant_probe.py measurements with the estimator (no GPU needed).

For each measured case: parameter storage (exact count of the quantized tensors), allocated weights,
the load peak, the prefill peak and the generate peak, each relative to the allocated bytes before
loading (the estimator's cuBLAS workspace is subtracted from its forward peaks, since the probe warms
the workspace up before measuring). Nothing here is fitted: every case is a held-out check.

Usage: python bench/quant_accuracy.py [calibration/raw/quant-h200.jsonl] [--markdown docs/accuracy.md]
  --markdown FILE: write the "Quantized loading" section between its markers in FILE (appended the first
  time); without a measurement file the section says the GPU cases are not measured yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_preflight.estimate.arch import parse_llm  # noqa: E402
from gpu_preflight.estimate.engines.transformers import (Workload, cublas_workspace_bytes,  # noqa: E402
                                                         estimate_transformers)
from gpu_preflight.estimate.plan import quant_config  # noqa: E402
from gpu_preflight.estimate.weights import weight_tensors  # noqa: E402

BEGIN, END = "<!-- quant:begin -->", "<!-- quant:end -->"
# Published memory-footprint ratios (16-bit / quantized, model.get_memory_footprint(): parameters and buffers,
# so bitsandbytes' absmax / SCB are not in them) from transformers' own test suite: held out, never fitted.
PUBLISHED = [
    ("bigscience/bloom-1b7", "bitsandbytes 8-bit", "8bit", 2048, 1.540025,
     "https://github.com/huggingface/transformers/blob/main/tests/quantization/bnb/test_mixed_int8.py"),
    ("bigscience/bloom-1b7", "bitsandbytes 4-bit", "nf4", 2048, 2.109659552692574,
     "https://github.com/huggingface/transformers/blob/main/tests/quantization/bnb/test_4bit.py"),
    ("bigscience/bloom-560m", "GPTQ 4-bit, group 128", "gptq", 1024, 1.664253062,
     "https://github.com/huggingface/transformers/blob/main/tests/quantization/gptq/test_gptq.py"),
]
PROBE_METHODS = {"int8wo": "int8wo", "int4wo": "int4wo", "fp8wo": "fp8", "fp8dq": "fp8dq"}


def case_quant(method: str) -> dict | None:
    if method == "none":
        return None
    q = quant_config(PROBE_METHODS[method])
    if method == "int4wo":  # the probe uses the tinygemm layout (the default plain one needs mslk)
        q["quant_type"]["default"]["_data"]["int4_packing_format"] = "tile_packed_to_4d"
    return q


def predict(rec: dict, cc: tuple[int, int]) -> dict:
    cfg = dict(rec["config_json"])
    quant = case_quant(rec["method"])
    if quant:
        cfg["quantization_config"] = quant
    arch = parse_llm(cfg, assume_llama_like=False)
    wl = rec["workload"]
    w = Workload(batch=wl["batch"], input_len=wl["input_len"], output_len=wl["output_len"], dtype="bfloat16")
    est = estimate_transformers(arch, w, cc)
    ws = cublas_workspace_bytes(cc)
    storage = sum(t.bytes for t in weight_tensors(arch, 2) if not t.name.startswith("buffer:"))
    load = est.phase_peaks.get("load", {}).get("peak_allocated_bytes", est.weights_bytes)
    prefill = est.phase_peaks["prefill"]["peak_allocated_bytes"] - ws
    gen = max(prefill, est.phase_peaks.get("decode", est.phase_peaks["prefill"])["peak_allocated_bytes"] - ws)
    return {"storage_bytes": storage, "weights_allocated": est.weights_bytes, "load_peak_allocated": load,
            "prefill_peak_allocated": prefill, "generate_peak_allocated": gen}


def published_rows() -> list[tuple]:
    out = []
    for model, what, mode, hidden, ratio, url in PUBLISHED:
        cfg = {"model_type": "bloom", "hidden_size": hidden, "n_layer": 24, "n_head": 16, "vocab_size": 250880,
               "tie_word_embeddings": True}
        q = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False} if mode == "gptq" \
            else quant_config(mode)

        def footprint(c):
            ts = weight_tensors(parse_llm(c, assume_llama_like=False), 2, buffers=True)
            return sum(t.bytes for t in ts if not (t.aux and mode != "gptq"))

        est = footprint(cfg) / footprint({**cfg, "quantization_config": q})
        out.append((model, what, est, ratio, url))
    return out


def measured_rows(path: str) -> tuple[dict, list[dict], list[dict]]:
    recs = [json.loads(line) for line in open(path, encoding="utf-8").read().splitlines() if line.strip()]
    env = next((r for r in recs if r.get("kind") == "env"), {})
    cc = tuple(int(x) for x in str(env.get("cc", "9.0")).split("."))
    rows = []
    for rec in recs:
        if rec.get("kind") == "case":
            pred = predict(rec, cc)
            row = {"case": f"{rec['config']} {rec['method']}"}
            for k in KEYS:
                m = rec.get(k)
                row[k] = None if m is None else (pred[k], m, (pred[k] - m) / m * 100 if m else 0.0)
            rows.append(row)
    return env, rows, [r for r in recs if r.get("kind") == "error"]


KEYS = ("storage_bytes", "weights_allocated", "load_peak_allocated", "prefill_peak_allocated",
        "generate_peak_allocated")


def markdown(path: str | None) -> str:
    out = [BEGIN, "# Quantized loading (transformers)", "",
           "Generated by `python bench/quant_accuracy.py [MEASUREMENTS.jsonl] --markdown docs/accuracy.md`; do not "
           "edit by hand. Storage layouts, forward buffers and the load phase are derived from the libraries' source "
           "(transformers 5.17, bitsandbytes 0.50.2, torchao 0.18.0; files and functions are cited in "
           "`estimate/engines/transformers_quant.py` and `estimate/weights.py`). Nothing is fitted.", "",
           "## Storage checked against published figures (held out)", "",
           "| model | method | estimated ratio 16-bit / quantized | published | source |", "|---|---|---|---|---|"]
    for model, what, est, ratio, url in published_rows():
        out.append(f"| {model} | {what} | {est:.6f} | {ratio} | [{url.rsplit('/', 1)[1]}]({url}) |")
    out += ["", "The ratios are `model.get_memory_footprint()` of the 16-bit model over the quantized one, as "
            "transformers' GPU tests assert them. The quantization constants that are not parameters (bitsandbytes "
            "absmax, code tables, SCB) are checked separately: `tests/test_quant.py` loads tiny Llama and Mixtral "
            "models with bitsandbytes 0.50.2 (NF4, NF4 + double quantization, LLM.int8) and torchao 0.18 (int8 and "
            "float8 weight-only) on the CPU and finds the layout table's bytes exactly (storage only: the layout "
            "does not depend on the device).", "",
            "## GPU measurements (torchao)", ""]
    if path and os.path.exists(path):
        env, rows, errors = measured_rows(path)
        out.append(f"Measured with `bash bench/device_quant.sh` on {env.get('gpu', '?')} (driver "
                   f"{env.get('driver', '?')}), torch {env.get('torch')}, transformers {env.get('transformers')}, "
                   f"torchao {env.get('torchao')}; each cell: estimated / measured MiB (error), relative to the "
                   f"allocated bytes before loading. Every case is held out.")
        out += ["", "| case | " + " | ".join(k.replace("_allocated", "") for k in KEYS) + " |",
                "|" + " --- |" * (len(KEYS) + 1)]
        for row in rows:
            cells = ["n/a" if row[k] is None else
                     f"{row[k][0] / 2**20:.1f} / {row[k][1] / 2**20:.1f} ({row[k][2]:+.1f} %)" for k in KEYS]
            out.append(f"| {row['case']} | " + " | ".join(cells) + " |")
        for e in errors:
            out.append(f"- failed: {e.get('config')} {e.get('method', '')}: {str(e.get('error', ''))[:160]}")
    else:
        out.append("Not measured yet: `bash bench/device_quant.sh 60` on the GPU machine (torchao int8 / int4 / "
                   "float8 weight-only and float8 dynamic on three small Llama / Qwen configurations) produces the "
                   "table; until then the torchao peaks are UNMEASURED.")
    out += ["", "## What is measured and what is not", "",
            "| method | storage | forward buffers | load phase |", "|---|---|---|---|",
            "| bitsandbytes NF4 / FP4 (+ double quant) | exact (CPU check, published ratio) | derived: weight "
            "dequantized to the compute dtype above 4 rows (upper bound: bitsandbytes 0.50 keeps its fused kernel up "
            "to 512-1536 rows on some GPUs) | derived, UNMEASURED |",
            "| bitsandbytes LLM.int8 | exact (CPU check, published ratio) | derived (float16 input copy, int8 rows, "
            "int32 product) | derived, UNMEASURED |",
            "| torchao int8 / float8 weight-only, float8 dynamic, int4 (tinygemm) | exact (CPU check for int8 / "
            "float8) | derived; GPU table above | derived; GPU table above |",
            "| GPTQ / AWQ checkpoints | exact checkpoint layout (published ratio) | Marlin workspace not counted | "
            "loaded as stored |",
            "| FP8 (fine-grained) checkpoints | exact (block scales) | derived (activation quantization) | loaded "
            "as stored; dequantized below compute capability 8.9 |",
            "| gpt-oss MXFP4 | blocks + scales (experts only) with `--mxfp4-kernels` | not counted | dequantized "
            "load replayed (sequential; the 4 loader threads may hold more) |",
            "| compressed-tensors | estimated dequantized | - | - |",
            "", "MoE experts stay 16-bit under bitsandbytes and torchao in transformers 5 (fused 3D parameters, "
            "which neither converts; checked on the CPU with a Mixtral layer).", END]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl", nargs="?")
    ap.add_argument("--markdown", help="write the section into this file between its markers")
    args = ap.parse_args()
    text = markdown(args.jsonl)
    if not args.markdown:
        sys.stdout.write(text)
        return 0
    old = open(args.markdown, encoding="utf-8").read() if os.path.exists(args.markdown) else ""
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END) + 1:]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    with open(args.markdown, "w", encoding="utf-8") as fh:
        fh.write(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
