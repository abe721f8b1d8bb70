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
import functools
import json
import os
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_preflight.estimators.arch import parse_llm  # noqa: E402
from gpu_preflight.estimators.engines import transformers as tf_engine  # noqa: E402
from gpu_preflight.estimators.engines import transformers_quant as tq  # noqa: E402
from gpu_preflight.estimators.engines.transformers import (Workload, cublas_workspace_bytes,  # noqa: E402
                                                         estimate_transformers)
from gpu_preflight.estimators.plan import quant_config  # noqa: E402
from gpu_preflight.estimators.weights import weight_tensors  # noqa: E402

BEGIN, END = "<!-- quant:begin -->", "<!-- quant:end -->"
ROOT = str(Path(__file__).resolve().parents[1])
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


def predict(rec: dict, cc: tuple[int, int], probe_state: bool = True) -> dict:
    """The estimator's figures for one measured case, relative to the allocated / reserved bytes before loading.

    With `probe_state` the replay starts from the probe process's state, as the measurement did: cuBLAS had
    been warmed up before loading, so its workspace sat in its own segment (inside the measured base, so not
    allocated again here) and torch held reserved-but-unallocated memory (base_reserved - base_allocated,
    1 MiB), which caching_allocator_warmup subtracts from its block. Without it: a fresh process, as
    `preflight estimate` assumes (the workspace is allocated after loading; its bytes are subtracted)."""
    if not probe_state:
        return _predict(rec, cc, cublas_workspace_bytes(cc))
    unused = max(rec.get("base_reserved", 0) - rec.get("base_allocated", 0), 0)
    with mock.patch.object(tq, "replay_load", functools.partial(tq.replay_load, unused_reserved_bytes=unused)), \
            mock.patch.object(tf_engine, "cublas_workspace_bytes", lambda cc: 0):
        return _predict(rec, cc, 0)


def _predict(rec: dict, cc: tuple[int, int], ws: int) -> dict:
    cfg = dict(rec["config_json"])
    quant = case_quant(rec["method"])
    if quant:
        cfg["quantization_config"] = quant
    arch = parse_llm(cfg, assume_llama_like=False)
    wl = rec["workload"]
    w = Workload(batch=wl["batch"], input_len=wl["input_len"], output_len=wl["output_len"], dtype="bfloat16")
    est = estimate_transformers(arch, w, cc)
    storage = sum(t.bytes for t in weight_tensors(arch, 2) if not t.name.startswith("buffer:"))
    pk = est.phase_peaks
    load = pk.get("load", {"peak_allocated_bytes": est.weights_bytes, "peak_reserved_bytes": None})
    last = pk.get("decode", pk["prefill"])
    return {"storage_bytes": storage, "weights_allocated": est.weights_bytes,
            "load_peak_allocated": load["peak_allocated_bytes"],
            "prefill_peak_allocated": pk["prefill"]["peak_allocated_bytes"] - ws,
            "generate_peak_allocated": max(pk["prefill"]["peak_allocated_bytes"], last["peak_allocated_bytes"]) - ws,
            "load_peak_reserved": load["peak_reserved_bytes"],
            "generate_peak_reserved": max(pk["prefill"]["peak_reserved_bytes"], last["peak_reserved_bytes"]) - ws}


def measured(rec: dict, key: str) -> int | None:
    """A measured figure relative to the state before loading (reserved bytes less the base segments)."""
    m = rec.get(key)
    if m is None or not key.endswith("_reserved"):
        return m
    return m - rec.get("base_reserved", 0)


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
    """Per case: {key: (estimated, measured, error %)} for KEYS + RESERVED_KEYS (probe state) and
    "fresh:<key>" for KEYS (a fresh process)."""
    recs = [json.loads(line) for line in open(path, encoding="utf-8").read().splitlines() if line.strip()]
    env = next((r for r in recs if r.get("kind") == "env"), {})
    cc = tuple(int(x) for x in str(env.get("cc", "9.0")).split("."))
    rows = []
    for rec in recs:
        if rec.get("kind") != "case":
            continue
        row = {"case": f"{rec['config']} {rec['method']}", "method": rec["method"]}
        for prefix, pred in (("", predict(rec, cc)), ("fresh:", predict(rec, cc, probe_state=False))):
            for k in KEYS + (RESERVED_KEYS if not prefix else ()):
                m, e = measured(rec, k), pred[k]
                row[prefix + k] = None if m is None or e is None else (e, m, (e - m) / m * 100 if m else 0.0)
        rows.append(row)
    return env, rows, [r for r in recs if r.get("kind") == "error"]


