"""Diffusion measurements (calibration/raw/diffusion-*.jsonl) vs the pipeline estimator."""

from __future__ import annotations

import json
import os
from typing import Any

from gpu_preflight.compat.facts import DATA_DIR
from gpu_preflight.measure.calibration import cal_dir, load_records

# Cases whose numbers set a constant in estimate/engines/diffusers.py; every other case is held out.
FITTED = {("flux.1-dev", "1024", "denoise"),  # also the RESERVE_FACTORs ("sd3.5-medium", "1024", "denoise"),
          ("lumina-image-2.0", "1024", "denoise"), ("sdxl-base-1.0", "1024", "denoise"),
          ("flux.1-dev", "1024", "vae_decode"), ("lumina-image-2.0", "1024", "encode:text_encoder"),
          ("sonic", "f25", "denoise"), ("sonic", "f25", "vae_decode")}


def compare(paths: list[str]) -> list[dict[str, Any]]:
    from gpu_preflight.estimate.engines.diffusers import ImageWorkload, estimate_pipeline
    from gpu_preflight.estimate.overheads import process_overhead

    overhead, _ = process_overhead((9, 0), "2.11")
    rows = []
    entries: dict[str, dict] = {}
    for rec in load_records(paths):
        if rec.get("type") != "phase" or "workload" not in rec or rec.get("oom") or rec.get("error"):
            continue
        pid = rec.get("pipeline") or rec["model"]
        if pid not in entries:
            with open(os.path.join(DATA_DIR, "models", f"{pid}.json"), encoding="utf-8") as fh:
                entries[pid] = json.load(fh)
        entry = dict(entries[pid])
        # components the GPU machine could not build (custom code): compare like with like
        unbuilt = {"newbie-image-exp0.1": {"clip_model"},
                   "sonic": {"audio2token", "audio2bucket", "face_detector", "frame_interpolation"}}.get(pid, set())
        entry["components"] = {k: v for k, v in entry["components"].items() if k not in unbuilt}
        wl = rec["workload"]
        est = estimate_pipeline(entry, ImageWorkload(height=wl["height"], width=wl["width"], batch=wl["batch"],
                                                     dtype=rec.get("dtype", "bfloat16"), frames=wl.get("frames"),
                                                     decode_chunk=wl.get("decode_chunk")))
        phase = next((p for p in est.phases if p.name == rec["phase"]), None)
        if phase is None:
            continue
        meas_t = rec["peak_allocated_bytes"] - rec["before"]["allocated_bytes"]
        # the very first matmul of a run allocates the 32 MiB cuBLAS workspace inside that phase
        first = wl["name"] == "512" and rec["phase"] == "encode:text_encoder"
        if first:
            meas_t -= 32 * 1024 * 1024
        meas_proc = rec["peak_process_bytes"]
        est_proc = phase.peak_reserved_bytes + overhead
        rows.append({
            "pipeline": pid, "workload": wl["name"], "phase": rec["phase"], "height": wl["height"], "batch": wl["batch"],
            "measured_transient_bytes": meas_t, "estimated_transient_bytes": phase.transient_bytes,
            "transient_error": (phase.transient_bytes - meas_t) / meas_t if meas_t > 0 else 0.0,
            "measured_process_bytes": meas_proc, "estimated_process_bytes": est_proc,
            "process_error": (est_proc - meas_proc) / meas_proc,
            "held_out": (pid, wl["name"], rec["phase"]) not in FITTED,
        })
    return rows


def default_paths(root: str) -> list[str]:
    raw = os.path.join(cal_dir(root), "raw")
    return sorted(os.path.join(raw, f) for f in os.listdir(raw) if f.startswith("diffusion-") and f.endswith(".jsonl"))


def run_peaks(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(pipeline, workload) -> (measured, estimated) peak process bytes over the run's phases."""
    peaks: dict[tuple[str, str], tuple[int, int]] = {}
    for r in rows:
        k = (r["pipeline"], r["workload"])
        m, e = peaks.get(k, (0, 0))
        peaks[k] = (max(m, r["measured_process_bytes"]), max(e, r["estimated_process_bytes"]))
    return peaks
