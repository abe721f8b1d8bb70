"""Diffusion measurements (calibration/raw/diffusion-*.jsonl) vs the pipeline estimator."""

from __future__ import annotations

import json
import os
from typing import Any

from gpu_preflight.compatibility.facts import DATA_DIR
from gpu_preflight.measurement.calibration import cal_dir, load_records

# Cases whose numbers set a constant in estimators/engines/diffusers.py; every other case is held out.
FITTED = {("flux.1-dev", "1024", "denoise"),  # also the RESERVE_FACTORs ("sd3.5-medium", "1024", "denoise"),
          ("lumina-image-2.0", "1024", "denoise"), ("sdxl-base-1.0", "1024", "denoise"),
          ("flux.1-dev", "1024", "vae_decode"), ("lumina-image-2.0", "1024", "encode:text_encoder"),
          ("sonic", "f25", "denoise"), ("sonic", "f25", "vae_decode")}


def compare(paths: list[str]) -> list[dict[str, Any]]:
    from gpu_preflight.estimators.engines.diffusers import ImageWorkload, estimate_pipeline
    from gpu_preflight.estimators.overheads import process_overhead

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
    """The all-on-GPU pipeline runs; the memory-mode runs (diffusion-modes-*.jsonl) are compared
    per mode by bench/modes_accuracy.py."""
    raw = os.path.join(cal_dir(root), "raw")
    return sorted(os.path.join(raw, f) for f in os.listdir(raw)
                  if f.startswith("diffusion-") and not f.startswith("diffusion-modes-") and f.endswith(".jsonl"))


