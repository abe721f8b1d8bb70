"""Draw a memory curve (estimators/sweep.py, `gpu-preflight.curve`) as SVG, self-contained HTML or PNG.

SVG is written here, without any plotting library: stacked areas per component, one horizontal
line per target GPU, the point where each stops fitting, the user's own workload, and measured
runs. HTML wraps that SVG with a small inline script (hover read-out) and a table of the points:
no external file, no CDN, so it opens offline. PNG needs matplotlib (the `watch` extra).
Every text that comes from the user or a model (names, notes) is escaped.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

GIB = 1 << 30
W, H = 1200, 720
LEFT, RIGHT, TOP, BOTTOM = 86, 880, 92, 610          # the plot area
PANEL = 905                                           # the legend column
FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""

COMPONENT_COLORS = {
    "weights": "#4e79a7", "weights (resident)": "#4e79a7", "allocator_rounding": "#a0b8d3",
    "kv_cache": "#f28e2b", "activations": "#59a14f", "cublas_workspace": "#b07aa1",
    "allocator_slack": "#bab0ac", "allocator reserve": "#bab0ac", "allocator": "#bab0ac",
    "cuda_context_and_libraries": "#76717a", "context": "#76717a", "non_torch": "#9c755f",
    "cuda_graphs": "#ff9da7", "compute_buffer": "#59a14f", "other": "#d7d2cc",
    "gradients": "#e15759", "optimizer_states": "#edc948", "optimizer": "#edc948",
}
SPARE_COLORS = ("#8cd17d", "#ffbe7d", "#86bcb6", "#f1ce63", "#d4a6c8", "#9d7660", "#499894", "#e15759")
TARGET_COLORS = ("#c0392b", "#1f618d", "#7d3c98", "#117a65", "#b9770e", "#2e4053")


def esc(text: Any) -> str:
    """Text for SVG/HTML content and attribute values."""
    return html.escape(str(text), quote=True)


def fmt_gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def fmt_x(x: float, unit: str) -> str:
    if unit == "tokens" and x >= 1024 and x % 1024 == 0:
        return f"{int(x) // 1024}K"
    return f"{int(x):,}"


def component_colors(names: list[str]) -> dict[str, str]:
    out, spare = {}, iter(SPARE_COLORS * 4)
    for n in names:
        out[n] = COMPONENT_COLORS.get(n) or COMPONENT_COLORS.get(n.split(":")[0]) or next(spare)
    return out


def target_label(t: dict[str, Any]) -> str:
    each = " each" if t["count"] > 1 else ""
    count = f"{t['count']} x " if t["count"] > 1 else ""
    return f"{count}{t['gpu']} ({fmt_gib(t['memory_bytes'])}{each})"


# ---------------------------------------------------------------- scales

class Scales:
    def __init__(self, curve: dict[str, Any]) -> None:
        pts = curve["points"]
        xs = [p["x"] for p in pts] + [m["x"] for m in (curve.get("measured") or {}).get("points", [])]
        if curve.get("current"):
            xs.append(curve["current"])
        self.log = curve["quantity"]["scale"] == "log2" and min(xs) > 0
        self.xmin, self.xmax = min(xs), max(xs)
        if self.xmax == self.xmin:
            self.xmax = self.xmin + 1
        tops = [p["total_bytes"] for p in pts] + [v for p in pts for v in p["peak_per_gpu_bytes"]]
        tops += [t["memory_bytes"] for t in curve["targets"]]
        tops += [m["peak_process_bytes"] for m in (curve.get("measured") or {}).get("points", [])]
        self.ymax = nice_ceil(max(tops + [GIB]) / GIB * 1.06) * GIB

    def x(self, v: float) -> float:
        if self.log:
            f = (math.log2(v) - math.log2(self.xmin)) / (math.log2(self.xmax) - math.log2(self.xmin))
        else:
            f = (v - self.xmin) / (self.xmax - self.xmin)
        return LEFT + f * (RIGHT - LEFT)

    def y(self, v: float) -> float:
        return BOTTOM - min(v / self.ymax, 1.0) * (BOTTOM - TOP)

    def xticks(self) -> list[float]:
        if self.log:
            lo, hi = math.ceil(math.log2(self.xmin)), math.floor(math.log2(self.xmax))
            ticks = [2 ** e for e in range(lo, hi + 1)]
            while len(ticks) > 12:
                ticks = ticks[::2]
            return ticks or [self.xmin, self.xmax]
        step = nice_step((self.xmax - self.xmin) / 8)
        first = math.ceil(self.xmin / step) * step
        return [first + i * step for i in range(int((self.xmax - first) // step) + 1)]

    def yticks(self) -> list[float]:
        step = nice_step(self.ymax / GIB / 7) * GIB
        return [i * step for i in range(int(self.ymax // step) + 1)]


def nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * e >= raw:
            return m * e
    return 10 * e


def nice_ceil(v: float) -> float:
    if v <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * e >= v - 1e-9:
            return m * e
    return 10 * e


# ---------------------------------------------------------------- SVG

def render_svg(curve: dict[str, Any]) -> str:
    s = Scales(curve)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
             f'role="img" aria-labelledby="plot-title" class="gp-curve">',
             f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>']
    parts += _titles(curve)
    parts += _axes(curve, s)
    parts += _stack(curve, s)
    parts += _targets(curve, s)
    parts += _current(curve, s)
    parts += _measured(curve, s)
    parts += _hover_columns(curve, s)
    parts += _legend(curve)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _text(x: float, y: float, text: str, size: int = 14, anchor: str = "start", fill: str = "#222",
          weight: str = "normal", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" {FONT} text-anchor="{anchor}" fill="{fill}" '
            f'font-weight="{weight}"{extra}>{esc(text)}</text>')


def _titles(curve: dict[str, Any]) -> list[str]:
    q = curve["quantity"]
    title = f"{curve.get('model')} · {curve.get('engine')}: peak GPU memory vs {q['label']}"
    sub = workload_summary(curve)
    return [_text(LEFT - 60, 34, title, 20, weight="bold", extra=' id="plot-title"'),
            _text(LEFT - 60, 60, sub, 14, fill="#555")]


def workload_summary(curve: dict[str, Any]) -> str:
    w = curve.get("workload") or {}
    skip = {"height", "width", "input_len", "max_model_len", "n_ctx", "seq_len"}
    bits = [f"{k.replace('_', ' ')} {v}" for k, v in w.items()
            if v not in (None, False, "", [], {}) and k not in skip and not isinstance(v, (dict, list))]
    sets = ", ".join(curve["quantity"].get("sets") or [])
    return ("; ".join(bits[:8]) + (f" · each point sets {sets}" if sets else ""))[:170]


def _axes(curve: dict[str, Any], s: Scales) -> list[str]:
    out = [f'<rect x="{LEFT}" y="{TOP}" width="{RIGHT - LEFT}" height="{BOTTOM - TOP}" fill="#fafafa" '
           f'stroke="#999"/>']
    for v in s.yticks():
        y = s.y(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{RIGHT}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        out.append(_text(LEFT - 8, y + 5, f"{v / GIB:g}", 14, "end", "#444"))
    for v in s.xticks():
        x = s.x(v)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{BOTTOM}" stroke="#ececec"/>')
        out.append(_text(x, BOTTOM + 22, fmt_x(v, curve["quantity"]["unit"]), 14, "middle", "#444"))
    out.append(_text((LEFT + RIGHT) / 2, BOTTOM + 50, curve["quantity"]["label"] +
                     (" (log scale)" if s.log else ""), 15, "middle", "#222"))
    out.append(_text(22, (TOP + BOTTOM) / 2, "peak GPU memory per GPU (GiB)", 15, "middle", "#222",
                     extra=f' transform="rotate(-90 22 {(TOP + BOTTOM) / 2:.1f})"'))
    return out


def _stack(curve: dict[str, Any], s: Scales) -> list[str]:
    pts = [p for p in curve["points"] if p["stack"]]
    colors = component_colors(curve["components"])
    out = []
    if len(pts) >= 1 and len(pts) == len(curve["points"]):
        below = [0] * len(pts)
        for name in curve["components"]:
            top = [b + p["stack"].get(name, 0) for b, p in zip(below, pts)]
            poly = [(s.x(p["x"]), s.y(t)) for p, t in zip(pts, top)] + \
                   [(s.x(p["x"]), s.y(b)) for p, b in reversed(list(zip(pts, below)))]
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in poly)
            out.append(f'<polygon points="{coords}" fill="{colors[name]}" fill-opacity="0.85" stroke="none" '
                       f'class="gp-area" data-component="{esc(name)}"><title>{esc(name)}</title></polygon>')
            below = top
    line = " ".join(f"{s.x(p['x']):.1f},{s.y(p['total_bytes']):.1f}" for p in curve["points"])
    out.append(f'<polyline points="{line}" fill="none" stroke="#222" stroke-width="2" class="gp-total"/>')
    return out


def label_rows(ys: list[float], gap: float = 17.0) -> list[float]:
    """Label baselines near `ys` (one per line) that keep `gap` pixels apart, in the same order."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    out = [0.0] * len(ys)
    prev = -1e9
    for i in order:
        out[i] = max(ys[i], prev + gap)
        prev = out[i]
    return out


