"""The LLM estimator against real measurements (calibration/raw, H100 + torch 2.11 + transformers 5.17)
and its own rules on hand-checked cases."""

import glob
import json
import os
import statistics

import pytest

from gpu_preflight.measurement.calibration import cal_dir, compare_records, load_records
from gpu_preflight.cli import main
from gpu_preflight.errors import ModelSourceError
from gpu_preflight.estimators.allocator import Allocator, round_size, segment_size
from gpu_preflight.estimators.arch import parse_llm
from gpu_preflight.estimators.weights import parameter_count, weight_tensors
from gpu_preflight.models.catalog import load_catalog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: calibration/, bench/

RAW = sorted(glob.glob(os.path.join(cal_dir(ROOT), "raw", "llm-h100-*.jsonl")))
MIB = 1 << 20


@pytest.fixture(scope="module")
def rows():
    return compare_records(load_records(RAW), ROOT)


def test_calibration_covers_the_issue_matrix(rows):
    archs = {r["catalog_id"] for r in rows}
    workloads = {r["workload"] for r in rows}
    assert len(archs) >= 12 and len(workloads) >= 5


def test_accuracy_bars_peak_process(rows):
    """Issue 3: median |error| <= 3 % and worst <= 10 % on peak_process_bytes (SDPA, the default)."""
    sdpa = [abs(r["process_error"]) for r in rows if r["attn"] == "sdpa"]
    assert statistics.median(sdpa) <= 0.03
    assert max(sdpa) <= 0.10


def test_held_out_cases_meet_the_bars_on_their_own(rows):
    held = [abs(r["process_error"]) for r in rows if r["held_out"]]
    assert len(held) >= 40
    assert statistics.median(held) <= 0.03 and max(held) <= 0.10


def test_eager_attention_known_gap_stays_bounded(rows):
    """Eager attention: allocated bytes are exact, the caching allocator's reserve is underestimated
    at 8k prompts (docs/accuracy.md). Guard against it getting worse."""
    eager = [r for r in rows if r["attn"] == "eager"]
    assert eager and max(abs(r["allocated_error"]) for r in eager) <= 0.01
    assert max(abs(r["process_error"]) for r in eager) <= 0.25


def test_parameter_counts_match_the_built_models():
    """`parameters` in the load records is sum(p.numel()) of the model transformers built on the GPU."""
    cat = load_catalog()
    measured = {}
    for r in load_records(RAW):
        if r.get("phase") == "load":
            measured[r["model"]] = r["parameters"]
    overrides = {"mixtral-8x7b-L8": ("mixtral-8x7b-instruct-v0.1", {"num_hidden_layers": 8})}
    checked = 0
    for tag, n in measured.items():
        mid, ov = overrides.get(tag, (tag.replace("-eager", "").replace("-longgen", ""), {}))
        cfg = {**cat.find(mid).config, **ov}
        assert parameter_count(weight_tensors(parse_llm(cfg))) == n, tag
        checked += 1
    assert checked >= 15


def test_allocator_rules():
    assert round_size(1) == 512 and round_size(513) == 1024
    assert segment_size(100) == 2 * MIB and segment_size(3 * MIB) == 20 * MIB
    assert segment_size(50 * MIB + 1) == 52 * MIB
    a = Allocator()
    x = a.malloc(3 * MIB)          # new 20 MiB segment, 17 MiB split off
    y = a.malloc(50 * MIB)         # its own 50 MiB segment
    a.free(y)
    z = a.malloc(20 * MIB)         # best fit: the cached 50 MiB block, split
    w = a.malloc(40 * MIB)         # 17 and 30 MiB free blocks are too small -> new segment
    assert a.reserved == (20 + 50 + 40) * MIB
    assert a.allocated == (3 + 20 + 40) * MIB
    a.free(x)
    a.free(z)
    a.free(w)
    assert a.allocated == 0 and a.peak_reserved == 110 * MIB
    assert sorted(s for s, _, _ in a.free_lists[False]) == [20 * MIB, 40 * MIB, 50 * MIB]  # merged back


