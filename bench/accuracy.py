"""Compare the estimator with the calibration measurements: one row per measured phase.

Usage: python bench/accuracy.py calibration/raw/*.jsonl [--markdown docs/accuracy.md] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from gpu_preflight.calibration import compare_records, load_records  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--markdown")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = compare_records(load_records(args.files))
    G = 1 << 30
    for r in rows:
        print(f"{r['model']:<34} {r['workload']:<8} {r['phase']:<8} meas {r['measured_process_bytes'] / G:7.2f} "
              f"est {r['estimated_process_bytes'] / G:7.2f} err {r['process_error'] * 100:+6.1f}%  "
              f"alloc {r['measured_allocated_bytes'] / G:7.2f}/{r['estimated_allocated_bytes'] / G:7.2f} "
              f"{r['allocated_error'] * 100:+6.1f}%  {'HELD-OUT' if r['held_out'] else ''}")
    for label, sel in (("tuning", [r for r in rows if not r["held_out"]]),
                       ("held out", [r for r in rows if r["held_out"]])):
        if sel:
            errs = [abs(r["process_error"]) for r in sel]
            print(f"{label}: n={len(sel)} median |err| {statistics.median(errs) * 100:.2f}% "
                  f"worst {max(errs) * 100:.2f}%")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
