"""Run a measurement matrix on the local GPU: each model in a fresh child process (the same
child `preflight measure` uses), all its workloads in that process, records appended to one
JSONL file. Stops starting new models when the time budget is spent.

Usage: python bench/calibrate.py MATRIX.json OUT.jsonl [--budget-s 540] [--only id,id]
       python bench/calibrate.py bench/matrix_arch.json "$OUT/arch.jsonl" --budget-s 240   (issue 19)
       python bench/calibrate.py bench/matrix_arch.json /tmp/a.jsonl --device cpu --tiny   (CPU dry run)
MATRIX: {"defaults": {"dtype", "attn"}, "workloads": {"name": {"batch", "input_len", "output_len"}},
         "models": [{"id": catalog id, "workloads": [names], "config_overrides": {...}, "tag": "..."}]}
Diffusion catalog entries (kind != "llm") get the entry's components, defaults, pipeline_class and
model_index in spec["model"]; their workloads are {"height", "width", "batch"}, and a model may carry
"component_overrides": {component: {...} or null} and "defaults_overrides": {...}, merged into the
entry (null drops the component; e.g. {"transformer": {"config": {"num_layers": 2}}}).
"device" ("cuda" or "cpu", for tests) may be set in defaults or per model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))


def catalog_entry(model_id: str) -> dict:
    with open(os.path.join(ROOT, "src", "gpu_preflight", "data", "models", f"{model_id}.json"), encoding="utf-8") as fh:
        return json.load(fh)


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def model_spec(entry: dict, m: dict, key: str) -> dict:
    kind = entry.get("kind", "llm")
    config = dict(entry.get("config") or {})
    if "text_config" in config and m.get("config_overrides"):
        config["text_config"] = {**config["text_config"], **m["config_overrides"]}
    else:
        config.update(m.get("config_overrides") or {})
    spec = {"id": key, "catalog_id": m["id"], "kind": kind, "config": config}
    if kind != "llm":
        components = dict(entry.get("components") or {})
        for name, over in (m.get("component_overrides") or {}).items():
            if over is None:
                components.pop(name, None)
            else:
                components[name] = deep_merge(components.get(name) or {}, over)
        spec.update(components=components,
                    defaults=deep_merge(entry.get("defaults") or {}, m.get("defaults_overrides") or {}),
                    pipeline_class=entry.get("pipeline_class"), model_index=entry.get("model_index") or {})
    return spec


def tiny_config(cfg: dict, keep_vocab: bool = False) -> dict:
    """The same architecture at toy size (dry runs on the CPU)."""
    small = {"hidden_size": 64, "n_embd": 64, "d_model": 64, "intermediate_size": 128, "n_inner": 128, "ffn_dim": 128,
             "ffn_hidden_size": 128, "num_hidden_layers": 2, "n_layer": 2, "n_layers": 2, "num_attention_heads": 4,
             "n_head": 4, "n_heads": 4, "vocab_size": 1000, "word_embed_proj_dim": 64, "rotary_dim": 8}
    small.update({"d_ff": 128, "d_kv": 16, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4,
                  "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4, "decoder_attention_heads": 4,
                  "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "depth": 2, "embed_dim": 64})
    # token ids above the toy vocabulary (Whisper's start token, image tokens) keep the real vocabulary
    keep_vocab = keep_vocab or any(isinstance(v, int) and v >= 1000 for k, v in cfg.items()
                                   if k.endswith(("token_id", "token_index")))
    if keep_vocab:
        small.pop("vocab_size")
    out = {k: (small[k] if k in small else tiny_config(v, keep_vocab) if k in ("text_config", "vision_config")
               else v) for k, v in cfg.items()}
    if "mrope_section" in str(out.get("rope_scaling")):
        out["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 3, 3]}  # 16-dim heads: 8 rotary pairs

    for k in ("num_key_value_heads", "num_kv_heads"):
        if k in out:
            out[k] = min(int(out[k]), 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("matrix")
    ap.add_argument("out")
    ap.add_argument("--budget-s", type=float, default=540)
    ap.add_argument("--per-model-timeout-s", type=float, default=240)
    ap.add_argument("--only", default="")
    ap.add_argument("--list", default="models", help="which list of the matrix to run (matrix_arch.json: models or "
                    "multimodal_models, whose workloads are in multimodal_workloads)")
    ap.add_argument("--device", default="", help="override the spec device (cpu: tests without a GPU)")
    ap.add_argument("--tiny", action="store_true", help="dry run: 2 layers, 4 heads x 16 dims, short workloads")
    args = ap.parse_args()
    with open(args.matrix, encoding="utf-8") as fh:
        matrix = json.load(fh)
    only = {s for s in args.only.split(",") if s}
    t_start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if args.list != "models":
        matrix = {**matrix, "workloads": matrix.get(args.list.replace("models", "workloads"), matrix["workloads"])}
    for m in matrix[args.list]:
        key = m.get("tag") or m["id"]
        if only and key not in only and m["id"] not in only:
            continue
        left = args.budget_s - (time.perf_counter() - t_start)
        if left < 30:
            print(f"budget spent: skipping {key}", flush=True)
            continue
        # a matrix model carries its own config (bench/matrix_arch.json) or names a catalog entry
        entry = {"kind": "llm", "config": m["config"]} if "config" in m else catalog_entry(m["id"])
        spec = {"model": model_spec(entry, m, key),
                **matrix.get("defaults", {}), **{k: v for k, v in m.items() if k in ("dtype", "attn", "device")},
                "workloads": [{"name": w, **matrix["workloads"][w]} for w in m["workloads"]]}
        if args.device:
            spec["device"] = args.device
        if args.tiny:
            spec["model"]["config"] = tiny_config(spec["model"]["config"])
            spec["workloads"] = [{**w, "batch": min(w["batch"], 2), "input_len": 16, "output_len": 4,
                                  **({"image_size": "200x150"} if w.get("images") else {})}
                                 for w in spec["workloads"]]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(spec, fh)
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "gpu_preflight.measurement.child", fh.name, args.out],
                                  env=env, timeout=min(args.per_model_timeout_s, left), capture_output=True, text=True)
            status = f"exit {proc.returncode}"
            if proc.returncode:
                status += ": " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        except subprocess.TimeoutExpired:
            status = "timeout"
            with open(args.out, "a", encoding="utf-8") as out:
                out.write(json.dumps({"type": "error", "model": key, "error": "timeout"}) + "\n")
        print(f"{key:<40} {status:<20} {time.perf_counter() - t:6.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
