"""A PNG of the timeline, for terminals and issue trackers (matplotlib, Agg, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpu_preflight.watcher.render_html import COLORS, plot_data


def write_png(record: dict[str, Any], path: Path) -> str | None:
    """Write the PNG; returns None, or why it was skipped."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        from gpu_preflight.hints import extra_package, install_command

        return f"matplotlib is not installed ({install_command(extra_package('watch', 'matplotlib'))})"
    data = plot_data(record)
    if not any(ln["t"] for ln in data["memory"]) and not data["panels"]:
        return "nothing was sampled"
    panels = data["panels"][:3]
    fig = Figure(figsize=(12, 4 + 1.8 * len(panels)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1 + len(panels), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [2.2] + [1] * len(panels)})[:, 0]
    ax = axes[0]
    for line in data["memory"]:
        ys = [float("nan") if y is None else y for y in line["y"]]
        style = {"dot": ":", "dash": "--"}.get(line["dash"] or "", "-")
        ax.plot(line["t"], ys, color=line["color"], linestyle=style, linewidth=1.2,
                label=line["label"])
    for k, ph in enumerate(data["phases"]):
        ax.axvspan(ph["start_s"], ph["end_s"], color=COLORS[k % 8], alpha=0.08)
        ax.text(ph["start_s"], 1.0, " " + ph["name"][:28], transform=ax.get_xaxis_transform(),
                va="top", fontsize=7, color="#444")
    for m in data["markers"]:
        for a in axes:
            a.axvline(m["t"], color=m["color"], linestyle="--", linewidth=0.8)
        ax.text(m["t"], 0.02, " " + str(m["label"]), transform=ax.get_xaxis_transform(), fontsize=7,
                color=m["color"])
    ax.set_ylabel("GiB")
    ax.set_title(f"preflight watch: {' '.join(record.get('command', []))[:90]}", fontsize=9, pad=20)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=6, frameon=False)
    ax.grid(alpha=0.3)
    for a, panel in zip(axes[1:], panels):
        for line in panel["lines"]:
            a.plot(line["t"], [float("nan") if y is None else y for y in line["y"]], color=line["color"],
                   linewidth=1.0, label=line["label"])
        a.set_ylabel(panel["title"], fontsize=8)
        a.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds since start")
    fig.tight_layout()
    import io

    from gpu_preflight.watcher.outputs import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return None
