#!/usr/bin/env python3
"""CPU overhead of `preflight watch`'s sampler, as a share of one CPU core.

Runs a sleeping child (`sleep N`, which uses no CPU) under the watcher at each interval and
compares the watcher's own process CPU time (all its threads: sampler, output pump, signal
waiter; from spawning the child to its exit) with the wall time. Targets from issue 6:
under 1 % of one core at 100 ms, under 5 % at 10 ms.

    python bench/watch_overhead.py OUT.json                  # real NVML if it works, else no GPU
    python bench/watch_overhead.py OUT.json --gpu fake --fake-gpus 8   # CPU-only machine
    python bench/watch_overhead.py OUT.json --seconds 20 --intervals 100,10,50

Prints a short table and writes the numbers and the machine to OUT.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_preflight.watcher import proctree  # noqa: E402
from gpu_preflight.watcher.outputs import resolve  # noqa: E402
from gpu_preflight.watcher.runner import WatchEnv, WatchOptions, run_watch  # noqa: E402


class FakeNvml:
    """A GPU that answers at once: measures the watcher's own cost, not the driver's."""

    NVML_TEMPERATURE_GPU, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2

    def __init__(self, n: int):
        self.n = n

    def nvmlInit(self): pass  # noqa: E704,N802
    def nvmlShutdown(self): pass  # noqa: E704,N802
    def nvmlDeviceGetCount(self): return self.n  # noqa: E704,N802
    def nvmlDeviceGetHandleByIndex(self, i): return i  # noqa: E704,N802
    def nvmlDeviceGetName(self, h): return "Fake GPU"  # noqa: E704,N802
    def nvmlDeviceGetUUID(self, h): return f"GPU-fake-{h}"  # noqa: E704,N802
    def nvmlDeviceGetPciInfo(self, h): return types.SimpleNamespace(busId=b"0")  # noqa: E704,N802

    def nvmlDeviceGetMemoryInfo(self, h):  # noqa: N802
        return types.SimpleNamespace(total=80 << 30, used=(1 << 30) + h, free=79 << 30)

    def nvmlDeviceGetComputeRunningProcesses(self, h):  # noqa: N802
        return [types.SimpleNamespace(pid=1, usedGpuMemory=1 << 30)]

    def nvmlDeviceGetUtilizationRates(self, h):  # noqa: N802
        return types.SimpleNamespace(gpu=0, memory=0)

    def nvmlDeviceGetTemperature(self, h, s): return 40  # noqa: E704,N802
    def nvmlDeviceGetPowerUsage(self, h): return 70000  # noqa: E704,N802
    def nvmlDeviceGetClockInfo(self, h, k): return 1500  # noqa: E704,N802


def pick_tree(name: str):
    if name == "procfs":
        return proctree.ProcfsTree()
    if name == "psutil":
        import psutil

        return proctree.PsutilTree(psutil)
    return proctree.default_tree()


def one_run(interval_ms: float, seconds: float, gpu: str, fake_gpus: int, tree: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix="watch-overhead-"))
    try:
        env = WatchEnv(talk=io.StringIO(), renderers=False, handle_signals=True,
                       nv=FakeNvml(fake_gpus) if gpu == "fake" else None, no_gpu=(gpu == "none"),
                       tree=pick_tree(tree))
        opts = WatchOptions(command=["sleep", str(seconds)], outputs=resolve(str(work), None, None, None),
                            interval_ms=interval_ms, quiet=True)
        t0, c0 = time.perf_counter(), time.process_time()
        rec = run_watch(opts, env).record
        total_wall, total_cpu = time.perf_counter() - t0, time.process_time() - c0
        w = rec["watcher"]
        return {"interval_ms": interval_ms, "seconds": seconds, "gpus_sampled": len(rec["gpus"]),
                "gpu_reason": rec["gpu_sampling"]["reason"], "tree": rec["host_sampling"]["source"],
                "samples": rec["series"]["samples_total"], "median_period_ms": rec["analysis"]["sampling"]["median_period_ms"],
                "late_ticks": rec["analysis"]["sampling"]["late_ticks"],
                "sampling_cpu_s": w["cpu_s"], "sampling_wall_s": w["wall_s"], "cpu_pct_of_one_core": w["cpu_pct"],
                "incl_setup_and_record_cpu_s": round(total_cpu, 4), "incl_setup_and_record_wall_s": round(total_wall, 4)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="write the results as JSON here")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long the sleeping child runs (default 10)")
    ap.add_argument("--intervals", default="100,10", help="comma-separated sampling intervals in ms (default 100,10)")
    ap.add_argument("--gpu", choices=("auto", "real", "fake", "none"), default="auto",
                    help="auto: real NVML when it works, else none")
    ap.add_argument("--fake-gpus", type=int, default=8, help="GPUs the fake NVML pretends to have (default 8)")
    ap.add_argument("--tree", choices=("auto", "procfs", "psutil"), default="auto", help="process-tree reader")
    args = ap.parse_args()
    gpu = args.gpu
    if gpu in ("auto", "real"):
        from gpu_preflight.watcher.gpu import open_gpu_source

        src, reason = open_gpu_source()
        if src is None:
            if gpu == "real":
                print(f"no GPU: {reason}", file=sys.stderr)
                return 2
            gpu = "none"
        else:
            src.close()
            gpu = "real"
    rows = [one_run(float(ms), args.seconds, gpu, args.fake_gpus, args.tree) for ms in args.intervals.split(",")]
    limits = {100.0: 1.0, 10.0: 5.0}
    print(f"watch sampler overhead: gpu={gpu} gpus_sampled={rows[0]['gpus_sampled']} tree={rows[0]['tree']} "
          f"child=sleep {args.seconds:g}s  ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})")
    print(f"{'interval':>9} {'samples':>8} {'period':>9} {'cpu s':>8} {'wall s':>8} {'% of 1 core':>12} {'target':>8}")
    for r in rows:
        lim = limits.get(r["interval_ms"])
        verdict = "" if lim is None else (f"<{lim:g}% ok" if r["cpu_pct_of_one_core"] < lim else f"<{lim:g}% FAIL")
        print(f"{r['interval_ms']:>7g}ms {r['samples']:>8} {r['median_period_ms']:>7.2f}ms {r['sampling_cpu_s']:>8.3f} "
              f"{r['sampling_wall_s']:>8.2f} {r['cpu_pct_of_one_core']:>11.2f}% {verdict:>8}")
    result = {"bench": "watch_overhead", "gpu_mode": gpu, "fake_gpus": args.fake_gpus if gpu == "fake" else None,
              "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                       "processor": platform.processor() or platform.machine()},
              "runs": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
