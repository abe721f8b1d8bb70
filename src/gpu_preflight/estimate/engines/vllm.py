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