HALO = ' stroke="#ffffff" stroke-width="4" stroke-linejoin="round" paint-order="stroke"'


def _targets(curve: dict[str, Any], s: Scales) -> list[str]:
    out, marks = [], []
    rows = label_rows([s.y(t["memory_bytes"]) - 7 for t in curve["targets"]])
    for i, t in enumerate(curve["targets"]):
        c = TARGET_COLORS[i % len(TARGET_COLORS)]
        y = s.y(t["memory_bytes"])
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{RIGHT}" y2="{y:.1f}" stroke="{c}" stroke-width="2.5" '
                   f'class="gp-gpu" data-gpu="{esc(t["gpu"])}" data-memory-bytes="{t["memory_bytes"]}"/>')
        out.append(_text(LEFT + 8, rows[i], target_label(t), 13, "start", c, "bold", HALO))
        if per_gpu_line(curve, i):
            line = " ".join(f"{s.x(p['x']):.1f},{s.y(p['peak_per_gpu_bytes'][i]):.1f}" for p in curve["points"])
            out.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="2" stroke-dasharray="7 5" '
                       f'class="gp-per-gpu"/>')
        if t.get("status") == "stops":
            x = s.x(t["last_fit"])
            out.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x:.1f}" y2="{BOTTOM}" stroke="{c}" stroke-width="1.5" '
                       f'stroke-dasharray="3 4"/>')
            marks.append((x, y, c, t))
    labels = [f"{fmt_x(t['last_fit'], curve['quantity']['unit'])}" for *_, t in marks]
    for (x, y, c, t), text, row in zip(marks, labels, _label_lanes([m[0] for m in marks], labels)):
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="#fff" stroke="{c}" stroke-width="3" '
                   f'class="gp-crossing" data-gpu="{esc(t["gpu"])}" data-last-fit="{t["last_fit"]}" '
                   f'data-first-fail="{t["first_fail"]}"><title>{esc(target_label(t))}: fits up to '
                   f'{t["last_fit"]:,}, not at {t["first_fail"]:,}</title></circle>')
        out.append(_text(x - 5, BOTTOM - 10 - 19 * row, f"\u2264 {text}", 13, "end", c, "bold", HALO))
    return out


