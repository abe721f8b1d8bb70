"""Human rendering of an estimate report (the JSON report is the data; this only formats it)."""

from __future__ import annotations

from typing import Any

from gpu_preflight.render.style import Style, sanitize_tree

GIB = 1 << 30


def gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.2f} GiB"


def render_estimate(r: dict[str, Any], style: Style) -> str:
    r = sanitize_tree(r)  # model names, file names and warnings come from files
    w = r["workload"]
    first = r["fits"][0] if r["fits"] else None
    count = first["count"] if first else 1
    lines = [style.paint(f"{r['model']} · {r['engine']} · {w['dtype']} · batch {w['batch']} · "
                         f"{w['input_len']} in + {w['output_len']} out · {w['attn']}", "bold")]
    if r["engine"] == "vllm":
        lines.append(f"vLLM takes its whole budget: {gib(r['peak_process_bytes'])} per GPU; "
                     f"KV cache holds {r.get('kv_cache_tokens') or 0:,} tokens")
    else:
        where = " per GPU" if count > 1 else ""
        lines.append(f"Peak GPU memory (nvidia-smi): {style.paint(gib(r['peak_process_bytes']), 'bold')}{where}   "
                     f"(torch max_memory_allocated {gib(r['peak_allocated_bytes'])})")
        if count > 1:
            lines.append(f"Per GPU, the fullest of {count} (layers split whole, the embeddings on the first):")
    width = max(len(k) for k in r["breakdown"]) + 2
    for k, v in r["breakdown"].items():
        lines.append(f"  {k:<{width}}{gib(v):>12}")
    lines += [style.wrap(f"{style.glyph('fail')} {f}", 2) for f in r.get("failures") or []]
    lines += _targets(r, style)
    ctx, mb = r.get("max_context_tokens"), r.get("max_batch")
    if ctx or mb:
        on = _target_name(first) if first else "the target"
        parts = []
        if ctx:
            parts.append(f"largest context at batch {w['batch']}: {ctx:,} tokens{_context_limit(r)}")
        if mb:
            parts.append(f"largest batch at {w['input_len'] + w['output_len']} tokens: {mb}")
        lines.append(style.wrap(f"On {on}: " + "; ".join(parts), 0))
    elif first and not first["fits"]:
        lines.append("Even batch 1 with a short prompt does not fit the first target.")
    if r.get("suggestions"):
        header = "What would make it run:" if r.get("failures") else "What would make it fit:"
        lines.append(style.paint(header, "bold"))
        for s in r["suggestions"]:
            mark = style.glyph("ok" if s["fits"] else "fail")
            per_s = " per GPU" if count > 1 or s.get("flag", "").startswith("--gpu ") else ""
            lines.append(style.wrap(f"{mark} {s['change']}: {gib(s['peak_process_bytes'])}{per_s} "
                                    f"({'fits, ' + gib(s['headroom_bytes']) + ' headroom' if s['fits'] else 'still too big'})"
                                    f"  [{s['flag']}]", 2))
    lines += _assumptions(r, style)
    return "\n".join(lines)


def _target_name(f: dict[str, Any]) -> str:
    return f"{f['count']}x {f['gpu']}" if f["count"] > 1 else f["gpu"]


def _context_limit(r: dict[str, Any]) -> str:
    by = r.get("max_context_limited_by")
    if by == "model":
        return (f" (the model's limit, max_position_embeddings "
                f"{r['architecture']['max_position_embeddings']:,}; memory would allow more)")
    if by == "memory":
        return " (limited by memory)"
    if by == "search_limit":
        return " (the config names no limit; the search stops there)"
    return ""


