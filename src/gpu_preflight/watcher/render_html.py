"""A self-contained HTML report: summary tables and an interactive timeline.

With plotly installed the timeline is a plotly figure with plotly.js embedded in the file
(include_plotlyjs=True: about 4 MB, works offline, no CDN). Without it, an inline SVG drawn
here. Either way the file opens from disk with no network.
"""

from __future__ import annotations

import html
import math
import shlex
from pathlib import Path
from typing import Any

from gpu_preflight.watcher import analysis
from gpu_preflight.watcher.render_text import gib, headline, secs

PLOT_POINTS = 4000
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
AUX_PANELS = (("util_pct", "GPU utilization (%)"), ("power_w", "power (W)"),
              ("temperature_c", "temperature (°C)"), ("sm_clock_mhz", "SM clock (MHz)"))


def plot_data(record: dict[str, Any]) -> dict[str, Any]:
    """Everything the plots need, in GiB and seconds, reduced to PLOT_POINTS per series."""
    series = record.get("series") or {"t": [], "gpus": []}
    a = record.get("analysis") or {}
    mode = a.get("attribution") or analysis.attribution(record)
    child = analysis.child_bytes(record, mode) if mode != "none" else []
    cols = child + [g["used_bytes"] for g in series["gpus"]]
    t, cols, _ = analysis.reduce_minmax(series["t"], cols, PLOT_POINTS)
    n = len(series["gpus"])
    to_gib = lambda vals: [None if v is None else round(v / 1024**3, 4) for v in vals]  # noqa: E731
    mem = []
    for j, g in enumerate(series["gpus"]):
        label = f"GPU {g['index']}"
        mem.append({"label": f"{label} command", "t": t, "y": to_gib(cols[j]), "color": COLORS[j % 8], "dash": None})
        mem.append({"label": f"{label} device used", "t": t, "y": to_gib(cols[n + j]), "color": COLORS[j % 8],
                    "dash": "dot"})
    aux = record.get("aux") or {}
    at = aux.get("t", [])
    if any(v is not None for v in aux.get("rss_bytes", [])):
        at_r, (rss,), _ = analysis.reduce_minmax(at, [aux["rss_bytes"]], PLOT_POINTS)
        mem.append({"label": "host RSS", "t": at_r, "y": to_gib(rss), "color": "#7f7f7f", "dash": "dash"})
    panels = []
    for key, title in AUX_PANELS:
        lines = []
        for j, g in enumerate(aux.get("gpus", [])):
            vals = g.get(key, [])
            if any(v is not None for v in vals):
                tt, (vv,), _ = analysis.reduce_minmax(at, [vals], PLOT_POINTS)
                lines.append({"label": f"GPU {g['index']}", "t": tt, "y": vv, "color": COLORS[j % 8], "dash": None})
        if lines:
            panels.append({"title": title, "lines": lines})
    phases = (a.get("phases") or {}).get("rows") or []
    markers = [{"t": d["t_s"], "label": (d["codes"][0] if d.get("codes") else d["kind"]), "color": "#d62728"}
               for d in record.get("diagnosis") or [] if d.get("t_s") is not None]
    markers += [{"t": m["t_s"], "label": m["name"], "color": "#555555"} for m in (a.get("phases") or {}).get("marks", [])]
    markers += [{"t": s["t_s"], "label": s["signal"], "color": "#ff7f0e"} for s in record.get("signals") or []]
    return {"memory": mem, "panels": panels, "phases": phases, "markers": markers}


def write_html(record: dict[str, Any], path: Path) -> str:
    """Write the report; returns which plot it holds ("plotly" or "svg")."""
    data = plot_data(record)
    try:
        body, kind = _plotly(data), "plotly"
    except ImportError:
        body, kind = _svg(data), "svg"
    data = _page(record, body, kind).encode("utf-8")
    from gpu_preflight.watcher.outputs import atomic_write

    atomic_write(path, lambda f: f.write(data))
    return kind


# -- page ---------------------------------------------------------------------------------

