"""Text form of a fleet report: one line per group of identical nodes, then the problems with the
nodes they concern. 64 healthy nodes are one line; the odd node stands out."""

from __future__ import annotations

from typing import Any

from gpu_preflight.render.style import Style

GIB = 1 << 30


def _names(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _stack_line(st: dict[str, Any]) -> str:
    parts = []
    if st.get("driver"):
        parts.append(f"driver {st['driver']}")
    if st.get("torch"):
        parts.append(f"torch {st['torch']}")
    if st.get("nccl"):
        parts.append(f"NCCL {st['nccl']}")
    if st.get("vllm"):
        parts.append(f"vLLM {st['vllm']}")
    if st.get("python"):
        parts.append(f"Python {st['python']}")
    gpus = st.get("gpu_models") or []
    if st.get("gpu_count"):
        mem = "/".join(f"{m / GIB:.0f} GiB" for m in st.get("gpu_memory_bytes") or [])
        parts.append(f"{st['gpu_count']}x {' + '.join(gpus)}" + (f" ({mem})" if mem else ""))
    else:
        parts.append("no GPU seen")
    return " · ".join(parts)


def render_fleet(r: dict[str, Any], style: Style, verbose: bool = False) -> str:
    lines = [style.paint(f"gpu-preflight fleet · {r['nodes_total']} node(s), {r['nodes_answered']} answered", "bold")]
    worst_of = {}
    for n in r["nodes"]:
        worst_of[n["name"]] = n["worst"]
    lines.append(style.paint("Stacks:", "bold"))
    for g in r["groups"]:
        statuses = [worst_of.get(name, "ok") for name in g["nodes"]]
        w = max(statuses, key=["skip", "ok", "warn", "fail", "error"].index)
        w = "ok" if w == "skip" else w
        lines.append(style.wrap(f"{style.glyph(w)} {g['count']} node(s): {_stack_line(g['stack'])}", 4))
        lines.append(style.wrap(f"    {_names(g['nodes'], 1000 if verbose else 6)}", 6))
    silent = [n for n in r["nodes"] if not n["answered"]]
    if silent:
        lines.append(style.paint("No answer:", "bold"))
        for n in silent[: 1000 if verbose else 10]:
            lines.append(style.wrap(f"{style.glyph('fail')} {n['name']}: {n['error']}", 4))
        if len(silent) > 10 and not verbose:
            lines.append(f"    ... {len(silent) - 10} more (-v lists all)")
    problems = [f for f in r["findings"] if f["status"] in ("warn", "fail", "error")]
    lines.append(style.paint("Findings:", "bold"))
    if not problems:
        lines.append(f"  {style.glyph('ok')} no problems on any node")
    for f in problems:
        where = f" [{len(f['nodes'])} node(s): {_names(f['nodes'])}]" if f.get("nodes") else ""
        lines.append(style.wrap(f"{style.glyph(f['status'])} {f['code']} {f['title']}: {f['message']}{where}", 4))
        if f.get("fix"):
            lines.append(style.wrap(f"      fix: {f['fix']}", 11))
    for f in r["findings"]:
        if f["code"] == "PF213" and f["status"] == "ok":
            lines.append(style.wrap(f"{style.glyph('ok')} {f['code']} {f['message']}", 4))
    verdict = {0: "fleet ok", 1: "fleet runs, with warnings", 2: "fleet has failures", 3: "errors"}
    lines.append(style.paint(verdict.get(r["exit_code"], ""), "bold"))
    return "\n".join(lines)
