"""Background sampling of one process's GPU memory through NVML (what nvidia-smi shows)."""

from __future__ import annotations

import os
import threading
import time


class ProcessMemorySampler:
    """Samples NVML's per-process used memory of `pid` on GPU `index` every `interval_s`.

    `peak_bytes()` is the maximum since the last `reset()`. When NVML cannot attribute memory
    to processes (some containers), falls back to device-wide used memory minus the level at
    start (`mode == "device"`).
    """

    def __init__(self, index: int = 0, pid: int | None = None, interval_s: float = 0.002):
        import pynvml

        self._nv = pynvml
        pynvml.nvmlInit()
        self._h = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.pid = pid or os.getpid()
        self.interval_s = interval_s
        self._device_base = pynvml.nvmlDeviceGetMemoryInfo(self._h).used
        self.mode = "process"
        self._peak = 0
        self._last = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()

    def read(self) -> int:
        nv = self._nv
        if self.mode == "process":
            try:
                for p in nv.nvmlDeviceGetComputeRunningProcesses(self._h):
                    if p.pid == self.pid and p.usedGpuMemory is not None:
                        return int(p.usedGpuMemory)
            except nv.NVMLError:
                pass
        used = nv.nvmlDeviceGetMemoryInfo(self._h).used - self._device_base
        return max(used, 0)

    def _loop(self) -> None:
        misses = 0
        while not self._stop.is_set():
            value = self.read()
            if self.mode == "process" and value == 0:
                misses += 1
                if misses > 200:  # process never listed: use device-wide deltas
                    self.mode = "device"
            self._last = value
            if value > self._peak:
                self._peak = value
            time.sleep(self.interval_s)

    def reset(self) -> None:
        self._peak = self.read()

    def peak_bytes(self) -> int:
        return max(self._peak, self.read())

    def current_bytes(self) -> int:
        return self.read()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