def per_gpu_line(curve: dict[str, Any], i: int) -> bool:
    """Whether target i gets its own dashed line: vLLM's budget, or a per-GPU peak that is not the
    stacked total (layers split over several GPUs)."""
    if curve.get("line") == "vllm_budget":
        return True
    return any(i < len(p["peak_per_gpu_bytes"]) and
               abs(p["peak_per_gpu_bytes"][i] - p["total_bytes"]) > 0.005 * max(p["total_bytes"], 1)
               for p in curve["points"])


def _label_lanes(xs: list[float], texts: list[str], char_px: float = 8.0) -> list[int]:
    """A lane (row) per label, right-aligned at x, so labels in one lane do not overlap."""
    lanes: list[list[tuple[float, float]]] = []
    out = [0] * len(xs)
    for i in sorted(range(len(xs)), key=lambda k: xs[k]):
        lo, hi = xs[i] - 10 - char_px * (len(texts[i]) + 2), xs[i]
        for k, lane in enumerate(lanes):
            if all(hi < a or lo > b for a, b in lane):
                lane.append((lo, hi))
                out[i] = k
                break
        else:
            lanes.append([(lo, hi)])
            out[i] = len(lanes) - 1
    return out


def _current(curve: dict[str, Any], s: Scales) -> list[str]:
    cur = curve.get("current")
    if not cur:
        return []
    x = s.x(cur)
    return [f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{BOTTOM}" stroke="#333" stroke-width="1.5" '
            f'stroke-dasharray="2 3" class="gp-current"/>',
            _text(x + 4, TOP + 16, f"your workload: {fmt_x(cur, curve['quantity']['unit'])}", 13, "start", "#333")]


