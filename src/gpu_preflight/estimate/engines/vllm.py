"""vLLM's own memory budget, as its engine computes it at start-up (V1 engine, vllm >= 0.8).

vLLM does not allocate on demand: it profiles one forward of `max_num_batched_tokens` tokens,
then hands everything left under `gpu_memory_utilization x total GPU memory` to the KV cache
in blocks. So the process always takes about that budget, and the question is rather how much
KV cache is left and which `max_model_len` fits. Not yet checked against measurements (vLLM is
not installed on the calibration machine); docs/accuracy.md says so.
Sources: https://docs.vllm.ai/en/latest/configuration/optimization.html,
https://docs.vllm.ai/en/latest/configuration/conserving_memory.html
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpu_preflight.estimate.arch import DTYPE_BYTES, LlmArch
from gpu_preflight.estimate.weights import Tensor, weight_tensors

FP32 = 4
BLOCK_TOKENS = 16  # default --block-size


@dataclass
class VllmSettings:
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    tensor_parallel: int = 1
    kv_cache_dtype: str | None = None  # None = model dtype; "fp8" halves it
    cuda_graphs: bool = True


@dataclass
class VllmEstimate:
    budget_bytes: int
    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    kv_cache_bytes: int
    kv_bytes_per_token: int
    max_tokens_in_cache: int
    assumptions: list[str] = field(default_factory=list)


def kv_bytes_per_token_vllm(arch: LlmArch, kv_dt: int, tp: int) -> int:
    """Per token, all layers, one GPU. MLA caches the compressed latent + rope key (one copy)."""
    if arch.mla:
        return arch.layers * (arch.kv_lora_rank + arch.qk_rope_dim) * kv_dt
    heads = max(arch.kv_heads // tp, 1)  # KV heads are split across tensor-parallel ranks (replicated if fewer)
    per_layer = 2 * heads * arch.head_dim * kv_dt
    # sliding-window layers keep only the window (hybrid allocator); counted as full here: conservative
    return arch.layers * per_layer


def profile_activation_bytes(arch: LlmArch, s: VllmSettings, dt: int) -> int:
    """The profiling forward: max_num_batched_tokens through one layer at a time plus the sampler
    over max_num_seqs rows (logits in fp32, and a softmax copy)."""
    t = s.max_num_batched_tokens
    inter = (arch.moe_intermediate * arch.experts_per_token) if arch.is_moe else arch.intermediate
    inter //= s.tensor_parallel
    mlp = t * inter * 3 * dt  # gate_up output (2I) + activation (I)
    qkv = t * (arch.heads + 2 * arch.kv_heads) * arch.head_dim * dt // s.tensor_parallel
    residual = 3 * t * arch.hidden * dt
    sampler = s.max_num_seqs * arch.vocab * FP32 * 2
    return max(mlp, qkv) + residual + sampler


def estimate_vllm(arch: LlmArch, total_bytes: int, s: VllmSettings, dtype: str = "bfloat16",
                  tensors: list[Tensor] | None = None, non_torch_bytes: int = 0) -> VllmEstimate:
    dt = DTYPE_BYTES.get(dtype, 2)
    kv_dt = 1 if (s.kv_cache_dtype or "").startswith("fp8") else dt
    tensors = tensors or weight_tensors(arch, dt)
    weights = sum(t.bytes for t in tensors) // s.tensor_parallel
    budget = int(total_bytes * s.gpu_memory_utilization)
    act = profile_activation_bytes(arch, s, dt)
    graphs = int(0.5 * (1 << 30)) if s.cuda_graphs else 0
    kv = budget - weights - act - non_torch_bytes - graphs
    per_tok = kv_bytes_per_token_vllm(arch, kv_dt, s.tensor_parallel)
    tokens = max(kv, 0) // per_tok // BLOCK_TOKENS * BLOCK_TOKENS if per_tok else 0
    assumptions = [
        f"vLLM budget = gpu_memory_utilization {s.gpu_memory_utilization} x GPU memory; the process takes "
        f"about that much whatever the model",
        f"profiling forward of max_num_batched_tokens={s.max_num_batched_tokens}, max_num_seqs={s.max_num_seqs}",
        "CUDA graphs counted as 0.5 GiB (vLLM logs the real size at start-up: 'Graph capturing finished')"
        if s.cuda_graphs else "CUDA graphs off (--enforce-eager)",
        "vLLM estimates are not yet checked against measurements",
    ]
    return VllmEstimate(budget, weights, act, non_torch_bytes, graphs, max(kv, 0), per_tok, tokens, assumptions)


# ---- the engine's flags and entry point (commands/estimate.py builds its parser from these) ----

from gpu_preflight.estimate.engines.base import Engine, Option, bounded_float, positive_int  # noqa: E402
from gpu_preflight.estimate.engines.transformers import LLM_WORKLOAD_OPTIONS  # noqa: E402

OPTIONS = LLM_WORKLOAD_OPTIONS + (
    Option("--kv-cache-dtype", "kv_cache_dtype", "KV cache type: auto (the model's dtype) or fp8 (half the bytes)",
           default="auto", choices=("auto", "fp8")),
    Option("--gpu-memory-utilization", "gpu_memory_utilization", "share of each GPU vLLM may take (default 0.9)",
           type=bounded_float(0.05, 1.0), default=0.9),
    Option("--max-num-batched-tokens", "max_num_batched_tokens", "tokens per scheduler step (default 8192)",
           type=positive_int, default=8192),
    Option("--max-num-seqs", "max_num_seqs", "concurrent sequences (default 256)", type=positive_int, default=256),
)


def run_engine(source, o: dict, targets: list, common: dict) -> dict:
    from gpu_preflight.estimate.engines.transformers import Workload
    from gpu_preflight.estimate.plan import estimate_llm, parse_dtype

    fp8 = o["kv_cache_dtype"] == "fp8"
    w = Workload(batch=o["batch"], input_len=o["input_len"], output_len=o["output_len"],
                 dtype=parse_dtype(o["dtype"]), attn="sdpa", kv_dtype="float8_e4m3fn" if fp8 else None)
    settings = VllmSettings(gpu_memory_utilization=o["gpu_memory_utilization"],
                            max_num_batched_tokens=o["max_num_batched_tokens"], max_num_seqs=o["max_num_seqs"],
                            kv_cache_dtype="fp8" if fp8 else None)
    return estimate_llm(source.config, tensors=source.tensors, workload=w, targets=targets, engine="vllm",
                        torch_version=common.get("torch"), vllm=settings, model_name=source.name,
                        gguf=source.origin == "gguf")


ENGINES = (Engine("vllm", ("llm", "gguf"), "vLLM serving: its start-up memory budget and KV-cache capacity",
                  OPTIONS, run_engine),)
