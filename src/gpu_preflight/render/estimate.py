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
    r = sanitize_tree(r)  # component names and classes come from model_index.json
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