def _measured(curve: dict[str, Any], s: Scales) -> list[str]:
    out = []
    for m in (curve.get("measured") or {}).get("points", []):
        x, y = s.x(m["x"]), s.y(m["peak_process_bytes"])
        out.append(f'<path d="M{x:.1f},{y - 8:.1f} L{x + 8:.1f},{y:.1f} L{x:.1f},{y + 8:.1f} L{x - 8:.1f},{y:.1f} Z" '
                   f'fill="#111" stroke="#fff" stroke-width="1.5" class="gp-measured" data-x="{m["x"]}" '
                   f'data-bytes="{m["peak_process_bytes"]}"><title>measured {esc(m["label"])}: '
                   f'{fmt_gib(m["peak_process_bytes"])} at {m["x"]:,}</title></path>')
    return out


def _hover_columns(curve: dict[str, Any], s: Scales) -> list[str]:
    """One transparent column per point: a native tooltip in a plain SVG viewer, the hover
    read-out's target in the HTML page."""
    pts = curve["points"]
    xs = [s.x(p["x"]) for p in pts]
    out = ['<g class="gp-hover">']
    for i, p in enumerate(pts):
        lo = LEFT if i == 0 else (xs[i - 1] + xs[i]) / 2
        hi = RIGHT if i == len(pts) - 1 else (xs[i] + xs[i + 1]) / 2
        out.append(f'<rect x="{lo:.1f}" y="{TOP}" width="{max(hi - lo, 1):.1f}" height="{BOTTOM - TOP}" '
                   f'fill="transparent" data-i="{i}"><title>{esc(point_text(curve, p))}</title></rect>')
    out.append("</g>")
    return out


def point_text(curve: dict[str, Any], p: dict[str, Any]) -> str:
    unit = curve["quantity"]["unit"]
    lines = [f"{curve['quantity']['label']}: {p['x']:,}{' ' + unit if unit else ''}",
             f"total {fmt_gib(p['total_bytes'])}"]
    for k, v in (p["stack"] or {}).items():
        lines.append(f"  {k}: {fmt_gib(v)}")
    for t, ok in zip(curve["targets"], p["fits"]):
        lines.append(f"{t['gpu']}: {'fits' if ok else 'does not fit'}")
    return "\n".join(lines)


def _legend(curve: dict[str, Any]) -> list[str]:
    from gpu_preflight.estimators.sweep import crossing_label

    colors = component_colors(curve["components"])
    out = [_text(PANEL, TOP + 4, "peak made of", 15, weight="bold")]
    y = TOP + 26
    for name in reversed(curve["components"]):
        out.append(f'<rect x="{PANEL}" y="{y - 12}" width="16" height="14" fill="{colors[name]}"/>')
        out.append(_text(PANEL + 24, y, name.replace("_", " "), 13))
        y += 21
    out.append(f'<line x1="{PANEL}" y1="{y - 5}" x2="{PANEL + 16}" y2="{y - 5}" stroke="#222" stroke-width="2"/>')
    out.append(_text(PANEL + 24, y, "total", 13))
    y += 21
    if (curve.get("measured") or {}).get("points"):
        out.append(f'<path d="M{PANEL + 8},{y - 13} L{PANEL + 15},{y - 6} L{PANEL + 8},{y + 1} L{PANEL + 1},{y - 6} Z" '
                   f'fill="#111"/>')
        out.append(_text(PANEL + 24, y, "measured run", 13))
        y += 21
    y += 12
    out.append(_text(PANEL, y, "target GPUs", 15, weight="bold"))
    y += 22
    unit = curve["quantity"]["unit"]
    for i, t in enumerate(curve["targets"]):
        c = TARGET_COLORS[i % len(TARGET_COLORS)]
        out.append(f'<line x1="{PANEL}" y1="{y - 5}" x2="{PANEL + 16}" y2="{y - 5}" stroke="{c}" stroke-width="3"/>')
        out += _wrapped(PANEL + 24, y, target_label(t), 32, 13, c, "bold")
        y += 18 * len(_wrap(target_label(t), 32))
        out += _wrapped(PANEL + 24, y, crossing_label(t, unit), 34, 12, "#333")
        y += 17 * len(_wrap(crossing_label(t, unit), 34)) + 6
    if curve.get("line") == "vllm_budget":
        out += _wrapped(PANEL, y + 4, "dashed: vLLM's budget per GPU", 40, 12, "#333")
        y += 22
    elif any(per_gpu_line(curve, i) for i in range(len(curve["targets"]))):
        out += _wrapped(PANEL, y + 4, "dashed: the peak per GPU where the layers are split over several GPUs",
                        40, 12, "#333")
        y += 38
    notes = list(curve.get("notes") or [])
    m = curve.get("measured") or {}
    if m.get("note"):
        notes.append(m["note"] + (f" ({m['env']})" if m.get("env") else ""))
    y += 8
    for n in notes:
        if y > H - 20:
            break
        lines = _wrap(n, 40)
        out += _wrapped(PANEL, y, n, 40, 11, "#555")
        y += 15 * len(lines) + 6
    return out


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = str(text).split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return lines + ([cur] if cur else []) or [""]


