"""The vLLM engine: each release's accounting on hand-computed cases, vLLM's refusal texts, the
calibration bars on the committed start-up logs, and the CLI surface.

Expected numbers are computed here from vLLM's formulas (file and tag cited), not by the code
under test. GiB = 2**30.
"""

import json
from pathlib import Path

import pytest

from gpu_preflight.cli import main
from gpu_preflight.errors import UsageError
from gpu_preflight.estimators.arch import parse_llm
from gpu_preflight.estimators.engines import vllm as V
from gpu_preflight.models import load_model_source

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30
H100_TOTAL = int(79.18 * GIB)  # cudaMemGetInfo total vLLM logs on an H100 80GB


def arch(name):
    return parse_llm(load_model_source(name, offline=True).config)


def est(name, version="0.10.2", total=H100_TOTAL, gpu="NVIDIA H100 SXM5 80GB", cc=(9, 0), config=None, **kw):
    s = V.VllmSettings(version=version, **kw)
    return V.estimate_vllm(arch(name), total, s, gpu_name=gpu, cc=cc, config=config)


# ---- the budget: requested - weights - profile peak - non-torch (gpu_worker.py determine_available_memory) ----

def test_llama_8b_budget_at_0_10_2_by_hand():
    e = est("llama-3.1-8b-instruct", gpu_memory_utilization=0.9, max_model_len=16000)
    requested = int(H100_TOTAL * 0.9)                     # gpu_worker.py init_device @ v0.10.2
    weights = 8_030_261_248 * 2                           # Llama-3.1-8B parameters (model card), bf16; vocab 128256 % 64 == 0
    weights += 131072 * 128 * 2                           # rotary cos/sin cache [max_position, head_dim] in bf16
    assert round(weights / GIB, 4) == 14.9888             # vLLM's own "Model loading took 14.9888 GiB" (llm-d log)
    sampler = 38 * 1024 * 128256 + 8192 * 4096 * 2        # sort sampler over max_num_seqs=1024 rows + hidden states
    forward = 2 * 8192 * 4096 * 2 + 8192 * 3 * 14336 * 2  # residual + hidden + gate_up (2I) + act (I)
    non_torch = int(0.13 * GIB)                           # measured (data/vllm.json)
    assert e.budget_bytes == requested
    assert e.weights_bytes == weights
    assert e.activation_bytes == max(sampler, forward) == sampler
    assert e.kv_cache_bytes == requested - weights - sampler - non_torch
    # KV: 32 layers x page 2 x 16 x 8 x 128 x 2 = 65536 B (AttentionSpec.page_size_bytes @ v0.10.2)
    blocks = e.kv_cache_bytes // 65536 // 32
    assert e.num_blocks == blocks and e.max_tokens_in_cache == blocks * 16
    assert e.max_concurrency == pytest.approx(blocks / 1000)  # cdiv(16000, 16) blocks per request


def test_0_8_5_counts_the_cuda_context_as_non_torch():
    # v0.8.5 gpu_worker.py: available = total x util - (torch peak + every non-torch byte in use), context included
    a = est("qwen3-0.6b", version="0.8.5", gpu_memory_utilization=0.9)
    b = est("qwen3-0.6b", version="0.9.2", gpu_memory_utilization=0.9)
    assert b.kv_cache_bytes - a.kv_cache_bytes == int((0.13 + 0.508) * GIB) - int(0.13 * GIB)