def _targets(r: dict[str, Any], style: Style, one_gpu_runs: bool = False) -> list[str]:
    """One line per target: memory per GPU, and the headroom or the shortfall (per GPU where there
    are several). A fit with less than 2 % headroom is a warning and says so."""
    if not r["fits"]:
        return []
    lines = ["Targets:"]
    for f in r["fits"]:
        many = f["count"] > 1
        per = " per GPU" if many else ""
        peak = f.get("peak_process_bytes_per_gpu")
        # a target whose own peak differs from the headline (another count or GPU) says what it needs
        needs = f"needs {gib(peak)}{per}, " if peak is not None and peak != r["peak_process_bytes"] \
            and r.get("engine") != "vllm" else ""
        if f["fits"] and f.get("tight"):
            status, what = "warn", (f"{needs}fits with only {gib(f['headroom_bytes'])} headroom{per} (under 2 % of "
                                    f"its memory: tight, fragmentation or another process can push it over)")
        elif f["fits"]:
            status, what = "ok", f"{needs}{gib(f['headroom_bytes'])} headroom{per}"
        else:
            status, what = "fail", f"{needs}short by {gib(-f['headroom_bytes'])}{per}"
        mem = f"{gib(f['memory_bytes'])} per GPU" if many or not one_gpu_runs else gib(f["memory_bytes"])
        note = "; the pipeline runs on one of them" if many and one_gpu_runs else ""
        lines.append(style.wrap(f"{style.glyph(status)} {_target_name(f)} ({mem}, {f['memory_source']}{note}): "
                                f"{what}", 2))
    return lines


def _assumptions(r: dict[str, Any], style: Style) -> list[str]:
    if not r.get("assumptions"):
        return []
    return [style.paint("Assumptions:", "dim")] + [style.paint(style.wrap(f"- {a}", 2), "dim")
                                                   for a in r["assumptions"]]


def render_pipeline(r: dict[str, Any], style: Style) -> str:
    from gpu_preflight.estimators.annotate import pipeline_peak_breakdown

    w = r["workload"]
    peak = r["peak_phase"]
    parts = r.get("peak_breakdown") or pipeline_peak_breakdown(r)
    overhead = parts["cuda_context_and_libraries"]
    lines = [style.paint(f"{r['model']} · diffusers · {w['dtype']} · {w['height']}x{w['width']} · {w['batch']} image(s) · "
                         f"offload {w['offload']}" + (" · VAE tiling" if w["vae_tiling"] else ""), "bold"),
             f"Peak GPU memory (nvidia-smi): {style.paint(gib(r['peak_process_bytes']), 'bold')}, in phase {peak}:"]
    for label, v in ((f"resident in {peak} (weights, buffers)", parts["resident_bytes"]),
                     (f"{peak} activations (transient)", parts["transient_bytes"]),
                     ("allocator reserve (freed blocks kept cached)", parts["allocator_reserve_bytes"]),
                     ("CUDA context and libraries", overhead)):
        lines.append(f"  {label:<46}{gib(v):>12}")
    weights = {k.split(":", 1)[1]: v for k, v in r["breakdown"].items() if k.startswith("weights:")}
    if weights:
        where = "all on the GPU" if w["offload"] == "none" and not w.get("drop_text_encoders") else \
            "on the GPU only in the phases that use them"
        lines.append(f"Weights per component ({w['dtype']}{', ' + w['quantize'] if w.get('quantize') else ''}; {where}):")
        for k, v in weights.items():
            lines.append(f"  {k:<46}{gib(v):>12}")
    lines.append("Phases, GiB (resident + transient + allocator reserve + context = process):")
    nw = max(len(n) for n in r["phases"]) + 2
    for name, p in r["phases"].items():
        reserve = p["peak_reserved_bytes"] - p["peak_allocated_bytes"]
        process = p["peak_reserved_bytes"] + overhead
        mark = "  <- peak" if name == peak else ""
        lines.append(f"  {name:<{nw}}{p['resident_bytes'] / GIB:6.2f} + {p['transient_bytes'] / GIB:5.2f} + "
                     f"{reserve / GIB:5.2f} + {overhead / GIB:4.2f} = {process / GIB:6.2f}{mark}")
    lines += [style.paint("  " + f"{name}: {p['detail']}", "dim") for name, p in r["phases"].items() if p.get("detail")]
    lines += _targets(r, style, one_gpu_runs=True)
    if r.get("host_weights_bytes") is not None:  # issue 15: offload modes hold weights in host RAM
        lines.append(f"Host RAM for weights: {gib(r['host_weights_bytes'])} while generating, "
                     f"{gib(r['host_weights_load_bytes'])} while loading (plus the Python/torch process)")
    if r.get("max_resolution"):
        lines.append(f"Largest square image that fits as is: {r['max_resolution']}x{r['max_resolution']}")
    if r.get("suggestions"):
        lines.append(style.paint("What would make it fit:", "bold"))
        for s in r["suggestions"]:
            flag = f"  [{s['flag']}]" if s.get("flag") else ""
            lines.append(style.wrap(f"{style.glyph('ok' if s['fits'] else 'fail')} {s['change']}: "
                                    f"{gib(s['peak_process_bytes'])} ({'fits, ' if s['fits'] else ''}"
                                    f"{gib(s['headroom_bytes'])} headroom){flag}", 2))
    lines += _assumptions(r, style)
    return "\n".join(lines)


