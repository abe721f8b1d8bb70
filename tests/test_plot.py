"""`preflight estimate --plot`: the curve (estimators/sweep.py) against the estimator at its own points,
the SVG/HTML structure, the measured overlay, the flags. No browser needed."""

import builtins
import json
import os
import xml.etree.ElementTree as ET

import pytest

from gpu_preflight import api
from gpu_preflight.cli import main
from gpu_preflight.errors import DependencyMissing, UsageError
from gpu_preflight.estimators.sweep import parse_spec, spaced, QUANTITIES, stack_of
from gpu_preflight.measurement.calibration_points import find_root
from gpu_preflight.render.plot import json_for_script, render_html, render_svg, write_plot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def llm_curve():
    """0.5B at batch 4: stops fitting an 8 GB and a 4 GB card inside the default context range."""
    return api.curve("qwen2.5-0.5b-instruct", gpus=["rtx-3050", "gtx-1650"], batch=4).to_json()


@pytest.fixture(scope="module")
def vllm_curve():
    return api.curve("qwen2.5-7b-instruct", gpus=["rtx-4090", "l4"], engine="vllm", batch=16).to_json()


@pytest.fixture(scope="module")
def image_curve():
    return api.curve("sdxl-base-1.0", gpus=["rtx-3060-12gb", "rtx-4060"]).to_json()


# ---------------------------------------------------------------- the crossings are the estimator's

def _fits(model, x_opts, gpu, **kw):
    return api.estimate(model, gpus=gpu, **kw, **x_opts).fits