def test_cuda_graphs_enter_the_budget_from_0_20():
    # envs.py VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS: "0" at v0.18.0, "1" at v0.20.0 (V1 runner for Qwen3 there)
    old = est("qwen3-8b", version="0.18.0", gpu_memory_utilization=0.9)
    new = est("qwen3-8b", version="0.20.0", gpu_memory_utilization=0.9)
    assert not old.cuda_graphs_in_budget and new.cuda_graphs_in_budget
    # H100 defaults 8192 tokens / 1024 seqs: capture sizes up to min(2 x 1024, 512) = 512, [1, 2, 4] + 8..248 step 8
    # + 256..512 step 16 = 51 PIECEWISE graphs, all <= 1024 so 51 FULL graphs (config/vllm.py @ v0.20.0)
    assert new.cuda_graph_counts == (51, 51)
    first = int(0.39 * GIB)                       # measured first capture (data/vllm.json)
    assert old.kv_cache_bytes - new.kv_cache_bytes == first + (50 + 50) * (1 << 20)  # + vLLM's 1 MiB per graph
    eager = est("qwen3-8b", version="0.20.0", gpu_memory_utilization=0.9, cuda_graphs=False)
    assert eager.cuda_graph_bytes == 0 and eager.kv_cache_bytes == old.kv_cache_bytes


def test_capture_sizes_per_release():
    r = V.releases()["releases"]
    assert len(V.capture_sizes(r["0.11.0"], 1024, 8192)) == 3 + 64          # [1, 2, 4] + 8..512 step 8
    assert len(V.capture_sizes(r["0.11.2"], 1024, 8192)) == 3 + 31 + 17     # + 256..512 step 16
    assert V.capture_sizes(r["0.20.0"], 8, 8192) == [1, 2, 4, 8, 16]        # up to 2 x max_num_seqs
    s = V.VllmSettings(max_num_seqs=256, max_num_batched_tokens=2048)
    assert V.cuda_graph_counts(r["0.10.2"], s) == (67, 0)                   # PIECEWISE only before 0.11
    assert V.cuda_graph_counts(r["0.11.2"], s) == (51, 35)                  # FULL decode graphs <= 256


def _cfg(name):
    return load_model_source(name, offline=True).config


def test_model_runner_per_release():
    # config/vllm.py use_v2_model_runner / _is_default_v2_model_runner_model at each tag
    llama, qwen, moe = arch("llama-3.1-8b-instruct"), arch("qwen3-8b"), arch("qwen3-30b-a3b")
    r = V.releases()["releases"]
    assert V.model_runner(r["0.20.0"], "0.20.0", qwen, ["Qwen3ForCausalLM"], False, False) == "v1"
    assert V.model_runner(r["0.22.0"], "0.22.0", qwen, ["Qwen3ForCausalLM"], False, False) == "v2"
    assert V.model_runner(r["0.22.0"], "0.22.0", llama, ["LlamaForCausalLM"], False, False) == "v1"
    assert V.model_runner(r["0.28.0"], "0.28.0", llama, ["LlamaForCausalLM"], False, False) == "v2"
    assert V.model_runner(r["0.28.0"], "0.28.0", moe, ["Qwen3MoeForCausalLM"], False, False) == "v1"
    assert V.model_runner(r["0.28.0"], "0.28.0", llama, ["LlamaForCausalLM"], True, False) == "v1"  # hybrid
    assert V.model_runner(r["0.31.0"], "0.31.0", moe, ["Qwen3MoeForCausalLM"], False, False) == "v2"


def test_v2_runner_sampler_and_graph_estimate():
    # V2 dummy sampler: bf16 logits only (gpu/sample/sampler.py @ v0.28.0); 2048 tokens / 256 rows on an L40S-sized card
    e = est("qwen3-8b", version="0.22.0", total=44 * GIB, gpu="NVIDIA L40S", cc=(8, 9), config=_cfg("qwen3-8b"))
    assert e.runner == "v2"
    sampler = 256 * 151936 * 2 + 2048 * 4096 * 2
    forward = 2 * 2048 * 4096 * 2 + 2048 * 3 * 12288 * 2
    assert e.activation_bytes == max(sampler, forward)
    assert not e.cuda_graphs_in_budget                     # gpu/model_runner.py profile_cudagraph_memory returns 0
    e31 = est("qwen3-8b", version="0.31.0", total=44 * GIB, gpu="NVIDIA L40S", cc=(8, 9), config=_cfg("qwen3-8b"))
    assert e31.runner == "v2" and e31.cuda_graphs_in_budget  # gpu/cudagraph_utils.py profile_cudagraph_memory


