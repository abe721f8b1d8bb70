"""Phase markers for scripts run under `preflight watch`.

    import gpu_preflight
    with gpu_preflight.phase("load DiT"):
        pipe = load_pipeline()

Inside `with gpu_preflight.watch():` (the in-process form) markers name the session's phases.
When the watcher runs the script it sets PREFLIGHT_WATCH_CHANNEL to a file path (or `fd:N`);
each marker appends one JSON line `{"t": unix_time, "phase": name, "event": "start"|"end",
"pid": pid}` there, and the report shows GPU memory per phase. Outside the watcher this is a
no-op costing one environment lookup. Standard library only; it never raises into the script.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Iterator

CHANNEL_ENV = "PREFLIGHT_WATCH_CHANNEL"
_session = None  # an in-process `with gpu_preflight.watch():` block (watcher/session.py), if any


def set_session(session) -> None:  # noqa: ANN001 - a WatchSession or None; kept import-free
    global _session
    _session = session


def _write(name: str, event: str) -> None:
    if _session is not None and event in ("start", "end"):
        try:
            _session.mark(str(name) if event == "start" else None)
        except Exception:  # noqa: BLE001 - a marker must never break the job it describes
            pass
    channel = os.environ.get(CHANNEL_ENV)
    if not channel:
        return
    line = json.dumps({"t": time.time(), "phase": str(name), "event": event, "pid": os.getpid()})
    data = (line + "\n").encode("utf-8", "replace")
    try:
        if channel.startswith("fd:"):
            os.write(int(channel[3:]), data)
            return
        fd = os.open(channel, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)  # one write with O_APPEND: lines from several processes stay whole
        finally:
            os.close(fd)
    except (OSError, ValueError):
        pass  # a marker must never break the job it describes


def mark(name: str) -> None:
    """Record a single point in time (shown as a vertical line in the report)."""
    _write(name, "mark")


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Mark the enclosed block as phase `name` in the watcher's timeline (no-op when not watched)."""
    _write(name, "start")
    try:
        yield
    finally:
        _write(name, "end")
