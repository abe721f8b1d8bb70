"""Host memory (resident set size) of this process, sampled in the background.

Offloading modes keep weights in host RAM (and pinned copies for streamed group offload), so a
run can fail on a 16 GB laptop's RAM rather than on its GPU. `HostMemorySampler` reports the peak
RSS between two `reset()` calls from two sources: a 5 ms sampling thread reading
/proc/self/statm, and, where the kernel allows it, the exact high-water mark VmHWM (reset by
writing "5" to /proc/self/clear_refs, Linux >= 4.0). `peak_bytes()` is the larger of the two.
Outside Linux it falls back to psutil, or reports 0.
"""

from __future__ import annotations

import os
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _status_fields(keys=("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmLck", "VmPin")) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                if name in keys:
                    parts = rest.split()
                    if parts:
                        out[name] = int(parts[0]) * 1024  # kB
    except OSError:
        pass
    return out


class HostMemorySampler:
    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self._statm = os.path.exists("/proc/self/statm")
        self._psutil = None
        if not self._statm:
            try:
                import psutil

                self._psutil = psutil.Process()
            except Exception:  # noqa: BLE001 - no source: report 0
                self._psutil = None
        self.hwm_resettable = False
        self._peak = self.current_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="host-rss-sampler", daemon=True)
        self._thread.start()

    @property
    def mode(self) -> str:
        if self._statm:
            return "statm+hwm" if self.hwm_resettable else "statm"
        return "psutil" if self._psutil else "none"

    def current_bytes(self) -> int:
        if self._statm:
            try:
                with open("/proc/self/statm", encoding="ascii") as fh:
                    return int(fh.read().split()[1]) * PAGE
            except (OSError, ValueError, IndexError):
                return 0
        if self._psutil is not None:
            try:
                return int(self._psutil.memory_info().rss)
            except Exception:  # noqa: BLE001
                return 0
        return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            v = self.current_bytes()
            if v > self._peak:
                self._peak = v
            time.sleep(self.interval_s)

    def reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")
            self.hwm_resettable = True
        except OSError:
            self.hwm_resettable = False
        self._peak = self.current_bytes()

    def peak_bytes(self) -> int:
        peak = max(self._peak, self.current_bytes())
        if self.hwm_resettable:
            peak = max(peak, _status_fields(("VmHWM",)).get("VmHWM", 0))
        return peak

    def detail(self) -> dict[str, int]:
        """RssAnon / RssFile / RssShmem / VmLck / VmPin now (bytes), where /proc has them."""
        return {k: v for k, v in _status_fields().items() if k not in ("VmRSS", "VmHWM")}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