def test_gqa_kv_cache_bytes_by_hand():
    # Llama-3.1-8B: 32 layers x 8 KV heads x 128 dims x K and V x 2 bytes = 131072 bytes per token
    from gpu_preflight.estimators.engines.transformers import kv_bytes_per_token

    a = parse_llm(load_catalog().find("llama-3.1-8b-instruct").config)
    assert sum(kv_bytes_per_token(a, 2)) == 131072


def test_sliding_and_moe_parsing():
    cat = load_catalog()
    g3 = parse_llm(cat.find("gemma-3-1b-it").config)
    assert g3.layer_kinds.count("full") == 26 // 6 and g3.sliding_window == 512
    mx = parse_llm(cat.find("mixtral-8x7b-instruct-v0.1").config)
    assert (mx.experts, mx.experts_per_token) == (8, 2) and all(mx.moe_layers)
    ds = parse_llm(cat.find("deepseek-v2-lite-chat").config)
    assert ds.mla and ds.kv_lora_rank == 512 and ds.moe_layers[0] is False and ds.moe_layers[1] is True


def estimate_json(capsys, *args):
    code = main(["estimate", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_estimate_contract_and_verdicts(capsys):
    code, r = estimate_json(capsys, "qwen2.5-7b-instruct", "--gpu", "rtx-4090", "--gpu", "rtx-3060",
                            "--input-len", "4096")
    for key in ("peak_process_bytes", "peak_allocated_bytes", "breakdown", "fits", "max_context_tokens",
                "assumptions"):
        assert key in r
    assert set(r["fits"][0]) >= {"gpu", "count", "fits", "headroom_bytes"}
    assert r["fits"][0]["fits"] is True and r["fits"][1]["fits"] is False  # 15 GiB of weights vs a 12 GB card
    assert code == 0
    assert r["breakdown"]["weights"] == 7615616512 * 2  # 7.6B params in bf16, exact


def test_does_not_fit_gives_changes_that_fit(capsys):
    code, r = estimate_json(capsys, "llama-3.1-8b-instruct", "--gpu", "rtx-4060")
    assert code == 2 and r["fits"][0]["fits"] is False
    assert any(s["fits"] for s in r["suggestions"])
    assert any("4-bit" in s["change"] and s["fits"] for s in r["suggestions"])


def test_longer_prompt_needs_more_and_context_limit_is_consistent(capsys):
    _, short = estimate_json(capsys, "llama-3.1-8b-instruct", "--gpu", "rtx-4090", "--input-len", "1024")
    _, long = estimate_json(capsys, "llama-3.1-8b-instruct", "--gpu", "rtx-4090", "--input-len", "16384")
    assert long["peak_process_bytes"] > short["peak_process_bytes"]
    limit = short["max_context_tokens"]
    _, at = estimate_json(capsys, "llama-3.1-8b-instruct", "--gpu", "rtx-4090", "--input-len", str(limit - 128))
    _, over = estimate_json(capsys, "llama-3.1-8b-instruct", "--gpu", "rtx-4090", "--input-len", str(limit * 2))
    assert at["fits"][0]["fits"] is True and over["fits"][0]["fits"] is False


def test_context_beyond_max_positions_warns(capsys):
    _, r = estimate_json(capsys, "qwen2.5-7b-instruct", "--gpu", "h100", "--input-len", "40000")
    assert any("max_position_embeddings" in a and "RoPE" in a for a in r["assumptions"])


def test_old_transformers_keeps_full_logits(capsys):
    _, new = estimate_json(capsys, "qwen2.5-0.5b-instruct", "--gpu", "h100", "--input-len", "8192")
    _, old = estimate_json(capsys, "qwen2.5-0.5b-instruct", "--gpu", "h100", "--input-len", "8192",
                           "--transformers", "4.44")
    # 8192 positions x 151936 vocab x (2 + 4) bytes of logits in the older prefill
    assert old["peak_allocated_bytes"] - new["peak_allocated_bytes"] >= 8192 * 151936 * 4


@pytest.mark.parametrize("cfg,needle", [
    ({"model_type": "llama", "hidden_size": 4096}, "num_hidden_layers"),
    ({"model_type": "llama", "hidden_size": 0, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10},
     "zero"),
    ({"model_type": "llama", "hidden_size": -5, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10},
     "non-negative"),
    ([1, 2], "not a JSON object"),
])
def test_bad_configs(cfg, needle):
    with pytest.raises(ModelSourceError) as exc:
        parse_llm(cfg)
    assert needle in exc.value.message


def test_bad_config_file_is_a_clean_cli_error(tmp_path, capsys):
    p = tmp_path / "config.json"
    p.write_text('{"model_type": "llama", "hidden_size": 40')
    assert main(["estimate", str(p), "--gpu", "h100"]) == 3
    assert "Traceback" not in capsys.readouterr().err


def test_weights_come_from_safetensors_headers(tmp_path, capsys):
    from models_helpers import write_model_folder

    folder = write_model_folder(tmp_path / "m", shards=3)
    # llama_tensors(): embed 100x64 + lm_head 100x64 + 2 layers x (q 64x64 + up 128x64 + norm 64) BF16
    elements = 2 * 100 * 64 + 2 * (64 * 64 + 128 * 64 + 64)
    _, r = estimate_json(capsys, str(folder), "--gpu", "h100")
    assert r["breakdown"]["weights"] == elements * 2
    assert not any("computed from config.json shapes" in a for a in r["assumptions"])
    _, r32 = estimate_json(capsys, str(folder), "--gpu", "h100", "--dtype", "float32")
    assert r32["breakdown"]["weights"] == elements * 4


def test_gguf_is_dequantized_for_transformers(tmp_path, capsys):
    from models_helpers import gguf_bytes, llama_gguf_metadata, llama_gguf_tensors

    p = tmp_path / "tiny.gguf"
    p.write_bytes(gguf_bytes(llama_gguf_metadata(), llama_gguf_tensors()))
    # 256x8 + 256x256 + 256 + 256x512 + 256x8 elements, all as bf16 after loading
    elements = 256 * 8 + 256 * 256 + 256 + 256 * 512 + 256 * 8
    code, r = estimate_json(capsys, str(p), "--gpu", "h100", "--engine", "transformers")  # .gguf defaults to llama.cpp
    assert code == 0 and r["breakdown"]["weights"] == elements * 2
    assert any("dequantizes" in a for a in r["assumptions"])


def test_gptq_layer_bytes_by_hand():
    from gpu_preflight.estimators.weights import _linear

    q = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    parts = {t.name.split(".")[-1]: t.bytes for t in _linear("q_proj", 4096, 4096, 2, False, "gptq", True, q)}
    # qweight 4096*4096/2, scales 32 groups x 4096 x fp16, qzeros 32 x 4096 x 4 bits, g_idx 4096 x int32
    assert parts == {"qweight": 8388608, "scales": 262144, "qzeros": 65536, "g_idx": 16384}


def test_bnb4_model_is_about_a_quarter(capsys):
    _, full = estimate_json(capsys, "llama-3.1-8b-instruct", "--gpu", "h100")
    cat = load_catalog()
    arch = parse_llm({**cat.find("llama-3.1-8b-instruct").config,
                      "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}})
    w = sum(t.bytes for t in weight_tensors(arch))
    # embeddings and lm_head (2 x 128256 x 4096 x 2 bytes) stay bf16; linear layers ~0.5 + 4/64 bytes per weight
    linear = 8030261248 - 2 * 128256 * 4096 - 65 * 4096  # minus embeddings and norms
    expected = 2 * 128256 * 4096 * 2 + 65 * 4096 * 2 + linear // 2 + (linear // 64) * 4
    assert abs(w - expected) / expected < 0.001
    assert w < full["breakdown"]["weights"] * 0.4
