"""The command lines the local page shows for a request and its report.

- the engine's own command where the report carries one (`vllm.serve_command`, `llama_cpp.command`:
  the engines build them, with the change that makes it fit where one exists);
- a Python snippet that runs the model with transformers or diffusers at the estimated workload;
- the `preflight estimate ...` line and the gpu_preflight.api call that give this same report.
"""

from __future__ import annotations

import shlex
from typing import Any

# (report key, key inside it, label): the commands engines put in their reports
ENGINE_COMMAND_KEYS = (("vllm", "serve_command", "vLLM"), ("llama_cpp", "command", "llama.cpp"))
DTYPES = {"bfloat16": "torch.bfloat16", "float16": "torch.float16", "float32": "torch.float32"}


def command_lines(req: dict[str, Any], report: dict[str, Any], engine) -> dict[str, Any]:
    """`req`: the normalized request (model, engine, gpus, torch, revision, offline, options)."""
    return {"preflight": preflight_line(req, engine), "python_api": python_api(req),
            "engine": engine_command(report), "run_snippet": run_snippet(req, report)}


def _given(req: dict[str, Any], engine) -> list[tuple[Any, Any]]:
    """(option, value) the user set that differ from the engine's default."""
    out = []
    for dest, value in req.get("options", {}).items():
        opt = engine.option(dest) if engine else None
        if opt is None or value is None or value == opt.default:
            continue
        out.append((opt, value))
    return out


def preflight_line(req: dict[str, Any], engine) -> str:
    parts = ["preflight", "estimate", req["model"]]
    if req.get("engine"):
        parts += ["--engine", req["engine"]]
    for g in req.get("gpus") or []:
        parts += ["--gpu", g]
    for key in ("torch", "revision"):
        if req.get(key):
            parts += [f"--{key}", str(req[key])]
    if req.get("asked_offline", req.get("offline")):
        parts.append("--offline")
    for opt, value in _given(req, engine):
        if opt.action == "store_true":
            parts += [opt.flag] if value else []
        else:
            parts += [opt.flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def python_api(req: dict[str, Any]) -> str:
    args = [repr(req["model"])]
    for key in ("engine", "gpus", "torch", "revision"):
        if req.get(key):
            args.append(f"{key}={req[key]!r}")
    if req.get("asked_offline", req.get("offline")):
        args.append("offline=True")
    args += [f"{k}={v!r}" for k, v in req.get("options", {}).items() if v is not None]
    return ("import gpu_preflight.api as gp\n\n"
            f"est = gp.estimate({', '.join(args)})\n"
            "print(est.fits, est.peak_process_bytes / 2**30, 'GiB')")


def engine_command(report: dict[str, Any]) -> dict[str, str] | None:
    for key, inner, label in ENGINE_COMMAND_KEYS:
        block = report.get(key)
        if isinstance(block, dict) and block.get(inner):
            return {"label": "Ollama" if report.get("engine") == "ollama" else label, "command": str(block[inner])}
    return None


def repo_id(req: dict[str, Any], report: dict[str, Any]) -> str:
    """What from_pretrained() takes: the Hub repo id where the report's source names one, else
    what the user typed (a folder)."""
    url = (report.get("source") or {}).get("url") or ""
    prefix = "https://huggingface.co/"
    if url.startswith(prefix):
        return "/".join(url[len(prefix):].split("/")[:2])
    return str(req["model"])


def run_snippet(req: dict[str, Any], report: dict[str, Any]) -> dict[str, str] | None:
    if report.get("engine") == "transformers":
        return {"label": "transformers", "code": _transformers(req, report)}
    if report.get("engine") == "diffusers" and not (report.get("workload") or {}).get("frames"):
        return {"label": "diffusers", "code": _diffusers(req, report)}
    return None


def _transformers(req: dict[str, Any], report: dict[str, Any]) -> str:
    w = report.get("workload") or {}
    quant = (req.get("options") or {}).get("quantize")
    lines = ["import torch", "from transformers import AutoModelForCausalLM, AutoTokenizer"]
    kwargs = [f"dtype={DTYPES.get(w.get('dtype'), 'torch.bfloat16')}", 'device_map="auto"',
              f"attn_implementation={w.get('attn', 'sdpa')!r}"]
    if quant:
        lines[1] += ", BitsAndBytesConfig"
        if quant == "8bit":
            kwargs.append("quantization_config=BitsAndBytesConfig(load_in_8bit=True)")
        else:
            kind = "fp4" if quant == "fp4" else "nf4"
            dq = ", bnb_4bit_use_double_quant=True" if (req.get("options") or {}).get("double_quant") else ""
            kwargs.append(f"quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type={kind!r}{dq})")
    rid = repo_id(req, report)
    batch, n_in, n_out = int(w.get("batch") or 1), int(w.get("input_len") or 512), int(w.get("output_len") or 128)
    lines += ["", f"model = AutoModelForCausalLM.from_pretrained({rid!r}, {', '.join(kwargs)})",
              f"ids = torch.randint(0, model.config.vocab_size, ({batch}, {n_in}), device=model.device)"
              f"  # batch {batch} x {n_in} prompt tokens",
              f"out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens={n_out}, "
              f"min_new_tokens={n_out}, do_sample=False)",
              "print(torch.cuda.max_memory_allocated() / 2**30, 'GiB allocated at peak')"]
    return "\n".join(lines)


def _diffusers(req: dict[str, Any], report: dict[str, Any]) -> str:
    w = report.get("workload") or {}
    lines = ["import torch", "from diffusers import DiffusionPipeline", "",
             f"pipe = DiffusionPipeline.from_pretrained({repo_id(req, report)!r}, "
             f"torch_dtype={DTYPES.get(w.get('dtype'), 'torch.bfloat16')})"]
    offload = w.get("offload") or "none"
    lines.append({"none": 'pipe.to("cuda")', "model": "pipe.enable_model_cpu_offload()",
                  "sequential": "pipe.enable_sequential_cpu_offload()",
                  "group": '# group offload: see diffusers "enable_group_offload" for your components'}.get(offload,
                                                                                                         'pipe.to("cuda")'))
    if w.get("vae_tiling"):
        lines.append("pipe.vae.enable_tiling()")
    if w.get("vae_slicing"):
        lines.append("pipe.vae.enable_slicing()")
    kw = [f"height={int(w.get('height') or 1024)}", f"width={int(w.get('width') or 1024)}",
          f"num_images_per_prompt={int(w.get('batch') or 1)}"]
    if w.get("guidance_scale") is not None:
        kw.append(f"guidance_scale={w['guidance_scale']:g}")
    if w.get("steps"):
        kw.append(f"num_inference_steps={int(w['steps'])}")
    lines.append(f"images = pipe(\"a photo of a red fox in the snow\", {', '.join(kw)}).images")
    lines.append("print(torch.cuda.max_memory_allocated() / 2**30, 'GiB allocated at peak')")
    return "\n".join(lines)
