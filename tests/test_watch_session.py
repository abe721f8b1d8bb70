"""`with gpu_preflight.watch() as w:` watches this process itself: peak per GPU, the phase open at
the peak, and a clear reason when there is no GPU."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import gpu_preflight as gp
from gpu_preflight.watcher.session import WatchSession

GiB = 1 << 30


class OneGpu:
    """A scripted NVML: one GPU whose process list holds this process with `self.used` bytes."""

    def __init__(self):
        self.used = 0

    def nvmlInit(self): pass  # noqa: E704
    def nvmlShutdown(self): pass  # noqa: E704
    def nvmlDeviceGetCount(self): return 1  # noqa: E704
    def nvmlDeviceGetHandleByIndex(self, i): return i  # noqa: E704
    def nvmlDeviceGetName(self, h): return "NVIDIA H200"  # noqa: E704
    def nvmlDeviceGetUUID(self, h): return "GPU-x"  # noqa: E704
    def nvmlDeviceGetPciInfo(self, h): return SimpleNamespace(busId="0000:00:06.0")  # noqa: E704
    def nvmlDeviceGetMemoryInfo(self, h): return SimpleNamespace(used=self.used, total=141 * GiB, free=0)  # noqa: E704

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=1, usedGpuMemory=99 * GiB),  # another process: never ours
                SimpleNamespace(pid=os.getpid(), usedGpuMemory=self.used)]


def test_peak_and_phase_of_this_process():
    nv = OneGpu()
    with WatchSession(interval_ms=10, nv=nv) as s:
        with gp.phase("load"):
            nv.used = 3 * GiB
            time.sleep(0.08)
        with gp.phase("generate"):
            nv.used = 5 * GiB
            time.sleep(0.08)
        nv.used = 1 * GiB
        time.sleep(0.05)
    peak, = s.record["analysis"]["peaks"]
    assert peak["peak_bytes"] == 5 * GiB and peak["phase"] == "generate" and peak["name"] == "NVIDIA H200"
    rows = {r["name"]: r for r in s.record["analysis"]["phases"]["rows"]}
    assert rows["load"]["peak_bytes"] == 3 * GiB and rows["generate"]["peak_bytes"] == 5 * GiB
    assert rows["load"]["end_s"] <= rows["generate"]["start_s"]
    assert s.record["samples"] >= 5 and s.record["gpu_sampling"] is None


def test_without_a_gpu_the_block_runs_and_says_why(monkeypatch):
    import gpu_preflight.watcher.session as session

    monkeypatch.setattr(session, "open_gpu_source", lambda nv, idx: (None, "NVML library not found"))
    ran = []
    with gp.watch() as w:
        ran.append(1)
    assert ran and w.result.exit_code == 0 and w.result.peaks == ()
    assert w.result["gpu_sampling"] == "NVML library not found"


def test_the_command_form_refuses_a_shell_string():
    import pytest

    with pytest.raises(gp.UsageError):
        gp.watch("python train.py")