def _page(record: dict[str, Any], plot: str, kind: str) -> str:
    e = html.escape
    a = record.get("analysis") or {}
    parts = [f"<h1>preflight watch</h1><p class=cmd><code>{e(shlex.join(record.get('command', [])))}</code></p>",
             f"<p>{e(headline(record))}. Started {e(str(record.get('started_at')))}.</p>"]
    gs = record.get("gpu_sampling") or {}
    if not gs.get("available"):
        parts.append(f"<p class=warn>Nothing could be sampled on a GPU: {e(str(gs.get('reason')))}</p>")
    peaks = a.get("peaks") or []
    if peaks:
        rows = "".join(
            f"<tr><td>GPU {p['gpu']}</td><td>{e(p.get('name') or '')}</td><td>{gib(p['peak_bytes'])}</td>"
            f"<td>{secs(p['at_s'])}</td><td>{e(p.get('phase') or '')}</td><td>{gib(p.get('headroom_bytes'))}</td>"
            f"<td>{gib(p.get('total_bytes'))}</td></tr>" for p in peaks)
        parts.append("<h2>Peak GPU memory of the command</h2><table><tr><th>GPU</th><th>name</th><th>peak</th>"
                     "<th>at</th><th>phase</th><th>headroom (free at peak)</th><th>total</th></tr>" + rows + "</table>"
                     f"<p class=small>Attribution: {e(str(a.get('attribution')))} (see docs/watch.md).</p>")
    rows_ = (a.get("phases") or {}).get("rows") or []
    if rows_:
        rows = "".join(
            f"<tr><td>{e(r['name'])}</td><td>{secs(r['start_s'])}</td><td>{secs(r['end_s'])}</td>"
            f"<td>{gib(r.get('delta_bytes'), signed=True)}</td><td>{gib(r.get('peak_bytes'))}</td></tr>" for r in rows_)
        parts.append(f"<h2>Phases ({e(str(a['phases'].get('source')))})</h2><table><tr><th>phase</th><th>from</th>"
                     "<th>to</th><th>change</th><th>peak</th></tr>" + rows + "</table>")
    diag = record.get("diagnosis") or []
    if diag:
        items = "".join(
            f"<li><b>{e(', '.join(d.get('codes') or []) or d['kind'])}</b> {e(d['title'])}"
            f"{' at ' + secs(d['t_s']) if d.get('t_s') is not None else ''}"
            f"{'<pre>' + e(d['line']) + '</pre>' if d.get('line') else ''}<p>{e(d.get('hint', ''))}</p></li>"
            for d in diag)
        parts.append(f"<h2>Diagnosis</h2><ul>{items}</ul>")
    parts.append(f"<h2>Timeline</h2>{plot}")
    notes = record.get("notes") or []
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    style = ("body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}pre{white-space:pre-wrap;background:#f6f6f6;"
             "padding:4px}.warn{color:#a00}.small{font-size:85%;color:#555}svg text{font-size:11px;font-family:sans-serif}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>preflight watch</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}"
            f"<p class=small>gpu-preflight {e(str(record.get('tool', {}).get('version')))}; plot: {kind}</p>"
            "</body></html>\n")


# -- plotly -------------------------------------------------------------------------------

def _plotly(data: dict[str, Any]) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = data["panels"]
    rows = 1 + len(panels)
    heights = [0.45] + [0.55 / len(panels)] * len(panels) if panels else [1.0]
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.04, row_heights=heights,
                        subplot_titles=["memory (GiB)"] + [p["title"] for p in panels])
    for line in data["memory"]:
        fig.add_trace(go.Scatter(x=line["t"], y=line["y"], name=line["label"], mode="lines",
                                 line={"color": line["color"], "dash": line["dash"] or "solid"}), row=1, col=1)
    for r, panel in enumerate(panels, 2):
        for line in panel["lines"]:
            fig.add_trace(go.Scatter(x=line["t"], y=line["y"], name=f"{line['label']} {panel['title']}",
                                     mode="lines", line={"color": line["color"]}, showlegend=False), row=r, col=1)
    for k, ph in enumerate(data["phases"]):
        fig.add_vrect(x0=ph["start_s"], x1=ph["end_s"], fillcolor=COLORS[k % 8], opacity=0.07, line_width=0,
                      annotation_text=ph["name"], annotation_position="top left", row=1, col=1)
    for m in data["markers"]:
        fig.add_vline(x=m["t"], line_dash="dot", line_color=m["color"], annotation_text=m["label"])
    fig.update_xaxes(title_text="seconds since start", row=rows, col=1)
    fig.update_layout(height=380 + 170 * len(panels), margin={"l": 50, "r": 20, "t": 40, "b": 40},
                      hovermode="x unified", legend={"orientation": "h"})
    return fig.to_html(include_plotlyjs=True, full_html=False)