def _wrapped(x: float, y: float, text: str, width: int, size: int, fill: str, weight: str = "normal") -> list[str]:
    step = size + 4
    return [_text(x, y + i * step, line, size, "start", fill, weight) for i, line in enumerate(_wrap(text, width))]


# ---------------------------------------------------------------- HTML

HOVER_JS = r"""
(function () {
  function setup(root) {
    var dataEl = root.querySelector('script.gp-curve-data');
    var tip = root.querySelector('.gp-tip');
    if (!dataEl || !tip) { return; }
    var curve = JSON.parse(dataEl.textContent);
    var gib = function (n) { return (n / 1073741824).toFixed(1) + ' GiB'; };
    root.querySelectorAll('.gp-hover rect').forEach(function (r) {
      r.addEventListener('mousemove', function (ev) {
        var p = curve.points[Number(r.getAttribute('data-i'))];
        tip.textContent = '';
        var head = document.createElement('b');
        head.textContent = curve.quantity.label + ': ' + p.x.toLocaleString('en-US') + ' \u2192 ' + gib(p.total_bytes);
        tip.appendChild(head);
        Object.keys(p.stack || {}).forEach(function (k) {
          var d = document.createElement('div');
          d.textContent = k + ': ' + gib(p.stack[k]);
          tip.appendChild(d);
        });
        curve.targets.forEach(function (t, i) {
          var d = document.createElement('div');
          d.textContent = t.gpu + ': ' + (p.fits[i] ? 'fits' : 'does not fit');
          d.className = p.fits[i] ? 'gp-ok' : 'gp-no';
          tip.appendChild(d);
        });
        var box = root.getBoundingClientRect();
        tip.style.left = (ev.clientX - box.left + 14) + 'px';
        tip.style.top = (ev.clientY - box.top + 14) + 'px';
        tip.hidden = false;
      });
      r.addEventListener('mouseleave', function () { tip.hidden = true; });
    });
  }
  window.gpCurveSetup = setup;
  document.querySelectorAll('.gp-plot').forEach(setup);
})();
"""

HTML_CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 24px; color: #222; }
.gp-plot { position: relative; max-width: 1200px; }
.gp-plot svg { width: 100%; height: auto; }
.gp-tip { position: absolute; background: #fff; border: 1px solid #888; padding: 6px 9px; font-size: 13px;
          pointer-events: none; box-shadow: 0 2px 6px rgba(0,0,0,.2); white-space: nowrap; }
.gp-ok { color: #1e7b34; } .gp-no { color: #b03a2e; }
table { border-collapse: collapse; font-size: 13px; margin-top: 18px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; }
"""


def json_for_script(data: Any) -> str:
    """JSON that cannot end the <script> element it sits in."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(curve: dict[str, Any]) -> str:
    title = f"{curve.get('model')} · {curve.get('engine')}: peak GPU memory"
    return "\n".join([
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>", f"<style>{HTML_CSS}</style></head><body>",
        '<div class="gp-plot">', render_svg(curve), '<div class="gp-tip" hidden></div>',
        f'<script type="application/json" class="gp-curve-data">{json_for_script(curve)}</script>', "</div>",
        _table(curve), f"<p>Made by gpu-preflight (preflight estimate --plot). {esc(_notes_text(curve))}</p>",
        f"<script>{HOVER_JS}</script>", "</body></html>", ""])


def _notes_text(curve: dict[str, Any]) -> str:
    m = curve.get("measured") or {}
    bits = list(curve.get("notes") or []) + ([m["note"]] if m.get("note") else []) + \
        ([f"measured on {m['env']}"] if m.get("env") else [])
    return " ".join(b.rstrip(".") + "." for b in bits)


def _table(curve: dict[str, Any]) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in [curve["quantity"]["label"], "total (GiB)"] +
                   [f"fits {t['gpu']}" for t in curve["targets"]])
    rows = []
    for p in curve["points"]:
        cells = [f"{p['x']:,}", f"{p['total_bytes'] / GIB:.2f}"] + ["yes" if f else "no" for f in p["fits"]]
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return f'<table class="gp-points"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


