"""The watch record: its JSON shape, its assembly, and reading back a partial stream.

The stream (`watch.jsonl`) is one JSON object per line, written while the command runs:
  {"type": "header", ...}                          once, before the command starts
  {"type": "sample", "t", "used": [..], "tree": [..]}   every tick, one value per GPU
  {"type": "aux", "t", "rss", "nproc", "gpus": [[util, mem_util, temp, power, sm, mem], ..]}
  {"type": "phase", "t_s", "phase", "event", "pid"}     from gpu_preflight.phase()
  {"type": "match", "t_s", "stream", "line"}           an output line worth diagnosing
  {"type": "line", "t_s", "text"}                      the command's latest output line changed
  {"type": "signal", "t_s", "signal", ...}             a signal the watcher received
  {"type": "exit", "t_s", "code", "status", ...}       the command ended
The final record (`watch.json`, see docs/watch.md) holds the same data as columns plus the
analysis and diagnosis. `load_stream()` rebuilds the record from a stream cut short.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gpu_preflight import __version__
from gpu_preflight.watcher import analysis, diagnose
from gpu_preflight.watcher.sampler import AUX_KEYS

SCHEMA = "gpu-preflight.watch"
SCHEMA_VERSION = 1
MAX_POINTS = 20000  # samples kept in watch.json; watch.jsonl has them all


def header(command: list[str], started_unix: float, interval_ms: float, aux_interval_ms: float,
           gpus: list[dict[str, Any]], gpu_reason: str | None, tree_source: str, model: str | None,
           watcher_pid: int, files: dict[str, Any]) -> dict[str, Any]:
    import datetime as _dt

    return {
        "type": "header", "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "tool": {"name": "gpu-preflight", "version": __version__},
        "command": list(command), "cwd": os.getcwd(), "model": model,
        "started_at": _dt.datetime.fromtimestamp(started_unix, _dt.timezone.utc).isoformat(timespec="milliseconds"),
        "start_time_unix": started_unix, "interval_ms": interval_ms, "aux_interval_ms": aux_interval_ms,
        "gpus": gpus,
        "gpu_sampling": {"available": bool(gpus), "reason": gpu_reason, "source": "nvml"},
        "host_sampling": {"source": tree_source},
        "watcher": {"pid": watcher_pid},
        "files": files,
    }


def assemble(head: dict[str, Any], series: dict[str, Any], aux: dict[str, Any],
             events: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
    """The raw record (no analysis yet) from the header, columns and events."""
    record = {k: v for k, v in head.items() if k != "type"}
    record["complete"] = complete
    record["series"] = series
    record["aux"] = aux
    record["phase_events"] = [_strip(e) for e in events if e["type"] == "phase"]
    record["output_lines"] = [[e["t_s"], e["text"]] for e in events if e["type"] == "line"]
    record["signals"] = [_strip(e) for e in events if e["type"] == "signal"]
    matches = [_strip(e) for e in events if e["type"] == "match"]
    record.setdefault("output", {})["matches"] = matches
    exits = [e for e in events if e["type"] == "exit"]
    if exits:
        record["exit"] = _strip(exits[-1])
    else:
        record["exit"] = {"code": None, "status": "unknown",
                          "message": "the watcher stopped before the command ended"}
    ts = series.get("t", [])
    record.setdefault("duration_s", (record["exit"].get("t_s") if exits else None) or (ts[-1] if ts else 0.0))
    return record


def _strip(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "type"}


def finalize(record: dict[str, Any], max_points: int = MAX_POINTS) -> dict[str, Any]:
    """Add analysis and diagnosis, then shrink the series for watch.json (spikes kept)."""
    result = analysis.analyze(record)
    record["analysis"] = result
    context = {"model": record.get("model"), "gpus": record.get("gpus", []),
               "tree_pids": set(record.get("tree", {}).get("pids", [])),
               "peaks": result["peaks"], "at": analysis.timeline_lookup(record, result)}
    record["diagnosis"] = diagnose.diagnose(record.get("output", {}).get("matches", []), context)
    _reduce(record, max_points)
    return record


def _reduce(record: dict[str, Any], max_points: int) -> None:
    series = record["series"]
    n = len(series["t"])
    cols = [c for g in series["gpus"] for c in (g["used_bytes"], g["tree_bytes"])]
    t, new_cols, reduced = analysis.reduce_minmax(series["t"], cols, max_points)
    series["samples_total"] = n
    series["reduced"] = reduced
    if reduced:
        series["t"] = t
        for j, g in enumerate(series["gpus"]):
            g["used_bytes"], g["tree_bytes"] = new_cols[2 * j], new_cols[2 * j + 1]


def write_json(record: dict[str, Any], path: Path) -> None:
    """Atomically: a reader never sees half a file; a symlink or special file there is refused
    (OSError) and never replaced; a failed write leaves no temp file (watcher/outputs.atomic_write)."""
    from gpu_preflight.watcher.outputs import atomic_write

    data = (json.dumps(record, indent=1) + "\n").encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def load_stream(path: Path) -> dict[str, Any]:
    """Rebuild the raw record from a JSONL stream, even one cut short mid-line."""
    head: dict[str, Any] | None = None
    t: list[float] = []
    used: list[list[Any]] = []
    tree: list[list[Any]] = []
    aux = {"t": [], "rss_bytes": [], "nproc": []}
    aux_gpu: list[dict[str, list[Any]]] = []
    events: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed watcher may be half written
            kind = obj.get("type")
            if kind == "header":
                head = obj
                n = len(obj.get("gpus", []))
                used, tree = [[] for _ in range(n)], [[] for _ in range(n)]
                aux_gpu = [{k: [] for k in AUX_KEYS} for _ in range(n)]
            elif kind == "sample" and head is not None:
                t.append(obj["t"])
                for j in range(len(used)):
                    used[j].append(obj["used"][j])
                    tree[j].append(obj["tree"][j])
            elif kind == "aux" and head is not None:
                aux["t"].append(obj["t"])
                aux["rss_bytes"].append(obj.get("rss"))
                aux["nproc"].append(obj.get("nproc"))
                for j, values in enumerate(obj.get("gpus", [])[: len(aux_gpu)]):
                    for k, v in zip(AUX_KEYS, values):
                        aux_gpu[j][k].append(v)
            elif kind is not None:
                events.append(obj)
    if head is None:
        raise ValueError(f"{path}: no header line: not a preflight watch stream")
    indices = [g["index"] for g in head.get("gpus", [])]
    series = {"t": t, "gpus": [{"index": i, "used_bytes": used[j], "tree_bytes": tree[j]} for j, i in enumerate(indices)]}
    aux["gpus"] = [{"index": i, **aux_gpu[j]} for j, i in enumerate(indices)]
    return assemble(head, series, aux, events, complete=False)
