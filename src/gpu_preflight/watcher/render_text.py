"""The summary printed on stderr after the command ends (stdout stays the command's)."""

from __future__ import annotations

import shlex
import shutil
import textwrap
from typing import Any


def gib(n: int | float | None, signed: bool = False) -> str:
    """GiB with one decimal; MiB below 1 GiB, so small numbers do not read as 0.0."""
    if n is None:
        return "?"
    sign = "+" if signed and n >= 0 else ""
    if abs(n) < 1024**3:
        return f"{sign}{n / 1024**2:.0f} MiB"
    return f"{sign}{n / 1024**3:.1f} GiB"


def secs(t: float | None) -> str:
    return "?" if t is None else f"{t:.2f} s" if t < 10 else f"{t:.1f} s"


def _width() -> int:
    return max(60, min(120, shutil.get_terminal_size((100, 20)).columns))


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, width=_width(), initial_indent=indent, subsequent_indent=indent) or [indent]


def headline(record: dict[str, Any]) -> str:
    cmd = " ".join(shlex.join(record.get("command", [])).split())
    if len(cmd) > 60:
        cmd = cmd[:57] + "..."
    ex = record.get("exit") or {}
    if ex.get("status") in ("not_found", "not_executable", "spawn_failed"):
        return f"`{cmd}` did not start: {ex.get('message')} (exit {ex.get('code')})"
    how = f"was killed by {ex['signal']}" if ex.get("signal") else f"exited {ex.get('code')}"
    samples = (record.get("series") or {}).get("samples_total", len(record.get("series", {}).get("t", [])))
    return (f"`{cmd}` {how} after {secs(record.get('duration_s'))}; "
            f"{samples} samples every {record.get('interval_ms'):g} ms")


def summary(record: dict[str, Any]) -> str:
    from gpu_preflight.safetext import sanitize_tree

    # the command line, its output lines, phase names and GPU names: none may drive the terminal
    record = sanitize_tree({k: v for k, v in record.items() if k not in ("series", "aux")}) | {
        k: record[k] for k in ("series", "aux") if k in record}
    a = record.get("analysis") or {}
    out = ["", "preflight watch: " + headline(record)]
    gs = record.get("gpu_sampling") or {}
    if not gs.get("available"):
        out.append(f"  nothing could be sampled on a GPU: {gs.get('reason')}")
    else:
        mode = a.get("attribution")
        how = ("its processes, as NVML lists them" if mode == "process" else
               "device memory minus the level before it started (NVML showed none of its processes)")
        out.append(f"  GPU memory of the command ({how}):")
        for p in a.get("peaks", []):
            phase = f" ({p['phase']})" if p.get("phase") else ""
            out.append(f"    GPU {p['gpu']} {p.get('name') or ''}: peak {gib(p['peak_bytes'])} at {secs(p['at_s'])}{phase}; "
                       f"headroom {gib(p.get('headroom_bytes'))} free of {gib(p.get('total_bytes'))}")
    host = a.get("host") or {}
    if host.get("peak_rss_bytes") is not None:
        out.append(f"  host memory (RSS of the process tree): peak {gib(host['peak_rss_bytes'])} at {secs(host['at_s'])}")
    rows = (a.get("phases") or {}).get("rows") or []
    if rows:
        src = "gpu_preflight.phase markers" if a["phases"].get("source") == "markers" else \
            "found from memory steps; mark your own with gpu_preflight.phase()"
        out.append(f"  phases (GPU memory, all GPUs; {src}):")
        name_w = min(40, max(5, *(len(r["name"]) for r in rows)))
        out.append(f"    {'phase':<{name_w}}  {'from':>8}  {'to':>8}  {'change':>10}  {'peak':>9}")
        for r in rows:
            name = r["name"] if len(r["name"]) <= name_w else r["name"][: name_w - 3] + "..."
            flag = " (not ended)" if r.get("open") else ""
            out.append(f"    {name:<{name_w}}  {secs(r['start_s']):>8}  {secs(r['end_s']):>8}  "
                       f"{gib(r.get('delta_bytes'), signed=True):>10}  {gib(r.get('peak_bytes')):>9}{flag}")
    diag = record.get("diagnosis") or []
    if diag:
        out.append("  diagnosis:")
        for d in diag:
            codes = f"[{', '.join(d['codes'])}] " if d.get("codes") else ""
            when = f" at {secs(d['t_s'])}" if d.get("t_s") is not None else ""
            tl = d.get("timeline") or {}
            if tl.get("phase"):
                when += f" (phase {tl['phase']})"
            if tl.get("child_bytes") is not None and record.get("gpus"):
                when += f", command using {gib(tl['child_bytes'])} of GPU memory"
            times = f" ({d['count']} times)" if d.get("count", 1) > 1 else ""
            out.append(f"    {codes}{d['title']}{when}{times}")
            if d.get("line"):
                line = d["line"] if len(d["line"]) <= 200 else d["line"][:197] + "..."
                out.extend(_wrap("> " + line, "      "))
            out.extend(_wrap("fix: " + d.get("hint", ""), "      "))
    for note in record.get("notes") or []:
        out.extend(_wrap("note: " + note, "  "))
    files = record.get("files") or {}
    shown = [f"{k} {files[k]}" for k in ("html", "json", "png", "jsonl") if files.get(k)]
    if shown:
        out.append("  report: " + ", ".join(shown))
    if files.get("png_skipped"):
        out.append(f"  png skipped: {files['png_skipped']}")
    for what, err in (files.get("errors") or {}).items():
        out.append(f"  {what} not written: {err}")
    return "\n".join(out) + "\n"
