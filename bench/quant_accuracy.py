"""Compare bench/quant_probe.py measurements with the estimator (no GPU needed).

For each measured case: parameter storage (exact count of the quantized tensors), allocated weights,
the load peak, the prefill peak and the generate peak, each relative to the allocated bytes before
loading (the estimator's cuBLAS workspace is subtracted from its forward peaks, since the probe warms
the workspace up before measuring). Nothing here is fitted: every case is a held-out check.

Usage: python bench/quant_accuracy.py calibration/raw/quant-h200.jsonl [--markdown]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_preflight.estimate.arch import parse_llm  # noqa: E402
from gpu_preflight.estimate.engines.transformers import (Workload, cublas_workspace_bytes,  # noqa: E402
                                                         estimate_transformers)
from gpu_preflight.estimate.plan import quant_config  # noqa: E402
from gpu_preflight.estimate.weights import weight_tensors  # noqa: E402

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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    recs = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line.strip()]
    env = next((r for r in recs if r.get("kind") == "env"), {})
    cc = tuple(int(x) for x in str(env.get("cc", "9.0")).split("."))
    keys = ("storage_bytes", "weights_allocated", "load_peak_allocated", "prefill_peak_allocated",
            "generate_peak_allocated")
    rows = []
    for rec in recs:
        if rec.get("kind") != "case":
            continue
        pred = predict(rec, cc)
        row = {"case": f"{rec['config']} {rec['method']}"}
        for k in keys:
            m = rec.get(k)
            row[k] = None if m is None else (pred[k], m, (pred[k] - m) / m * 100 if m else 0.0)
        rows.append(row)
    head = "| case | " + " | ".join(k.replace("_allocated", "") for k in keys) + " |"
    print(head)
    print("|" + " --- |" * (len(keys) + 1))
    for row in rows:
        cells = []
        for k in keys:
            v = row[k]
            cells.append("n/a" if v is None else f"{v[0] / 2**20:.1f} / {v[1] / 2**20:.1f} MiB ({v[2]:+.1f} %)")
        print(f"| {row['case']} | " + " | ".join(cells) + " |")
    for r in recs:
        if r.get("kind") == "error":
            print(f"error: {r.get('config')} {r.get('method')}: {r.get('error', '')[:160]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