def render_vllm(r: dict[str, Any], style: Style) -> str:
    """vLLM: whether it starts, how much KV cache is left and what that means in requests."""
    v, w = r["vllm"], r["workload"]
    tp = f" · TP {v['tensor_parallel_size']}" if v["tensor_parallel_size"] > 1 else ""
    pp = f" · PP {v['pipeline_parallel_size']}" if v["pipeline_parallel_size"] > 1 else ""
    lines = [style.paint(f"{r['model']} · vLLM {v['version']} · {w['dtype']} · max_model_len {v['max_model_len']:,}"
                         f"{tp}{pp}", "bold")]
    first = r["fits"][0] if r["fits"] else None
    where = first["gpu"] if first else "the target"
    if v["starts"]:
        lines.append(f"{style.glyph('ok')} starts on {where}: {gib(v['available_kv_cache_bytes'])} of KV cache per GPU "
                     f"= {v['kv_cache_tokens']:,} tokens; {v['max_concurrency']:.2f} requests of "
                     f"{v['max_model_len']:,} tokens at once")
    else:
        lines.append(f"{style.glyph('fail')} does not start on {where}:")
        lines.append(style.wrap(f"  {v['refusal']}", 4))
    par = v.get("parallel") or {}
    if par.get("gpus_used", 1) > 1 or par.get("nodes", 1) > 1:
        lines.append(style.wrap(f"Parallel: TP {par['tensor_parallel_size']} x PP {par['pipeline_parallel_size']} on "
                                f"{par['gpus_used']} GPUs ({par['nodes']} node(s) x {par['gpus_per_node']}); TP group "
                                f"{par['tp_interconnect']}; PP {par['pp_interconnect']}", 2))
    lines.append(f"Per GPU: budget {gib(v['budget_bytes'])} = gpu_memory_utilization {v['gpu_memory_utilization']:g} x "
                 f"{gib(v['total_memory_bytes'])} (vLLM takes all of it)")
    parts = [("weights", v["weights_bytes"]), ("profile-run peak (activations, sampler)", v["activation_bytes"]),
             ("outside PyTorch (NCCL, kernels)", v["non_torch_bytes"])]
    if v["cuda_graphs_in_budget"]:
        parts.append(("CUDA graphs (estimated, in the budget)", v["cuda_graph_bytes"]))
    parts.append(("KV cache", v["available_kv_cache_bytes"]))
    for name, n in parts:
        lines.append(f"  {name:<42}{gib(n):>12}")
    if v["cuda_graph_bytes"] and not v["cuda_graphs_in_budget"]:
        lines.append(f"  + CUDA graphs ~{gib(v['cuda_graph_bytes'])} captured after the KV cache, outside the budget")
    need = w["batch"] * (w["input_len"] + w["output_len"])
    if v["starts"] and first:
        spare = v["kv_cache_tokens"] - need
        what = (f"headroom = spare KV cache: {spare:,} tokens free after {w['batch']} x "
                f"{w['input_len'] + w['output_len']} tokens" if spare >= 0 else
                f"{w['batch']} x {w['input_len'] + w['output_len']} tokens exceed the cache by {-spare:,}: "
                f"vLLM queues or preempts the rest")
        lines.append(what)
    if v["largest_max_model_len"]:
        lines.append(f"Largest max_model_len that starts: {v['largest_max_model_len']:,}")
    if len(r["fits"]) > 1:
        lines.append("Targets:")
        for f in r["fits"]:
            name = f"{f['count']}x {f['gpu']}" if f["count"] > 1 else f["gpu"]
            lines.append(f"  {style.glyph('ok' if f['starts'] else 'fail')} {name}: "
                         f"{'starts' if f['starts'] else 'does not start'}")
    if r.get("suggestions"):
        lines.append(style.paint("What would make it start:", "bold"))
        for s in r["suggestions"]:
            lines.append(style.wrap(f"{style.glyph('ok' if s['fits'] else 'fail')} {s['change']}: "
                                    f"{s['kv_cache_tokens']:,} tokens, {s['max_concurrency']:.2f}x  [{s['flag']}]", 2))
    lines.append(style.paint("Command:", "bold") + f" {v['serve_command']}")
    if r.get("assumptions"):
        lines.append(style.paint("Assumptions:", "dim"))
        for a in r["assumptions"]:
            lines.append(style.paint(style.wrap(f"- {a}", 2), "dim"))
    return "\n".join(lines)


