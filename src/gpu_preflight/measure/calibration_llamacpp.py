"""llama.cpp calibration data (calibration/llamacpp/) and the comparisons docs/accuracy.md reports.

- cpu_replay.jsonl: compute and KV buffers logged by a CPU build of llama.cpp 0c1e57098 for real
  model shapes (bench/llamacpp_device.py --cpu --matrix cpu-real), zero-weight GGUFs;
- published.jsonl: start-up logs people posted (URL, settings, logged sizes, how the model was
  identified from the log);
- gguf_sizes.jsonl: published GGUF file sizes for the quantization recipe;
- gpu_*.jsonl: bench/llamacpp_device.py on a GPU (buffers logged by llama.cpp + NVML peak).

Readers take the repository root, like measure/calibration.py.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

MIB = 1 << 20


def read_jsonl(root: str | Path, name: str) -> list[dict[str, Any]]:
    path = Path(root) / "calibration" / "llamacpp" / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def model_from_config(config: dict, quant: str = "Q4_K_M"):
    """A LlamaModel from a config.json-shaped dict, as llama-quantize would lay it out."""
    from gpu_preflight.estimate.engines.llama_cpp import model_from_config as build
    from gpu_preflight.models.base import ModelSource

    src = ModelSource(name="calibration", origin="config", config=config)
    return build(src, quant)


def config_from_dims(d: dict) -> dict:
    mt = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2", "gemma3": "gemma3_text"}[d["arch"]]
    cfg = {"model_type": mt, "hidden_size": d["n_embd"], "num_hidden_layers": d["n_layer"],
           "num_attention_heads": d["n_head"], "num_key_value_heads": d["n_head_kv"], "head_dim": d["head_dim"],
           "intermediate_size": d["n_ff"], "vocab_size": d["n_vocab"], "tie_word_embeddings": d.get("tied", False)}
    if mt == "qwen2":
        cfg["attention_bias"] = bool(d.get("qkv_bias", True))
    return cfg


def settings_for(s: dict, era: int):
    from gpu_preflight.estimate.engines.llama_cpp import Settings

    version = "b6150" if era < 2026 else "b10800"
    return Settings(version=version, n_ctx=s["n_ctx"], n_batch=s.get("n_batch", 2048), n_ubatch=s.get("n_ubatch", 512),
                    n_parallel=s.get("n_seq", 1), kv_unified=bool(s.get("unified", False)),
                    flash_attn="on" if s.get("flash_attn") else "off", type_k=s.get("type_k", "f16"),
                    type_v=s.get("type_v", "f16"), era=era)


def predict(model, settings, n_gpu: int, ngl: int) -> dict[str, Any]:
    from gpu_preflight.estimate.engines.llama_cpp import compute, kv_buffers, layout, placement

    lay = layout(model, settings)
    pl = placement(model, settings, n_gpu, ngl)
    kv = kv_buffers(model, settings, lay, pl)
    cb = compute(model, settings, lay, pl)
    return {"kv_mib": sum(kv.values()) / MIB, "compute_gpu_mib": [cb.get(b, 0) / MIB for b in range(n_gpu)],
            "compute_host_mib": cb.get(n_gpu, 0) / MIB, "n_ctx": lay.n_ctx}


def evaluate_published(root: str | Path) -> list[dict[str, Any]]:
    out = []
    for r in read_jsonl(root, "published.jsonl"):
        model = model_from_config(config_from_dims(r["dims"]))
        st = r["settings"]
        n_gpu = st.get("n_gpu", 1)
        p = predict(model, settings_for(st, r["era"]), n_gpu, model.hp.n_layer + 1 if st.get("full_offload") else
                    st["n_gpu_layers"])
        logged = r["logged_mib"]
        rows = list(zip(p["compute_gpu_mib"], logged["compute_gpu"]))
        errs = [(a - b) / b for a, b in rows if b]
        out.append({"id": r["id"], "url": r["url"], "held_out": r.get("held_out", False),
                    "kv_predicted_mib": round(p["kv_mib"], 2), "kv_logged_mib": logged["kv"],
                    "compute_predicted_mib": [round(x, 2) for x in p["compute_gpu_mib"]],
                    "compute_logged_mib": logged["compute_gpu"], "compute_error": max(errs, key=abs) if errs else None,
                    "host_predicted_mib": round(p["compute_host_mib"], 2), "host_logged_mib": logged.get("compute_host")})
    return out


def evaluate_cpu_replay(root: str | Path) -> list[dict[str, Any]]:
    out = []
    for r in read_jsonl(root, "cpu_replay.jsonl"):
        model = model_from_config(r["config"], r["quant"] if r["quant"] not in ("F16",) else "F16")
        st = {"n_ctx": r["ctx"], "n_batch": r["batch"], "n_ubatch": r["ubatch"], "n_seq": r["seqs"],
              "unified": r["unified"], "flash_attn": bool(r["fa"]), "type_k": r["ctk"].lower(), "type_v": r["ctv"].lower()}
        p = predict(model, settings_for(st, 2026), 0, 0)
        out.append({"id": r["id"], "kv_predicted_mib": round(p["kv_mib"], 2), "kv_logged_mib": r["logged_mib"]["kv"],
                    "compute_predicted_mib": round(p["compute_host_mib"], 2),
                    "compute_logged_mib": r["logged_mib"]["compute"]})
    return out


def evaluate_gguf_sizes(root: str | Path) -> list[dict[str, Any]]:
    from gpu_preflight.models.gguf_quant import predict_file_bytes

    out = []
    for r in read_jsonl(root, "gguf_sizes.jsonl"):
        pred, _, _ = predict_file_bytes({k: v for k, v in r["config"].items() if not k.startswith("_")}, r["quant"])
        out.append({"model": r["model"], "quant": r["quant"], "predicted_bytes": pred, "published_bytes": r["file_bytes"],
                    "error": (pred - r["file_bytes"]) / r["file_bytes"], "url": r["url"]})
    return out


def summary(errors: list[float]) -> dict[str, float]:
    a = [abs(e) for e in errors]
    return {"n": len(a), "median": statistics.median(a) if a else 0.0, "worst": max(a) if a else 0.0}