def run_peaks(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(pipeline, workload) -> (measured, estimated) peak process bytes over the run's phases."""
    peaks: dict[tuple[str, str], tuple[int, int]] = {}
    for r in rows:
        k = (r["pipeline"], r["workload"])
        m, e = peaks.get(k, (0, 0))
        peaks[k] = (max(m, r["measured_process_bytes"]), max(e, r["estimated_process_bytes"]))
    return peaks


# ---------------------------------------------------------------------------------------------- issue 15

G = 1 << 30
SETUP_FIELDS = ("offload", "group_type", "use_stream", "record_stream", "layerwise_fp8")
TORCHAO_TO_QUANTIZE = {"int8wo": "int8wo", "fp8wo": "fp8"}


def _catalog(pid: str) -> dict:
    with open(os.path.join(DATA_DIR, "models", f"{pid}.json"), encoding="utf-8") as fh:
        return json.load(fh)


def mode_workload(rec: dict, entry: dict):
    """The ImageWorkload of a run record of measurement/diffusion_modes.py."""
    from gpu_preflight.estimators.engines.diffusers import ImageWorkload

    wl = rec["workload"]
    kw = {k: rec[k] for k in SETUP_FIELDS if k in rec and rec[k] is not None}
    if rec.get("torchao"):
        kw["quantize"] = TORCHAO_TO_QUANTIZE[rec["torchao"]]
    return ImageWorkload(height=wl["height"], width=wl["width"], batch=wl.get("batch", 1),
                         dtype=rec.get("dtype", "bfloat16"), frames=wl.get("frames"), decode_chunk=wl.get("decode_chunk"),
                         attn=rec.get("attn", "sdpa"), vae_tiling=bool(rec.get("vae_tiling")),
                         vae_slicing=bool(rec.get("vae_slicing")), drop_text_encoders=bool(rec.get("drop_text_encoders")),
                         component_dtype=dict(rec.get("component_dtype") or {}), **kw)


def mode_label(rec: dict) -> str:
    if rec.get("torchao"):
        return f"torchao {rec['torchao']}"
    if rec.get("layerwise_fp8"):
        return "fp8 layerwise"
    off = rec.get("offload", "none")
    if off == "group":
        return "group " + rec.get("group_type", "block_level").replace("_level", "") + \
            (" stream" if rec.get("use_stream") else "") + (" record" if rec.get("record_stream") else "")
    bits = [off if off != "none" else "resident"]
    for k, label in (("drop_text_encoders", "drop TE"), ("vae_tiling", "tiling"), ("vae_slicing", "slicing")):
        if rec.get(k):
            bits.append(label)
    if rec.get("attn") == "eager":
        bits.append("eager")
    if rec.get("component_dtype"):
        bits.append(",".join(f"{k}={v}" for k, v in rec["component_dtype"].items()))
    return " + ".join(bits)


# Host constants of estimators/engines/diffusers.py HOST_PROCESS_BYTES are fitted on these runs only
# (pipeline, setup, workload name); every other run is held out for host RAM. No GPU constant was
# fitted on the H200 mode runs: their GPU comparisons are all held out.
HOST_TRAINING_PIPELINE = "sdxl-base-1.0"
HOST_TRAINING_RUNS = {("sdxl-base-1.0", "model", "512x512b1"), ("sdxl-base-1.0", "model", "1024x1024b1"),
                      ("sdxl-base-1.0", "sequential", "512x512b1"), ("sdxl-base-1.0", "group_block", "512x512b1")}
STREAM_SETUPS = ("group_block_stream", "group_block_stream_record", "group_leaf_stream")


def measured_process_bytes(rec: dict) -> int:
    """NVML's sampled process peak, or torch's reserved peak + the process's non-torch bytes at the
    phase start when that is larger: the sampler polls every 2 ms, and under sequential offload
    (empty_cache after every module) a peak can be shorter than that."""
    b = rec.get("before") or {}
    other = max(0, int(b.get("process_bytes") or 0) - int(b.get("reserved_bytes") or 0))
    return max(int(rec.get("peak_process_bytes") or 0), int(rec.get("peak_reserved_bytes") or 0) + other)


def _child_ids(recs: list[dict]) -> list[tuple[str, int]]:
    """(file, n) per record: each "env" record of a file starts a new child process (one per pipeline
    run of bench/calibrate_diffusion_modes.py); host RAM and cached pinned blocks belong to one child."""
    out, counts = [], {}
    for r in recs:
        f = r.get("_file", "")
        if r.get("type") == "env" and r.get("gpu"):
            counts[f] = counts.get(f, -1) + 1
        out.append((f, counts.get(f, 0)))
    return out


def _mode_context(recs: list[dict]) -> dict:
    """What the runs of each child share. build_peak: the child's host RSS peak while building its
    components the first time (what a user's from_pretrained holds); a rebuild after a setup that
    changed the weights (fp8 casting, torchao) carries that setup's leftovers and is not a user's load."""
    ctx = {"gpu": "", "env": {}, "built": {}, "build_peak": {}, "skipped": [], "failed": [], "after_stream": set(),
           "leftover": {}, "setup_host_peak": {}}
    seen_stream: set = set()
    set_up: set = set()
    setup_starts: dict = {}
    for r, child in zip(recs, _child_ids(recs)):
        pid = r.get("pipeline")
        if r.get("type") == "env" and r.get("gpu"):
            ctx["gpu"], ctx["env"] = r["gpu"], r
        if r.get("type") == "phase" and str(r.get("phase", "")).startswith("setup:"):
            set_up.add((child, pid))
            if r.get("setup") in STREAM_SETUPS:
                # enable_group_offload(use_stream=True) pins a copy of every block's weights while the
                # modules still reference their pageable ones (diffusers 0.42.1 hooks/group_offloading.py
                # ModuleGroup._init_cpu_param_dict; the pageable copy is dropped at the first onload):
                # the mode's host peak is this setup. Other setups move or cast in place.
                ctx["setup_host_peak"][(child, pid, r.get("setup"))] = int(r.get("peak_host_rss_bytes") or 0)
            setup_starts.setdefault((child, pid), []).append((r.get("setup"), int((r.get("before") or {})
                                                                                  .get("allocated_bytes") or 0)))
        if r.get("type") == "phase" and str(r.get("phase", "")).startswith("build:") and not r.get("error"):
            ctx["built"].setdefault(pid, set()).add(r["phase"].split(":", 1)[1])
            if (child, pid) not in set_up:
                key = (child, pid)
                ctx["build_peak"][key] = max(ctx["build_peak"].get(key, 0), int(r.get("peak_host_rss_bytes") or 0))
        if r.get("type") == "skipped":
            run = r.get("run") or {}
            ctx["skipped"].append({"pipeline": pid, "setup": r.get("setup"), "reason": r.get("reason"),
                                   "run": run.get("size") if run else None})
        if r.get("type") == "phase" and "setup" in r and (r.get("error") or r.get("oom")):
            ctx["failed"].append({"pipeline": pid, "setup": r["setup"], "phase": r["phase"],
                                  "error": str(r.get("error"))[:160]})
        if r.get("type") == "placement" and (child, pid) in seen_stream:
            # the CUDA caching host allocator keeps freed pinned blocks cached (torch
            # aten/src/ATen/cuda/CachingHostAllocator): later setups of this child carry them in RSS
            ctx["after_stream"].add((child, pid, r.get("setup")))
        if r.get("type") == "placement" and r.get("setup") in STREAM_SETUPS:
            seen_stream.add((child, pid))
    for key, starts in setup_starts.items():
        # GPU memory a setup finds allocated beyond what every later setup of its child starts with
        # (the cuBLAS workspace): tensors an earlier setup left behind, not the mode's
        clean = min((a for _s, a in starts[1:]), default=0)
        for setup, allocated in starts[1:]:
            if allocated > clean:
                ctx["leftover"][(key[0], key[1], setup)] = allocated - clean
    return ctx


def annotate_mode_records(recs: list[dict]) -> dict:
    """Mark each run phase of measurement/diffusion_modes.py records with what its child's history means for it:
    _leftover_bytes (GPU memory an earlier setup left allocated: subtract it), _host_comparable (False after
    a streamed setup in the same child: cached pinned blocks in RSS) and _setup_host_peak_bytes (a streamed
    setup's own host peak, see _mode_context). Returns the context."""
    ctx = _mode_context(recs)
    for r, child in zip(recs, _child_ids(recs)):
        if r.get("type") == "phase" and "setup" in r:
            key = (child, r.get("pipeline"), r["setup"])
            r["_leftover_bytes"] = ctx["leftover"].get(key, 0)
            r["_host_comparable"] = key not in ctx["after_stream"]
            r["_setup_host_peak_bytes"] = ctx["setup_host_peak"].get(key, 0)
    return ctx


def _entry_as_built(pid: str, built: set) -> dict:
    entry = dict(_catalog(pid))
    entry["components"] = {k: v for k, v in entry["components"].items()
                           if k in built or not (v or {}).get("class") or k == "scheduler"}
    return entry


def _run_key(r: dict, child: tuple = ("", 0)) -> tuple:
    return (r["pipeline"], r["setup"], child, r["workload"]["name"], r.get("attn", "sdpa"), bool(r.get("vae_tiling")),
            bool(r.get("vae_slicing")), bool(r.get("drop_text_encoders")))


def compare_modes(paths: list[str]) -> list[dict[str, Any]]:
    """One row per measured run phase: GPU process peak and host RSS, measured vs estimated.

    Components the child could not build (custom code) are left out of the estimate too. The host
    estimate per phase is the process constant after CUDA work + the weights the mode holds."""
    from gpu_preflight.estimators.engines.diffusers import HOST_PROCESS_BYTES, estimate_pipeline
    from gpu_preflight.estimators.overheads import process_overhead

    overhead, _ = process_overhead((9, 0), "2.11")
    recs = load_records(paths)
    ctx = _mode_context(recs)
    rows = []
    for r, child in zip(recs, _child_ids(recs)):
        if r.get("type") != "phase" or "setup" not in r or "workload" not in r or r.get("error") or r.get("oom"):
            continue
        pid = r["pipeline"]
        entry = _entry_as_built(pid, ctx["built"].get(pid, set()))
        try:
            est = estimate_pipeline(entry, mode_workload(r, entry))
        except Exception as exc:  # noqa: BLE001 - a mode the estimator refuses is reported, not hidden
            rows.append({"pipeline": pid, "mode": mode_label(r), "phase": r["phase"], "error": str(exc)})
            continue
        phase = next((p for p in est.phases if p.name == r["phase"]), None)
        if phase is None:
            continue
        left = ctx["leftover"].get((child, pid, r["setup"]), 0)
        m_gpu, e_gpu = measured_process_bytes(r) - left, phase.peak_reserved_bytes + overhead
        m_host = r.get("peak_host_rss_bytes") or 0
        e_host = HOST_PROCESS_BYTES["generate"][0] + phase.host_bytes
        rows.append({"pipeline": pid, "gpu": ctx["gpu"], "setup": r["setup"], "mode": mode_label(r),
                     "phase": r["phase"], "run_key": _run_key(r, child), "child": child,
                     "size": f"{r['workload']['height']}x{r['workload']['width']}", "batch": r["workload"].get("batch", 1),
                     "measured_process_bytes": m_gpu, "nvml_process_bytes": r.get("peak_process_bytes"),
                     "leftover_bytes": left,
                     "estimated_process_bytes": e_gpu,
                     "process_error": (e_gpu - m_gpu) / m_gpu if m_gpu else None,
                     "measured_host_bytes": m_host, "estimated_host_bytes": e_host, "host_weights_bytes": phase.host_bytes,
                     "host_error": (e_host - m_host) / m_host if m_host else None,
                     "estimated_host_load_bytes": est.host_process_load_bytes,
                     "seconds_per_step": r.get("seconds_per_step"), "time_s": r.get("time_s"),
                     "held_out": True})
    return rows


def compare_mode_runs(paths: list[str]) -> dict[str, Any]:
    """Per measured run (one setup, size and options: its phases together), what a user sees:

    - GPU: the largest process peak over the run's phases vs the largest estimated one (all held out);
    - host, process peak: the child's RSS peak while building (every weight in host RAM) and during
      the run, vs max(load estimate, generate estimate). Runs of a child after a streamed group
      offload setup are left out (its pinned blocks stay cached in the process);
    - host, generating: the run's RSS peak vs the process constant + the weights the mode holds, for
      the modes that hold weights in host RAM (model / sequential / group offload, freed encoders).
    Host training runs (HOST_TRAINING_RUNS, the SDXL build) are flagged; the rest is held out."""
    recs = load_records(paths)
    ctx = _mode_context(recs)
    runs: dict[tuple, dict] = {}
    for row in compare_modes(paths):
        if row.get("error"):
            continue
        k = row["run_key"]
        cur = runs.setdefault(k, {"pipeline": row["pipeline"], "setup": row["setup"], "mode": row["mode"],
                                  "size": row["size"], "batch": row["batch"], "phases": [],
                                  "measured_process_bytes": 0, "estimated_process_bytes": 0,
                                  "measured_run_host_bytes": 0, "host_weights_bytes": 0,
                                  "estimated_host_load_bytes": row["estimated_host_load_bytes"],
                                  "seconds_per_step": None, "child": row["child"],
                                  "leftover_bytes": row["leftover_bytes"], "torchao": row["mode"].startswith("torchao")})
        cur["phases"].append(row["phase"])
        if row["measured_process_bytes"] > cur["measured_process_bytes"]:
            cur["measured_process_bytes"], cur["measured_peak_phase"] = row["measured_process_bytes"], row["phase"]
        if row["estimated_process_bytes"] > cur["estimated_process_bytes"]:
            cur["estimated_process_bytes"], cur["estimated_peak_phase"] = row["estimated_process_bytes"], row["phase"]
        cur["measured_run_host_bytes"] = max(cur["measured_run_host_bytes"], row["measured_host_bytes"])
        cur["host_weights_bytes"] = max(cur["host_weights_bytes"], row["host_weights_bytes"])
        if row["phase"] == "denoise" and row.get("seconds_per_step") is not None:
            cur["seconds_per_step"] = row["seconds_per_step"]
            cur["denoise_time_s"] = row.get("time_s")
    from gpu_preflight.estimators.engines.diffusers import HOST_PROCESS_BYTES

    out = []
    for k, r in runs.items():
        pid, setup, child, name = k[0], k[1], k[2], k[3]
        m, e = r["measured_process_bytes"], r["estimated_process_bytes"]
        r["process_error"] = (e - m) / m if m else None
        gen = HOST_PROCESS_BYTES["generate"][0] + r["host_weights_bytes"]
        r["estimated_host_generate_bytes"] = gen
        r["estimated_host_peak_bytes"] = max(r["estimated_host_load_bytes"], gen)
        # what the machine's RAM must hold: loading, placing the mode (streamed group offload) and the run
        r["measured_host_peak_bytes"] = max(ctx["build_peak"].get((child, pid), 0),
                                            ctx["setup_host_peak"].get((child, pid, setup), 0),
                                            r["measured_run_host_bytes"])
        r["host_comparable"] = (child, pid, setup) not in ctx["after_stream"]
        # the estimate's loading peak for torchao is from_pretrained(quantization_config=TorchAoConfig(...)),
        # which quantizes tensor by tensor; the child built every component in the dtype first (as
        # quantize_() after loading does): its loading peak is another flow's
        r["host_peak_comparable"] = r["host_comparable"] and not r["torchao"]
        r["host_peak_error"] = ((r["estimated_host_peak_bytes"] - r["measured_host_peak_bytes"])
                                / r["measured_host_peak_bytes"]) if r["host_peak_comparable"] else None
        holds = r["host_weights_bytes"] > 0
        r["host_generate_error"] = ((gen - r["measured_run_host_bytes"]) / r["measured_run_host_bytes"]) \
            if holds and r["host_comparable"] else None
        r["host_training"] = (pid, setup, name) in HOST_TRAINING_RUNS
        r["gpu_training"] = False
        out.append(r)
    builds = []
    for (_child, pid), peak in ctx["build_peak"].items():
        from gpu_preflight.estimators.engines.diffusers import ImageWorkload, estimate_pipeline

        est = estimate_pipeline(_entry_as_built(pid, ctx["built"][pid]), ImageWorkload())
        builds.append({"pipeline": pid, "measured_host_bytes": peak, "estimated_host_bytes": est.host_process_load_bytes,
                       "weights_bytes": est.host_load_bytes, "host_training": pid == HOST_TRAINING_PIPELINE,
                       "host_error": (est.host_process_load_bytes - peak) / peak})
    ran = {(r["pipeline"], r["setup"]) for r in out}
    for sk in ctx["skipped"]:  # a later call (another records file) may have run what a time cap skipped
        sk["measured_later"] = (sk["pipeline"], sk["setup"]) in ran
    return {"gpu": ctx["gpu"], "env": ctx["env"], "runs": out, "builds": builds, "skipped": ctx["skipped"],
            "failed": ctx["failed"]}


def fit_host_constants(paths: list[str]) -> dict[str, int]:
    """HOST_PROCESS_BYTES from their training runs only (the test checks the code's values against this)."""
    import statistics

    res = compare_mode_runs(paths)
    load = [b["measured_host_bytes"] - b["weights_bytes"] for b in res["builds"] if b["host_training"]]
    gen = [r["measured_run_host_bytes"] - r["host_weights_bytes"] for r in res["runs"] if r["host_training"]]
    return {"load": int(statistics.median(load)), "generate": int(statistics.median(gen)),
            "load_cases": len(load), "generate_cases": len(gen)}


def default_mode_paths(root: str) -> list[str]:
    raw = os.path.join(cal_dir(root), "raw")
    return sorted(os.path.join(raw, f) for f in os.listdir(raw)
                  if f.startswith("diffusion-modes-") and f.endswith(".jsonl"))


def compare_published(root: str) -> list[dict[str, Any]]:
    """The estimator against the figures in calibration/published/diffusers-figures.json (all held out).

    'after_load' is compared with the weights (or, for quantization loaded through device_map, the
    load reserve); 'peak' with the estimated reserved peak (max_memory_reserved has no CUDA context)."""
    from gpu_preflight.estimators.engines.diffusers import ImageWorkload, estimate_pipeline

    with open(os.path.join(cal_dir(root), "published", "diffusers-figures.json"), encoding="utf-8") as fh:
        data = json.load(fh)
    rows = []
    for f in data["figures"]:
        entry = _catalog(f["pipeline"])
        s = dict(f.get("settings") or {})
        s.setdefault("dtype", (entry.get("defaults") or {}).get("torch_dtype", "bfloat16"))
        est = estimate_pipeline(entry, ImageWorkload(height=1024, width=1024, **s))
        if f["what"] == "after_load":
            on_gpu = est.load_peak_bytes if (s.get("quantize") and f.get("loaded") != "cpu_then_to_cuda") else 0
            estimated = max(on_gpu, sum(est.weights.values()))
        else:
            estimated = est.peak_reserved_bytes
        measured = int(float(f.get("gib", f.get("gb"))) * G)
        rows.append({"id": f["id"], "source": data["sources"][f["source"]]["url"], "pipeline": f["pipeline"],
                     "what": f["what"], "settings": s, "measured_bytes": measured, "estimated_bytes": estimated,
                     "error": (estimated - measured) / measured})
    return rows
