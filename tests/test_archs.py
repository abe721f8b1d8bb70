"""Architectures beyond the Llama family (issue 19): layout tables, meta-device counting, refusal of
unknown types, per-family activations, and fit searches whose cost does not grow with depth.

Expected numbers below were produced by transformers 5.17 itself (parameters and buffers of the
model built on the meta device; activation peaks from an allocation trace of the real CPU forward,
torch 2.13), never by the estimator."""

import importlib.util
import json
import os
import time

import pytest

from gpu_preflight.cli import main
from gpu_preflight.errors import ModelSourceError
from gpu_preflight.estimators import meta_count
from gpu_preflight.estimators.arch import UnknownArchitecture, parse_llm
from gpu_preflight.estimators.engines import transformers as T
from gpu_preflight.estimators.weights import weight_tensors
from gpu_preflight.models.catalog import load_catalog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_TRANSFORMERS = importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("torch")
MIB = 1 << 20

# config, bf16 parameter bytes of the model transformers 5.17 builds (sum of named_parameters, tied once)
CASES = {
    "gpt2-medium": ({"model_type": "gpt2", "n_embd": 1024, "n_layer": 24, "n_head": 16, "vocab_size": 50257,
                     "n_positions": 1024}, 709646336),
    "gpt_bigcode": ({"model_type": "gpt_bigcode", "n_embd": 1024, "n_layer": 4, "n_head": 16, "vocab_size": 49152,
                     "n_positions": 8192, "multi_query": True}, 202470400),
    "pythia-1.4b": ({"model_type": "gpt_neox", "hidden_size": 2048, "num_hidden_layers": 24,
                     "num_attention_heads": 16, "intermediate_size": 8192, "vocab_size": 50304, "rotary_pct": 0.25,
                     "max_position_embeddings": 2048, "use_parallel_residual": True,
                     "tie_word_embeddings": False}, 2829295616),
    "gptj": ({"model_type": "gptj", "n_embd": 1024, "n_layer": 4, "n_head": 16, "rotary_dim": 64,
              "vocab_size": 50400}, 307263936),
    "falcon-7b-L4": ({"model_type": "falcon", "hidden_size": 4544, "num_hidden_layers": 4, "num_attention_heads": 71,
                      "vocab_size": 65024, "multi_query": True, "parallel_attn": True, "bias": False,
                      "new_decoder_architecture": False}, 2247516928),
    "falcon-new-arch": ({"model_type": "falcon", "hidden_size": 1024, "num_hidden_layers": 4,
                         "num_attention_heads": 16, "num_kv_heads": 4, "vocab_size": 65024,
                         "new_decoder_architecture": True, "parallel_attn": True, "bias": False}, 221286400),
    "falcon-rw-alibi": ({"model_type": "falcon", "hidden_size": 1024, "num_hidden_layers": 4,
                         "num_attention_heads": 16, "vocab_size": 50304, "multi_query": False,
                         "parallel_attn": False, "bias": True, "alibi": True}, 203796480),
    "bloom-560m": ({"model_type": "bloom", "hidden_size": 1024, "n_layer": 24, "n_head": 16, "vocab_size": 250880},
                   1118429184),
    "opt-1.3b": ({"model_type": "opt", "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32,
                  "ffn_dim": 8192, "vocab_size": 50272, "max_position_embeddings": 2048,
                  "word_embed_proj_dim": 2048}, 2631516160),
    "opt-350m-like": ({"model_type": "opt", "hidden_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 16,
                       "ffn_dim": 4096, "vocab_size": 50272, "word_embed_proj_dim": 512,
                       "do_layer_norm_before": False}, 158543872),
    "phi-2-L4": ({"model_type": "phi", "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 4,
                  "num_attention_heads": 32, "vocab_size": 51200, "partial_rotary_factor": 0.4}, 1153771520),
    "phi-qk": ({"model_type": "phi", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 2,
                "num_attention_heads": 16, "vocab_size": 51200, "qk_layernorm": True}, 260199424),
    "stablelm-2": ({"model_type": "stablelm", "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 4,
                    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 100352,
                    "use_qkv_bias": True, "partial_rotary_factor": 0.25}, 1233248256),
    "stablelm-parallel": ({"model_type": "stablelm", "hidden_size": 1024, "intermediate_size": 2816,
                           "num_hidden_layers": 2, "num_attention_heads": 16, "num_key_value_heads": 8,
                           "vocab_size": 100352, "use_parallel_residual": True, "qk_layernorm": True}, 458246144),
    "olmo": ({"model_type": "olmo", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 4,
              "num_attention_heads": 16, "vocab_size": 50304, "tie_word_embeddings": True}, 742916096),
    "olmo2": ({"model_type": "olmo2", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 4,
               "num_attention_heads": 16, "vocab_size": 100352}, 1359024128),
    "cohere": ({"model_type": "cohere", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 2,
                "num_attention_heads": 16, "vocab_size": 256000}, 591403008),
    "cohere-qk": ({"model_type": "cohere", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 2,
                   "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 256000, "use_qk_norm": True},
                  585116672),
    "granite": ({"model_type": "granite", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 2,
                 "num_attention_heads": 16, "vocab_size": 49155, "tie_word_embeddings": True}, 167788544),
    "starcoder2-3b": ({"model_type": "starcoder2", "hidden_size": 3072, "intermediate_size": 12288,
                       "num_hidden_layers": 30, "num_attention_heads": 24, "num_key_value_heads": 2,
                       "vocab_size": 49152, "use_bias": True, "sliding_window": 4096,
                       "max_position_embeddings": 16384}, 6060742656),
    "dbrx-small": ({"model_type": "dbrx", "d_model": 1024, "n_layers": 2, "n_heads": 16, "vocab_size": 32000,
                    "attn_config": {"kv_n_heads": 4, "rope_theta": 500000, "clip_qkv": 8},
                    "ffn_config": {"ffn_hidden_size": 2048, "moe_num_experts": 4, "moe_top_k": 2}}, 242247680),
    "mamba-130m": ({"model_type": "mamba", "hidden_size": 768, "num_hidden_layers": 24, "vocab_size": 50280,
                    "state_size": 16}, 258270720),
    "mamba2-small": ({"model_type": "mamba2", "hidden_size": 1024, "num_hidden_layers": 4, "vocab_size": 50288,
                      "state_size": 128, "num_heads": 32, "head_dim": 64, "n_groups": 1}, 258790144),
    "jamba-small": ({"model_type": "jamba", "hidden_size": 1024, "intermediate_size": 2048, "num_hidden_layers": 8,
                     "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 65536, "num_experts": 4,
                     "use_mamba_kernels": False}, 618732864),
    "falcon-mamba-small": ({"model_type": "falcon_mamba", "hidden_size": 1024, "num_hidden_layers": 4,
                            "vocab_size": 65024, "state_size": 16}, 186509312),
}


def table_param_bytes(cfg: dict) -> int:
    return sum(t.bytes for t in weight_tensors(parse_llm(cfg), 2) if not t.name.startswith("buffer:"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_family_tables_are_exact(name):
    """Issue 19: weights were +28..+43 % on NeoX, Phi-2, Starcoder2, Falcon-7B, GPT-2 medium; now exact."""
    cfg, expected = CASES[name]
    assert table_param_bytes(cfg) == expected


@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="needs torch + transformers")
@pytest.mark.parametrize("name", ["gpt2-medium", "pythia-1.4b", "falcon-new-arch", "mamba-130m", "jamba-small"])
def test_meta_device_count_matches_the_table(name):
    cfg, expected = CASES[name]
    mc = meta_count.count_weights(cfg, "bfloat16")
    assert sum(t.bytes for t in mc.tensors if not t.name.startswith("buffer:")) == expected
    buffers = sum(t.bytes for t in weight_tensors(parse_llm(cfg), 2, buffers=True) if t.name.startswith("buffer:"))
    assert abs(buffers - mc.buffer_bytes) <= max(1024, mc.buffer_bytes // 100)


# activation peak (bytes live above the weights, KV cache included, no allocator rounding) of
# generate(max_new_tokens=4) at batch 4 x 512 prompt tokens, bf16, as recorded by
# bench/trace_allocations.py (transformers 5.17's own forward on the CPU, torch 2.13; SDPA, or eager where
# the family has no SDPA path: GPT-J, Mamba). Reproduce: python bench/trace_allocations.py 'CONFIG' --batch 4
# --input-len 512 --output-len 4
TRACED = {"gpt2": ({"model_type": "gpt2", "n_embd": 1024, "n_layer": 2, "n_head": 16, "vocab_size": 50257,
                    "n_positions": 1024}, 104.03),
          "gpt_bigcode": ({"model_type": "gpt_bigcode", "n_embd": 1024, "n_layer": 2, "n_head": 16,
                           "vocab_size": 49152, "multi_query": True}, 57.03),
          "gpt_neox": ({"model_type": "gpt_neox", "hidden_size": 1024, "num_hidden_layers": 2,
                        "num_attention_heads": 16, "intermediate_size": 4096, "vocab_size": 50304,
                        "rotary_pct": 0.25, "tie_word_embeddings": False}, 64.16),
          "phi": ({"model_type": "phi", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 2,
                   "num_attention_heads": 16, "vocab_size": 51200, "partial_rotary_factor": 0.5}, 96.28),
          "starcoder2": ({"model_type": "starcoder2", "hidden_size": 1024, "intermediate_size": 4096,
                          "num_hidden_layers": 2, "num_attention_heads": 16, "num_key_value_heads": 2,
                          "vocab_size": 49152}, 50.53),
          "cohere": ({"model_type": "cohere", "hidden_size": 1024, "intermediate_size": 4096,
                      "num_hidden_layers": 2, "num_attention_heads": 16, "vocab_size": 64000}, 80.53),
          "falcon-7b-like": ({"model_type": "falcon", "hidden_size": 1024, "num_hidden_layers": 2,
                              "num_attention_heads": 16, "vocab_size": 65024, "multi_query": True,
                              "parallel_attn": True, "bias": False}, 50.53),
          # the six gaps of the first round (StableLM -6 %, Mamba -5 %, OPT +6 %, OLMo-2 +4.5 %, Falcon new
          # architecture -24 %, GPT-J -22 %), found with the tracer's per-line live set and fixed
          "stablelm": ({"model_type": "stablelm", "hidden_size": 1024, "intermediate_size": 2816,
                        "num_hidden_layers": 2, "num_attention_heads": 16, "num_key_value_heads": 16,
                        "vocab_size": 50304, "use_qkv_bias": True, "partial_rotary_factor": 0.25}, 73.16),
          "stablelm-parallel": ({"model_type": "stablelm", "hidden_size": 1024, "intermediate_size": 2816,
                                 "num_hidden_layers": 2, "num_attention_heads": 16, "num_key_value_heads": 8,
                                 "vocab_size": 50304, "use_parallel_residual": True, "qk_layernorm": True}, 57.16),
          "mamba": ({"model_type": "mamba", "hidden_size": 768, "num_hidden_layers": 2, "vocab_size": 50280,
                     "state_size": 16}, 658.28),
          "opt": ({"model_type": "opt", "hidden_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 16,
                   "ffn_dim": 4096, "vocab_size": 50272, "word_embed_proj_dim": 1024}, 64.03),
          "olmo": ({"model_type": "olmo", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 2,
                    "num_attention_heads": 16, "vocab_size": 50304}, 81.03),
          "olmo2": ({"model_type": "olmo2", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 2,
                     "num_attention_heads": 16, "vocab_size": 50304}, 77.03),
          "falcon-new-arch": ({"model_type": "falcon", "hidden_size": 1024, "num_hidden_layers": 2,
                               "num_attention_heads": 16, "num_kv_heads": 4, "vocab_size": 65024,
                               "new_decoder_architecture": True, "parallel_attn": True, "bias": False}, 69.53),
          "gptj": ({"model_type": "gptj", "n_embd": 1024, "n_layer": 2, "n_head": 16, "rotary_dim": 64,
                    "vocab_size": 50400}, 229.28),
          "llama": ({"model_type": "llama", "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 2,
                     "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000}, 53.53)}


@pytest.mark.parametrize("name", sorted(TRACED))
def test_activations_follow_the_traced_forward(name, monkeypatch):
    cfg, traced_mib = TRACED[name]
    # the CPU trace sees torch's SDPA as one op (its output): the math backend's internals (Falcon multi-query,
    # checked against the H200 in tests/test_archs_gpu.py) are left out here
    monkeypatch.setattr(T, "_sdpa_math",
                        lambda r, a, w, rows, new, kv, dt: r.a("attn", rows * a.heads * a.head_dim * dt))
    est = T.estimate_transformers(parse_llm(cfg), T.Workload(batch=4, input_len=512, output_len=4), (9, 0))
    assert abs(est.activation_requested_peak_bytes / MIB - traced_mib) / traced_mib < 0.01


def test_falcon_new_architecture_caches_every_head():
    """FalconAttention broadcasts K / V to all query heads before the cache update (num_kv_heads = num_heads
    under new_decoder_architecture): Falcon-40B's cache is 16x what its 8 KV heads suggest."""
    a = parse_llm(TRACED["falcon-new-arch"][0])
    assert a.kv_heads == 4 and T.kv_bytes_per_token(a, 2)[0] == 2 * 16 * 64 * 2


def test_eager_only_families_are_estimated_with_eager_attention():
    cfg = CASES["bloom-560m"][0]
    est = T.estimate_transformers(parse_llm(cfg), T.Workload(batch=1, input_len=2048, output_len=1), (9, 0))
    assert any("no SDPA" in a for a in est.assumptions)
    # 16 heads x 2048 x 2048 scores: the float32 softmax alone is 256 MiB above the weights
    assert est.peak_allocated_bytes - est.weights_bytes > 16 * 2048 * 2048 * 4


def test_mamba_has_a_fixed_state_instead_of_a_kv_cache():
    a = parse_llm(CASES["mamba-130m"][0])
    assert a.mixers == ["mamba"] * 24 and a.kv_heads == 0
    short = T.estimate_transformers(a, T.Workload(batch=1, input_len=512, output_len=64), (9, 0))
    long = T.estimate_transformers(a, T.Workload(batch=1, input_len=512, output_len=2048), (9, 0))
    assert short.kv_cache_bytes == long.kv_cache_bytes == 0  # the state does not grow with the output


def _write(tmp_path, cfg):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return str(p)


BRANDNEW = {"model_type": "brandnew", "hidden_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 8,
            "intermediate_size": 4096, "vocab_size": 32000}


def test_unknown_model_type_is_refused_without_transformers(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(meta_count, "available", lambda: False)
    with pytest.raises(UnknownArchitecture):
        parse_llm(BRANDNEW, assume_llama_like=False)
    assert main(["estimate", _write(tmp_path, BRANDNEW), "--gpu", "h100"]) == 3
    err = capsys.readouterr().err
    assert "brandnew" in err and "--assume-llama-like" in err and "Traceback" not in err


def test_assume_llama_like_is_visible(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(meta_count, "available", lambda: False)
    code = main(["estimate", _write(tmp_path, BRANDNEW), "--gpu", "h100", "--assume-llama-like", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and any("ASSUMED LLAMA-LIKE" in a for a in r["assumptions"])
    assert r["architecture"]["weights_source"].startswith("assumed")


def test_remote_code_models_are_refused():
    with pytest.raises(ModelSourceError) as exc:
        meta_count.build_on_meta({**BRANDNEW, "auto_map": {"AutoModelForCausalLM": "x.Y"}})
    assert "trust_remote_code" in exc.value.message


@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="needs torch + transformers")
def test_unknown_type_known_to_transformers_gets_exact_weights(tmp_path, capsys):
    cfg = {"model_type": "persimmon", "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 2,
           "num_attention_heads": 8, "vocab_size": 32000}
    code = main(["estimate", _write(tmp_path, cfg), "--gpu", "h100", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and r["architecture"]["weights_source"].startswith("meta device")
    assert any("activations ASSUMED LLAMA-LIKE" in a for a in r["assumptions"])


def test_family_estimate_through_the_cli(tmp_path, capsys):
    code = main(["estimate", _write(tmp_path, CASES["pythia-1.4b"][0]), "--gpu", "h100", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and r["breakdown"]["weights"] == CASES["pythia-1.4b"][1]
    assert r["architecture"]["weights_source"] == "family table (gpt_neox)"


# ---- issue 17: fit searches whose cost does not grow with the number of layers ----

def _deep(layers: int) -> dict:
    cfg = dict(load_catalog().find("llama-3.2-1b-instruct").config)
    cfg["num_hidden_layers"] = layers
    return cfg


@pytest.mark.parametrize("layers,limit_s", [(1000, 0.5), (10000, 5.0)])
def test_deep_models_estimate_fast(tmp_path, capsys, layers, limit_s):
    path = _write(tmp_path, _deep(layers))
    t = time.perf_counter()
    code = main(["estimate", path, "--gpu", "h100", "--json"])
    elapsed = time.perf_counter() - t
    r = json.loads(capsys.readouterr().out)
    assert code in (0, 2) and r["max_context_tokens"] is None or r["max_context_tokens"] > 0
    assert elapsed < limit_s, f"{layers} layers took {elapsed:.2f} s"


@pytest.mark.parametrize("model", ["llama-3.1-70b-instruct", "qwen2.5-72b-instruct"])
def test_extrapolated_replay_matches_the_full_one(model, monkeypatch):
    a = parse_llm(load_catalog().find(model).config)
    for w in (T.Workload(1, 8192, 32), T.Workload(32, 512, 32)):
        full = T._estimate_replay(a, w, (9, 0))
        ext = T.estimate_transformers(a, w, (9, 0))
        assert a.layers > T.REPLAY_ALL_LAYERS_UP_TO
        assert ext.peak_allocated_bytes == full.peak_allocated_bytes
        assert abs(ext.peak_reserved_bytes - full.peak_reserved_bytes) / full.peak_reserved_bytes < 0.002


def test_layer_period_finds_patterns():
    cat = load_catalog()
    assert T.layer_period(parse_llm(cat.find("gemma-3-27b-it").config)) == (0, 6)
    assert T.layer_period(parse_llm(cat.find("deepseek-v2-lite-chat").config)) == (1, 1)
    assert T.layer_period(parse_llm({**CASES["jamba-small"][0], "num_hidden_layers": 32})) == (0, 8)


# ---- issue 19 Deliver 4: coverage of the installed transformers' model types ----

@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="needs transformers")
def test_coverage_of_installed_model_types():
    import sys

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from gen_arch_doc import coverage

    rows = coverage()
    by = {r["model_type"]: r["coverage"] for r in rows}
    assert by["llama"] == by["gpt_neox"] == by["mamba"] == "family table"
    assert by["t5"] == by["whisper"] == by["bart"] == "encoder-decoder table (weights exact, generate() replayed)"
    assert by["qwen2_vl"].startswith("vision-language")
    assert by["persimmon"].startswith("meta device (weights exact, activations assumed")
    assert len(rows) > 300 and all(r["coverage"] for r in rows)