# ---------------------------------------------------------------- PNG

def require_matplotlib():
    """matplotlib.pyplot on the Agg backend, or DependencyMissing with the install hint."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from gpu_preflight.errors import DependencyMissing
        from gpu_preflight.hints import extra_package, install_command

        raise DependencyMissing("--plot FILE.png needs matplotlib",
                                hint=f"{install_command(extra_package('watch', 'matplotlib'))}, or write "
                                     f".svg / .html (no dependency)") from None
    return plt


def render_png(curve: dict[str, Any], path: str) -> None:
    """An 1800 x 1080 PNG (12 x 7.2 in at 150 dpi) through matplotlib."""
    from gpu_preflight.estimators.sweep import crossing_label

    plt = require_matplotlib()
    pts = curve["points"]
    xs = [p["x"] for p in pts]
    fig, ax = plt.subplots(figsize=(12, 7.2), dpi=150)
    colors = component_colors(curve["components"])
    if all(p["stack"] for p in pts):
        ys = [[p["stack"].get(c, 0) / GIB for p in pts] for c in curve["components"]]
        ax.stackplot(xs, ys, labels=[c.replace("_", " ") for c in curve["components"]],
                     colors=[colors[c] for c in curve["components"]], alpha=0.85)
    ax.plot(xs, [p["total_bytes"] / GIB for p in pts], color="#222", linewidth=2, label="total")
    unit = curve["quantity"]["unit"]
    for i, t in enumerate(curve["targets"]):
        c = TARGET_COLORS[i % len(TARGET_COLORS)]
        ax.axhline(t["memory_bytes"] / GIB, color=c, linewidth=2.5,
                   label=f"{target_label(t)}: {crossing_label(t, unit)}")
        if curve.get("line") == "vllm_budget":
            ax.plot(xs, [p["peak_per_gpu_bytes"][i] / GIB for p in pts], color=c, linestyle="--", linewidth=1.8)
        if t.get("status") == "stops":
            ax.plot([t["last_fit"]], [t["memory_bytes"] / GIB], "o", markersize=11, markerfacecolor="white",
                    markeredgecolor=c, markeredgewidth=3)
    m = (curve.get("measured") or {}).get("points") or []
    if m:
        ax.plot([p["x"] for p in m], [p["peak_process_bytes"] / GIB for p in m], "D", color="#111",
                markersize=8, label="measured run")
    if curve.get("current"):
        ax.axvline(curve["current"], color="#333", linestyle=":", linewidth=1.5, label="your workload")
    if curve["quantity"]["scale"] == "log2":
        from matplotlib.ticker import FixedLocator, FuncFormatter

        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(Scales(curve).xticks()))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_x(v, unit)))
        ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.set_xlabel(curve["quantity"]["label"], fontsize=13)
    ax.set_ylabel("peak GPU memory per GPU (GiB)", fontsize=13)
    ax.set_title(f"{curve.get('model')} · {curve.get('engine')}: peak GPU memory", fontsize=15)
    ax.set_ylim(0, Scales(curve).ymax / GIB)
    ax.tick_params(labelsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10, loc="upper left", framealpha=0.9)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        from gpu_preflight.errors import UsageError

        raise UsageError(f"--plot {path}: cannot write it ({exc.strerror})", hint="choose a writable path") from None
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- files

def write_plot(curve: dict[str, Any], path: str) -> str:
    """Write the plot in the format the file name asks for; returns the format."""
    from gpu_preflight.errors import UsageError

    kind = plot_format(path)
    if kind == "png":
        render_png(curve, path)
        return kind
    text = render_svg(curve) if kind == "svg" else render_html(curve)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise UsageError(f"--plot {path}: cannot write it ({exc.strerror})", hint="choose a writable path") from None
    return kind


def plot_format(path: str) -> str:
    from gpu_preflight.errors import UsageError

    ext = str(path).lower().rsplit(".", 1)[-1] if "." in str(path) else ""
    if ext in ("html", "htm"):
        return "html"
    if ext == "png":
        require_matplotlib()
    if ext in ("svg", "png"):
        return ext
    raise UsageError(f"--plot {path}: the file name must end in .html, .svg or .png",
                     hint="e.g. --plot memory.html (interactive, works offline) or --plot memory.svg")
