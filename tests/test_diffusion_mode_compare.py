"""The mode comparison's bookkeeping (measurement/calibration_diffusion.py) on small synthetic records, and
the estimator's loading peak under layerwise casting."""

import json
import os

from gpu_preflight.estimators.engines.diffusers import ImageWorkload, estimate_pipeline, mode_evidence
from gpu_preflight.measurement.calibration_diffusion import _catalog, annotate_mode_records

G = 1 << 30
WS = 34603008  # what a clean setup finds allocated: the cuBLAS workspace (+1 MiB), as in the H200 records


def _setup(name, allocated, host=10 * G, peak_host=None, pid="p"):
    return {"type": "phase", "pipeline": pid, "setup": name, "phase": f"setup:{name}",
            "before": {"allocated_bytes": allocated, "host_rss_bytes": host},
            "peak_host_rss_bytes": peak_host or host}


def _run(name, pid="p"):
    return {"type": "phase", "pipeline": pid, "setup": name, "phase": "denoise", "workload": {"name": "x"}}


def _records(tmp_path, children):
    lines = []
    for recs in children:
        lines.append({"type": "env", "gpu": "G"})
        lines.extend(recs)
    path = tmp_path / "diffusion-modes-x.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    from gpu_preflight.measurement.calibration import load_records

    return load_records([str(path)])


def test_a_setup_that_finds_an_earlier_setups_tensors_gets_them_subtracted(tmp_path):
    recs = _records(tmp_path, [[_setup("a", 0), _run("a"), _setup("b", WS), _run("b"),
                                _setup("c", WS + 3 * G), _run("c"), _setup("d", WS), _run("d")]])
    annotate_mode_records(recs)
    left = {r["setup"]: r["_leftover_bytes"] for r in recs if r.get("phase") == "denoise"}
    assert left == {"a": 0, "b": 0, "c": 3 * G, "d": 0}


def test_host_history_is_per_child_and_streamed_setups_taint_what_follows(tmp_path):
    first = [_setup("group_block_stream", 0, peak_host=20 * G), _run("group_block_stream"),
             _setup("group_leaf_stream", WS, peak_host=25 * G), _run("group_leaf_stream"),
             _setup("sequential", WS), _run("sequential")]
    second = [_setup("sequential", 0), _run("sequential")]  # a new child: clean again
    recs = _records(tmp_path, [first, second])
    placed = []  # placements mark where a setup's history starts
    for r in recs:
        placed.append(r)
        if r.get("phase", "").startswith("setup:"):
            placed.append({"type": "placement", "pipeline": "p", "setup": r["setup"], "_file": r["_file"]})
    ctx = annotate_mode_records(placed)
    runs = [(r["setup"], r["_host_comparable"], r["_setup_host_peak_bytes"]) for r in placed
            if r.get("phase") == "denoise"]
    assert runs == [("group_block_stream", True, 20 * G), ("group_leaf_stream", False, 25 * G),
                    ("sequential", False, 0), ("sequential", True, 0)]
    assert len(ctx["after_stream"]) == 2


def test_layerwise_casting_loads_the_16_bit_weights_first():
    """enable_layerwise_casting runs on a loaded model (diffusers 0.42.1 hooks/layerwise_casting.py):
    host RAM while loading holds the bfloat16 DiT; on the GPU it is stored in fp8."""
    entry = _catalog("newbie-image-exp0.1")
    entry = {**entry, "components": {k: v for k, v in entry["components"].items() if k != "clip_model"}}
    plain = estimate_pipeline(entry, ImageWorkload())
    fp8 = estimate_pipeline(entry, ImageWorkload(layerwise_fp8=True))
    assert fp8.host_load_bytes == plain.host_load_bytes
    assert fp8.weights["transformer"] < 0.6 * plain.weights["transformer"]


def test_mode_evidence_names_what_was_not_measured():
    assert mode_evidence({"quantize": "int8wo"}).startswith("a measured mode")
    assert "float8" in mode_evidence({"quantize": "fp8"})
    assert mode_evidence({"offload": "group", "group_type": "leaf_level", "use_stream": True}).startswith("a measured")
    assert "without streams" in mode_evidence({"offload": "group", "group_type": "leaf_level"})
    assert "record_stream" in mode_evidence({"offload": "group", "use_stream": True, "record_stream": True})


def test_the_newbie_records_sit_with_the_other_mode_runs():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert os.path.exists(os.path.join(root, "calibration", "raw", "diffusion-modes-h200-newbie.jsonl"))
