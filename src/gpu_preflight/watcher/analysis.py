"""Pure analysis of a watch record: whose memory, peaks, phases, sampling quality.

Everything here takes the JSON-shaped record (lists of numbers) and returns plain dicts, so the
same code runs on a live run, on a partial stream read back from disk, and in tests.

Whose memory: when NVML lists a process of the command's tree with its memory, the command's
GPU memory is the sum over its processes ("process" attribution). When it never does (a
container whose driver reports host PIDs, or a driver that hides per-process memory) it is the
device's used memory minus the level measured just before the command started ("device"
attribution, which also counts anything else that started meanwhile).
"""

from __future__ import annotations

import bisect
from typing import Any, Callable

GiB = 1024**3
MIN_STEP_BYTES = 256 * 1024**2


def value_at(ts: list[float], values: list[Any], x: float) -> Any:
    """The last value sampled at or before `x` (the first one when `x` precedes all samples)."""
    if not ts:
        return None
    i = bisect.bisect_right(ts, x) - 1
    return values[max(i, 0)]


def attribution(record: dict[str, Any]) -> str:
    """"process", "device", or "none" (nothing sampled); see the module docstring."""
    gpus = record.get("series", {}).get("gpus", [])
    if not gpus or not record.get("series", {}).get("t"):
        return "none"
    for g in gpus:
        if any(v for v in g.get("tree_bytes", []) if v):
            return "process"
    return "device"


def child_bytes(record: dict[str, Any], mode: str | None = None) -> list[list[int]]:
    """Per GPU (in record order), the command's bytes at each tick."""
    mode = mode or attribution(record)
    out = []
    base = {g["index"]: g.get("baseline_used_bytes") for g in record.get("gpus", [])}
    for g in record.get("series", {}).get("gpus", []):
        used, tree = g.get("used_bytes", []), g.get("tree_bytes", [])
        b0 = base.get(g["index"])
        if b0 is None:
            b0 = next((u for u in used if u is not None), 0)
        device = [max(0, u - b0) if u is not None else 0 for u in used]
        if mode == "process":
            out.append([t if t is not None else d for t, d in zip(tree, device)])
        else:
            out.append(device)
    return out


def total_series(per_gpu: list[list[int]]) -> list[int]:
    return [sum(vals) for vals in zip(*per_gpu)] if per_gpu else []


# -- phases -------------------------------------------------------------------------------

def pair_phases(events: list[dict[str, Any]], end_s: float) -> list[dict[str, Any]]:
    """Start/end events (t_s relative to launch) -> intervals; an unclosed one ends at `end_s`."""
    open_: dict[tuple[Any, str], list[float]] = {}
    out: list[dict[str, Any]] = []
    marks = []
    for ev in sorted(events, key=lambda e: e.get("t_s", 0.0)):
        key = (ev.get("pid"), str(ev.get("phase")))
        if ev.get("event") == "start":
            open_.setdefault(key, []).append(ev["t_s"])
        elif ev.get("event") == "end" and open_.get(key):
            start = open_[key].pop()
            out.append({"name": key[1], "pid": key[0], "start_s": start, "end_s": ev["t_s"], "open": False})
        elif ev.get("event") == "mark":
            marks.append({"name": key[1], "pid": key[0], "t_s": ev["t_s"]})
    for (pid, name), starts in open_.items():
        for start in starts:
            out.append({"name": name, "pid": pid, "start_s": start, "end_s": end_s, "open": True})
    out.sort(key=lambda p: (p["start_s"], -p["end_s"]))
    return out


