"""Watching the running Python process itself: `with gpu_preflight.watch() as w: ...`.

A daemon thread samples, through NVML, this process's own memory on each GPU (its entry in the
GPU's compute-process list) every `interval_ms`, and keeps the peak per GPU with its time and the
phase open at that moment (`gpu_preflight.phase("name")` inside the block names phases). Without a
GPU or NVML the block still runs and the result says why nothing was sampled.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from gpu_preflight.watcher.gpu import open_gpu_source

SCHEMA = "gpu-preflight.watch-session"


class WatchSession:
    def __init__(self, interval_ms: float = 100.0, gpu_indices: list[int] | None = None, nv: Any = None,
                 pid: int | None = None) -> None:
        self.interval_s = max(float(interval_ms), 10.0) / 1000.0
        self.gpu_indices, self.nv, self.pid = gpu_indices, nv, pid or os.getpid()
        self.record: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gpu = None
        self._reason: str | None = None
        self._peaks: dict[int, dict[str, Any]] = {}
        self._phase: str | None = None
        self._phases: list[dict[str, Any]] = []
        self._samples = 0
        self._t0 = 0.0

    # phases named from inside the block (gpu_preflight.phase uses this when a session is active)
    def mark(self, name: str | None) -> None:
        t = round(time.monotonic() - self._t0, 6)
        if self._phases and self._phases[-1]["end_s"] is None:
            self._phases[-1]["end_s"] = t
        self._phase = name
        if name:
            self._phases.append({"name": name, "start_s": t, "end_s": None, "peak_bytes": 0})

    def _sample(self) -> None:
        t = round(time.monotonic() - self._t0, 6)
        self._samples += 1
        for dev in self._gpu.devices:
            procs = self._gpu.processes(dev.index) or []
            used = next((b for p, b in procs if p == self.pid and b is not None), 0)
            peak = self._peaks.setdefault(dev.index, {"gpu": dev.index, "name": dev.name,
                                                      "total_bytes": dev.memory_total_bytes, "peak_bytes": 0,
                                                      "at_s": None, "phase": None})
            if used > peak["peak_bytes"]:
                peak.update(peak_bytes=used, at_s=t, phase=self._phase)
            if self._phases and self._phases[-1]["end_s"] is None:
                self._phases[-1]["peak_bytes"] = max(self._phases[-1]["peak_bytes"], used)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> WatchSession:
        from gpu_preflight.watcher import phase as phase_mod

        self._t0 = time.monotonic()
        self._gpu, self._reason = open_gpu_source(self.nv, self.gpu_indices)
        phase_mod.set_session(self)
        if self._gpu is not None:
            self._sample()
            self._thread = threading.Thread(target=self._loop, name="preflight-watch-session", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        from gpu_preflight.watcher import phase as phase_mod

        phase_mod.set_session(None)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._gpu is not None:
            self._sample()
            self._gpu.close()
        self.mark(None)
        self.record = {"schema": SCHEMA, "schema_version": 1, "pid": self.pid,
                       "duration_s": round(time.monotonic() - self._t0, 6), "interval_ms": self.interval_s * 1000,
                       "samples": self._samples, "gpu_sampling": None if self._gpu else self._reason,
                       "exit": {"code": 0 if not exc or exc[0] is None else 1, "status": "in-process"},
                       "analysis": {"peaks": [self._peaks[i] for i in sorted(self._peaks)],
                                    "phases": {"source": "markers" if self._phases else None,
                                               "rows": self._phases}}}