# ---- training (engine "training") ----

def render_training(r: dict[str, Any], style: Style) -> str:
    w = r["workload"]
    what = w["train"] + (f" r{w['lora_rank']}" if w.get("lora_rank") else "")
    shard = f" · ZeRO-{w['zero']}" if w.get("zero") else f" · FSDP {w['fsdp']}" if w.get("fsdp") else ""
    lines = [style.paint(f"{r['model']} · train {what} · micro-batch {w['micro_batch']} x {w['seq_len']} tokens · "
                         f"{w['optimizer']} · {w['dtype']} weights, autocast {w['mixed_precision']}"
                         + (" · checkpointing" if w["grad_checkpointing"] else "")
                         + (f" · {w['gpus']} GPUs" if w.get("gpus", 1) > 1 else "") + shard
                         + (" · optimizer offload" if w.get("offload_optimizer") else ""), "bold"),
             (f"Peak GPU memory per GPU (nvidia-smi): {style.paint(gib(r['peak_process_bytes']), 'bold')} in "
              f"{r['peak_phase']}   (torch max_memory_allocated {gib(r['peak_allocated_bytes'])})")]
    t = r.get("training") or {}
    if t:
        lines.append(f"Trainable parameters: {t['trainable_params']:,} of {t['total_params']:,}")
    lines.append("Phases (peak per GPU):")
    for name, p in r["phases"].items():
        lines.append(f"  {name:<10} {gib(p['peak_process_bytes']):>12}   allocated {gib(p['peak_allocated_bytes'])}")
    lines.append(f"At the peak ({r['peak_phase']}):")
    for k, v in r["breakdown"].items():
        lines.append(f"  {k:<22}{gib(v):>12}")
    if r.get("host_ram_bytes") is not None:
        ok = r.get("host_ram_fits")
        note = "" if ok is None else " (fits --ram-gb)" if ok else " (more than --ram-gb)"
        lines.append(f"Host RAM for CPU offload: {gib(r['host_ram_bytes'])}{note}")
    for f in r["fits"]:
        name = f"{f['count']}x {f['gpu']}" if f["count"] > 1 else f["gpu"]
        what = f"{gib(f['headroom_bytes'])} headroom" if f["fits"] else f"short by {gib(-f['headroom_bytes'])}"
        lines.append(f"  {style.glyph('ok' if f['fits'] else 'fail')} {name} ({gib(f['memory_bytes'])} per GPU): {what}")
    mb, ms = r.get("max_micro_batch"), r.get("max_seq_len")
    if r["fits"]:
        parts = [f"largest micro-batch at {w['seq_len']} tokens: {mb if mb else 'none'}",
                 f"longest sequence at micro-batch {w['micro_batch']}: {f'{ms:,}' if ms else 'none'}"]
        lines.append(f"On {r['fits'][0]['gpu']}: " + "; ".join(parts))
    if r.get("suggestions"):
        lines.append(style.paint("What would make it fit (cheapest first):", "bold"))
        for s in r["suggestions"]:
            mark = style.glyph("ok" if s["fits"] else "fail")
            tag = " <- cheapest" if s.get("cheapest") else ""
            unm = "" if s.get("measured", True) else " (unmeasured)"
            lines.append(style.wrap(f"{mark} {s['change']}: {gib(s['peak_process_bytes'])}{unm}  [{s['flag']}]{tag}", 2))
    if r.get("unmeasured"):
        lines.append(style.paint("Not measured on a GPU:", "dim"))
        for u in r["unmeasured"]:
            lines.append(style.paint(style.wrap(f"- {u}", 2), "dim"))
    if r.get("assumptions"):
        lines.append(style.paint("Assumptions:", "dim"))
        for a in r["assumptions"]:
            lines.append(style.paint(style.wrap(f"- {a}", 2), "dim"))
    return "\n".join(lines)