def auto_phases(ts: list[float], total: list[int], lines: list[list[Any]] | None = None,
                gap_s: float = 0.5) -> list[dict[str, Any]]:
    """Phases without markers. Memory that holds steady for `gap_s` (within a quarter step) is a
    plateau; a plateau whose level differs by a big step (>= max(256 MiB, 5 % of the peak)) from
    the previous level closes a phase where it ends, i.e. when memory starts to move again.
    Each phase is "step N", plus the line the command printed as it began, if any."""
    n = len(ts)
    if n < 2 or len(total) != n or max(total) <= 0:
        return []
    step = max(MIN_STEP_BYTES, int(0.05 * max(total)))
    tol = step / 4
    plateaus = []
    i = 0
    while i < n:
        lo = hi = total[i]
        j = i + 1
        while j < n and max(hi, total[j]) - min(lo, total[j]) <= tol:
            lo, hi = min(lo, total[j]), max(hi, total[j])
            j += 1
        if ts[j - 1] - ts[i] >= gap_s:
            plateaus.append((i, j - 1, (lo + hi) / 2))
        i = j
    cuts: list[int] = []
    level = total[0]
    for _a, b, lvl in plateaus:
        if abs(lvl - level) >= step:
            cuts.append(b)
            level = lvl
        elif cuts:
            cuts[-1] = b  # the same level goes on: so does the phase
    bounds = [0.0] + [ts[b] for b in cuts]
    if ts[-1] - bounds[-1] < gap_s:
        bounds[-1] = ts[-1]  # the last plateau lasted to the end (then the exit freed it)
    else:
        bounds.append(ts[-1])
    if len(bounds) < 3:
        return []  # one phase is no news
    phases = []
    for k, (start, end) in enumerate(zip(bounds, bounds[1:]), 1):
        label = _line_before(lines or [], start + 0.25) if k > 1 else None
        phases.append({"name": f"step {k}" + (f' ("{label}")' if label else ""), "pid": None,
                       "start_s": start, "end_s": end, "open": False})
    return phases


def _line_before(lines: list[list[Any]], t: float) -> str | None:
    i = bisect.bisect_right([row[0] for row in lines], t) - 1
    if i < 0:
        return None
    text = str(lines[i][1])
    return text if len(text) <= 60 else text[:57] + "..."


def phase_rows(phases: list[dict[str, Any]], ts: list[float], total: list[int],
               end_s: float, add_edges: bool = True) -> list[dict[str, Any]]:
    """The deployment-guide table: GPU memory of the command at each phase's start and end,
    the change, and the peak inside it (all GPUs summed)."""
    rows = []
    phases = list(phases)
    if add_edges and phases:
        first = min(p["start_s"] for p in phases)
        last = max(p["end_s"] for p in phases)
        if first > 0 and ts and ts[0] < first:
            phases.insert(0, {"name": "start", "pid": None, "start_s": 0.0, "end_s": first, "open": False})
        if last < end_s and ts and ts[-1] > last:
            phases.append({"name": "(after last phase)", "pid": None, "start_s": last, "end_s": end_s,
                           "open": False})
    for ph in phases:
        s_b = value_at(ts, total, ph["start_s"]) if ts else None
        e_b = value_at(ts, total, ph["end_s"]) if ts else None
        lo = bisect.bisect_left(ts, ph["start_s"])
        hi = bisect.bisect_right(ts, ph["end_s"])
        window = total[lo:hi]
        peak, peak_at = (None, None)
        if window:
            j = max(range(len(window)), key=window.__getitem__)
            peak, peak_at = window[j], ts[lo + j]
        rows.append({**ph, "start_bytes": s_b, "end_bytes": e_b,
                     "delta_bytes": (e_b - s_b) if s_b is not None and e_b is not None else None,
                     "peak_bytes": peak, "peak_at_s": peak_at, "samples": len(window)})
    return rows


def phase_at(phases: list[dict[str, Any]], t: float) -> str | None:
    """Innermost phase covering `t` (the latest started)."""
    best = None
    for ph in phases:
        if ph["start_s"] <= t <= ph["end_s"] and (best is None or ph["start_s"] >= best["start_s"]):
            best = ph
    return best["name"] if best else None


# -- peaks --------------------------------------------------------------------------------

