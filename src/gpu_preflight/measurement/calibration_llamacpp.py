"""llama.cpp calibration data (calibration/llamacpp/) and the comparisons docs/accuracy.md reports.

- cpu_replay.jsonl: compute and KV buffers logged by a CPU build of llama.cpp 0c1e57098 for real
  model shapes (bench/llamacpp_device.py --cpu --matrix cpu-real), zero-weight GGUFs;
- published.jsonl: start-up logs people posted (URL, settings, logged sizes, how the model was
  identified from the log);
- gguf_sizes.jsonl: published GGUF file sizes for the quantization recipe;
- gpu_*.jsonl: bench/llamacpp_device.py on a GPU (buffers logged by llama.cpp + NVML peak).

Readers take the repository root, like measurement/calibration.py.
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
    from gpu_preflight.estimators.engines.llama_cpp import model_from_config as build
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
    from gpu_preflight.estimators.engines.llama_cpp import Settings

    version = "b6150" if era < 2026 else "b10800"
    return Settings(version=version, n_ctx=s["n_ctx"], n_batch=s.get("n_batch", 2048), n_ubatch=s.get("n_ubatch", 512),
                    n_parallel=s.get("n_seq", 1), kv_unified=bool(s.get("unified", False)),
                    flash_attn="on" if s.get("flash_attn") else "off", type_k=s.get("type_k", "f16"),
                    type_v=s.get("type_v", "f16"), era=era)


def predict(model, settings, n_gpu: int, ngl: int) -> dict[str, Any]:
    from gpu_preflight.estimators.engines.llama_cpp import compute, kv_buffers, layout, placement

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
    from gpu_preflight.estimators.engines.llama_cpp import predict_file_bytes

    out = []
    for r in read_jsonl(root, "gguf_sizes.jsonl"):
        pred, _, _ = predict_file_bytes({k: v for k, v in r["config"].items() if not k.startswith("_")}, r["quant"])
        out.append({"model": r["model"], "quant": r["quant"], "predicted_bytes": pred, "published_bytes": r["file_bytes"],
                    "error": (pred - r["file_bytes"]) / r["file_bytes"], "url": r["url"]})
    return out


def summary(errors: list[float]) -> dict[str, float]:
    a = [abs(e) for e in errors]
    return {"n": len(a), "median": statistics.median(a) if a else 0.0, "worst": max(a) if a else 0.0}


# The bars for the GPU measurements (issue 10, Deliver 4): KV exact, compute buffer within 5 %,
# process peak within 3 %. The model buffer is held to the same exactness as the KV cache.
BAR_COMPUTE = 0.05
BAR_PEAK = 0.03
EXACT_MIB = 0.01   # llama.cpp logs sizes in MiB with two decimals


def _gpu_case(r: dict[str, Any]):
    """(model, settings, ngl) of one bench/llamacpp_device.py case."""
    model = model_from_config(r["config"], r["quant"])
    st = {"n_ctx": r["ctx"], "n_batch": r["batch"], "n_ubatch": r["ubatch"], "n_seq": r["seqs"],
          "unified": r["unified"], "flash_attn": bool(r["fa"]) if r["fa"] >= 0 else True,
          "type_k": r["ctk"].lower(), "type_v": r["ctv"].lower()}
    settings = settings_for(st, 2026)
    if r["fa"] < 0:
        settings.flash_attn = "auto"
    ngl = model.hp.n_layer + 1 if r["ngl"] < 0 else r["ngl"]
    return model, settings, ngl


def workload_pool(model, settings, lay, pl, n_prompt: int):
    """The CUDA pool of GPU 0 after the probe's workload: a prompt of n_prompt tokens decoded in
    n_batch chunks, each split into n_ubatch micro-batches, the cache filling as it goes (n_kv = the
    used cells padded to 256, llama_kv_cache::get_n_kv), then two single tokens (no large scratch)."""
    from gpu_preflight.estimators.engines import llama_cpp as lc

    best = lc.PoolUse(0, False, "")
    start = 0
    while start < n_prompt:
        end_batch = min(n_prompt, start + settings.n_batch)
        while start < end_batch:
            end = min(end_batch, start + lay.n_ubatch)
            n_kv = min(lay.cells, max(256, -(-end // 256) * 256))
            use = lc.cuda_pool(model, settings, lay, pl, n_kv=n_kv, n_tokens=end - start).get(0)
            if use is not None:
                best = lc.PoolUse(max(best.bytes, use.bytes), best.cublas or use.cublas,
                                  use.op if use.bytes > best.bytes else best.op)
            start = end
    return best


def evaluate_gpu(root: str | Path, name: str = "gpu_h200.jsonl") -> list[dict[str, Any]]:
    """bench/llamacpp_device.py results: each logged buffer against the estimate, and NVML's process
    peak against the estimate at the workload the probe ran (the pool at the cells its prompt filled;
    start-up only when it decoded nothing). Sizes in MiB."""
    from gpu_preflight.estimators.engines import llama_cpp as lc

    m = lc.MEASURED_OVERHEAD
    out = []
    for r in read_jsonl(root, name):
        if r.get("rc") != 0 or "config" not in r:
            continue
        model, settings, ngl = _gpu_case(r)
        lay = lc.layout(model, settings)
        pl = lc.placement(model, settings, 1, ngl)
        mb, kv, cb = (lc.model_buffers(model, pl), lc.kv_buffers(model, settings, lay, pl),
                      lc.compute(model, settings, lay, pl))
        b = r.get("buffers", {})
        rounded = sum(lc._round_up(x.get(0, 0)) for x in (mb, kv, cb))
        decoded = r.get("decode", 0) > 0
        pool = workload_pool(model, settings, lay, pl, r["decode"]) if decoded else lc.PoolUse(0, False, "")
        overhead = m["context_bytes"] + ((m["first_prompt_bytes"] + pool.bytes +
                                          (m["cublas_bytes"] if pool.cublas else 0)) if decoded else 0)
        predicted = (rounded + overhead) / MIB
        peak = max(r.get("nvml_peak_process_bytes") or [0]) / MIB
        row = {"id": r["id"], "held_out": bool(r.get("held_out", False)), "decoded": decoded,
               "model_gpu_logged": b.get("model:CUDA0", 0.0), "model_gpu_predicted": round(mb.get(0, 0) / MIB, 2),
               "kv_logged": round(sum(v for k, v in b.items() if k.startswith("KV:")), 2),
               "kv_predicted": round(sum(kv.values()) / MIB, 2),
               "kv_gpu_logged": b.get("KV:CUDA0", 0.0), "kv_gpu_predicted": round(kv.get(0, 0) / MIB, 2),
               "compute_logged": b.get("compute:CUDA0", 0.0), "compute_predicted": round(cb.get(0, 0) / MIB, 2),
               "host_logged": b.get("compute:CUDA_Host", 0.0), "host_predicted": round(cb.get(1, 0) / MIB, 2),
               "pool_predicted": round(pool.bytes / MIB, 2), "pool_op": pool.op, "cublas": pool.cublas,
               "peak_predicted": round(predicted, 2), "nvml_peak_mib": round(peak, 2),
               "residual_mib": round(peak - (rounded + pool.bytes) / MIB, 2)}
        row["model_exact"] = abs(row["model_gpu_predicted"] - row["model_gpu_logged"]) <= EXACT_MIB
        row["kv_exact"] = (abs(row["kv_predicted"] - row["kv_logged"]) <= EXACT_MIB and
                           abs(row["kv_gpu_predicted"] - row["kv_gpu_logged"]) <= EXACT_MIB)
        row["compute_error"] = ((row["compute_predicted"] - row["compute_logged"]) / row["compute_logged"]
                                if row["compute_logged"] else 0.0)
        row["peak_error"] = (predicted - peak) / peak if peak else None
        out.append(row)
    return out


def derive_overhead(root: str | Path, name: str = "gpu_h200.jsonl") -> dict[str, Any]:
    """The process-overhead constants from the training cases (held-out ones never enter):
    residual = NVML peak - buffers rounded to 2 MiB - the computed pool.
    context: the residual of the cases that decoded nothing; first prompt: the median residual of
    the cases that decoded a prompt without a cuBLAS op, minus the context; cuBLAS: the median
    residual of the cases with a cuBLAS op, minus both."""
    rows = [r for r in evaluate_gpu(root, name) if not r["held_out"]]
    start = [r["residual_mib"] for r in rows if not r["decoded"]]
    plain = [r["residual_mib"] for r in rows if r["decoded"] and not r["cublas"]]
    cublas = [r["residual_mib"] for r in rows if r["decoded"] and r["cublas"]]

    def stats(v: list[float]) -> dict[str, Any]:
        return {"n": len(v), "median": statistics.median(v) if v else None, "min": min(v, default=None),
                "max": max(v, default=None)}

    out = {"startup": stats(start), "first_prompt": stats(plain), "cublas": stats(cublas),
           "probes": stats([p for p in (probe_overheads(r) for r in read_jsonl(root, name)
                                        if not r.get("held_out") and r.get("rc") == 0) if p is not None]),
           "nvml_offset": stats([p for p in (nvml_offset(r) for r in read_jsonl(root, name)
                                             if not r.get("held_out") and r.get("rc") == 0) if p is not None])}
    out["context_mib"] = out["startup"]["median"]
    out["first_prompt_mib"] = (out["first_prompt"]["median"] - out["context_mib"]) if plain and start else None
    out["cublas_mib"] = (out["cublas"]["median"] - out["first_prompt"]["median"]) if plain and cublas else None
    out["training_ids"] = [r["id"] for r in rows]
    return out


def probe_overheads(r: dict[str, Any]) -> float | None:
    """Device-wide memory in use after the model loaded (cudaMemGetInfo, the probe's 'loaded' line)
    minus the model buffer rounded to 2 MiB, in MiB: the CUDA context as the device sees it."""
    import math
    import re

    for line in r.get("probe", []):
        m = re.match(r"PROBE dev=CUDA0 free=(\d+) total=(\d+) stage=loaded", line)
        if m:
            used = (int(m.group(2)) - int(m.group(1))) / MIB
            return round(used - 2 * math.ceil(r.get("buffers", {}).get("model:CUDA0", 0.0) / 2 - 1e-9), 2)
    return None


def nvml_offset(r: dict[str, Any]) -> float | None:
    """cudaMemGetInfo's device-wide use after the prompt minus NVML's process peak, in MiB."""
    import re

    for line in r.get("probe", []):
        m = re.match(r"PROBE dev=CUDA0 free=(\d+) total=(\d+) stage=decoded", line)
        if m and r.get("nvml_peak_process_bytes"):
            return round((int(m.group(2)) - int(m.group(1)) - max(r["nvml_peak_process_bytes"])) / MIB, 2)
    return None


def gpu_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and errors of one set of GPU cases against the issue's bars."""
    peaks = [r["peak_error"] for r in rows if r["peak_error"] is not None]
    comp = [r["compute_error"] for r in rows if r["compute_logged"]]
    return {"n": len(rows), "model_exact": sum(r["model_exact"] for r in rows), "kv_exact": sum(r["kv_exact"] for r in rows),
            "compute": summary(comp), "compute_within": sum(abs(e) <= BAR_COMPUTE for e in comp),
            "peak": summary(peaks), "peak_within": sum(abs(e) <= BAR_PEAK for e in peaks), "peak_n": len(peaks)}


def markdown_section(root: str | Path) -> str:
    """The llama.cpp section of docs/accuracy.md."""
    out = ["", "# llama.cpp", "",
           "Generated by `python -m gpu_preflight.measurement.calibration_llamacpp` from calibration/llamacpp/; "
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
            f"| {pe['worst']:.2%} |", "",
            f"The target on published logs (KV exact, compute buffer within 10 % median / 25 % worst) is judged on "
            f"held-out logs that are not in this repository; on the {len(pub)} here: KV {pk}/{len(pub)} exact, "
            f"compute buffer {pe['median']:.2%} / {pe['worst']:.2%}.", ""]
    out += gpu_markdown(root)
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


def _old_peak_error(root: str | Path, r: dict[str, Any]) -> float:
    """What the estimate said before the GPU run: logged-size buffers + the 0.51 GiB placeholder."""
    return ((r["model_gpu_predicted"] + r["kv_gpu_predicted"] + r["compute_predicted"]) * MIB + 545_259_520
            - r["nvml_peak_mib"] * MIB) / (r["nvml_peak_mib"] * MIB)


def gpu_markdown(root: str | Path, name: str = "gpu_h200.jsonl") -> list[str]:
    from gpu_preflight.estimators.engines.llama_cpp import MEASURED_OVERHEAD

    rows = evaluate_gpu(root, name)
    if not rows:
        return ["GPU measurements: none in calibration/llamacpp/ (bench/llamacpp_device.py).", ""]
    env = {}
    env_path = Path(root) / "calibration" / "llamacpp" / name.replace(".jsonl", "_env.json")
    if env_path.exists():
        env = json.loads(env_path.read_text())
    d = derive_overhead(root, name)
    out = ["## GPU measurements", "",
           f"bench/llamacpp_device.py on one {env.get('gpu', 'GPU')} (driver {env.get('driver', '?')}, "
           f"{env.get('nvcc', 'nvcc ?').replace('Build ', '')}, {env.get('llama_cpp_source', 'llama.cpp')} built with "
           "CUDA for sm_90, 2026-12-02): GGUFs with real model shapes and zero weights (types from "
           "models/gguf_quant.py's recipe), each case a fresh process that loads the model, creates the context, "
           "decodes a prompt (2048 tokens unless the batch or context is smaller) and two single tokens. Logged: "
           "llama.cpp's buffer lines; NVML's per-process GPU memory sampled every 10 ms (its peak). The process "
           "peak is compared at the workload run: the CUDA pool at the cells the prompt filled "
           "(the estimate for users assumes a full context). Held out before the run (never used to set "
           "anything): the mistral-7b, gemma-3-4b and qwen2.5-3b cases.", "",
           f"Targets: KV exact, compute buffer within {BAR_COMPUTE:.0%}, process peak within {BAR_PEAK:.0%}.", "",
           "| set | cases | model buffer exact | KV exact | compute buffer within 5 % (median / worst) "
           "| process peak within 3 % (median / worst) |", "|---|---|---|---|---|---|"]
    for label, sel in (("training", [r for r in rows if not r["held_out"]]),
                       ("held out", [r for r in rows if r["held_out"]])):
        g = gpu_summary(sel)
        out.append(f"| {label} | {g['n']} | {g['model_exact']}/{g['n']} | {g['kv_exact']}/{g['n']} | "
                   f"{g['compute_within']}/{g['compute']['n']} ({g['compute']['median']:.2%} / {g['compute']['worst']:.2%}) | "
                   f"{g['peak_within']}/{g['peak_n']} ({g['peak']['median']:.2%} / {g['peak']['worst']:.2%}) |")
    old = summary([_old_peak_error(root, r) for r in rows])
    out += ["", f"Before this run the estimate had no CUDA pool and a 0.51 GiB placeholder for the rest: its process "
            f"peak was off by {old['median']:.1%} (median) and {old['worst']:.1%} (worst) on these cases.", "",
            "Process overhead (measurement/calibration_llamacpp.py derive_overhead; training cases only; "
            "residual = NVML peak - buffers rounded to 2 MiB pages - computed CUDA pool):", "",
            "| part | value | from | median | spread |", "|---|---|---|---|---|",
            f"| CUDA context (start-up) | {MEASURED_OVERHEAD['context_bytes'] / MIB:.0f} MiB | {d['startup']['n']} case "
            f"without a prompt; the cudaMemGetInfo probes of all {d['probes']['n']} training cases: "
            f"{d['probes']['median']:.2f} MiB device-wide after loading ({d['probes']['min']:.2f} .. "
            f"{d['probes']['max']:.2f}) + 2 MiB at context creation, NVML counting {d['nvml_offset']['median']:.1f} MiB less "
            f"({d['nvml_offset']['min']:.1f} .. {d['nvml_offset']['max']:.1f}) | {d['startup']['median']:.0f} | - |",
            f"| first prompt, no cuBLAS (kernels loaded on first use, fix-up scratch) | "
            f"{MEASURED_OVERHEAD['first_prompt_bytes'] / MIB:.0f} MiB | {d['first_prompt']['n']} cases | "
            f"{d['first_prompt']['median']:.0f} - {d['context_mib']:.0f} | {d['first_prompt']['min']:.0f} .. "
            f"{d['first_prompt']['max']:.0f} |",
            f"| cuBLAS handle, workspace, kernels | {MEASURED_OVERHEAD['cublas_bytes'] / MIB:.0f} MiB | "
            f"{d['cublas']['n']} cases with a cuBLAS op | {d['cublas']['median']:.0f} - {d['first_prompt']['median']:.0f} | "
            f"{d['cublas']['min']:.0f} .. {d['cublas']['max']:.0f} |", "",
            "| case | set | model buffer logged / est. | KV logged / est. | compute logged / est. | error | "
            "CUDA pool (computed) | NVML peak | estimate | error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pool = f"{r['pool_predicted']:.0f} ({r['pool_op']}{', cuBLAS' if r['cublas'] else ''})" if r["decoded"] else \
            "no prompt run"
        out.append(f"| {r['id']} | {'held out' if r['held_out'] else 'training'} | {r['model_gpu_logged']:.2f} / "
                   f"{r['model_gpu_predicted']:.2f} | {r['kv_logged']:.2f} / {r['kv_predicted']:.2f} | "
                   f"{r['compute_logged']:.2f} / {r['compute_predicted']:.2f} | {r['compute_error']:+.2%} | {pool} | "
                   f"{r['nvml_peak_mib']:.0f} | {r['peak_predicted']:.0f} | {r['peak_error']:+.2%} |")
    out += ["", "Case ids: model-type-ctx-ubatch-batch-fa-ctk-ctv-ngl-seqs-unified (ngl -1 = all layers). Sizes in MiB. "
            "The model buffers are checked for placement, padding and alignment; the GGUFs' tensor types came from the "
            "tool's own quantization recipe, which is checked separately against published file sizes below. Not "
            "measured: a context filled to the end (the pool's growth with the filled cells is checked at 256, 1024 "
            "and 2048 cells), GPUs other than the H200 (the context and kernel constants are used as is elsewhere), "
            "multi-GPU splits.", ""]
    return out


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown_section(Path(__file__).resolve().parents[3]) + "\n")
