"""The estimate's text agrees with itself and with its JSON: the pipeline peak, phase table and
breakdown add up and name the same phase; per-GPU numbers say "per GPU"; the largest context
says whether the model or memory limits it; a fit with under 2 % headroom is a warning; every
suggested fix names the flag that applies it, and applying that flag gives what it promised."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from gpu_preflight.cli import main

GIB = 1 << 30


def estimate(capsys, *argv, as_json=False):
    code = main(["estimate", *argv, *(["--json"] if as_json else [])])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if as_json else out), err


def gib_values(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"(\d+\.\d\d) GiB", line)]


PIPELINES = [
    ["flux.1-dev", "--gpu", "rtx-4090"],
    ["flux.1-dev", "--gpu", "h100", "--offload", "model"],
    ["sdxl-base-1.0", "--gpu", "rtx-3060", "--batch", "4", "--height", "1536", "--width", "1536"],
    ["sonic", "--gpu", "rtx-4090"],
    ["newbie-image-exp0.1", "--gpu", "rtx-4060", "--drop-text-encoders"],
]


@pytest.mark.parametrize("argv", PIPELINES, ids=[" ".join(a) for a in PIPELINES])
def test_pipeline_peak_phases_and_breakdown_add_up(capsys, argv):
    _, r, _ = estimate(capsys, *argv, as_json=True)
    phases = r["phases"]
    # JSON: the peak phase is the largest process row, and its parts add up to the peak
    assert max(phases, key=lambda n: phases[n]["peak_process_bytes"]) == r["peak_phase"]
    assert phases[r["peak_phase"]]["peak_process_bytes"] == r["peak_process_bytes"]
    parts = r["peak_breakdown"]
    assert parts["phase"] == r["peak_phase"]
    assert parts["resident_bytes"] + parts["transient_bytes"] + parts["allocator_reserve_bytes"] + \
        parts["cuda_context_and_libraries"] == parts["total_bytes"] == r["peak_process_bytes"]
    for p in phases.values():
        assert p["allocator_reserve_bytes"] >= 0
        assert p["resident_bytes"] + p["transient_bytes"] + p["allocator_reserve_bytes"] == p["peak_reserved_bytes"]

    _, text, _ = estimate(capsys, *argv)
    lines = text.splitlines()
    peak_line = next(ln for ln in lines if ln.startswith("Peak GPU memory"))
    (peak,) = gib_values(peak_line)
    assert f"in phase {r['peak_phase']}:" in peak_line
    # the four lines under the Peak line are its parts, the allocator reserve on its own line
    i = lines.index(peak_line)
    part_lines = lines[i + 1:i + 5]
    assert "allocator reserve" in part_lines[2] and "CUDA context" in part_lines[3]
    assert abs(sum(gib_values(ln)[0] for ln in part_lines) - peak) <= 0.03
    # the phase table: each row adds up, the largest row is the Peak line's value and is marked
    head = lines.index("Phases, GiB (resident + transient + allocator reserve + context = process):")
    rows = {}
    for ln in lines[head + 1:head + 1 + len(phases)]:
        name, nums = ln.split()[0], [float(x) for x in re.findall(r"\d+\.\d\d", ln)]
        assert abs(sum(nums[:4]) - nums[4]) <= 0.03, ln
        rows[name] = nums[4]
    assert set(rows) == set(phases)
    assert max(rows.values()) == peak and rows[r["peak_phase"]] == peak
    marked = [ln.split()[0] for ln in lines if ln.endswith("<- peak")]
    assert marked == [r["peak_phase"]]
    assert "Targets:" in lines and "Assumptions:" in lines


def _apply(argv: list[str], flag: str) -> list[str]:
    words = shlex.split(flag)
    if words[0] == "--gpu":  # a different target replaces the first one
        i = argv.index("--gpu")
        return argv[:i] + words + argv[i + 2:]
    out = list(argv)
    for j, w in enumerate(words):  # a flag given again replaces its value
        if w.startswith("--") and w in out and j + 1 < len(words) and not words[j + 1].startswith("--"):
            k = out.index(w)
            del out[k:k + 2]
    return out + words


@pytest.mark.parametrize("argv", [
    ["flux.1-dev", "--gpu", "rtx-4090"],
    ["flux.1-dev", "--gpu", "rtx-3060"],
    ["sdxl-base-1.0", "--gpu", "rtx-3060", "--height", "2048", "--width", "2048"],
    ["sdxl-base-1.0", "--gpu", "rtx-4060", "--batch", "4"],
    ["sd3.5-medium", "--gpu", "rtx-3060"],
    ["qwen2.5-14b-instruct", "--gpu", "rtx-4090"],
    ["qwen2.5-1.5b-instruct", "--gpu", "rtx-3060", "--batch", "16", "--input-len", "16000"],
    ["qwen2.5-7b-instruct", "--gpu", "rtx-3060", "--dtype", "float32", "--attn", "eager", "--input-len", "4000"],
], ids=lambda a: " ".join(a))
def test_every_suggestion_names_a_flag_that_does_what_it_says(capsys, argv):
    code, r, _ = estimate(capsys, *argv, as_json=True)
    assert code == 2 and r["suggestions"]
    _, text, _ = estimate(capsys, *argv)
    for s in r["suggestions"]:
        assert s["flag"] and f"[{s['flag']}]" in text.replace("\n    ", " ")
        code2, r2, err = estimate(capsys, *_apply(argv, s["flag"]), as_json=True)
        assert err == "", (s["flag"], err)
        assert r2["peak_process_bytes"] == s["peak_process_bytes"], s
        assert r2["fits"][0]["fits"] == s["fits"] and code2 == (0 if s["fits"] else 2), s


def test_multi_gpu_numbers_say_per_gpu(capsys):
    _, text, _ = estimate(capsys, "llama-3.1-70b-instruct", "--gpu", "h100:2", "--gpu", "rtx-4090")
    lines = text.splitlines()
    assert re.search(r"Peak GPU memory \(nvidia-smi\): [\d.]+ GiB per GPU ", lines[1])
    assert lines[2].startswith("Per GPU, the fullest of 2")
    h100 = next(ln for ln in lines if "2x NVIDIA H100" in ln and "headroom" in ln)
    assert "per GPU, catalog" in h100 and h100.endswith("headroom per GPU")
    # a target with its own peak says what it needs, not the headline's
    rtx = next(ln for ln in lines if "RTX 4090" in ln)
    assert "needs" in rtx and "short by" in rtx
    _, text, _ = estimate(capsys, "llama-3.1-70b-instruct", "--gpu", "h100")
    two = next(ln for ln in text.replace("\n    ", " ").splitlines() if "--gpu h100-sxm-80gb:2" in ln)
    assert "GiB per GPU" in two


@pytest.mark.parametrize("argv,limited_by,words", [
    (["qwen2.5-0.5b-instruct", "--gpu", "h100"], "model", "the model's limit, max_position_embeddings 32,768"),
    (["llama-3.1-70b-instruct", "--gpu", "h100:2"], "memory", "(limited by memory)"),
    # vLLM: the KV cache holds more than one request may use (max_context_tokens is not capped there)
    (["qwen2.5-7b-instruct", "--gpu", "h100", "--engine", "vllm"], "model", None),
])
def test_largest_context_says_what_limits_it(capsys, argv, limited_by, words):
    _, r, _ = estimate(capsys, *argv, as_json=True)
    assert r["max_context_limited_by"] == limited_by
    if limited_by == "model":
        assert r["max_context_tokens"] >= r["architecture"]["max_position_embeddings"]
    else:
        assert r["max_context_tokens"] < r["architecture"]["max_position_embeddings"]
    if words:  # the vLLM text is its own (render_vllm)
        _, text, _ = estimate(capsys, *argv)
        assert words in " ".join(text.split())


def test_no_context_limit_without_a_fit(capsys):
    _, r, _ = estimate(capsys, "llama-3.1-70b-instruct", "--gpu", "rtx-4090", as_json=True)
    assert r["max_context_tokens"] is None and r["max_context_limited_by"] is None


def test_a_fit_with_under_2_percent_headroom_is_a_warning(capsys):
    argv = ["flux.1-dev", "--gpu", "rtx-4090", "--offload", "model", "--gpu", "h100"]
    code, r, _ = estimate(capsys, *argv, as_json=True)
    tight, roomy = r["fits"]
    assert tight["fits"] and 0 <= tight["headroom_bytes"] < 0.02 * tight["memory_bytes"] and tight["tight"] is True
    assert roomy["fits"] and roomy["tight"] is False
    assert code == 0  # it fits: the exit code stays 0, the text warns
    _, text, _ = estimate(capsys, *argv)
    line = " ".join(next(ln for ln in text.replace("\n    ", " ").splitlines() if "RTX 4090" in ln).split())
    assert line.startswith("! ") and "tight" in line and "under 2 %" in line
    assert next(ln for ln in text.splitlines() if "H100" in ln).lstrip().startswith("✓")


def test_a_non_fitting_row_is_never_tight(capsys):
    _, r, _ = estimate(capsys, "flux.1-dev", "--gpu", "rtx-4090", as_json=True)
    assert r["fits"][0]["fits"] is False and r["fits"][0]["tight"] is False
