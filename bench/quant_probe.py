"""Measure quantized loading in transformers (torchao) on one GPU: load peak, steady weight bytes,
prefill and generate peaks, one JSON line per case (a crash keeps the finished ones).

Each config is a small Llama / Qwen2 model with random bf16 weights, saved once as safetensors and then
loaded with from_pretrained(device_map="cuda", quantization_config=TorchAoConfig(...)) per method.
All figures are torch.cuda memory statistics relative to the allocated bytes just before loading
(the cuBLAS / cuBLASLt workspaces are warmed up first so that every case starts from the same base).
bench/quant_accuracy.py compares them with the estimator.

Usage: python bench/quant_probe.py --out DIR [--budget-s 60] [--dry-run]
  --dry-run: CPU, tiny configs, no memory statistics (checks the script end to end before a GPU call).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import tempfile
import time
import traceback

# Real layer shapes with fewer layers: Llama-3.1-8B (hidden 4096, MLP 14336, GQA 32/8, vocab 128256),
# Qwen2.5-1.5B (1536, 8960, 12/2 heads, tied 151936 vocab, q/k/v bias), Llama-3.2-1B (2048, 8192, tied).
CONFIGS = {
    "llama8b-4l": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
                   "intermediate_size": 14336, "num_hidden_layers": 4, "num_attention_heads": 32,
                   "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
                   "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False},
    "qwen2.5-1.5b-8l": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 1536,
                        "intermediate_size": 8960, "num_hidden_layers": 8, "num_attention_heads": 12,
                        "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
                        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True},
    "llama3.2-1b": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
                    "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
                    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                    "tie_word_embeddings": True},
}
TINY = {"tiny-llama": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256,
                       "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 2048,
                       "tie_word_embeddings": False}}
METHODS = ("none", "int8wo", "int4wo", "fp8wo", "fp8dq")
WORKLOAD = {"batch": 2, "input_len": 1024, "output_len": 32}
TINY_WORKLOAD = {"batch": 1, "input_len": 16, "output_len": 4}


def torchao_config(method: str):
    from torchao.quantization import (Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig,
                                      Int4WeightOnlyConfig, Int8WeightOnlyConfig)
    from transformers import TorchAoConfig

    if method == "none":
        return None
    quant = {"int8wo": lambda: Int8WeightOnlyConfig(),
             # tile_packed_to_4d: tinygemm kernels built into torch (the default "plain" format needs mslk)
             "int4wo": lambda: Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d"),
             "fp8wo": lambda: Float8WeightOnlyConfig(),
             "fp8dq": lambda: Float8DynamicActivationFloat8WeightConfig()}[method]()
    return TorchAoConfig(quant)


def environment(device: str) -> dict:
    import torch
    import transformers

    env = {"kind": "env", "python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "device": device}
    for mod in ("torchao", "safetensors", "accelerate", "triton", "mslk"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            env[mod] = f"unavailable: {type(exc).__name__}"
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update({"gpu": p.name, "cc": f"{p.major}.{p.minor}", "total_memory": p.total_memory,
                    "cuda": torch.version.cuda})
        try:
            import pynvml
            pynvml.nvmlInit()
            env["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception as exc:  # noqa: BLE001
            env["driver"] = f"unavailable: {type(exc).__name__}"
    return env


def save_checkpoint(name: str, cfg: dict, root: str, device: str) -> str:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    d = os.path.join(root, name)
    c = dict(cfg)
    mt = c.pop("model_type")
    c.pop("architectures", None)
    config = AutoConfig.for_model(mt, **c)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(d)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return d


def storage_bytes(model) -> dict:
    """Bytes the parameters really hold: the inner tensors of torchao subclasses, plain tensors otherwise."""
    total, quantized = 0, 0
    seen = set()
    for _, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        names = list(getattr(p, "tensor_data_names", []) or []) + list(getattr(p, "optional_tensor_data_names", []) or [])
        inner = [getattr(p, n, None) for n in names]
        inner = [t for t in inner if t is not None]
        if inner:
            b = sum(t.numel() * t.element_size() for t in inner)
            quantized += b
        else:
            b = p.numel() * p.element_size()
        total += b
    return {"storage_bytes": total, "quantized_storage_bytes": quantized}


def warm_up(device: str) -> None:
    import torch

    if device != "cuda":
        return
    a = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16)
    (a @ a).sum().item()
    try:  # cuBLASLt workspace of float8 matmuls
        f = a.to(torch.float8_e4m3fn)
        one = torch.ones((), device="cuda")
        torch._scaled_mm(f, f.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    except Exception:  # noqa: BLE001 - GPUs without float8
        pass
    torch.cuda.synchronize()


def run_case(cfg_name: str, ckpt: str, method: str, device: str, wl: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    rec = {"kind": "case", "config": cfg_name, "method": method, "workload": wl}
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        rec["base_allocated"] = base
        rec["base_reserved"] = torch.cuda.memory_reserved()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    qc = torchao_config(method)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16, device_map=device,
                                                 quantization_config=qc)
    model.eval()
    rec["load_s"] = round(time.perf_counter() - t0, 3)
    if cuda:
        torch.cuda.synchronize()
        rec["load_peak_allocated"] = torch.cuda.max_memory_allocated() - base
        rec["load_peak_reserved"] = torch.cuda.max_memory_reserved()
        rec["weights_allocated"] = torch.cuda.memory_allocated() - base
        rec["reserved_after_load"] = torch.cuda.memory_reserved()
    rec.update(storage_bytes(model))
    rec["weight_types"] = sorted({type(m.weight).__name__ for m in model.modules()
                                  if isinstance(m, torch.nn.Linear)})
    g = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (wl["batch"], wl["input_len"]), generator=g).to(device)
    mask = torch.ones_like(ids)
    kw = {"do_sample": False, "pad_token_id": 0, "attention_mask": mask}
    with torch.inference_mode():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
        if cuda:
            torch.cuda.synchronize()
            rec["prefill_peak_allocated"] = torch.cuda.max_memory_allocated() - base
            rec["prefill_peak_reserved"] = torch.cuda.max_memory_reserved()
            torch.cuda.reset_peak_memory_stats()
        t1 = time.perf_counter()
        model.generate(ids, max_new_tokens=wl["output_len"], min_new_tokens=wl["output_len"], **kw)
        rec["generate_s"] = round(time.perf_counter() - t1, 3)
        if cuda:
            torch.cuda.synchronize()
            rec["generate_peak_allocated"] = torch.cuda.max_memory_allocated() - base
            rec["generate_peak_reserved"] = torch.cuda.max_memory_reserved()
    del model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return rec


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="directory for quant.jsonl")
    ap.add_argument("--budget-s", type=float, default=60.0, help="stop starting new cases after this many seconds")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny config, no memory statistics")
    ap.add_argument("--only", default="", help="comma-separated config names")
    args = ap.parse_args()
    t_start = time.perf_counter()
    import torch

    device = "cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"
    configs = TINY if device == "cpu" else CONFIGS
    wl = TINY_WORKLOAD if device == "cpu" else WORKLOAD
    if args.only:
        configs = {k: v for k, v in configs.items() if k in args.only.split(",")}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "quant.jsonl")
    root = tempfile.mkdtemp(prefix="quant-ckpt-")
    done = failed = 0
    with open(path, "a") as fh:
        def emit(rec: dict) -> None:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()

        emit(environment(device))
        warm_up(device)
        for cfg_name, cfg in configs.items():
            if time.perf_counter() - t_start > args.budget_s:
                print(f"budget spent: skipping {cfg_name}", flush=True)
                continue
            try:
                ckpt = save_checkpoint(cfg_name, cfg, root, device)
            except Exception as exc:  # noqa: BLE001
                emit({"kind": "error", "config": cfg_name, "stage": "save", "error": repr(exc)[:500]})
                failed += 1
                continue
            for method in METHODS:
                if time.perf_counter() - t_start > args.budget_s:
                    print(f"budget spent: skipping {cfg_name}/{method}", flush=True)
                    continue
                try:
                    rec = run_case(cfg_name, ckpt, method, device, wl)
                    rec["config_json"] = cfg
                    emit(rec)
                    done += 1
                    print(f"{cfg_name}/{method}: load peak {rec.get('load_peak_allocated')} weights "
                          f"{rec.get('weights_allocated')} storage {rec['storage_bytes']} generate peak "
                          f"{rec.get('generate_peak_allocated')} ({rec['load_s']} s load)", flush=True)
                except Exception as exc:  # noqa: BLE001 - one failed case must not lose the others
                    emit({"kind": "error", "config": cfg_name, "method": method, "error": repr(exc)[:500],
                          "trace": traceback.format_exc()[-1500:]})
                    failed += 1
                    print(f"{cfg_name}/{method}: FAILED {exc!r}"[:300], flush=True)
                    gc.collect()
                    if device == "cuda":
                        torch.cuda.empty_cache()
            shutil.rmtree(ckpt, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    print(f"{done} cases measured, {failed} failed, {time.perf_counter() - t_start:.1f} s; {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
