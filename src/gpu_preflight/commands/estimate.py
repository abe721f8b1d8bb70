"""`preflight estimate MODEL`: peak GPU memory before download, what fits, and what to change."""

from __future__ import annotations

import sys


def _positive(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1 or n > 10_000_000:
        raise argparse.ArgumentTypeError(f"{n} is out of range (1 to 10,000,000)")
    return n


def _fraction(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.05 <= v <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0.05 and 1.0")
    return v


def register(sub) -> None:
    from gpu_preflight.commands._common import number, version  # shared flag validators (stdlib only)

    p = sub.add_parser(
        "estimate", help="peak GPU memory of a model before you download it, and what fits",
        description="Estimate the peak GPU memory (what nvidia-smi shows, and torch.cuda.max_memory_allocated) "
                    "of running MODEL, per target GPU, with the largest context and batch that fit and the "
                    "changes that make it fit. MODEL: a folder with config.json (+ safetensors headers), a "
                    "config.json, a .gguf file, a built-in catalog name (see --list-models) or a Hugging Face "
                    "repo id org/name[@revision]. Exit code: 0 fits, 2 does not fit on the first target, 3 error.")
    p.add_argument("model", nargs="?", help="model folder, config.json, .gguf, catalog name or org/name[@rev]")
    p.add_argument("--engine", choices=("transformers", "vllm"), default="transformers")
    p.add_argument("--dtype", default="bfloat16", help="bfloat16 (default), float16 or float32")
    p.add_argument("--batch", type=_positive, default=1, help="sequences per batch (default 1)")
    p.add_argument("--input-len", type=_positive, default=512, help="prompt tokens (default 512)")
    p.add_argument("--output-len", type=_positive, default=128, help="generated tokens (default 128)")
    p.add_argument("--attn", choices=("sdpa", "eager", "flash_attention_2"), default="sdpa")
    p.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default="auto", help="vllm: fp8 halves the KV cache")
    p.add_argument("--gpu", action="append", default=[], metavar="NAME[:COUNT]",
                   help="target GPU(s), e.g. rtx-4090 or h100:2; repeatable (default: this machine's GPUs)")
    p.add_argument("--transformers", metavar="VER", type=version("5.17.0"), help="transformers release to model (default: 5.x behaviour)")
    p.add_argument("--torch", metavar="VER", type=version("2.11.0"), help="torch release (selects the measured process overhead)")
    p.add_argument("--gpu-memory-utilization", type=_fraction, default=0.9, help="vllm (default 0.9)")
    p.add_argument("--max-num-batched-tokens", type=_positive, default=8192, help="vllm (default 8192)")
    p.add_argument("--max-num-seqs", type=_positive, default=256, help="vllm (default 256)")
    g = p.add_argument_group("image / video pipelines")
    g.add_argument("--height", type=_positive, help="image height in pixels (default: the pipeline's)")
    g.add_argument("--width", type=_positive, help="image width in pixels (default: the pipeline's)")
    g.add_argument("--guidance-scale", type=number(0, 1000, what="scale"), help="CFG scale; > 1 doubles the denoiser batch unless distilled")
    g.add_argument("--steps", type=_positive, help="denoising steps (memory does not depend on it)")
    g.add_argument("--offload", choices=("none", "model", "sequential", "group"), default="none")
    g.add_argument("--vae-tiling", action="store_true")
    g.add_argument("--vae-slicing", action="store_true", help="decode a batch one image at a time")
    g.add_argument("--frames", type=_positive, help="video: frames per denoiser call (default: the pipeline's)")
    g.add_argument("--decode-chunk", type=_positive, help="video: frames per VAE decode call (decode_chunk_size)")
    g.add_argument("--quantize", choices=("8bit", "4bit", "fp8"),
                   help="weights of the denoiser and text encoders: bitsandbytes 8bit / 4bit (NF4), or fp8")
    g.add_argument("--drop-text-encoders", action="store_true", help="free the text encoders after encoding")
    p.add_argument("--revision", help="hub revision (also accepted as org/name@revision)")
    p.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    p.add_argument("--list-models", action="store_true", help="list the built-in catalog and exit")
    p.add_argument("--json", action="store_true", help="print the JSON report (docs/json-schema.md)")
    p.set_defaults(func=run)


def run(args) -> int:
    from gpu_preflight.errors import UsageError

    if args.list_models:
        return _list_models()
    if not args.model:
        raise UsageError("no model given", hint="e.g. preflight estimate qwen2.5-7b-instruct --gpu rtx-4090 "
                                                "(--list-models shows the built-in names)")
    from gpu_preflight.estimate.engines.transformers import Workload
    from gpu_preflight.estimate.plan import estimate_llm, parse_dtype, targets_from_machine, targets_from_specs
    from gpu_preflight.estimate.engines.vllm import VllmSettings
    from gpu_preflight.models import load_model_source

    source = load_model_source(args.model, revision=args.revision, offline=True if args.offline else None)
    if source.kind == "diffusion" or source.components:
        return _pipeline(args, source)
    if not args.gpu:
        targets = _machine_targets()
    else:
        targets = targets_from_specs(args.gpu)
    workload = Workload(batch=args.batch, input_len=args.input_len, output_len=args.output_len,
                        dtype=parse_dtype(args.dtype), attn=args.attn,
                        kv_dtype="float8_e4m3fn" if args.kv_cache_dtype == "fp8" and args.engine == "vllm" else None)
    if args.attn == "flash_attention_2":
        workload.attn = "sdpa"  # same memory shape: no materialized scores, O(S) extra
    vllm = VllmSettings(gpu_memory_utilization=args.gpu_memory_utilization,
                        max_num_batched_tokens=args.max_num_batched_tokens, max_num_seqs=args.max_num_seqs,
                        kv_cache_dtype="fp8" if args.kv_cache_dtype == "fp8" else None)
    report = estimate_llm(source.config, tensors=source.tensors, workload=workload, targets=targets,
                          engine=args.engine, torch_version=args.torch, transformers_version=args.transformers,
                          vllm=vllm, model_name=source.name, gguf=source.origin == "gguf")
    report["assumptions"] = list(source.warnings) + report["assumptions"]
    report["source"] = {"origin": source.origin, "url": source.source_url}
    if args.attn == "flash_attention_2":
        report["assumptions"].append("flash_attention_2 modelled like SDPA's flash kernel (no score matrix)")
    if not targets:
        report["assumptions"].append("no target GPU: this machine has none visible; pass --gpu NAME[:COUNT]")
    if args.json:
        import json

        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        from gpu_preflight.render.estimate import render_estimate
        from gpu_preflight.render.style import Style

        sys.stdout.write(render_estimate(report, Style(sys.stdout)) + "\n")
    return 0 if not report["fits"] or report["fits"][0]["fits"] else 2


def _pipeline(args, source) -> int:
    import json

    from gpu_preflight.estimate.engines.diffusers import ImageWorkload, pipeline_report
    from gpu_preflight.estimate.overheads import process_overhead
    from gpu_preflight.estimate.plan import parse_dtype, targets_from_specs

    entry = pipeline_entry(source)
    d = entry["defaults"]
    w = ImageWorkload(height=args.height or int(d.get("height", 1024)), width=args.width or int(d.get("width", 1024)),
                      batch=args.batch, guidance_scale=args.guidance_scale, steps=args.steps,
                      dtype=parse_dtype(args.dtype), offload=args.offload, vae_tiling=args.vae_tiling,
                      vae_slicing=args.vae_slicing, quantize=args.quantize, drop_text_encoders=args.drop_text_encoders,
                      frames=args.frames, decode_chunk=args.decode_chunk,
                      attn="eager" if args.attn == "eager" else "sdpa")
    targets = targets_from_specs(args.gpu) if args.gpu else _machine_targets()
    cc = targets[0].cc if targets else None
    overhead, note = process_overhead(cc, args.torch)
    report = pipeline_report(entry, w, targets, overhead, note, source.name)
    report["assumptions"] = list(source.warnings) + report["assumptions"]
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        from gpu_preflight.render.estimate import render_pipeline
        from gpu_preflight.render.style import Style

        sys.stdout.write(render_pipeline(report, Style(sys.stdout)) + "\n")
    return 0 if not report["fits"] or report["fits"][0]["fits"] else 2


def pipeline_entry(source) -> dict:
    """A ModelSource of a pipeline as the dict the diffusion estimator and measurement child take."""
    def weights(c):
        if c.metadata.get("weights"):
            return c.metadata["weights"]
        if c.tensors:  # safetensors headers of a diffusers folder or Hub repo
            return {"parameters": sum(t.numel for t in c.tensors)}
        return None

    def cls(c):
        value = c.metadata.get("class") or (c.config or {}).get("_class_name")
        return value[-1] if isinstance(value, (list, tuple)) and value else value

    return {"components": {n: {"class": cls(c), "config": c.config, "weights": weights(c)}
                           for n, c in (source.components or {}).items()},
            "defaults": source.metadata.get("defaults") or {},
            "pipeline_class": (source.pipeline_index or {}).get("_class_name", ""),
            "model_index": source.pipeline_index or {}}


def _machine_targets():
    from gpu_preflight.estimate.plan import targets_from_machine
    from gpu_preflight.probes.context import ProbeContext
    from gpu_preflight.probes.nvml import probe_nvml

    return targets_from_machine({"nvml": probe_nvml(ProbeContext())})


def _list_models() -> int:
    from gpu_preflight.models.catalog import default_catalog

    cat = default_catalog()
    for e in sorted(cat.entries, key=lambda e: (e.kind, e.id)):
        sys.stdout.write(f"{e.id:<34} {e.kind:<10} {e.hf_repo or ''}\n")
    return 0