def test_rotary_cache_and_mxfp4_marlin_padding():
    a = arch("gpt-oss-20b")
    assert V.rotary_cache_bytes(arch("llama-3.1-8b-instruct"), 2) == 131072 * 128 * 2
    # mxfp4.py create_weights @ v0.10.2, Marlin: I 2880 -> 2944 (x128), H 2880 -> 3072 (x256); 32 experts, 24 layers
    def one(i, h):
        return 32 * (2 * i * h // 2 + h * i // 2 + 2 * i * h // 32 + h * i // 32 + 2 * i * 2 + h * 2)
    padded, plain = V.mxfp4_expert_bytes(a, 1, "marlin")
    assert (padded, plain) == (24 * one(2944, 3072), 24 * one(2880, 2880))
    a100 = est("gpt-oss-20b", total=int(79.25 * GIB), gpu="NVIDIA A100-SXM4-80GB", cc=(8, 0))
    h100 = est("gpt-oss-20b")
    assert a100.weights_bytes - h100.weights_bytes == padded - plain   # Hopper: Triton kernels, no padding
    assert V.mxfp4_backend((8, 0)) == "marlin" and V.mxfp4_backend((9, 0)) == "triton"


def test_default_utilization_and_sampler_per_release():
    assert est("qwen3-8b", version="0.18.0").settings.gpu_memory_utilization == 0.9   # cache.py @ v0.18.0
    assert est("qwen3-8b", version="0.20.0").settings.gpu_memory_utilization == 0.92  # cache.py @ v0.20.0
    sort = est("qwen3-8b", version="0.16.0", gpu_memory_utilization=0.9)
    triton = est("qwen3-8b", version="0.18.0", gpu_memory_utilization=0.9)
    vocab = 151936
    assert sort.activation_bytes - triton.activation_bytes == (38 - 14) * 1024 * vocab


SAMPLER_H200 = ROOT / "calibration" / "vllm" / "sampler-h200.jsonl"
# the probe path that measures each constant of data/vllm.json sampler_bytes_per_logit
PROBE_PATH = {"sort": ("v1_sort", "sort_only"), "triton": ("v1_no_sort",), "v2": ("v2",)}


def _sampler_rows():
    lines = [json.loads(x) for x in SAMPLER_H200.read_text().splitlines() if x.strip()]
    return lines[0]["environment"], [x for x in lines if "path" in x]


def test_sampler_measurement_is_the_committed_h200_run():
    env, rows = _sampler_rows()
    assert env["gpu"] == "NVIDIA H200" and env["torch"].startswith("2.11") and env["driver"] == "580.159.04"
    assert len(rows) == 120 and all(r["measured"] for r in rows)
    assert {r["vocab"] for r in rows} == {32000, 128256, 151936, 201088, 262144} and {r["rows"] for r in rows} == {256, 1024}


@pytest.mark.parametrize("path", ["sort", "triton", "v2"])
def test_sampler_constants_agree_with_the_h200_measurement(path):
    """data/vllm.json's bytes per logit against calibration/vllm/sampler-h200.jsonl: the measured peak is the
    constant plus the caching allocator's rounding (a block keeps a tail of up to 1 MiB it does not split off;
    about six tensors are alive at the peak), and exactly the constant at the largest shape (1024 x 262144
    logits: to 0.01 byte per logit), for bf16 and fp16 logits alike."""
    const = V.releases()["sampler_bytes_per_logit"][path]["bytes"]
    _, rows = _sampler_rows()
    measured = [r for r in rows if r["path"] in PROBE_PATH[path]]
    assert len(measured) == 20 * len(PROBE_PATH[path])
    for r in measured:
        assert const <= r["bytes_per_logit"] <= const * 1.025, r  # 2.048 for 2-byte logits at the smallest shape
        assert r["peak_bytes"] - const * r["rows"] * r["vocab"] <= 6 << 20, r  # at most 1 MiB per live tensor
        if r["rows"] * r["vocab"] == 1024 * 262144:
            assert abs(r["bytes_per_logit"] - const) < 0.01, r
    # the record says where the constant comes from
    assert "calibration/vllm/sampler-h200.jsonl" in V.releases()["sampler_bytes_per_logit"][path]["measured"]


def test_sort_sampler_below_128_rows_uses_pytorchs_full_sort():
    # SortStable.cu: 2-127 rows -> segmented_sort_pairs_by_full_sort: int2 (index, segment) x 2 (16) + radix_sort_pairs'
    # own keys output (4) + CUB's third key / value buffers (4 + 8) + outputs (4 + 8) + bf16 logits and float32 copy
    # (2 + 4) = 50 bytes per logit; 1 row (segmented_sort_large_segments) and >= 128 rows (segmented_sort_pairs): 38
    a = arch("qwen3-8b")
    vocab = 151936  # already a multiple of 64
    assert V.sampler_peak_bytes(a, 64, "sort") == 64 * vocab * 50
    assert V.sampler_peak_bytes(a, 1, "sort") == vocab * 38 and V.sampler_peak_bytes(a, 128, "sort") == 128 * vocab * 38
    assert V.sampler_peak_bytes(a, 64, "triton") == 64 * vocab * 14
    assert "calibration/vllm/sampler-h200-b.jsonl" in V.releases()["sampler_bytes_per_logit"]["sort"][
        "measured_2_to_127_rows"]


SAMPLER_H200_B = ROOT / "calibration" / "vllm" / "sampler-h200-b.jsonl"


def test_sort_sampler_small_batches_measured_on_the_h200():
    """calibration/vllm/sampler-h200-b.jsonl (second H200 call): 1 and 64 rows x five vocabularies x bf16 / fp16.
    64 rows (PyTorch's full-sort algorithm) hold the 2-127-row constant, 1 row the other one, each plus the caching
    allocator's rounding only (as for 256 / 1024 rows above)."""
    lines = [json.loads(x) for x in SAMPLER_H200_B.read_text().splitlines() if x.strip()]
    env, rows = lines[0]["environment"], [x for x in lines if "path" in x]
    assert env["gpu"] == "NVIDIA H200" and env["torch"].startswith("2.11") and env["driver"] == "580.159.04"
    assert {r["rows"] for r in rows} >= {1, 64} and all(r["measured"] for r in rows)
    table = V.releases()["sampler_bytes_per_logit"]["sort"]
    for r in rows:
        if r["path"] not in ("v1_sort", "sort_only") or r["rows"] not in (1, 64):
            continue
        const = table["bytes_2_to_127_rows"] if r["rows"] == 64 else table["bytes"]
        assert V.sampler_bytes_per_logit(r["rows"], "sort") == const
        assert const <= r["bytes_per_logit"] <= const * 1.025, r
        assert r["peak_bytes"] - const * r["rows"] * r["vocab"] <= 6 << 20, r
    assert sum(1 for r in rows if r["path"] == "v1_sort" and r["rows"] == 64) == 10


def test_default_batch_limits_depend_on_the_gpu_and_release():
    r = V.releases()["releases"]
    assert V.default_batch_limits(r["0.10.2"], H100_TOTAL, "NVIDIA H100") == (8192, 1024)
    assert V.default_batch_limits(r["0.10.2"], 80 * GIB, "NVIDIA A100-SXM4-80GB") == (2048, 256)  # PR #17885
    assert V.default_batch_limits(r["0.8.5"], 80 * GIB, "NVIDIA A100-SXM4-80GB") == (8192, 1024)
    assert V.default_batch_limits(r["0.10.2"], 22 * GIB, "NVIDIA L4") == (2048, 256)
    assert V.default_batch_limits(r["0.28.0"], 179 * GIB, "NVIDIA B200") == (16384, 1024)
    assert V.default_batch_limits(r["0.25.0"], 179 * GIB, "NVIDIA B200") == (8192, 1024)


def test_weights_split_over_tensor_parallel_ranks():
    a = arch("llama-3.1-8b-instruct")
    norms = (2 * 32 + 1) * 4096 * 2                       # RMSNorm weights stay whole on every rank
    total = 8_030_261_248 * 2
    assert V.weights_per_rank(a, 2, 2, 1, None) == (total - norms) // 2 + norms


# ---- KV layout (kv_cache_interface.py, kv_cache_utils.py @ v0.11.0) ----

def test_sliding_window_groups_and_concurrency_for_gpt_oss():
    e = est("gpt-oss-20b", gpu_memory_utilization=0.9, max_model_len=16000)
    # 24 layers alternating sliding (128) / full: group size 12, two groups; page 2x16x8x64x2 = 32768 B
    assert e.num_blocks == e.kv_cache_bytes // 32768 // 12
    assert e.max_tokens_in_cache == e.num_blocks // 2 * 16
    full = -(-16000 // 16)                                # FullAttentionSpec: cdiv(max_model_len, block)
    sliding = -(-min(128 - 1 + 8192, 16000) // 16) + 1    # SlidingWindowSpec: cdiv(window-1+batched, block)+1
    assert e.max_concurrency == pytest.approx(e.num_blocks / (full + sliding))


def test_without_the_hybrid_allocator_sliding_layers_count_in_full():
    e = est("gpt-oss-20b", version="0.8.5", gpu_memory_utilization=0.9, max_model_len=16000)
    assert e.num_blocks == e.kv_cache_bytes // 32768 // 24 and e.max_tokens_in_cache == e.num_blocks * 16


def test_mla_caches_one_latent_per_token_in_blocks_of_64_on_hopper():
    e = est("deepseek-v2-lite-chat", gpu_memory_utilization=0.9)
    # MLAAttentionSpec: block x (kv_lora_rank 512 + rope 64) x 2 bytes; FlashMLA forces block 64 (platforms/cuda.py)
    assert e.block_size == 64
    assert e.kv_bytes_per_token == 27 * 576 * 2
    tp2 = est("deepseek-v2-lite-chat", gpu_memory_utilization=0.9, tensor_parallel=2)
    assert tp2.kv_bytes_per_token == e.kv_bytes_per_token  # the latent is not split over ranks


def test_fp8_kv_halves_the_bytes_per_token():
    assert est("qwen3-8b", kv_cache_dtype="fp8").kv_bytes_per_token * 2 == est("qwen3-8b").kv_bytes_per_token


# ---- hybrid models: Mamba / linear-attention state (mamba_utils.py, models/config.py @ v0.19.0) ----

QWEN35 = str(ROOT / "calibration" / "vllm" / "configs" / "qwen3.5-9b.json")


def test_gated_delta_net_state_block_size_and_padding_for_qwen3_5():
    cfg = load_model_source(QWEN35, offline=True).config
    st = V.hybrid_state(cfg, 1, 2)
    conv = 3 * (128 * 16 * 2 + 128 * 32) * 2          # (kernel-1) x conv_dim x bf16
    temporal = 32 * 128 * 128 * 4                      # v_heads x v_dim x k_dim x float32 (mamba_ssm_dtype)
    assert st.bytes == conv + temporal == 2_146_304
    assert st.kinds.count("mamba") == 24 and st.kinds.count("full") == 8
    a = parse_llm(cfg)
    # attention page per token 2 x 4 heads x 256 x 2 B = 4096; 16 x cdiv(2146304, 16 x 4096) = 528 (vLLM logged 528)
    assert V.hybrid_block_size(a, 2, 1, 16, st) == 528
    lay = V.kv_layout(a, 2, 1, 1, 528, True, st)
    assert lay.page_bytes == 528 * 4096                # the state padded by 0.76 %, as vLLM logged
    assert round(100 * (lay.page_bytes - st.bytes) / st.bytes, 2) == 0.76


def test_hybrid_layout_reproduces_the_l40s_log():
    # vLLM 0.19.0 logged 20.27 GiB available -> "GPU KV cache size: 165,792 tokens" and 2.52x at 262,144
    cfg = load_model_source(QWEN35, offline=True).config
    e = V.estimate_vllm(parse_llm(cfg), int(44.3 * GIB), V.VllmSettings(version="0.19.0", gpu_memory_utilization=0.9),
                        gpu_name="NVIDIA L40S", cc=(8, 9), config=cfg, non_torch=0)
    lay = V.kv_layout(parse_llm(cfg), 2, 1, 1, 528, True, V.hybrid_state(cfg, 1, 2))
    assert len(lay.groups()) == 4                      # 8 attention layers + 3 groups of 8 state layers
    # the log prints 2 decimals of GiB: any block count reachable within 20.27 +- 0.005 GiB
    counts = range(int(20.265 * GIB) // lay.page_bytes // 8, int(20.275 * GIB) // lay.page_bytes // 8 + 1)
    assert any(b // 4 * 528 == 165_792 and round(b / (-(-262144 // 528) + 3), 2) == 2.52 for b in counts)
    assert e.block_size == 528 and e.state_bytes_per_request == 24 * 528 * 4096


def test_mamba2_and_mamba1_state_formulas():
    nemotron = {"model_type": "nemotron_h", "num_hidden_layers": 4, "hybrid_override_pattern": "M*-M",
                "mamba_num_heads": 128, "mamba_head_dim": 64, "n_groups": 8, "ssm_state_size": 128, "conv_kernel": 4}
    st = V.hybrid_state(nemotron, 2, 2)
    conv = 3 * ((128 * 64 + 2 * 8 * 128) // 2) * 2    # mamba2_state_shape: (kernel-1, conv_dim/TP)
    temporal = (128 // 2) * 64 * 128 * 2
    assert st.bytes == conv + temporal and st.kinds == ["mamba", "full", "none", "mamba"]
    jamba = {"model_type": "jamba", "num_hidden_layers": 8, "hidden_size": 4096, "attn_layer_period": 8,
             "attn_layer_offset": 4, "mamba_expand": 2, "mamba_d_state": 16, "mamba_d_conv": 4}
    st = V.hybrid_state(jamba, 1, 2)
    assert st.bytes == 3 * 8192 * 2 + 8192 * 16 * 2 and st.kinds.count("full") == 1
    assert V.hybrid_state(load_model_source("qwen3-8b", offline=True).config, 1, 2) is None


# ---- multi-GPU plan (issue 12): TP within a node, PP across nodes ----

def test_parallel_plan_follows_vllms_guide_and_names_the_links():
    a = arch("llama-3.3-70b-instruct")
    p = V.plan_parallel(a, 8, 2, None, None, "h100-sxm-80gb")
    assert (p["tensor_parallel_size"], p["pipeline_parallel_size"], p["gpus_used"]) == (8, 2, 16)
    assert "NVLink" in p["tp_interconnect"] and "network" in p["pp_interconnect"]
    p = V.plan_parallel(a, 4, 1, None, None, "l40s")
    assert p["tensor_parallel_size"] == 4 and "PCIe" in p["tp_interconnect"] and p["pp_interconnect"].startswith("none")
    # Qwen2.5-7B: 28 heads, 4 KV heads: TP 8 is refused by vLLM, TP 4 is the largest that splits both
    p = V.plan_parallel(arch("qwen2.5-7b-instruct"), 8, 1, None, None, "h100-sxm-80gb")
    assert p["tensor_parallel_size"] == 4 and p["gpus_idle"] == 4
    p = V.plan_parallel(a, 8, 2, 16, 1, "h100-sxm-80gb")                 # the user's TP 16 spans two nodes
    assert "across 2 nodes" in p["tp_interconnect"]
    with pytest.raises(UsageError):
        V.plan_parallel(a, 8, 1, 8, 2, "h100-sxm-80gb")


def test_nodes_flag_plans_per_gpu_memory_and_the_largest_context(capsys):
    code, out, _ = run(capsys, "llama-3.3-70b-instruct", "--engine", "vllm", "--gpu", "h100:8", "--nodes", "2", "--json")
    v = json.loads(out)["vllm"]
    assert v["parallel"]["tensor_parallel_size"] == 8 and v["parallel"]["pipeline_parallel_size"] == 2
    assert "--pipeline-parallel-size 2" in v["serve_command"] and v["largest_max_model_len"] > 131072
    one = V.weights_per_rank(arch("llama-3.3-70b-instruct"), 2, 8, 2, None)
    assert v["weights_bytes"] == one + V.rotary_cache_bytes(arch("llama-3.3-70b-instruct"), 2)
    code, out, _ = run(capsys, "llama-3.3-70b-instruct", "--engine", "vllm", "--gpu", "h100:8", "--nodes", "2")
    assert "Parallel: TP 8 x PP 2 on 16 GPUs" in out and "network between nodes" in out


# ---- refusals (kv_cache_utils.py check_enough_kv_cache_memory) ----

def test_refusal_text_names_the_needed_and_available_memory():
    e = est("qwen3-32b", gpu_memory_utilization=0.9, max_model_len=32000)
    assert not e.starts
    needed = 64 * (32000 // 16) * (2 * 16 * 8 * 128 * 2)  # 8,388,608,000 B = 7.81 GiB
    assert e.needed_bytes == needed
    assert e.refusal.startswith("ValueError: To serve at least one request with the models's max seq len (32000), "
                                "(7.81 GiB KV cache is needed")
    assert f"the estimated maximum model length is {e.largest_max_model_len}." in e.refusal
    assert e.largest_max_model_len == e.kv_cache_bytes // (64 * 65536) * 16  # whole blocks of full attention


def test_no_memory_left_and_the_newer_wording():
    e = est("llama-3.3-70b-instruct", gpu_memory_utilization=0.9, quantization="fp8", max_model_len=16000)
    assert e.kv_cache_bytes < 0 and e.refusal == ("ValueError: No available memory for the cache blocks. Try "
                                                  "increasing `gpu_memory_utilization` when initializing the engine.")
    e2 = est("qwen3-32b", version="0.22.0", max_model_len=131072)
    assert "the model's max seq len (131072)" in e2.refusal and "conserving_memory" in e2.refusal


def test_versions_resolve_to_the_release_read_at_or_before_them():
    assert V.resolve_release(None)[0] == V.releases()["newest_modelled"] == "0.33.0"
    row, _, note = V.resolve_release("0.10.1")
    assert row == "0.10.0" and "0.10.0" in note
    assert V.resolve_release("v0.11.0")[0] == "0.11.0"
    with pytest.raises(UsageError):
        V.resolve_release("0.7.3")
    with pytest.raises(UsageError):
        V.resolve_release("0.34.0")


# ---- the calibration bars on the committed logs (docs/accuracy.md) ----

def test_calibration_bars_on_published_logs():
    from gpu_preflight.measurement.calibration_vllm import fit_first_capture, summarize

    s = summarize(ROOT)
    train, held = s["budget"]["training"], s["budget"]["held_out"]
    assert train["with_available"] >= 10 and held["with_available"] >= 3
    assert train["median_abs_error_pct"] <= 1.0 and train["worst_abs_error_pct"] <= 3.0
    # the bar on held-out logs: 1.5 % median, 4 % worst of the budget, every verdict right
    assert held["median_abs_error_pct"] <= 1.5 and held["worst_abs_error_pct"] <= 4.0
    assert train["verdicts_right"] == train["verdicts"] and held["verdicts_right"] == held["verdicts"]
    assert s["layout"]["cases"] and s["layout"]["right"] == len(s["layout"]["cases"])
    # the CUDA-graph constant in data/vllm.json is the one the training records give
    assert abs(fit_first_capture(ROOT)["median_gib"] - V.releases()["measured"]["cuda_graph_first_capture_gib"]["value"]) < 0.005


def test_every_log_record_carries_its_source_and_settings():
    for line in (ROOT / "calibration" / "vllm" / "logs.jsonl").read_text().splitlines():
        r = json.loads(line)
        assert (r.get("url") or "").startswith("https://") or r.get("index_id"), r["id"]
        assert r["split"] in ("training", "held_out") and r["check"] in ("budget", "layout", "cuda_graph")
        assert "flags" in r and r["logged"] and (r.get("vllm") or r.get("vllm_note"))
        assert r["check"] == "cuda_graph" or r.get("model") or r.get("config")


# ---- CLI ----

def run(capsys, *argv):
    code = main(["estimate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_keys_tp_from_gpu_count_and_uncapped_tokens(capsys):
    code, out, _ = run(capsys, "qwen2.5-0.5b-instruct", "--engine", "vllm", "--gpu", "h100:2", "--json")
    r = json.loads(out)
    v = r["vllm"]
    for k in ("available_kv_cache_bytes", "kv_cache_tokens", "max_concurrency", "weights_bytes", "activation_bytes",
              "non_torch_bytes", "cuda_graph_bytes", "starts", "refusal", "serve_command"):
        assert k in v
    assert v["tensor_parallel_size"] == 2 and "--tensor-parallel-size 2" in v["serve_command"]
    assert r["kv_cache_tokens"] == v["kv_cache_tokens"] > 32768  # not capped at max_position_embeddings
    assert v["max_model_len"] == 32768 and code == 0


def test_text_output_says_whether_it_starts_and_what_to_run(capsys):
    code, out, _ = run(capsys, "qwen3-32b", "--engine", "vllm", "--gpu", "h100-sxm-80gb", "--vllm", "0.10.2",
                       "--max-model-len", "32000")
    assert code == 2
    assert "does not start" in out and "7.81 GiB KV" in out
    assert "Command: vllm serve Qwen/Qwen3-32B --max-model-len 32000 --kv-cache-dtype fp8" in out
    code, out, _ = run(capsys, "qwen3-8b", "--engine", "vllm", "--gpu", "h100-sxm-80gb", "--max-model-len", "8192")
    assert code == 0 and "starts on" in out and "headroom = spare KV cache" in out


def test_bad_version_and_bad_parallel_layout_are_usage_errors(capsys):
    code, _, err = run(capsys, "qwen3-8b", "--engine", "vllm", "--gpu", "h100", "--vllm", "0.99")
    assert code == 3 and "newer than the newest modelled release" in err
    code, _, err = run(capsys, "qwen3-8b", "--engine", "vllm", "--gpu", "h100", "--tensor-parallel-size", "4")
    assert code == 3 and "needs 4 GPUs" in err


def test_sampler_probe_dry_run_replays_vllms_sampler_steps(capsys):
    pytest.importorskip("torch")
    import importlib.util

    spec = importlib.util.spec_from_file_location("probe", ROOT / "bench" / "vllm_sampler_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    assert probe.main(["--dry-run"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    cases = {(c["path"], c["rows"], c["vocab"]): c for c in lines if "path" in c}
    sort = cases[("v1_sort", 4, 64)]
    # tensors alive at the sort: bf16 logits 2 + float32 copy 4 + sorted values 4 + int64 indices 8 = 18 B per logit
    assert sort["steps"]["sort"] == 18.0 and cases[("v2", 4, 64)]["bytes_per_logit"] == 2.0
    assert not sort["measured"] and "summary" in lines[-1]
