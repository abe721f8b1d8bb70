"""Fakes for the watch tests (no tests here): a scripted NVML and child programs.

FakeNvml implements the few pynvml functions the watcher calls. The GPU memory of "the
command" is whatever the child last wrote to `mem_file` (so the child drives the script and
timing cannot drift); it is reported for the child's PID (found as a descendant of this test
process), or for a foreign PID when `report_pids=False`, as a driver in a container does.
"""

from __future__ import annotations

import os
import sys
import textwrap
import types
from pathlib import Path

from nvml_fakes import NVMLError, NVMLError_LibraryNotFound, NVMLError_NotSupported  # noqa: F401

GiB = 1024**3


def descendants(root: int) -> list[int]:
    from gpu_preflight.watcher.proctree import ProcfsTree

    return sorted(ProcfsTree().tree(root))


class FakeNvml:
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2

    def __init__(self, mem_file: Path | None = None, n_gpus: int = 1, total: int = 80 * GiB,
                 other: int = 1 * GiB, report_pids: bool = True, name: str = "Fake GPU 80GB",
                 fail_init: type[Exception] | None = None, on_gpu: int = 0):
        self.mem_file = mem_file
        self.n = n_gpus
        self.total = total
        self.other = other
        self.report_pids = report_pids
        self.name = name
        self.fail_init = fail_init
        self.on_gpu = on_gpu  # the GPU the child "uses"
        self.calls = 0
        self.shutdown = False

    # -- lifecycle
    def nvmlInit(self):  # noqa: N802
        if self.fail_init:
            raise self.fail_init("fake")

    def nvmlShutdown(self):  # noqa: N802
        self.shutdown = True

    def nvmlDeviceGetCount(self):  # noqa: N802
        return self.n

    def nvmlDeviceGetHandleByIndex(self, i):  # noqa: N802
        return i

    def nvmlDeviceGetName(self, h):  # noqa: N802
        return self.name

    def nvmlDeviceGetUUID(self, h):  # noqa: N802
        return f"GPU-fake-{h}"

    def nvmlDeviceGetPciInfo(self, h):  # noqa: N802
        return types.SimpleNamespace(busId=f"00000000:0{h}:00.0".encode())

    # -- readings
    def _child_bytes(self) -> int:
        if self.mem_file is None:
            return 0
        try:
            return int(self.mem_file.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def nvmlDeviceGetMemoryInfo(self, h):  # noqa: N802
        self.calls += 1
        mine = self._child_bytes() if h == self.on_gpu else 0
        return types.SimpleNamespace(total=self.total, used=self.other + mine, free=self.total - self.other - mine)

    def nvmlDeviceGetComputeRunningProcesses(self, h):  # noqa: N802
        procs = [types.SimpleNamespace(pid=1, usedGpuMemory=self.other)]  # "someone else" (init's PID)
        if h == self.on_gpu:
            mine = self._child_bytes()
            if mine:
                kids = descendants(os.getpid())
                pid = kids[0] if (kids and self.report_pids) else 4_000_000
                procs.append(types.SimpleNamespace(pid=pid, usedGpuMemory=mine))
        return procs

    def nvmlDeviceGetUtilizationRates(self, h):  # noqa: N802
        return types.SimpleNamespace(gpu=50 if self._child_bytes() else 0, memory=10)

    def nvmlDeviceGetTemperature(self, h, sensor):  # noqa: N802
        return 40

    def nvmlDeviceGetPowerUsage(self, h):  # noqa: N802
        return 123_000

    def nvmlDeviceGetClockInfo(self, h, kind):  # noqa: N802
        raise NVMLError_NotSupported("fake")


def child_script(tmp: Path, body: str) -> list[str]:
    """A Python child with `set_mem(bytes)` (drives FakeNvml); it imports the installed gpu_preflight."""
    path = tmp / "child.py"
    path.write_text(textwrap.dedent(f"""\
        import os, sys, time
        import gpu_preflight
        GiB = 1024**3
        def set_mem(n):
            tmp = {str(tmp / 'mem.tmp')!r}
            with open(tmp, 'w') as f:
                f.write(str(int(n)))
            os.replace(tmp, {str(tmp / 'mem')!r})
        """) + textwrap.dedent(body))
    return [sys.executable, str(path)]
