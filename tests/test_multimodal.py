"""Encoder-decoders and vision-language models (issue 19, second part), and the CPU allocation tracer.

Expected weights are the parameter bytes of the models transformers 5.17 builds on the meta device
(tests/fixtures/multimodal/*.json, bf16); expected activation peaks were recorded by
bench/trace_allocations.py on transformers 5.17's own generate() on the CPU (torch 2.13), e.g.
`python bench/trace_allocations.py tests/fixtures/multimodal/t5.json --batch 2 --input-len 1024 --output-len 4`.
None was computed by the estimator."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from gpu_preflight.cli import main
from gpu_preflight.estimators import encdec as E
from gpu_preflight.estimators import meta_count, vision
from gpu_preflight.estimators.arch import model_kind
from gpu_preflight.estimators.engines.transformers import Workload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "multimodal")
HAVE_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformers") is not None
MIB = 1 << 20


def cfg(name: str) -> dict:
    with open(os.path.join(FIX, name + ".json"), encoding="utf-8") as fh:
        return json.load(fh)


WEIGHTS = {"t5": 70661120, "t5relu": 62272512, "bart": 83002368, "mbart": 83006464, "whisper": 58961664}
# (model, batch, input_len, output_len) -> traced activation peak in MiB (KV and cross-attention KV included)
TRACED = {("t5", 2, 1024, 4): 59.02, ("t5", 16, 64, 40): 20.06, ("t5relu", 16, 64, 40): 18.57,
          ("bart", 2, 1024, 4): 24.00, ("bart", 16, 64, 40): 24.81, ("mbart", 2, 1024, 4): 26.00,
          ("whisper", 2, 1024, 4): 26.38, ("whisper", 16, 64, 40): 210.95}


def test_kinds():
    assert model_kind(cfg("t5")) == "seq2seq" and model_kind(cfg("whisper")) == "speech_seq2seq"
    assert model_kind(cfg("llava")) == model_kind(cfg("qwen2vl")) == "vlm"
    assert model_kind({"model_type": "llama"}) == "llm"


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_encdec_tables_are_exact(name):
    a = E.parse_encdec(cfg(name))
    assert sum(t.bytes for t in E.weight_tensors(a, 2) if not t.name.startswith("buffer:")) == WEIGHTS[name]


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch + transformers")
@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_encdec_meta_device_agrees(name):
    mc = meta_count.count_weights(cfg(name))
    assert sum(t.bytes for t in mc.tensors if not t.name.startswith("buffer:")) == WEIGHTS[name]
    assert "ForConditionalGeneration" in mc.model_class  # the encoder-decoder, not BartForCausalLM


@pytest.mark.parametrize("key", sorted(TRACED))
def test_encdec_activations_follow_the_trace(key):
    name, b, s, out = key
    # the traces are the CPU's: its SDPA kernel takes T5's strided position bias, CUDA's fused ones do not
    a = dataclasses.replace(E.parse_encdec(cfg(name)), t5_sdpa_math=False)
    est = E.estimate_encdec(a, Workload(batch=b, input_len=s, output_len=out), (9, 0))
    assert abs(est.activation_requested_peak_bytes / MIB - TRACED[key]) / TRACED[key] < 0.01


def test_cross_attention_kv_scales_with_the_encoder_length():
    a = E.parse_encdec(cfg("t5"))
    short = E.estimate_encdec(a, Workload(batch=4, input_len=512, output_len=16))
    long = E.estimate_encdec(a, Workload(batch=4, input_len=2048, output_len=16))
    per_token = 4 * a.dec_inner * 2 * 2 * a.dec_layers  # batch x (K + V) x bf16 x decoder layers
    assert long.breakdown["cross_attention_kv"] - short.breakdown["cross_attention_kv"] == 1536 * per_token
    # T5's relative-position buckets: q x k int64 temporaries, quadratic in the input
    assert long.activation_requested_peak_bytes > 5 * short.activation_requested_peak_bytes  # 4x tokens


def test_whisper_encoder_length_is_fixed():
    a = E.parse_encdec(cfg("whisper"))
    assert E.encoder_len(a, 10) == E.encoder_len(a, 5000) == 1500


def _write(tmp_path, c):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(c))
    return str(p)


def test_encdec_through_the_cli(tmp_path, capsys):
    code = main(["estimate", _write(tmp_path, cfg("whisper")), "--gpu", "h100", "--audio-seconds", "95", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and r["kind"] == "speech_seq2seq" and r["breakdown"]["cross_attention_kv"] > 0
    assert r["breakdown"]["weights"] == WEIGHTS["whisper"] and any("4 window(s)" in a for a in r["assumptions"])


def test_multimodal_flags_are_refused_where_they_do_not_apply(tmp_path, capsys):
    assert main(["estimate", _write(tmp_path, cfg("t5")), "--gpu", "h100", "--images", "2"]) == 3
    assert "--images" in capsys.readouterr().err
    assert main(["estimate", "qwen2.5-0.5b-instruct", "--gpu", "h100", "--audio-seconds", "3"]) == 3
    assert "--audio-seconds applies to speech models" in capsys.readouterr().err


def test_bart_input_beyond_learned_positions_is_refused(tmp_path, capsys):
    assert main(["estimate", _write(tmp_path, cfg("bart")), "--gpu", "h100", "--input-len", "2048"]) == 3
    assert "max_position_embeddings 1024" in capsys.readouterr().err


def test_qwen2_vl_dynamic_resolution():
    # hand-derived from Qwen2VLImageProcessor.smart_resize (factor 28, 56*56 .. 28*28*1280 pixels)
    assert vision.smart_resize(448, 448) == (448, 448)
    assert vision.smart_resize(768, 1024) == (756, 1036)
    assert vision.smart_resize(2000, 3000) == (812, 1204)
    plan = vision.image_plan(cfg("qwen2vl"), (1024, 768))
    assert plan.patches_per_image == 54 * 74 and plan.tokens_per_image == 999


def test_fixed_size_image_tokens():
    assert vision.image_plan(cfg("llava"), (1920, 1080)).tokens_per_image == 576
    assert vision.image_plan(cfg("paligemma"), None).tokens_per_image == 256
    assert vision.image_plan(cfg("gemma3"), (50, 50)).tokens_per_image == 256
    with pytest.raises(Exception) as exc:
        vision.image_plan({"model_type": "mllama", "vision_config": {}}, None)
    assert "not modelled" in str(exc.value)


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch + transformers")
def test_vlm_estimate_counts_the_tower_and_image_tokens(tmp_path, capsys):
    code = main(["estimate", _write(tmp_path, cfg("qwen2vl")), "--gpu", "h100", "--images", "2",
                 "--image-size", "1024x768", "--input-len", "100", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and r["kind"] == "vlm" and r["workload"]["input_len"] == 100 + 2 * 999
    total = sum(t.bytes for t in meta_count.count_weights(cfg("qwen2vl")).tensors if not t.name.startswith("buffer:"))
    assert r["breakdown"]["weights"] + r["breakdown"]["vision_weights"] == total


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch + transformers")
@pytest.mark.parametrize("name,extra", [("t5", {}), ("whisper", {}), ("llava", {"images": 1, "image_size": "400x300"}),
                                        ("qwen2vl", {"images": 2, "image_size": "300x200"})])
def test_measurement_child_runs_on_the_cpu(tmp_path, name, extra):
    """The child `preflight measure` runs: encoder inputs / pixel values of the asked size; a VLM refuses
    image tokens that do not match its features, so this also checks estimators/vision.py's counts."""
    spec = {"model": {"id": name, "config": cfg(name)}, "dtype": "float32", "attn": "sdpa", "device": "cpu",
            "workloads": [{"name": "w", "batch": 1, "input_len": 8, "output_len": 2, **extra}]}
    sp, out = tmp_path / "spec.json", tmp_path / "out.jsonl"
    sp.write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.run([sys.executable, "-m", "gpu_preflight.measurement.child", str(sp), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert proc.returncode == 0, recs[-1]
    phases = [r["phase"] for r in recs if r.get("type") == "phase"]
    assert phases == ["load", "prefill", "generate"]


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
def test_tracer_sees_allocations_and_frees():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import torch
    from trace_allocations import trace

    def fn(_tr):
        a = torch.ones(1024, dtype=torch.float32)      # 4 KiB
        b = a * 2                                        # 4 KiB
        v = b[:10]                                       # a view: no allocation
        del a
        c = torch.empty(4096, dtype=torch.float16)      # 8 KiB, peak 16 KiB with b alive
        del b, c, v

    tr = trace(fn)
    assert tr.peak_bytes == 4096 + 4096 + 8192 - 4096
    assert [e[0] for e in tr.events].count("alloc") == 3 and tr.events[-1][3] == 0
