#!/usr/bin/env python3
"""Does `preflight watch` catch a short GPU memory spike? (issue 6: 50 ms at the 10 ms interval)

A child program allocates SIZE GiB on the GPU, holds it HOLD ms, frees it (and, with torch,
empties the cache so the driver really gets it back), waits GAP ms, SPIKES times; each spike is
wrapped in `gpu_preflight.phase("spike N")`, so the watcher knows exactly when it happened.
The watcher samples at each interval; a spike is caught when a sample inside its window shows
at least 90 % of SIZE above the level just before it: once from the command's own processes
(NVML per-process memory) and once from the device's used memory.

    python bench/watch_spike.py OUT.json                       # 4 GiB x 10 spikes of 50 ms, at 10 and 100 ms
    python bench/watch_spike.py OUT.json --size-gib 2 --hold-ms 20 --intervals 10
    python bench/watch_spike.py OUT.json --backend cuda        # no torch: libcuda through ctypes

Prints a table and writes every spike's numbers to OUT.json (and OUT's stem + .html, the
watcher's own report of the 10 ms run, as evidence). Needs an NVIDIA GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

GiB = 1024**3


# -- the child: allocate, hold, free ------------------------------------------------------

class TorchAlloc:
    def __init__(self, device: int):
        import torch

        self.torch = torch
        self.dev = torch.device("cuda", device)
        torch.cuda.init()
        torch.zeros(1, device=self.dev)  # create the context before the first spike

    def spike(self, nbytes: int, hold_s: float) -> None:
        t = self.torch
        x = t.empty(nbytes, dtype=t.uint8, device=self.dev)
        x.fill_(1)
        t.cuda.synchronize(self.dev)
        time.sleep(hold_s)
        del x
        t.cuda.synchronize(self.dev)
        t.cuda.empty_cache()  # give it back to the driver, or NVML never sees it go


class CudaDriverAlloc:
    """cuMemAlloc/cuMemFree through libcuda: no torch needed."""

    def __init__(self, device: int):
        self.cu = ctypes.CDLL("libcuda.so.1")
        self._check(self.cu.cuInit(0), "cuInit")
        dev = ctypes.c_int()
        self._check(self.cu.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
        self.ctx = ctypes.c_void_p()
        self._check(self.cu.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), dev), "cuDevicePrimaryCtxRetain")
        self._check(self.cu.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")

    @staticmethod
    def _check(rc: int, what: str) -> None:
        if rc != 0:
            raise RuntimeError(f"{what} failed with CUDA error {rc}")

    def spike(self, nbytes: int, hold_s: float) -> None:
        ptr = ctypes.c_uint64()
        self._check(self.cu.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(nbytes)), "cuMemAlloc")
        self._check(self.cu.cuMemsetD8_v2(ptr, ctypes.c_ubyte(1), ctypes.c_size_t(nbytes)), "cuMemsetD8")
        self._check(self.cu.cuCtxSynchronize(), "cuCtxSynchronize")
        time.sleep(hold_s)
        self._check(self.cu.cuMemFree_v2(ptr), "cuMemFree")
        self._check(self.cu.cuCtxSynchronize(), "cuCtxSynchronize")


def child(args: argparse.Namespace) -> int:
    import gpu_preflight

    backend = args.backend
    if backend == "auto":
        try:
            import torch  # noqa: F401

            backend = "torch"
        except ImportError:
            backend = "cuda"
    alloc = TorchAlloc(args.device) if backend == "torch" else CudaDriverAlloc(args.device)
    print(f"spike child: backend={backend}", flush=True)
    time.sleep(0.3)  # a steady level before the first spike
    for i in range(args.spikes):
        with gpu_preflight.phase(f"spike {i}"):
            alloc.spike(int(args.size_gib * GiB), args.hold_ms / 1000.0)
        time.sleep(args.gap_ms / 1000.0)
    return 0


# -- the parent: watch the child, judge each spike ----------------------------------------

def judge(rec: dict, size: int) -> list[dict]:
    from gpu_preflight.watcher import analysis

    t = rec["series"]["t"]
    gpus = rec["series"]["gpus"]
    tree = analysis.total_series([[v or 0 for v in g["tree_bytes"]] for g in gpus])
    used = analysis.total_series([[v or 0 for v in g["used_bytes"]] for g in gpus])
    out = []
    slack = 0.002  # phase markers (wall clock) and samples (monotonic) agree to about a millisecond
    for ph in analysis.pair_phases(rec["phase_events"], rec["duration_s"]):
        lo = next((i for i, x in enumerate(t) if x >= ph["start_s"] - slack), len(t))
        hi = next((i for i, x in enumerate(t) if x > ph["end_s"] + slack), len(t))
        prior = [i for i, x in enumerate(t[:lo]) if x >= ph["start_s"] - 0.1] or [max(lo - 1, 0)]
        row = {"spike": ph["name"], "start_s": round(ph["start_s"], 4),
               "window_ms": round((ph["end_s"] - ph["start_s"]) * 1000, 1), "samples_in_window": hi - lo}
        for name, col in (("process", tree), ("device", used)):
            base = min(col[i] for i in prior) if col else 0  # the level in the 100 ms before
            rise = max((col[i] - base for i in range(lo, hi)), default=0)
            row[f"{name}_rise_gib"] = round(rise / GiB, 3)
            row[f"{name}_caught"] = rise >= 0.9 * size
            row[f"{name}_samples_high"] = sum(1 for i in range(lo, hi) if col[i] - base >= 0.9 * size)
        out.append(row)
    return out


def parent(args: argparse.Namespace) -> int:
    from gpu_preflight.watcher.gpu import open_gpu_source
    from gpu_preflight.watcher.outputs import resolve
    from gpu_preflight.watcher.runner import WatchEnv, WatchOptions, run_watch

    src, reason = open_gpu_source()
    if src is None:
        print(f"watch_spike: no GPU to test on: {reason}", file=sys.stderr)
        return 2
    gpu_names = [d.name for d in src.devices]
    src.close()
    out_json = Path(args.out)
    size = int(args.size_gib * GiB)
    child_cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--size-gib", str(args.size_gib),
                 "--hold-ms", str(args.hold_ms), "--gap-ms", str(args.gap_ms), "--spikes", str(args.spikes),
                 "--backend", args.backend, "--device", str(args.device), "-"]
    runs = []
    for ms in [float(x) for x in args.intervals.split(",")]:
        work = Path(tempfile.mkdtemp(prefix="watch-spike-"))
        try:
            html = out_json.with_name(out_json.stem + f"-{ms:g}ms.html") if ms == min(
                float(x) for x in args.intervals.split(",")) else None
            outs = resolve(str(work), None, str(html) if html else None, None)
            outs.png = None
            outs.html = html  # the watcher's HTML report of the finest interval only
            talk = io.StringIO()
            res = run_watch(WatchOptions(command=child_cmd, outputs=outs, interval_ms=ms, quiet=True),
                            WatchEnv(talk=talk, stdout_fd=2))
            rec = res.record
            if res.exit_code != 0:
                print(f"watch_spike: the child failed (exit {res.exit_code}); see its output above", file=sys.stderr)
                return 1
            spikes = judge(rec, size)
            runs.append({"interval_ms": ms, "exit_code": res.exit_code, "attribution": rec["analysis"]["attribution"],
                         "sampling": rec["analysis"]["sampling"], "watcher_cpu_pct": rec["watcher"]["cpu_pct"],
                         "caught_process": sum(s["process_caught"] for s in spikes),
                         "caught_device": sum(s["device_caught"] for s in spikes), "spikes": spikes,
                         "report_html": str(html) if html else None,
                         "peak": rec["analysis"]["peaks"]})
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"watch spike test: {args.spikes} spikes of {args.size_gib:g} GiB held {args.hold_ms:g} ms on "
          f"{', '.join(n or '?' for n in gpu_names)}")
    print(f"{'interval':>9} {'period':>9} {'caught (process)':>17} {'caught (device)':>16} "
          f"{'samples high/spike':>19} {'window':>8} {'cpu':>7}")
    for r in runs:
        highs = sorted(s["device_samples_high"] for s in r["spikes"])
        wins = sorted(s["window_ms"] for s in r["spikes"])
        med = lambda xs: xs[len(xs) // 2] if xs else 0  # noqa: E731
        print(f"{r['interval_ms']:>7g}ms {r['sampling']['median_period_ms'] or 0:>7.2f}ms "
              f"{r['caught_process']:>8}/{len(r['spikes']):<8} {r['caught_device']:>7}/{len(r['spikes']):<8} "
              f"{med(highs):>19} {med(wins):>6.0f}ms {r['watcher_cpu_pct']:>6.2f}%")
    result = {"bench": "watch_spike", "size_gib": args.size_gib, "hold_ms": args.hold_ms, "gap_ms": args.gap_ms,
              "spikes": args.spikes, "backend": args.backend, "gpus": gpu_names,
              "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
              "runs": runs}
    out_json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out_json}" + "".join(f" and {r['report_html']}" for r in runs if r["report_html"]))
    return 0 if all(r["caught_device"] == args.spikes for r in runs if r["interval_ms"] <= 10) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="write the results as JSON here")
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--hold-ms", type=float, default=50.0)
    ap.add_argument("--gap-ms", type=float, default=400.0)
    ap.add_argument("--spikes", type=int, default=10)
    ap.add_argument("--intervals", default="10,100", help="comma-separated sampling intervals in ms")
    ap.add_argument("--backend", choices=("auto", "torch", "cuda"), default="auto",
                    help="allocate with torch, or with libcuda through ctypes (auto: torch if installed)")
    ap.add_argument("--device", type=int, default=0, help="CUDA device the child allocates on")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    sys.exit(main())
