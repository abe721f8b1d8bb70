"""The measure report's text (render/measure.py), from recorded child lines."""

from gpu_preflight.render.measure import render_measure, render_pipeline_measure

G = 1 << 30


def test_llm_measure_text():
    report = {"model": "qwen3-0.6b", "status": "child killed after 600 s", "records": [
        {"type": "env", "gpu": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "torch": "2.11.0", "transformers": "5.17"},
        {"type": "phase", "phase": "load", "process_bytes": 2 * G, "allocated_bytes": G},
        {"type": "phase", "phase": "prefill", "peak_process_bytes": 3 * G, "peak_allocated_bytes": 2 * G},
        {"type": "phase", "phase": "generate", "peak_process_bytes": 4 * G, "peak_allocated_bytes": 3 * G}],
        "estimate": {"peak_process_bytes": 4.2 * G, "peak_allocated_bytes": 3 * G,
                     "phases": {"prefill": {"peak_allocated_bytes": 2.5 * G}}}}
    lines = render_measure(report).splitlines()
    assert lines[0] == "qwen3-0.6b: measured on this GPU vs estimated"
    assert "driver 580.159.04" in lines[1]
    assert lines[3].split() == ["prefill", "process", "3.00", "GiB", "allocated", "2.00", "GiB", "(estimated", "2.50)"]
    assert lines[-2] == "  peak process: measured 4.00 GiB, estimated 4.20 GiB, error +5.0%"
    assert lines[-1].startswith("  child killed after 600 s")


def test_pipeline_measure_text():
    report = {"model": "sdxl-base-1.0", "status": "ok", "records": [{"type": "error", "error": "boom"}],
              "phases": [{"phase": "denoise", "measured_transient_bytes": G // 2, "estimated_transient_bytes": G // 4,
                          "measured_process_bytes": 9 * G, "oom": True}]}
    lines = render_pipeline_measure(report, {"height": 1024, "width": 768, "batch": 2}).splitlines()
    assert lines[0].startswith("sdxl-base-1.0 1024x768 x2: measured")
    assert lines[1].split() == ["denoise", "measured", "0.500", "GiB", "estimated", "0.250", "GiB", "process",
                                "9.00", "GiB", "OOM"]
    assert lines[2] == "  error: boom" and len(lines) == 3
