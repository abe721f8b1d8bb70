"""Issue 15 accuracy tables: diffusers memory modes measured on the GPU machine and published figures.

    python bench/modes_accuracy.py            # markdown for docs/accuracy.md ("Pipeline memory modes")

Measured: calibration/raw/diffusion-modes-*.jsonl (bench/calibrate_diffusion_modes.py). Every
measured case is held out: no constant of estimate/engines/diffusers.py was fitted to these runs
(the per-family constants come from the H100 runs of calibration/raw/diffusion-h100.jsonl).
Published: calibration/published/diffusers-figures.json, also held out.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from gpu_preflight.measure.calibration_diffusion import (  # noqa: E402
    compare_modes,
    compare_published,
    default_mode_paths,
)

G = 1 << 30


def _stats(errors: list[float]) -> str:
    if not errors:
        return "- | -"
    a = [abs(e) for e in errors]
    return f"{statistics.median(a) * 100:.1f}% | {max(a) * 100:.1f}%"


def run_rows(rows: list[dict]) -> list[dict]:
    """Per run (pipeline, mode, size): the phase with the largest measured GPU process peak."""
    runs: dict[tuple, dict] = {}
    for r in rows:
        if r.get("error"):
            continue
        k = (r["pipeline"], r["mode"], r["size"], r["batch"])
        if k not in runs or r["measured_process_bytes"] > runs[k]["measured_process_bytes"]:
            keep = runs.get(k, {})
            runs[k] = {**r, "host_max_measured": max(keep.get("host_max_measured", 0), r["measured_host_bytes"]),
                       "host_max_estimated": max(keep.get("host_max_estimated", 0), r["estimated_host_bytes"])}
        else:
            runs[k]["host_max_measured"] = max(runs[k]["host_max_measured"], r["measured_host_bytes"])
            runs[k]["host_max_estimated"] = max(runs[k]["host_max_estimated"], r["estimated_host_bytes"])
        if r["phase"] == "denoise" and r.get("seconds_per_step") is not None:
            runs[k]["seconds_per_step"] = r["seconds_per_step"]
    return list(runs.values())


def main() -> int:
    out = ["## Pipeline memory modes", ""]
    paths = default_mode_paths(ROOT)
    rows = compare_modes(paths) if paths else []
    if not rows:
        out.append("Measured modes: no records yet (run `bench/device_diffusion_modes.sh` on the GPU machine and copy "
                   "its JSONL to calibration/raw/diffusion-modes-h200.jsonl).")
    else:
        gpu = next((r["gpu"] for r in rows if r.get("gpu")), "?")
        runs = run_rows(rows)
        by_mode: dict[str, list] = defaultdict(list)
        for r in runs:
            by_mode[r["mode"]].append(r)
        out += [f"Measured on {gpu} with `bench/calibrate_diffusion_modes.py bench/matrix_diffusion_modes.json` "
                f"({', '.join(os.path.basename(p) for p in paths)}). All cases held out. GPU: NVML process peak "
                "vs the estimated reserved peak + process overhead; host: peak RSS of the phase vs the child's RSS "
                "before building (Python, torch, CUDA libraries) + the weights the mode holds in host RAM.", "",
                "| mode | runs | GPU median abs error | GPU worst | host median abs error | host worst |",
                "|---|---|---|---|---|---|"]
        for mode, rs in sorted(by_mode.items()):
            gerr = [r["process_error"] for r in rs if r.get("process_error") is not None]
            herr = [(r["host_max_estimated"] - r["host_max_measured"]) / r["host_max_measured"]
                    for r in rs if r.get("host_max_measured")]
            out.append(f"| {mode} | {len(rs)} | {_stats(gerr)} | {_stats(herr)} |")
        out += ["", "| pipeline | mode | size | GPU measured GiB | estimated | error | host measured GiB | estimated | "
                "s/step |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(runs, key=lambda r: (r["pipeline"], r["mode"], r["size"])):
            sps = r.get("seconds_per_step")
            herr = ""
            out.append(f"| {r['pipeline']} | {r['mode']} | {r['size']}{'b' + str(r['batch']) if r['batch'] > 1 else ''} | "
                       f"{r['measured_process_bytes'] / G:.2f} | {r['estimated_process_bytes'] / G:.2f} | "
                       f"{(r['process_error'] or 0) * 100:+.1f}% | {r['host_max_measured'] / G:.2f} | "
                       f"{r['host_max_estimated'] / G:.2f}{herr} | {sps if sps is not None else '-'} |")
    pub = compare_published(ROOT)
    out += ["", "### Published figures (held out)", "",
            "bitsandbytes cannot be carried to the GPU machine, so its modes are checked against the figures the "
            "diffusers maintainers published (calibration/published/diffusers-figures.json, with their measurement "
            "definitions). Nothing is fitted to them.", "",
            "| figure | source | measured GiB | estimated GiB | error |", "|---|---|---|---|---|"]
    for r in pub:
        out.append(f"| {r['id']} | {r['source']} | {r['measured_bytes'] / G:.2f} | {r['estimated_bytes'] / G:.2f} | "
                   f"{r['error'] * 100:+.1f}% |")
    flux = [r["error"] for r in pub if r["pipeline"] == "flux.1-dev"]
    out += ["", f"FLUX.1-dev figures (H100, max_memory_reserved): {len(flux)} cases, median abs error {_stats(flux)} "
            "(median | worst)."]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
