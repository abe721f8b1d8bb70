"""Human rendering of an estimate report (the JSON report is the data; this only formats it)."""

from __future__ import annotations

from typing import Any

from gpu_preflight.render.style import Style

GIB = 1 << 30


def gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.2f} GiB"


def render_estimate(r: dict[str, Any], style: Style) -> str:
    w = r["workload"]
    lines = [style.paint(f"{r['model']} · {r['engine']} · {w['dtype']} · batch {w['batch']} · "
                         f"{w['input_len']} in + {w['output_len']} out · {w['attn']}", "bold")]
    if r["engine"] == "vllm":
        lines.append(f"vLLM takes its whole budget: {gib(r['peak_process_bytes'])} per GPU; "
                     f"KV cache holds {r.get('kv_cache_tokens') or 0:,} tokens")
    else:
        lines.append(f"Peak GPU memory (nvidia-smi): {style.paint(gib(r['peak_process_bytes']), 'bold')}   "
                     f"(torch max_memory_allocated {gib(r['peak_allocated_bytes'])})")
    width = max(len(k) for k in r["breakdown"]) + 2
    for k, v in r["breakdown"].items():
        lines.append(f"  {k:<{width}}{gib(v):>12}")
    if r["fits"]:
        lines.append("Targets:")
        for f in r["fits"]:
            name = f"{f['count']}x {f['gpu']}" if f["count"] > 1 else f["gpu"]
            what = f"{gib(f['headroom_bytes'])} headroom" if f["fits"] else f"short by {gib(-f['headroom_bytes'])}"
            lines.append(f"  {style.glyph('ok' if f['fits'] else 'fail')} {name} ({gib(f['memory_bytes'])} per GPU, "
                         f"{f['memory_source']}): {what}")
    ctx, mb = r.get("max_context_tokens"), r.get("max_batch")
    if ctx or mb:
        first = r["fits"][0]["gpu"] if r["fits"] else "the target"
        parts = []
        if ctx:
            parts.append(f"largest context at batch {w['batch']}: {ctx:,} tokens")
        if mb:
            parts.append(f"largest batch at {w['input_len'] + w['output_len']} tokens: {mb}")
        lines.append(f"On {first}: " + "; ".join(parts))
    elif r["fits"] and not r["fits"][0]["fits"]:
        lines.append("Even batch 1 with a short prompt does not fit the first target.")
    if r.get("suggestions"):
        lines.append(style.paint("What would make it fit:", "bold"))
        for s in r["suggestions"]:
            mark = style.glyph("ok" if s["fits"] else "fail")
            lines.append(style.wrap(f"{mark} {s['change']}: {gib(s['peak_process_bytes'])} "
                                    f"({'fits, ' + gib(s['headroom_bytes']) + ' headroom' if s['fits'] else 'still too big'})"
                                    f"  [{s['flag']}]", 2))
    if r.get("assumptions"):
        lines.append(style.paint("Assumptions:", "dim"))
        for a in r["assumptions"]:
            lines.append(style.paint(style.wrap(f"- {a}", 2), "dim"))
    return "\n".join(lines)


def render_pipeline(r: dict[str, Any], style: Style) -> str:
    w = r["workload"]
    lines = [style.paint(f"{r['model']} · diffusers · {w['dtype']} · {w['height']}x{w['width']} · {w['batch']} image(s) · "
                         f"offload {w['offload']}" + (" · VAE tiling" if w["vae_tiling"] else ""), "bold"),
             f"Peak GPU memory (nvidia-smi): {style.paint(gib(r['peak_process_bytes']), 'bold')} in phase "
             f"{r['peak_phase']}"]
    for k, v in r["breakdown"].items():
        lines.append(f"  {k:<34}{gib(v):>12}")
    lines.append("Phases (resident + transient = peak):")
    for name, p in r["phases"].items():
        lines.append(f"  {name:<24} {gib(p['resident_bytes']):>11} + {gib(p['transient_bytes']):>10} = "
                     f"{gib(p['peak_allocated_bytes']):>11}   {p.get('detail', '')}")
    for f in r["fits"]:
        what = f"{gib(f['headroom_bytes'])} headroom" if f["fits"] else f"short by {gib(-f['headroom_bytes'])}"
        lines.append(f"  {style.glyph('ok' if f['fits'] else 'fail')} {f['gpu']} ({gib(f['memory_bytes'])}): {what}")
    if r.get("max_resolution"):
        lines.append(f"Largest square image that fits as is: {r['max_resolution']}x{r['max_resolution']}")
    for s in r.get("suggestions") or []:
        lines.append(style.wrap(f"{style.glyph('ok')} to fit: {s['change']}: {gib(s['peak_process_bytes'])} "
                                f"({gib(s['headroom_bytes'])} headroom)", 2))
    for a in r.get("assumptions") or []:
        lines.append(style.paint(style.wrap(f"- {a}", 2), "dim"))
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


def render_report(r: dict[str, Any], style: Style) -> str:
    """The text form of any estimate report, by its kind."""
    if r.get("kind") == "diffusion":
        return render_pipeline(r, style)
    if r.get("engine") == "vllm" and "vllm" in r:
        return render_vllm(r, style)
    return render_estimate(r, style)