def render_llama_cpp(r: dict[str, Any], style: Style) -> str:
    """llama.cpp / Ollama: buffers per device, the verdict, the largest -ngl and context, the command."""
    lc, w = r["llama_cpp"], r["workload"]
    layers = lc["n_layers"]
    lines = [style.paint(f"{r['model']} · {r['engine']} {lc['version']} · {lc.get('file_type') or 'GGUF'} · "
                         f"ctx {w['n_ctx']:,} · -np {w['n_parallel']} · -ub {w['n_ubatch']} · "
                         f"fa {'on' if w['flash_attn'] else 'off'} · KV {w['cache_type_k']}/{w['cache_type_v']} · "
                         f"-ngl {min(lc['n_gpu_layers'], layers)}/{layers}", "bold")]
    lines.append(f"  {'device':<14}{'model':>11}{'KV cache':>11}{'compute':>11}{'overhead':>11}{'total':>12}")
    for d in lc["per_device"]:
        lines.append(f"  {d['device']:<14}{gib(d['model_buffer_bytes']):>11}{gib(d['kv_cache_bytes']):>11}"
                     f"{gib(d['compute_buffer_bytes']):>11}{gib(d['overhead_bytes']):>11}{gib(d['total_bytes']):>12}")
    if r["fits"]:
        lines.append("Targets:")
        for f in r["fits"]:
            name = f"{f['count']}x {f['gpu']}" if f["count"] > 1 else f["gpu"]
            what = f"{gib(f['headroom_bytes'])} headroom" if f["fits"] else f"short by {gib(-f['headroom_bytes'])}"
            lines.append(f"  {style.glyph('ok' if f['fits'] else 'fail')} {name} ({gib(f['memory_bytes'])} per GPU, "
                         f"{f['memory_source']}): {what}")
        mg, mc = lc.get("max_gpu_layers_that_fit"), lc.get("max_ctx_that_fits_fully_offloaded")
        first = r["fits"][0]["gpu"]
        parts = []
        if mg is not None:
            parts.append(f"largest -ngl at this context: {max(mg, 0)}/{layers}" if mg < layers
                         else f"all {layers} layers fit at this context")
        if mc:
            parts.append(f"largest context with every layer on the GPU: {mc:,}")
        if parts:
            lines.append(f"On {first}: " + "; ".join(parts))
    lines.append(style.paint("Run:", "bold"))
    lines.append(f"  {lc['command']}")
    if r.get("suggestions"):
        lines.append(style.paint("What would make it fit:", "bold"))
        for s in r["suggestions"]:
            mark = style.glyph("ok" if s["fits"] else "fail")
            lines.append(style.wrap(f"{mark} {s['change']}: {gib(s['peak_process_bytes'])} per GPU "
                                    f"({'fits, ' + gib(s['headroom_bytes']) + ' headroom' if s['fits'] else 'still too big'})", 2))
            lines.append(style.paint(f"    {s['flag']}", "dim"))  # a command line: never wrapped
    if r.get("assumptions"):
        lines.append(style.paint("Assumptions:", "dim"))
        for a in r["assumptions"]:
            lines.append(style.paint(style.wrap(f"- {a}", 2), "dim"))
    return "\n".join(lines)


def render_report(r: dict[str, Any], style: Style) -> str:
    """The text form of any estimate report, by its kind."""
    r = sanitize_tree(r)  # model names, file and component names, warnings: they come from files
    if r.get("kind") == "diffusion":
        return render_pipeline(r, style)
    if r.get("engine") == "training":
        return render_training(r, style)
    if r.get("engine") == "vllm" and "vllm" in r:
        return render_vllm(r, style)
    if r.get("llama_cpp"):
        return render_llama_cpp(r, style)
    return render_estimate(r, style)