# -- SVG fallback -------------------------------------------------------------------------

def _svg(data: dict[str, Any]) -> str:
    out = [_svg_chart("memory (GiB)", data["memory"], data["phases"], data["markers"], 300)]
    for panel in data["panels"]:
        out.append(_svg_chart(panel["title"], panel["lines"], [], [], 160))
    from gpu_preflight.hints import extra_package, install_command

    return "<div>" + "".join(out) + "<p class=small>Install plotly for an interactive plot: " \
        f"<code>{html.escape(install_command(extra_package('watch', 'plotly')))}</code></p></div>"


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = (lo // step) * step
    ticks, v = [], first
    while v <= hi + 1e-9:
        if v >= lo - 1e-9:
            ticks.append(round(v, 6))
        v += step
    return ticks


def _svg_chart(title: str, lines: list[dict[str, Any]], phases: list[dict[str, Any]],
               markers: list[dict[str, Any]], height: int, width: int = 1000) -> str:
    e = html.escape
    left, right, top, bottom = 55, 15, 22, 42
    pw, ph = width - left - right, height - top - bottom
    ts = [t for ln in lines for t in ln["t"]] + [m["t"] for m in markers]
    ys = [y for ln in lines for y in ln["y"] if y is not None]
    if not ts or not ys:
        return f"<p>{e(title)}: no data</p>"
    t0, t1 = min(0.0, min(ts)), max(ts)  # time starts at 0
    t1 = t1 if t1 > t0 else t0 + 1
    y0, y1 = min(0.0, min(ys)), max(ys)
    y1 = y1 if y1 > y0 else y0 + 1
    y1 *= 1.05
    X = lambda t: left + (t - t0) / (t1 - t0) * pw  # noqa: E731
    Y = lambda y: top + ph - (y - y0) / (y1 - y0) * ph  # noqa: E731
    s = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}'>",
         f"<text x='{left}' y='14' font-weight='bold'>{e(title)}</text>"]
    for k, p in enumerate(phases):
        x0, x1 = X(p["start_s"]), X(p["end_s"])
        s.append(f"<rect x='{x0:.1f}' y='{top}' width='{max(1.0, x1 - x0):.1f}' height='{ph}' "
                 f"fill='{COLORS[k % 8]}' fill-opacity='0.08'><title>{e(p['name'])}</title></rect>")
        if x1 - x0 > 40:  # a label only where it fits
            s.append(f"<text x='{x0 + 2:.1f}' y='{top + 11}' fill='#555'>{e(p['name'][: int((x1 - x0) / 7)])}</text>")
    for v in _nice_ticks(y0, y1):
        s.append(f"<line x1='{left}' x2='{left + pw}' y1='{Y(v):.1f}' y2='{Y(v):.1f}' stroke='#eee'/>"
                 f"<text x='{left - 5}' y='{Y(v) + 4:.1f}' text-anchor='end'>{v:g}</text>")
    for v in _nice_ticks(t0, t1, 8):
        s.append(f"<text x='{X(v):.1f}' y='{top + ph + 14}' text-anchor='middle'>{v:g} s</text>")
    s.append(f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='none' stroke='#999'/>")
    for ln in lines:
        pts = " ".join(f"{X(t):.1f},{Y(y):.1f}" for t, y in zip(ln["t"], ln["y"]) if y is not None)
        dash = " stroke-dasharray='4,3'" if ln.get("dash") else ""
        s.append(f"<polyline fill='none' stroke='{ln['color']}' stroke-width='1.4'{dash} points='{pts}'>"
                 f"<title>{e(ln['label'])}</title></polyline>")
    for m in markers:
        s.append(f"<line x1='{X(m['t']):.1f}' x2='{X(m['t']):.1f}' y1='{top}' y2='{top + ph}' stroke='{m['color']}' "
                 f"stroke-dasharray='2,2'/><text x='{X(m['t']) + 2:.1f}' y='{top + ph - 4}' fill='{m['color']}'>"
                 f"{e(str(m['label']))}</text>")
    lx = left
    for ln in lines:
        s.append(f"<rect x='{lx}' y='{height - 11}' width='10' height='3' fill='{ln['color']}'/>"
                 f"<text x='{lx + 13}' y='{height - 6}'>{e(ln['label'])}</text>")
        lx += 20 + 7 * len(ln["label"])
    s.append("</svg>")
    return "".join(s)
