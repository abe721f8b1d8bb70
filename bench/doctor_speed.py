"""Benchmark: `preflight doctor --json` vs `python -m torch.utils.collect_env`, wall-clock medians.

Each command runs in a fresh process (what a user pays), N times, after one warm-up run
(so .pyc files exist). Usage: python bench/doctor_speed.py [--runs 7] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - t0, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    commands = {
        "preflight doctor --json": [sys.executable, "-m", "gpu_preflight", "doctor", "--json"],
        "python -m torch.utils.collect_env": [sys.executable, "-m", "torch.utils.collect_env"],
        "python -c pass (interpreter start)": [sys.executable, "-c", "pass"],
    }
    results = {}
    for name, argv in commands.items():
        _, rc = timed(argv, env)  # warm-up
        times = [timed(argv, env)[0] for _ in range(args.runs)]
        results[name] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                         "runs": args.runs, "exit_code": rc}
    machine = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        import pynvml

        pynvml.nvmlInit()
        machine["gpus"] = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                           for i in range(pynvml.nvmlDeviceGetCount())]
        machine["driver"] = pynvml.nvmlSystemGetDriverVersion()
    except Exception as exc:  # noqa: BLE001
        machine["gpus"] = f"none ({type(exc).__name__})"
    try:
        from importlib.metadata import version

        machine["torch"] = version("torch")
    except Exception:  # noqa: BLE001
        machine["torch"] = None
    out = {"machine": machine, "results": results}
    print(f"{'command':<40} {'median':>9} {'min':>9} {'max':>9}  exit")
    for name, r in results.items():
        print(f"{name:<40} {r['median_s']:>8.3f}s {r['min_s']:>8.3f}s {r['max_s']:>8.3f}s  {r['exit_code']}")
    d, c = results["preflight doctor --json"]["median_s"], results["python -m torch.utils.collect_env"]["median_s"]
    print(f"collect_env / doctor = {c / d:.1f}x  ({json.dumps(machine)})")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
