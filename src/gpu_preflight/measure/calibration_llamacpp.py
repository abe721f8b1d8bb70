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
    from gpu_preflight.estimate.engines.llama_cpp import predict_file_bytes

    out = []
    for r in read_jsonl(root, "gguf_sizes.jsonl"):
        pred, _, _ = predict_file_bytes({k: v for k, v in r["config"].items() if not k.startswith("_")}, r["quant"])
        out.append({"model": r["model"], "quant": r["quant"], "predicted_bytes": pred, "published_bytes": r["file_bytes"],
                    "error": (pred - r["file_bytes"]) / r["file_bytes"], "url": r["url"]})
    return out


def summary(errors: list[float]) -> dict[str, float]:
    a = [abs(e) for e in errors]
    return {"n": len(a), "median": statistics.median(a) if a else 0.0, "worst": max(a) if a else 0.0}


def evaluate_gpu(root: str | Path, name: str = "gpu_h200.jsonl") -> list[dict[str, Any]]:
    """bench/llamacpp_device.py results: each logged buffer against the estimate, and NVML's process
    peak against the estimate's total. The process overhead is reported, not subtracted."""
    from gpu_preflight.estimate.engines import llama_cpp as lc

    out = []
    for r in read_jsonl(root, name):
        if r.get("rc") != 0 or "config" not in r:
            continue
        model = model_from_config(r["config"], r["quant"])
        st = {"n_ctx": r["ctx"], "n_batch": r["batch"], "n_ubatch": r["ubatch"], "n_seq": r["seqs"],
              "unified": r["unified"], "flash_attn": bool(r["fa"]) if r["fa"] >= 0 else True,
              "type_k": r["ctk"].lower(), "type_v": r["ctv"].lower()}
        settings = settings_for(st, 2026)
        if r["fa"] < 0:
            settings.flash_attn = "auto"
        L = model.hp.n_layer
        ngl = L + 1 if r["ngl"] < 0 else r["ngl"]
        p = predict(model, settings, 1, ngl)
        lay = lc.layout(model, settings)
        pl = lc.placement(model, settings, 1, ngl)
        mb = lc.model_buffers(model, pl)
        b = r.get("buffers", {})
        logged = {"model_gpu": b.get("model:CUDA0", 0.0), "kv": sum(v for k, v in b.items() if k.startswith("KV:")),
                  "compute_gpu": b.get("compute:CUDA0", 0.0), "compute_host": b.get("compute:CUDA_Host", 0.0)}
        est_total = (mb.get(0, 0) + lc.kv_buffers(model, settings, lay, pl).get(0, 0)) / MIB + p["compute_gpu_mib"][0]
        peak = max(r.get("nvml_peak_process_bytes") or [0]) / MIB
        out.append({"id": r["id"], "held_out": r.get("held_out", False), "model_gpu_logged": logged["model_gpu"],
                    "model_gpu_predicted": round(mb.get(0, 0) / MIB, 2), "kv_logged": logged["kv"],
                    "kv_predicted": round(p["kv_mib"], 2), "compute_logged": logged["compute_gpu"],
                    "compute_predicted": round(p["compute_gpu_mib"][0], 2), "host_logged": logged["compute_host"],
                    "host_predicted": round(p["compute_host_mib"], 2), "buffers_predicted_mib": round(est_total, 2),
                    "nvml_peak_mib": round(peak, 2), "overhead_mib": round(peak - est_total, 2) if peak else None})
    return out


def markdown_section(root: str | Path) -> str:
    """The llama.cpp section of docs/accuracy.md."""
    out = ["", "# llama.cpp", "",
           "Generated by `python -m gpu_preflight.measure.calibration_llamacpp` from calibration/llamacpp/; "
           "method and sources in [llama-cpp.md](llama-cpp.md). Error = (estimate - logged) / logged.", ""]
    cpu = evaluate_cpu_replay(root)
    exact_c = sum(abs(r["compute_predicted_mib"] - r["compute_logged_mib"]) < 0.02 for r in cpu)
    exact_k = sum(abs(r["kv_predicted_mib"] - r["kv_logged_mib"]) < 0.01 for r in cpu)
    pub = evaluate_published(root)
    pe = summary([r["compute_error"] for r in pub])
    pk = sum(abs(r["kv_predicted_mib"] - r["kv_logged_mib"]) < 0.01 for r in pub)
    sizes = evaluate_gguf_sizes(root)
    se = summary([r["error"] for r in sizes])
    out += ["| set | cases | KV cache exact | compute buffer: median abs error | worst |", "|---|---|---|---|---|",
            f"| CPU build of llama.cpp 0c1e57098 (7 real model shapes + 3 tiny ones; replay check) | {len(cpu)} | {exact_k}/{len(cpu)} "
            f"| {exact_c}/{len(cpu)} to 0.02 MiB | |",
            f"| published start-up logs (GitHub issues, CUDA) | {len(pub)} | {pk}/{len(pub)} | {pe['median']:.2%} "
            f"| {pe['worst']:.2%} |", ""]
    gpu = evaluate_gpu(root)
    if gpu:
        ce = summary([(r["compute_predicted"] - r["compute_logged"]) / r["compute_logged"] for r in gpu
                      if r["compute_logged"]])
        out += [f"GPU measurements (bench/llamacpp_device.py): {len(gpu)} cases, compute buffer median "
                f"{ce['median']:.2%}, worst {ce['worst']:.2%}.", ""]
    else:
        out += ["GPU measurements: not yet run (bench/llamacpp_device.py; the process overhead outside the logged "
                "buffers is therefore not yet measured and the estimate says so).", ""]
    out += [f"Quantization recipe (`--quant`): predicted GGUF file size against {len(sizes)} published files, "
            f"median {se['median']:.2%}, worst {se['worst']:.2%}.", "",
            "Published logs (all compared during development; nothing is fitted to them, so none is held out):", "",
            "| log | KV logged | KV estimated | compute logged | compute estimated | error |", "|---|---|---|---|---|---|"]
    for r in pub:
        out.append(f"| [{r['id']}]({r['url']}) | {r['kv_logged_mib']:.2f} | {r['kv_predicted_mib']:.2f} | "
                   f"{', '.join(f'{x:.2f}' for x in r['compute_logged_mib'])} | "
                   f"{', '.join(f'{x:.2f}' for x in r['compute_predicted_mib'])} | {r['compute_error']:+.2%} |")
    out += ["", "GGUF sizes:", "", "| model | type | published bytes | predicted bytes | error |", "|---|---|---|---|---|"]
    for r in sizes:
        out.append(f"| [{r['model']}]({r['url'].split(' ')[0]}) | {r['quant']} | {r['published_bytes']:,} | "
                   f"{r['predicted_bytes']:,} | {r['error']:+.2%} |")
    out += ["", "Known gaps: only these published logs could be used (fifteen were sought): the others found lack the model's "
            "shape, the settings, or use pipeline parallelism; usable ones give full settings "
            "and an identifiable model. Pipeline parallelism (multi-GPU full offload) and "
            "MLA / recurrent / hybrid models are not modelled.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown_section(Path(__file__).resolve().parents[3]) + "\n")