def test_llm_crossing_matches_estimates_at_those_points(llm_curve):
    assert llm_curve["quantity"]["name"] == "context"
    out_len = llm_curve["workload"]["output_len"]
    stops = [t for t in llm_curve["targets"] if t["status"] == "stops"]
    assert len(stops) == 2
    for t in stops:
        assert 0 < t["first_fail"] - t["last_fit"] <= max(1, t["last_fit"] // 256)  # bisected to 0.4 %
        assert _fits("qwen2.5-0.5b-instruct", {"input_len": t["last_fit"] - out_len}, t["gpu_id"], batch=4) is True
        assert _fits("qwen2.5-0.5b-instruct", {"input_len": t["first_fail"] - out_len}, t["gpu_id"], batch=4) is False


def test_llm_points_are_the_full_estimate(llm_curve):
    """A point (point_only: no searches) has the peak and verdicts of a full `preflight estimate`."""
    out_len = llm_curve["workload"]["output_len"]
    for p in llm_curve["points"][::9]:
        est = api.estimate("qwen2.5-0.5b-instruct", gpus=["rtx-3050", "gtx-1650"], batch=4,
                           input_len=p["x"] - out_len)
        assert p["peak_process_bytes"] == est.peak_process_bytes
        assert p["fits"] == [t.fits for t in est.targets]
        assert p["stack"] == stack_of(est.to_json())
        assert p["total_bytes"] == est.peak_process_bytes  # transformers' breakdown adds up to its peak


def test_vllm_crossing_sets_max_model_len(vllm_curve):
    assert vllm_curve["quantity"]["sets"] == ["--input-len (context - output length)", "--max-model-len"]
    assert vllm_curve["line"] == "vllm_budget"
    out_len = vllm_curve["workload"]["output_len"]
    for t in vllm_curve["targets"]:
        assert t["status"] == "stops"
        for x, want in ((t["last_fit"], True), (t["first_fail"], False)):
            est = api.estimate("qwen2.5-7b-instruct", engine="vllm", gpus=t["gpu_id"], batch=16,
                               input_len=x - out_len, max_model_len=x)
            assert est.fits is want, (t["gpu"], x)


def test_image_side_crossing(image_curve):
    assert image_curve["quantity"]["name"] == "side" and image_curve["quantity"]["scale"] == "linear"
    for t in image_curve["targets"]:
        assert t["status"] == "stops" and t["first_fail"] - t["last_fit"] <= 16
        assert _fits("sdxl-base-1.0", {"height": t["last_fit"], "width": t["last_fit"]}, t["gpu_id"]) is True
        assert _fits("sdxl-base-1.0", {"height": t["first_fail"], "width": t["first_fail"]}, t["gpu_id"]) is False


def test_pipeline_stack_adds_up_to_the_peak(image_curve):
    for p in image_curve["points"]:
        assert sum(p["stack"].values()) == p["peak_process_bytes"]


def test_video_pipeline_sweeps_frames():
    c = api.curve("sonic", gpus="rtx-4080").to_json()
    assert c["quantity"]["name"] == "frames"
    assert c["current"] == 25  # the pipeline's default n_sample_frames
    t = c["targets"][0]
    assert t["status"] == "stops" and t["first_fail"] == t["last_fit"] + 1
    assert _fits("sonic", {"frames": t["last_fit"]}, "rtx-4080") is True
    assert _fits("sonic", {"frames": t["first_fail"]}, "rtx-4080") is False


def test_batch_sweep_and_explicit_values():
    c = api.curve("qwen2.5-0.5b-instruct", gpus="gtx-1650", sweep="batch=1,2,4,8").to_json()
    assert [p["x"] for p in c["points"]] == [1, 2, 4, 8]
    assert c["applies"] == {"batch": 0}


def test_never_and_always_fitting_targets():
    c = api.curve("qwen2.5-7b-instruct", gpus=["rtx-3050", "h200-sxm-141gb"], sweep="256:4096:5").to_json()
    assert [t["status"] for t in c["targets"]] == ["never_fits", "fits_throughout"]


# ---------------------------------------------------------------- --plot-sweep

def test_parse_spec():
    assert parse_spec(None) == (None, None, None)
    assert parse_spec("context") == ("context", None, None)
    assert parse_spec("micro-batch") == ("batch", None, None)
    assert parse_spec("1k:32k") == (None, None, (1024, 32768, 16))
    assert parse_spec("side=512:2048:13") == ("side", None, (512, 2048, 13))
    assert parse_spec("batch=8,1,2") == ("batch", [1, 2, 8], None)
    assert spaced(1024, 65536, 7, QUANTITIES["context"]) == [1024, 2048, 4096, 8192, 16384, 32768, 65536]
    assert spaced(512, 2048, 4, QUANTITIES["side"]) == [512, 1024, 1536, 2048]
    for bad in ("speed=1:2", "5:1", "1:2:1", "a,b", "1:2:3:4", "0:10"):
        with pytest.raises(UsageError):
            parse_spec(bad)


def test_sweep_refuses_a_quantity_the_engine_lacks():
    with pytest.raises(UsageError, match="cannot sweep"):
        api.curve("flux.1-dev", gpus="h100-sxm-80gb", sweep="context")
    with pytest.raises(UsageError, match="at least 129"):
        api.curve("qwen2.5-0.5b-instruct", gpus="h100-sxm-80gb", sweep="64:1024")


# ---------------------------------------------------------------- SVG and HTML

def test_svg_structure(llm_curve):
    root = ET.fromstring(render_svg(llm_curve))
    assert root.tag == SVG + "svg" and root.get("viewBox") == "0 0 1200 720"
    areas = [e for e in root.iter(SVG + "polygon") if e.get("class") == "gp-area"]
    assert [a.get("data-component") for a in areas] == llm_curve["components"]
    lines = [e for e in root.iter(SVG + "line") if e.get("class") == "gp-gpu"]
    assert [int(e.get("data-memory-bytes")) for e in lines] == [t["memory_bytes"] for t in llm_curve["targets"]]
    marks = [e for e in root.iter(SVG + "circle") if e.get("class") == "gp-crossing"]
    assert [(int(m.get("data-last-fit")), int(m.get("data-first-fail"))) for m in marks] == \
        [(t["last_fit"], t["first_fail"]) for t in llm_curve["targets"]]
    hover = [e for e in root.iter(SVG + "rect") if e.get("data-i") is not None]
    assert len(hover) == len(llm_curve["points"])
    assert any(e.get("class") == "gp-current" for e in root.iter(SVG + "line"))


def test_crossing_marker_sits_on_the_gpu_line(llm_curve):
    root = ET.fromstring(render_svg(llm_curve))
    ys = {e.get("data-gpu"): float(e.get("y1")) for e in root.iter(SVG + "line") if e.get("class") == "gp-gpu"}
    for m in (e for e in root.iter(SVG + "circle") if e.get("class") == "gp-crossing"):
        assert float(m.get("cy")) == pytest.approx(ys[m.get("data-gpu")], abs=0.1)


def test_measured_points_overlaid():
    c = api.curve("qwen2.5-7b-instruct", gpus="rtx-4090", sweep="256:32768:8").to_json()
    m = c["measured"]
    # from calibration/raw/llm-h100-a.jsonl: qwen2.5-7b-instruct, batch 1, workload p8k = 8192 + 32 tokens;
    # its peak is the larger of the prefill and generate records
    recs = [json.loads(line) for line in open(os.path.join(ROOT, "calibration", "raw", "llm-h100-a.jsonl"))]
    p8k = [r["peak_process_bytes"] for r in recs if r.get("model") == "qwen2.5-7b-instruct"
           and (r.get("workload") or {}).get("name") == "p8k" and r.get("type") == "phase"]
    assert len(p8k) == 2
    assert {"x": 8224, "peak_process_bytes": max(p8k)} in [{k: p[k] for k in ("x", "peak_process_bytes")}
                                                          for p in m["points"]]
    assert all(p["x"] in (256, 640, 2112, 8224, 32016) for p in m["points"])  # batch-1 runs only
    assert "H100" in m["env"]
    diamonds = [e for e in ET.fromstring(render_svg(c)).iter(SVG + "path") if e.get("class") == "gp-measured"]
    assert len(diamonds) == len(m["points"])


def test_no_calibration_folder_is_said(tmp_path):
    assert find_root(str(tmp_path))[0] is None
    c = api.curve("qwen2.5-0.5b-instruct", gpus="rtx-3050", sweep="256:1024:3", calibration=str(tmp_path)).to_json()
    assert c["measured"]["points"] == [] and "no calibration/raw" in c["measured"]["note"]


def test_hostile_names_are_escaped(llm_curve):
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    c = dict(llm_curve, model=evil, targets=[dict(t, gpu=evil) for t in llm_curve["targets"]],
             notes=[evil])
    svg = render_svg(c)
    ET.fromstring(svg)  # still well-formed
    assert "<script" not in svg and "<img" not in svg and "&lt;script&gt;" in svg
    page = render_html(c)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page.count("<script") == 2  # the curve's JSON and the hover script
    data = page.split('class="gp-curve-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["model"] == evil
    assert "</" not in json_for_script({"a": "</script>"})


def test_html_is_self_contained(llm_curve):
    page = render_html(llm_curve)
    assert page.startswith("<!doctype html>")
    for needle in ("<link", " src=", "@import", "url(", "https://", "//cdn"):
        assert needle not in page, needle
    assert page.count("http://") == page.count('xmlns="http://www.w3.org/2000/svg"')  # only the SVG namespace
    assert "gpCurveSetup" in page and 'class="gp-points"' in page


def test_png_needs_matplotlib(llm_curve, tmp_path, monkeypatch):
    real = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    with pytest.raises(DependencyMissing) as exc:
        write_plot(llm_curve, str(tmp_path / "x.png"))
    assert "matplotlib" in exc.value.hint and "install" in exc.value.hint


def test_png_is_1800_by_1080(llm_curve, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "x.png"
    write_plot(llm_curve, str(path))
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (1800, 1080)


# ---------------------------------------------------------------- the CLI

def test_cli_plot_keeps_the_json_and_writes_the_file(tmp_path, capsys):
    out = tmp_path / "curve.svg"
    argv = ["estimate", "qwen2.5-0.5b-instruct", "--gpu", "gtx-1650", "--batch", "4", "--json"]
    assert main(argv) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(argv + ["--plot", str(out), "--plot-sweep", "1k:16k:5"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == plain
    assert f"plot: {out}" in captured.err
    root = ET.fromstring(out.read_text())
    assert len([e for e in root.iter(SVG + "rect") if e.get("data-i") is not None]) >= 5


def test_cli_plot_html(tmp_path, capsys):
    out = tmp_path / "curve.html"
    assert main(["estimate", "flux.1-dev", "--gpu", "rtx-4090", "--plot", str(out)]) == 2  # flux does not fit 24 GB
    assert out.read_text().startswith("<!doctype html>")
    import re

    m = re.search(r"(\d+) measured", capsys.readouterr().err)  # flux.1-dev at 512, 1024 and 2048 px, bf16, batch 1
    assert m and int(m.group(1)) >= 3


@pytest.mark.parametrize("argv,message", [
    (["--plot", "x.pdf"], "must end in .html, .svg or .png"),
    (["--plot-sweep", "context"], "apply only with --plot"),
    (["--plot", "x.svg", "--plot-sweep", "side"], "cannot sweep side"),
])
def test_cli_plot_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["estimate", "qwen2.5-0.5b-instruct", "--gpu", "rtx-3050", *argv]) == 3
    assert message in capsys.readouterr().err


def test_quantized_stack_leaves_the_loading_transient_out():
    """On-the-fly quantization: the report's breakdown also names the loading transient, which is not
    at the forward's peak; the stack still adds up to the peak."""
    c = api.curve("qwen2.5-7b-instruct", gpus="rtx-4060", quantize="int4wo", sweep="1k:32k:6").to_json()
    assert "load_transient" not in c["components"]
    for p in c["points"]:
        assert sum(p["stack"].values()) == p["peak_process_bytes"]


def test_measured_training_runs_overlaid():
    c = api.curve("llama-3.2-1b-instruct", gpus="h100-sxm-80gb", train="full", seq_len=512, sweep="batch=1,4").to_json()
    assert c["quantity"]["name"] == "batch"
    m = {p["x"]: p["peak_process_bytes"] for p in c["measured"]["points"]}
    recs = [json.loads(line) for line in open(os.path.join(ROOT, "calibration", "raw", "train-h200.jsonl"))]
    b4 = [r["peak_process_bytes"] for r in recs if r.get("type") == "phase" and r.get("model") == "llama-3.2-1b-instruct"
          and (r.get("case") or {}).get("name") == "full-nock-s512-b4-adamw-bf16-bf16w"]
    assert b4 and m.get(4) == max(b4) and 1 in m
    assert "H200" in c["measured"]["env"]


def test_measured_pipeline_runs_match_the_memory_setup():
    """SDXL with model offload was measured in float16 (calibration/raw/diffusion-modes-h200.jsonl): those
    runs are drawn on a float16 model-offload curve, not on the bfloat16 one."""
    fp16 = api.curve("sdxl-base-1.0", gpus="rtx-4060", offload="model", dtype="float16").to_json()["measured"]
    assert {p["x"] for p in fp16["points"]} == {512, 1024}
    assert all("diffusion-modes-h200" in p["label"] for p in fp16["points"])
    assert api.curve("sdxl-base-1.0", gpus="rtx-4060", offload="model").to_json()["measured"]["points"] == []