# |error| bars (%) that tests/test_quant.py holds on the committed measurement (docs/accuracy.md states them)
BARS = {"storage_bytes": 0.0, "weights_allocated": 0.25, "load_peak_allocated": 0.25, "prefill_peak_allocated": 1.0,
        "generate_peak_allocated": 1.0, "load_peak_reserved": 5.0, "generate_peak_reserved": 5.0}
KEYS = ("storage_bytes", "weights_allocated", "load_peak_allocated", "prefill_peak_allocated",
        "generate_peak_allocated")
RESERVED_KEYS = ("load_peak_reserved", "generate_peak_reserved")


def worst(rows: list[dict], key: str, quantized_only: bool = False) -> float:
    vals = [abs(r[key][2]) for r in rows if r.get(key) and not (quantized_only and r["method"] == "none")]
    return max(vals) if vals else 0.0


def markdown(path: str | None) -> str:
    out = [BEGIN, "# Quantized loading (transformers)", "",
           "Generated by `python bench/quant_accuracy.py [MEASUREMENTS.jsonl] --markdown docs/accuracy.md`; do not "
           "edit by hand. Storage layouts, forward buffers and the load phase are derived from the libraries' source "
           "(transformers 5.17, bitsandbytes 0.50.2, torchao 0.18.0; files and functions are cited in "
           "`estimators/engines/transformers_quant.py` and `estimators/weights.py`). Nothing is fitted.", "",
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
        out += gpu_section(path)
    else:
        out.append("Not measured yet: `bash bench/device_quant.sh 60` on the GPU machine (torchao int8 / int4 / "
                   "float8 weight-only and float8 dynamic on three small Llama / Qwen configurations) produces the "
                   "table; until then the torchao peaks are UNMEASURED.")
    out += ["", "## What is measured and what is not", "",
            "| method | storage | forward buffers | load phase |", "|---|---|---|---|",
            "| torchao int8 / float8 weight-only, float8 dynamic, int4 (tinygemm layout) | exact (H200 table above; CPU "
            "check for int8 / float8) | MEASURED on the H200 (table above) | MEASURED on the H200 (table above) |",
            "| torchao int4, plain layout (the default; needs the mslk package) | derived (Int4Tensor: packed bytes + "
            "scale + zero point per group) | output only (mslk kernel), UNMEASURED | assumed as the tinygemm layout, "
            "UNMEASURED |",
            "| torchao with mslk installed (compute capability >= 9.0) | as above | float8 row-wise GEMM from mslk, "
            "UNMEASURED | float8 rows quantized by mslk's Triton kernel (no float32 copies): the estimate is an "
            "upper bound, UNMEASURED |",
            "| bitsandbytes NF4 / FP4 (+ double quant) | exact (CPU check, published ratio) | derived from "
            "bitsandbytes 0.50.2 source: weight dequantized to the compute dtype above 4 rows (upper bound: "
            "bitsandbytes 0.50 keeps its fused kernel up to 512-1536 rows on some GPUs), UNMEASURED | derived, "
            "UNMEASURED |",
            "| bitsandbytes LLM.int8 | exact (CPU check, published ratio) | derived (float16 input copy, int8 rows, "
            "int32 product), UNMEASURED | derived, UNMEASURED |",
            "| GPTQ / AWQ checkpoints | exact checkpoint layout (published ratio) | Marlin workspace not counted | "
            "loaded as stored |",
            "| FP8 (fine-grained) checkpoints | exact (block scales) | derived (activation quantization) | loaded "
            "as stored; dequantized below compute capability 8.9 |",
            "| gpt-oss MXFP4 | blocks + scales (experts only) with `--mxfp4-kernels` | not counted | dequantized "
            "load replayed (sequential; the 4 loader threads may hold more) |",
            "| compressed-tensors | estimated dequantized | - | - |",
            "", "bitsandbytes was not measured on the GPU: the probe covers torchao only (bitsandbytes 0.50.2's wheel "
            "is 43 MB of the 64 MiB that can be carried to the GPU machine); its storage is exact (checked on the CPU), its forward and load buffers are "
            "read from its source. MoE experts stay 16-bit under bitsandbytes and torchao in transformers 5 (fused 3D "
            "parameters, which neither converts; checked on the CPU with a Mixtral layer).", END]
    return "\n".join(out) + "\n"


def _cell(v: tuple | None) -> str:
    return "n/a" if v is None else f"{v[0] / 2**20:.1f} / {v[1] / 2**20:.1f} ({v[2]:+.2f} %)"


def gpu_section(path: str) -> list[str]:
    env, rows, errors = measured_rows(path)
    out = [f"Measured with `bash bench/device_quant.sh` (`bench/quant_probe.py`) on {env.get('gpu', '?')} (driver "
           f"{env.get('driver', '?')}), torch {env.get('torch')}, transformers {env.get('transformers')}, torchao "
           f"{env.get('torchao')} (mslk {'not installed' if 'unavailable' in str(env.get('mslk')) else env.get('mslk')}"
           f"), from `{os.path.relpath(path, ROOT) if os.path.isabs(path) else path}`: three small configurations "
           f"with real layer shapes (Llama-3.1-8B with 4 layers, Qwen2.5-1.5B with 8, Llama-3.2-1B), random bf16 "
           f"weights saved as safetensors, loaded with `from_pretrained(device_map=\"cuda\", "
           f"quantization_config=TorchAoConfig(...))`, then `generate` (batch 2, 1024-token prompt, 1 and 32 new "
           f"tokens). Each cell: estimated / measured MiB (error); allocated bytes relative to those before loading, "
           f"reserved bytes relative to the reserved segments before loading.", "",
           "The replay starts from the probe process's state: cuBLAS was warmed up before loading (its workspace is "
           "in the base) and torch held 1 MiB reserved but unallocated, which `caching_allocator_warmup` "
           "(transformers 5.17 modeling_utils.py) subtracts from its warm-up block; a fresh process has neither "
           "(`preflight estimate` assumes a fresh process).", "",
           "| case | " + " | ".join(k.replace("_allocated", "").replace("_bytes", "") for k in KEYS) + " | "
           + " | ".join(RESERVED_KEYS) + " |", "|" + " --- |" * (len(KEYS) + len(RESERVED_KEYS) + 1)]
    for row in rows:
        out.append(f"| {row['case']} | " + " | ".join(_cell(row[k]) for k in KEYS + RESERVED_KEYS) + " |")
    for e in errors:
        out.append(f"- failed: {e.get('config')} {e.get('method', '')}: {str(e.get('error', ''))[:160]}")
    q = [r for r in rows if r["method"] != "none"]
    out += ["", f"Worst absolute error over the {len(q)} quantized cases: storage {worst(q, 'storage_bytes'):.2f} %, "
            f"weights {worst(q, 'weights_allocated'):.3f} %, load peak {worst(q, 'load_peak_allocated'):.3f} %, "
            f"prefill peak {worst(q, 'prefill_peak_allocated'):.3f} %, generate peak "
            f"{worst(q, 'generate_peak_allocated'):.3f} % (allocated); reserved: load peak "
            f"{worst(q, 'load_peak_reserved'):.2f} %, generate peak {worst(q, 'generate_peak_reserved'):.2f} %. Replayed "
            f"as a fresh process instead (no warm-up subtraction, workspace allocated after loading): weights "
            f"{worst(q, 'fresh:weights_allocated'):.3f} %, load peak {worst(q, 'fresh:load_peak_allocated'):.3f} %, "
            f"generate peak {worst(q, 'fresh:generate_peak_allocated'):.3f} %.", "",
            "Bars that `tests/test_quant.py` holds on this file: storage exact; weights and load peak (allocated) "
            f"within {BARS['weights_allocated']} %; prefill and generate peaks (allocated) within "
            f"{BARS['generate_peak_allocated']} %; reserved peaks within {BARS['generate_peak_reserved']} % (the "
            "caching allocator's segments are 2-20 MiB grains, so reserved is not byte-exact).", "",
            "What the measurement changed (nothing is fitted; these were read from the source once the table showed "
            "a miss, so the 15 cases are no longer held out): (1) load order: transformers sorts the checkpoint keys "
            "(core_model_loading.py dot_natural_key), so a Llama layer's `self_attn.*` load after its `mlp.*`; the "
            "replay sorted its own short names (k_proj, o_proj, q_proj before up_proj) and so counted the last "
            "layer's attention weights at the peak, which quantizes that layer's last MLP projection (+0.3 to "
            "+1.1 % on the load peaks, +36 MiB on llama8b-4l); (2) the warm-up block less the reserved but "
            "unused memory (above); (3) int4 (tinygemm): the scale-and-zero tensor is packed after the weight "
            "(pack_tinygemm_scales_and_zeros: torch.cat then a contiguous copy). The forward buffers were not "
            "changed: they matched as first derived.", "",
            "The bf16 rows (`none`) take the unquantized load path, which does not replay `caching_allocator_warmup` "
            "(the H100 calibration set builds its models on the GPU, without it): where a tensor then lands in a "
            "fresh segment the allocator keeps its tail (qwen2.5-1.5b-8l: the 445.1 MiB embedding in a 446 MiB "
            "segment, +0.87 MiB), and its reserved peak differs more (+3.4 %)."]
    return out


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
