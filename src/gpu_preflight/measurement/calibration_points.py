"""Measured peaks to draw over a curve (estimators/sweep.py): the runs in calibration/raw/*.jsonl
(and its dated sub-folders) of the same model and workload, but for the swept quantity.

The measurements live in the repository, not in an installed package. `find_root` looks for
them where the caller says (`--plot-calibration DIR`, a repository root or its calibration
folder), else in the source tree this package runs from; with neither there is nothing to
overlay, and the curve says so.

Which runs can be compared: LLM runs of transformers generate() (the `measure` child; the
bench matrix maps their tags to catalog ids, and tags built with `config_overrides` are a
different model and skipped) at the same dtype, attention and (for a context sweep) batch, or
(for a batch sweep) prompt and output lengths; pipeline runs at the same dtype and batch, square
images for a side sweep, the same image size for a frames sweep. A run's peak is its largest
`peak_process_bytes` over its phases (prefill and generate; text encoding, denoising and decode).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

from gpu_preflight.measurement.calibration import load_records

# Pipelines whose measured runs lack components the GPU machine could not build (custom code),
# as listed in measurement/calibration_diffusion.compare: their peaks are not the whole pipeline's.
PARTIAL_PIPELINE_RUNS = {"newbie-image-exp0.1": ("clip_model",),
                         "sonic": ("audio2token", "audio2bucket", "face_detector", "frame_interpolation")}


def find_root(explicit: str | None = None) -> tuple[str | None, str]:
    """(repository root holding calibration/raw, how it was found), or (None, why not)."""
    if explicit:
        path = os.path.abspath(os.path.expanduser(explicit))
        for root in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
            if os.path.isdir(os.path.join(root, "calibration", "raw")):
                return root, f"--plot-calibration {explicit}"
        return None, f"--plot-calibration {explicit}: no calibration/raw folder there"
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.abspath(os.path.join(here, "..", "..", ".."))  # src/gpu_preflight/measure -> repository
    if os.path.isdir(os.path.join(root, "calibration", "raw")):
        return root, "the source tree's calibration/raw"
    return None, "no calibration/raw next to this installation (an installed package); pass --plot-calibration DIR"


def raw_files(root: str) -> list[str]:
    raw = os.path.join(root, "calibration", "raw")
    return sorted(glob.glob(os.path.join(raw, "*.jsonl")) + glob.glob(os.path.join(raw, "*", "*.jsonl")))


def _matrix(root: str) -> dict[str, dict[str, Any]]:
    path = os.path.join(root, "bench", "matrix_llm.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        matrix = json.load(fh)
    return {m.get("tag") or m["id"]: {**matrix.get("defaults", {}), **m} for m in matrix["models"]}


RUN_FIELDS = ("setup", "offload", "vae_tiling", "vae_slicing", "drop_text_encoders", "attn", "torchao",
              "layerwise_fp8", "quantize", "dtype")


def _runs(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """One run per file, model, workload and memory setup: its phases' largest peak and its fields."""
    runs: dict[tuple, dict[str, Any]] = {}
    for r in records:
        if r.get("type") != "phase" or not isinstance(r.get("workload"), dict) or r.get("oom") or r.get("error"):
            continue
        if not isinstance(r.get("peak_process_bytes"), int):
            continue
        key = (r["_file"], r.get("pipeline") or r.get("model"), json.dumps(r["workload"], sort_keys=True),
               *(json.dumps(r.get(f)) for f in RUN_FIELDS))
        run = runs.setdefault(key, {"rec": r, "peak": 0, "env": r.get("_env") or {}})
        run["peak"] = max(run["peak"], r["peak_process_bytes"])
    return runs