def gpu_peaks(record: dict[str, Any], per_gpu: list[list[int]], phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ts = record.get("series", {}).get("t", [])
    out = []
    for g, child in zip(record.get("series", {}).get("gpus", []), per_gpu):
        info = next((d for d in record.get("gpus", []) if d["index"] == g["index"]), {})
        total = info.get("memory_total_bytes")
        row: dict[str, Any] = {"gpu": g["index"], "name": info.get("name"), "total_bytes": total,
                               "peak_bytes": None, "at_s": None, "phase": None,
                               "device_used_at_peak_bytes": None, "headroom_bytes": None,
                               "min_free_bytes": None, "min_free_at_s": None}
        if child:
            k = max(range(len(child)), key=child.__getitem__)
            used = g["used_bytes"][k]
            row.update(peak_bytes=child[k], at_s=ts[k], phase=phase_at(phases, ts[k]),
                       device_used_at_peak_bytes=used,
                       headroom_bytes=(total - used) if total is not None and used is not None else None)
            frees = [(total - u, i) for i, u in enumerate(g["used_bytes"]) if u is not None and total is not None]
            if frees:
                free, i = min(frees)
                row.update(min_free_bytes=free, min_free_at_s=ts[i])
        out.append(row)
    return out


def host_peak(record: dict[str, Any]) -> dict[str, Any]:
    aux = record.get("aux", {})
    rss = aux.get("rss_bytes", [])
    pairs = [(v, t) for v, t in zip(rss, aux.get("t", [])) if v is not None]
    if not pairs:
        return {"peak_rss_bytes": None, "at_s": None}
    v, t = max(pairs)
    return {"peak_rss_bytes": v, "at_s": t}


def sampling_stats(ts: list[float], interval_ms: float) -> dict[str, Any]:
    if len(ts) < 2:
        return {"samples": len(ts), "median_period_ms": None, "max_gap_ms": None, "late_ticks": 0}
    gaps = sorted((b - a) * 1000 for a, b in zip(ts, ts[1:]))
    return {"samples": len(ts), "median_period_ms": round(gaps[len(gaps) // 2], 3),
            "max_gap_ms": round(gaps[-1], 3),
            "late_ticks": sum(1 for g in gaps if g > 2 * interval_ms)}


# -- everything ---------------------------------------------------------------------------

def analyze(record: dict[str, Any]) -> dict[str, Any]:
    """The derived part of the record: attribution, peaks, phases, host peak, sampling."""
    ts = record.get("series", {}).get("t", [])
    end_s = float(record.get("duration_s") or (ts[-1] if ts else 0.0))
    mode = attribution(record)
    per_gpu = child_bytes(record, mode) if mode != "none" else []
    total = total_series(per_gpu)
    marked = pair_phases(record.get("phase_events", []), end_s)
    source = "markers" if marked else "auto"
    phases = [p for p in marked if p["start_s"] is not None] if marked else auto_phases(
        ts, total, record.get("output_lines"))
    rows = phase_rows(phases, ts, total, end_s, add_edges=bool(marked)) if total else []
    peaks = gpu_peaks(record, per_gpu, phases)
    overall = None
    if total:
        k = max(range(len(total)), key=total.__getitem__)
        overall = {"peak_bytes": total[k], "at_s": ts[k], "phase": phase_at(phases, ts[k])}
    marks = [e for e in record.get("phase_events", []) if e.get("event") == "mark"]
    return {"attribution": mode, "peaks": peaks, "total_peak": overall,
            "phases": {"source": source if rows else None, "rows": rows,
                       "marks": [{"name": m.get("phase"), "t_s": m.get("t_s")} for m in marks]},
            "host": host_peak(record),
            "sampling": sampling_stats(ts, float(record.get("interval_ms") or 100))}


def timeline_lookup(record: dict[str, Any], analysis: dict[str, Any]) -> Callable[[float], dict[str, Any]]:
    """`at(t_s)`: the command's memory per GPU and the phase at a moment (for diagnosis)."""
    ts = record.get("series", {}).get("t", [])
    mode = analysis["attribution"]
    per_gpu = child_bytes(record, mode) if mode != "none" else []
    phases = analysis["phases"]["rows"]
    infos = {d["index"]: d for d in record.get("gpus", [])}

    def at(t_s: float) -> dict[str, Any]:
        rows = []
        for g, child in zip(record.get("series", {}).get("gpus", []), per_gpu):
            rows.append({"index": g["index"], "child_bytes": value_at(ts, child, t_s),
                         "used_bytes": value_at(ts, g["used_bytes"], t_s),
                         "total_bytes": infos.get(g["index"], {}).get("memory_total_bytes")})
        return {"phase": phase_at(phases, t_s), "child_bytes": sum(r["child_bytes"] or 0 for r in rows) if rows else None,
                "per_gpu": rows}

    return at


def reduce_minmax(ts: list[float], columns: list[list[Any]], max_points: int) -> tuple[list[float], list[list[Any]], bool]:
    """Shrink series for plots and the final JSON while keeping every spike: for each bucket keep
    the samples holding each column's min and max. Returns (t, columns, reduced?)."""
    n = len(ts)
    if n <= max_points or max_points < 4:
        return ts, columns, False
    buckets = max_points // 2
    keep: set[int] = {0, n - 1}
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        if hi <= lo:
            continue
        for col in columns:
            seg = [(v if v is not None else 0, i) for i, v in zip(range(lo, hi), col[lo:hi])]
            keep.add(min(seg)[1])
            keep.add(max(seg)[1])
    idx = sorted(keep)
    return [ts[i] for i in idx], [[col[i] for i in idx] for col in columns], True
