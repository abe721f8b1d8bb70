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
from gpu_preflight.estimate.arch import parse_llm
from gpu_preflight.estimate.engines import vllm as V
from gpu_preflight.models import load_model_source

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30
H100_TOTAL = int(79.18 * GIB)  # cudaMemGetInfo total vLLM logs on an H100 80GB


def arch(name):
    return parse_llm(load_model_source(name, offline=True).config)


def est(name, version="0.10.2", total=H100_TOTAL, gpu="NVIDIA H100 SXM5 80GB", cc=(9, 0), **kw):
    s = V.VllmSettings(version=version, **kw)
    return V.estimate_vllm(arch(name), total, s, gpu_name=gpu, cc=cc)


# ---- the budget: requested - weights - profile peak - non-torch (gpu_worker.py determine_available_memory) ----

def test_llama_8b_budget_at_0_10_2_by_hand():
    e = est("llama-3.1-8b-instruct", gpu_memory_utilization=0.9, max_model_len=16000)
    requested = int(H100_TOTAL * 0.9)                     # gpu_worker.py init_device @ v0.10.2
    weights = 8_030_261_248 * 2                           # Llama-3.1-8B parameters (model card), bf16; vocab 128256 % 64 == 0
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
    # envs.py VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS: "0" at v0.18.0, "1" at v0.20.0
    old = est("qwen3-8b", version="0.18.0", gpu_memory_utilization=0.9)
    new = est("qwen3-8b", version="0.20.0", gpu_memory_utilization=0.9)
    assert not old.cuda_graphs_in_budget and new.cuda_graphs_in_budget
    assert old.kv_cache_bytes - new.kv_cache_bytes == int(0.5 * GIB)
    eager = est("qwen3-8b", version="0.20.0", gpu_memory_utilization=0.9, cuda_graphs=False)
    assert eager.cuda_graph_bytes == 0 and eager.kv_cache_bytes == old.kv_cache_bytes


def test_default_utilization_and_sampler_per_release():
    assert est("qwen3-8b", version="0.18.0").settings.gpu_memory_utilization == 0.9   # cache.py @ v0.18.0
    assert est("qwen3-8b", version="0.20.0").settings.gpu_memory_utilization == 0.92  # cache.py @ v0.20.0
    sort = est("qwen3-8b", version="0.16.0", gpu_memory_utilization=0.9)
    triton = est("qwen3-8b", version="0.18.0", gpu_memory_utilization=0.9)
    vocab = 151936
    assert sort.activation_bytes - triton.activation_bytes == (38 - 14) * 1024 * vocab


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
    from gpu_preflight.measure.calibration_vllm import summarize

    s = summarize(ROOT)
    train = s["budget"]["training"]
    assert train["with_available"] >= 7
    assert train["median_abs_error_pct"] <= 1.0 and train["worst_abs_error_pct"] <= 3.0
    assert train["verdicts_right"] == train["verdicts"]
    assert s["layout"]["cases"] and s["layout"]["right"] == len(s["layout"]["cases"])


def test_every_log_record_carries_its_source_and_settings():
    for line in (ROOT / "calibration" / "vllm" / "logs.jsonl").read_text().splitlines():
        r = json.loads(line)
        assert r["url"].startswith("https://") and r["model"] and "flags" in r and r["logged"]
        assert r.get("vllm") or r.get("vllm_note")


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