def measured_points(root: str, curve: dict[str, Any], catalog_id: str | None,
                    opts: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"points": [{"x", "peak_process_bytes", "label"}], "env": "...", "note": "..."} for `curve`
    (estimators/sweep.py) of the catalog model `catalog_id`; `opts`: the engine options of the curve."""
    q = curve["quantity"]["name"]
    opts = opts or {}
    if not catalog_id:
        return {"points": [], "env": None, "note": "measured runs exist only for catalog models"}
    engine, w = curve.get("engine"), curve.get("workload") or {}
    if engine == "training":
        return training_points(root, curve, catalog_id)
    if engine not in ("transformers", "diffusers"):
        return {"points": [], "env": None, "note": f"no measured runs of the {engine} engine in calibration/raw"}
    if opts.get("quantize"):
        return {"points": [], "env": None, "note": f"no measured runs with --quantize {opts['quantize']} to overlay"}
    if engine == "diffusers" and catalog_id in PARTIAL_PIPELINE_RUNS:
        return {"points": [], "env": None,
                "note": f"the measured {catalog_id} runs lack {', '.join(PARTIAL_PIPELINE_RUNS[catalog_id])} "
                        f"(not built on the GPU machine): not comparable"}
    matrix = _matrix(root)
    out = []
    envs = set()
    for (file, model, *_), run in sorted(_runs(load_records(raw_files(root))).items()):
        rec, wl = run["rec"], run["rec"]["workload"]
        if engine == "transformers":
            m = matrix.get(model)  # runs of the LLM bench matrix only (other matrices change the config)
            if m is None or m.get("id") != catalog_id or m.get("config_overrides") or "pipeline" in rec:
                continue
            if rec.get("dtype", m.get("dtype", "bfloat16")) != w.get("dtype") or \
                    rec.get("attn", m.get("attn", "sdpa")) != w.get("attn"):
                continue
            x = _llm_x(q, wl, w)
        else:
            if rec.get("pipeline") != catalog_id or not _same_pipeline_setup(rec, w):
                continue
            x = _pipeline_x(q, wl, w)
        if x is None:
            continue
        env = run["env"]
        envs.add(f"{env.get('gpu')}, driver {env.get('driver')}, torch {env.get('torch')}"
                 + (f", transformers {env['transformers']}" if engine == "transformers" and env.get("transformers") else "")
                 + (f", diffusers {env['diffusers']}" if engine == "diffusers" and env.get("diffusers") else ""))
        out.append({"x": x, "peak_process_bytes": run["peak"], "label": f"{wl.get('name')} ({os.path.basename(file)})"})
    note = f"{len(out)} measured run{'s' if len(out) != 1 else ''} from calibration/raw" if out else \
        "no measured run of this model at this workload in calibration/raw"
    return {"points": sorted(out, key=lambda p: p["x"]), "env": "; ".join(sorted(envs)) or None, "note": note}


def training_points(root: str, curve: dict[str, Any], catalog_id: str) -> dict[str, Any]:
    """GPU training runs (calibration/raw/train-*.jsonl, bench/matrix_train.json) of the same model
    and setup: mode, checkpointing, optimizer, precision, weight dtype, LoRA rank and targets, one GPU."""
    q, w = curve["quantity"]["name"], curve.get("workload") or {}
    if (w.get("gpus") or 1) > 1 or w.get("zero") or w.get("fsdp") or w.get("offload_optimizer"):
        return {"points": [], "env": None, "note": "the measured training runs are single-GPU, without sharding "
                                                   "or offload"}
    path = os.path.join(root, "bench", "matrix_train.json")
    matrix = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            matrix = {m.get("tag") or m["id"]: m for m in json.load(fh)["models"]}
    runs: dict[tuple, dict[str, Any]] = {}
    files = [f for f in raw_files(root) if os.path.basename(f).startswith("train-")]
    for r in load_records(files):
        case, env = r.get("case"), r.get("_env") or {}
        if r.get("type") != "phase" or not isinstance(case, dict) or r.get("oom") or env.get("device") != "cuda":
            continue
        m = matrix.get(r.get("model"))
        if m is None or m["id"] != catalog_id or m.get("config_overrides") or not isinstance(r.get("peak_process_bytes"), int):
            continue
        same = (case.get("mode") == w.get("train") and bool(case.get("grad_ckpt")) == bool(w.get("grad_checkpointing"))
                and case.get("optimizer") == w.get("optimizer") and case.get("mixed_precision") == w.get("mixed_precision")
                and case.get("param_dtype") == w.get("dtype"))
        if same and case.get("mode") != "full":
            same = case.get("lora_rank") == w.get("lora_rank") and list(case.get("lora_targets") or []) == \
                list(w.get("lora_targets") or [])
        x = case.get("micro_batch") if q == "batch" and case.get("seq_len") == w.get("seq_len") else \
            case.get("seq_len") if q == "context" and case.get("micro_batch") == w.get("micro_batch") else None
        if not same or x is None:
            continue
        run = runs.setdefault((r["_file"], r["model"], case.get("name")), {"x": int(x), "peak": 0, "env": env})
        run["peak"] = max(run["peak"], r["peak_process_bytes"])
    out = [{"x": v["x"], "peak_process_bytes": v["peak"], "label": f"{k[2]} ({os.path.basename(k[0])})"}
           for k, v in sorted(runs.items())]
    envs = {f"{v['env'].get('gpu')}, driver {v['env'].get('driver')}, torch {v['env'].get('torch')}, "
            f"transformers {v['env'].get('transformers')}, peft {v['env'].get('peft')}" for v in runs.values()}
    note = f"{len(out)} measured run{'s' if len(out) != 1 else ''} from calibration/raw" if out else \
        "no measured training run of this model and setup in calibration/raw"
    return {"points": sorted(out, key=lambda p: p["x"]), "env": "; ".join(sorted(envs)) or None, "note": note}


def _same_pipeline_setup(rec: dict[str, Any], w: dict[str, Any]) -> bool:
    """The run used the memory setup of the curve: dtype, offload, VAE tiling / slicing, text encoders
    dropped or not, attention; runs with quantized or float32 components are left out."""
    wl = rec["workload"]
    offload = rec.get("offload") or "none"
    setup = rec.get("setup")
    if rec.get("torchao") or rec.get("layerwise_fp8") or rec.get("quantize") or offload == "group":
        return False
    if setup not in (None, "gpu", offload):
        return False
    same = (rec.get("dtype", "bfloat16") == w.get("dtype") and offload == (w.get("offload") or "none")
            and bool(rec.get("vae_tiling") or wl.get("vae_tiling")) == bool(w.get("vae_tiling"))
            and bool(rec.get("vae_slicing") or wl.get("vae_slicing")) == bool(w.get("vae_slicing"))
            and bool(rec.get("drop_text_encoders") or wl.get("drop_text_encoders")) == bool(w.get("drop_text_encoders"))
            and (wl.get("attn") or rec.get("attn") or "sdpa") == (w.get("attn") or "sdpa"))
    return same


def _llm_x(q: str, wl: dict[str, Any], w: dict[str, Any]) -> int | None:
    if q == "context" and wl.get("batch") == w.get("batch"):
        return int(wl["input_len"]) + int(wl["output_len"])
    if q == "batch" and (wl.get("input_len"), wl.get("output_len")) == (w.get("input_len"), w.get("output_len")):
        return int(wl["batch"])
    return None


def _pipeline_x(q: str, wl: dict[str, Any], w: dict[str, Any]) -> int | None:
    same_frames = wl.get("frames") == w.get("frames") or (not wl.get("frames") and not w.get("frames"))
    if q == "side" and wl.get("height") == wl.get("width") and wl.get("batch") == w.get("batch") and same_frames:
        return int(wl["height"])
    if q == "frames" and wl.get("frames") and (wl.get("height"), wl.get("width"), wl.get("batch")) == \
            (w.get("height"), w.get("width"), w.get("batch")):
        return int(wl["frames"])
    if q == "batch" and (wl.get("height"), wl.get("width")) == (w.get("height"), w.get("width")) and same_frames:
        return int(wl["batch"])
    return None
