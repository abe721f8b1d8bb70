"""Issue 15: the committed H200 measurements of diffusers' memory modes
(calibration/raw/diffusion-modes-h200.jsonl, and diffusion-modes-h200-newbie.jsonl: the NewBie setups
the first call skipped) held to the issue's bars: per mode, the run's GPU peak
within 5 % median / 12 % worst and host RAM within 10 %. Bars a mode does not meet are strict xfails
that name the reason (docs/accuracy.md, "Pipeline memory modes": Known misses): they fail the day
the estimate starts to meet them, so the docs get updated."""

import contextlib
import importlib.util
import io
import os
import statistics

import pytest

from gpu_preflight.estimators.engines.diffusers import HOST_PROCESS_BYTES
from gpu_preflight.measurement.calibration_diffusion import (
    HOST_TRAINING_PIPELINE,
    HOST_TRAINING_RUNS,
    compare_mode_runs,
    default_mode_paths,
    fit_host_constants,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_MEDIAN, GPU_WORST, HOST_WORST = 0.05, 0.12, 0.10  # the issue's numbers

MODES = ["resident", "resident + drop TE", "resident + drop TE + tiling", "resident + eager", "resident + slicing",
         "resident + tiling", "resident + vae=float32", "model", "sequential", "group block", "group block stream",
         "group leaf stream", "fp8 layerwise", "torchao int8wo"]
GPU_MISSES = {"resident + eager": "Sonic's video UNet: the allocator keeps a second 6.6 GiB score segment that "
                                  "the estimator's allocator model (score blocks only) does not see (-22 %)"}
HOST_GENERATE_MISSES = {"resident + drop TE": "SDXL: glibc keeps the freed CPU copies of the UNet's small tensors "
                                              "in RSS after they moved to the GPU (-47 %)",
                        "torchao int8wo": "NewBie, encoders freed: the same glibc retention of the bfloat16 CPU "
                                          "copies freed when the weights moved to the GPU (-25 %)",
                        "group block stream": "NewBie: the estimate keeps every pageable copy that the pinned copies "
                                              "replace (SDXL, Sonic: kept); glibc returned 60 % of NewBie's (+15 %)"}


def _mark(mode, misses):
    if mode in misses:
        return pytest.param(mode, marks=pytest.mark.xfail(strict=True, reason=misses[mode]))
    return mode


@pytest.fixture(scope="module")
def res():
    return compare_mode_runs(default_mode_paths(ROOT))


def _runs(res, mode):
    return [r for r in res["runs"] if r["mode"] == mode]


def test_the_run_covers_the_issue_modes(res):
    """SDXL, FLUX.1, SD3.5, Lumina2 / NewBie and a video pipeline; offload, freed encoders, tiling,
    slicing, eager attention, fp8 layerwise casting, a float32 component; two resolutions or more."""
    assert {r["mode"] for r in res["runs"]} == set(MODES)
    assert {r["pipeline"] for r in res["runs"]} == {"sdxl-base-1.0", "flux.1-dev", "sd3.5-medium",
                                                    "newbie-image-exp0.1", "sonic"}
    assert len({r["size"] for r in res["runs"]}) >= 3 and len(res["runs"]) >= 50
    assert res["env"]["gpu"] == "NVIDIA H200" and res["env"]["diffusers"] == "0.42.1"


@pytest.mark.parametrize("mode", [_mark(m, GPU_MISSES) for m in MODES])
def test_gpu_peak_per_mode(res, mode):
    """No GPU constant was fitted on these runs: every case is held out."""
    errors = [abs(r["process_error"]) for r in _runs(res, mode)]
    assert errors and not any(r["gpu_training"] for r in _runs(res, mode))
    assert statistics.median(errors) <= GPU_MEDIAN and max(errors) <= GPU_WORST, (mode, errors)


@pytest.mark.parametrize("mode", MODES)
def test_host_process_peak_per_mode(res, mode):
    """Host RAM the machine must have for this mode (loading through host RAM, then generating), held out."""
    errors = [abs(r["host_peak_error"]) for r in _runs(res, mode)
              if r["host_peak_error"] is not None and not r["host_training"]]
    if mode == "torchao int8wo":  # the child loads in bfloat16 first; the estimate is from_pretrained's flow
        assert not errors and all(r["host_peak_error"] is None and r["torchao"] for r in _runs(res, mode))
        return
    if mode == "group leaf stream":  # its one run follows a streamed setup in its child: pinned blocks cached
        assert not errors and all(not r["host_comparable"] for r in _runs(res, mode))
        return
    assert errors and max(errors) <= HOST_WORST, (mode, errors)


@pytest.mark.parametrize("mode", [_mark(m, HOST_GENERATE_MISSES)
                                  for m in ("model", "sequential", "group block", "group block stream",
                                            "resident + drop TE", "resident + drop TE + tiling", "fp8 layerwise",
                                            "torchao int8wo")])
def test_host_while_generating_for_modes_that_hold_weights(res, mode):
    errors = [abs(r["host_generate_error"]) for r in _runs(res, mode)
              if r["host_generate_error"] is not None and not r["host_training"]]
    assert errors and max(errors) <= HOST_WORST, (mode, errors)


def test_loading_peak_is_every_weight_plus_the_process(res):
    held = [b for b in res["builds"] if not b["host_training"]]
    assert len(held) == 5 and max(abs(b["host_error"]) for b in held) <= HOST_WORST  # NewBie built in two calls


def test_host_constants_are_their_declared_fit():
    """HOST_PROCESS_BYTES is what its training cases give, and those are SDXL's only."""
    fit = fit_host_constants(default_mode_paths(ROOT))
    assert fit["load_cases"] == 1 and fit["generate_cases"] == len(HOST_TRAINING_RUNS) == 4
    assert abs(fit["load"] - HOST_PROCESS_BYTES["load"][0]) < 1 << 20
    assert abs(fit["generate"] - HOST_PROCESS_BYTES["generate"][0]) < 1 << 20
    assert {p for p, _, _ in HOST_TRAINING_RUNS} == {HOST_TRAINING_PIPELINE}


def test_skipped_and_failed_cases_are_reported(res):
    """The time caps skipped setups: the docs name every one, and the failed phases."""
    with open(os.path.join(ROOT, "docs", "accuracy.md"), encoding="utf-8") as fh:
        doc = fh.read().split("<!-- pipeline-modes:begin -->")[1].split("<!-- pipeline-modes:end -->")[0]
    assert len(res["skipped"]) == 13 and len(res["failed"]) == 2
    # the six NewBie setups the first call skipped were run by the second
    assert {s["setup"] for s in res["skipped"] if s["measured_later"]} == \
        {"fp8", "int8wo", "group_block", "group_block_stream", "sequential", "group_leaf_stream"}
    for s in res["skipped"]:
        head = f"- {s['pipeline']} (measured later):" if s["measured_later"] else f"- {s['pipeline']}:"
        line = next(x for x in doc.splitlines() if x.startswith(head))
        assert s["setup"] in line
    for f in res["failed"]:
        assert f"{f['pipeline']} {f['setup']} {f['phase']}" in doc


def _load_bench(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_docs_are_the_generated_tables():
    """docs/accuracy.md's pipeline-modes section and docs/newbie-image.md are the scripts' output."""
    section = _load_bench("modes_accuracy").section(ROOT)
    with open(os.path.join(ROOT, "docs", "accuracy.md"), encoding="utf-8") as fh:
        assert section in fh.read()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert _load_bench("newbie_answer").main() == 0
    with open(os.path.join(ROOT, "docs", "newbie-image.md"), encoding="utf-8") as fh:
        assert fh.read() == buf.getvalue()


def test_newbie_card_answers_come_from_measured_modes():
    """24 GB: as is; 16 GB: freed text encoders; 12 GB: fp8 layerwise casting with freed encoders (freed
    encoders alone leave 0.06 GiB); 8 GB: leaf-level group offload with streams (4.97 GiB, 0.360 s/step),
    sequential offload (3.28 GiB, 0.675 s/step) being the other measured mode that fits."""
    with open(os.path.join(ROOT, "docs", "newbie-image.md"), encoding="utf-8") as fh:
        text = fh.read()
    rows = {line.split(" ")[1] + " GB": line for line in text.splitlines()
            if line.startswith("| ") and " GB NVIDIA" in line}

    def answer(card):
        return rows[card].rstrip().split("|")[-2].strip()

    assert answer("24 GB").startswith("as is")
    assert answer("16 GB").startswith("encode first, free the text encoders")
    assert answer("12 GB").startswith("fp8 layerwise casting + free the text encoders")
    assert answer("8 GB").startswith("group offload, leaf level, with CUDA streams: "
                                     "`--offload group --group-type leaf_level --use-stream`; 4.97 GiB, 0.360 s/step")
    fits_8 = rows["8 GB"].split("|")[2]
    assert "sequential CPU offload (3.28 GiB" in fits_8 and "block level" not in fits_8
    assert "Jina CLIP v2 could not be built" in text and "added as its weights" in text
