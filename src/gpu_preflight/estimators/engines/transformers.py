"""Peak GPU memory of LLM inference, by replaying the tensors the implementation allocates.

transformers engine (generate with its dynamic KV cache): the weights are allocated tensor by
tensor, then one prefill forward and a few decode steps are replayed as a sequence of
allocations and frees through a model of PyTorch's caching allocator (allocator.py). That gives
`peak_allocated_bytes` (torch.cuda.max_memory_allocated) and the reserved peak; the process peak
adds the CUDA context and library overhead measured per GPU architecture and torch release
(overheads.py). Every tensor below is named after the line of transformers code that creates it.
docs/accuracy.md compares the result with measurements.

vllm engine: the memory budget vLLM itself computes (gpu_memory_utilization x total), the
weights, its profiled activation peak for max_num_batched_tokens, CUDA graphs, and the KV
blocks that fill the rest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.estimators.allocator import Allocator
from gpu_preflight.estimators.arch import DTYPE_BYTES, LlmArch
from gpu_preflight.estimators.engines import transformers_quant as tq
from gpu_preflight.estimators.engines.transformers_quant import LINEAR_OUTPUTS
from gpu_preflight.estimators.weights import ON_THE_FLY_METHODS, Tensor, quant_method, weight_tensors

GIB = 1 << 30
FP32 = 4
EAGER_ONLY = ("gptj", "bloom")
# GPT2Block / GPTBigCodeBlock: `hidden_states = attn_output + residual` keeps attn_output through the MLP
KEEPS_ATTN_OUTPUT = ("gpt2", "gpt_bigcode")
# FalconModel builds its causal mask as a b x L x L boolean tensor for SDPA too (masking_utils, prefill)
SDPA_BOOL_MASK = ("falcon",)  # no _supports_sdpa in transformers 5.17: from_config falls back to eager
# replay names left out of activation_requested_peak_bytes ("in:": generate()'s inputs, made before a trace starts)
INVISIBLE_TO_TRACE = ("w:", "cublas.", "k:", "in:")
LOGITS_FLOAT = ("mamba", "mamba2", "falcon_mamba")  # their *ForCausalLM returns lm_head(...).float()


@dataclass
class Workload:
    batch: int = 1
    input_len: int = 512
    output_len: int = 128
    dtype: str = "bfloat16"
    attn: str = "sdpa"  # sdpa | eager | flash_attention_2
    kv_dtype: str | None = None
    bnb_compute_dtype: str | None = None  # bnb_4bit_compute_dtype (None: BitsAndBytesConfig's float32)
    mxfp4_kernels: bool = False           # MXFP4 kept quantized (kernels package + triton >= 3.4)


@dataclass
class LlmEstimate:
    weights_bytes: int
    kv_cache_bytes: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    phase_peaks: dict[str, dict[str, int]]
    breakdown: dict[str, int]
    assumptions: list[str] = field(default_factory=list)
    # the largest sum of requested activation bytes (KV cache included; no allocator rounding, no weights or
    # workspace): what an allocation trace of the forward on the CPU sees (bench/trace_allocations.py)
    activation_requested_peak_bytes: int = 0


class _Replay:
    """Named allocations replayed through the allocator model; records the phase peaks."""

    def __init__(self) -> None:
        self.al = Allocator()
        self.live: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        # activation bytes live: names other than weights ("w:"), the workspace ("cublas.") and scratch memory an
        # ATen kernel allocates and frees inside one op ("k:", e.g. softmax(dtype=float32)'s converted input), which
        # the caching allocator serves but an allocation trace of the op's outputs cannot see
        self.requested = 0
        self.peak_requested = 0
        self.qf = None  # transformers_quant.QuantForward: buffers of quantized linears

    def a(self, name: str, nbytes: int) -> None:
        if nbytes <= 0:
            return
        if self.qf is not None and name in LINEAR_OUTPUTS:
            self.qf.linear(self, name, nbytes)
            return
        self._alloc(name, nbytes)

    def _alloc(self, name: str, nbytes: int) -> None:
        if nbytes <= 0:
            return
        if name in self.live:
            self.f(name)
        self.live[name] = self.al.malloc(int(nbytes))
        self.sizes[name] = int(nbytes)
        if not name.startswith(INVISIBLE_TO_TRACE):
            self.requested += int(nbytes)
            self.peak_requested = max(self.peak_requested, self.requested)

    def f(self, *names: str) -> None:
        for n in names:
            h = self.live.pop(n, None)
            if h is not None:
                self.al.free(h)
                nbytes = self.sizes.pop(n, 0)
                if not n.startswith(INVISIBLE_TO_TRACE):
                    self.requested -= nbytes

    def rename(self, old: str, new: str) -> None:
        if old in self.live:
            if new in self.live:
                self.f(new)
            self.live[new] = self.live.pop(old)
            self.sizes[new] = self.sizes.pop(old)

    def reset_peaks(self) -> None:
        self.al.peak_allocated = self.al.allocated
        self.al.peak_reserved = self.al.reserved


def cublas_workspace_bytes(cc: tuple[int, int] | None) -> int:
    """PyTorch's default cuBLAS workspace (CUBLAS_WORKSPACE_CONFIG unset): 4096 KiB x 8 on Hopper
    and newer, 4096 KiB x 2 + 16 KiB x 8 before (aten/src/ATen/cuda/CublasHandlePool.cpp).
    Measured on H100 + torch 2.11: +33,554,432 allocated bytes after the first matmul."""
    if cc is None or cc >= (9, 0):
        return 4096 * 1024 * 8
    return 4096 * 1024 * 2 + 16 * 1024 * 8


def kv_bytes_per_token(arch: LlmArch, kv_dt: int) -> list[int]:
    """Bytes one token adds to each layer's cache in transformers (K and V per layer)."""
    if arch.mla:  # transformers' DeepSeek-V2/V3 cache the decompressed per-head keys and values
        return [arch.heads * (arch.qk_head_dim + arch.v_head_dim) * kv_dt] * arch.layers
    return [2 * (arch.cache_heads or arch.kv_heads) * arch.head_dim * kv_dt] * arch.layers


def _norm(r: _Replay, name: str, rows: int, width: int, dt: int, kind: str = "rms") -> None:
    """RMSNorm: x.float(); pow(2).mean(); x * rsqrt(var + eps); weight * x.to(dtype).
    nn.LayerNorm (kind "ln"): one fused kernel, its output (mean / rstd are rows x fp32, freed)."""
    if kind == "ln":
        r.a(name, rows * width * dt)
        return
    if rows * width * FP32 <= (1 << 20):  # decode-sized: small-pool blocks, only the output matters
        r.a(name, rows * width * dt)
        return
    r.a(name + ".x32", rows * width * FP32)
    r.a(name + ".pow", rows * width * FP32)
    r.a(name + ".var", rows * FP32)
    r.f(name + ".pow")
    r.a(name + ".rsqrt", rows * FP32)
    r.a(name + ".n32", rows * width * FP32)
    r.f(name + ".rsqrt", name + ".var", name + ".x32")
    r.a(name + ".cast", rows * width * dt)
    r.a(name, rows * width * dt)
    r.f(name + ".cast", name + ".n32")


def _rope(r: _Replay, name: str, size: int) -> None:
    """apply_rotary_pos_emb: (x * cos) + (rotate_half(x) * sin) -> x_embed; x is then dropped."""
    if size <= (1 << 20):  # decode-sized
        return
    r.a(name + ".cos", size)
    r.a(name + ".neg", size // 2)
    r.a(name + ".rot", size)
    r.f(name + ".neg")
    r.a(name + ".sin", size)
    r.f(name + ".rot")
    r.a(name + ".emb", size)
    r.f(name + ".cos", name + ".sin", name)
    r.rename(name + ".emb", name)


def _sdpa_math(r: _Replay, arch: LlmArch, w: Workload, rows: int, new: int, kv_len: int, dt: int) -> None:
    """torch.nn.functional.scaled_dot_product_attention on its math backend, taken when K / V have fewer
    heads than Q and enable_gqa is not set (every fused CUDA kernel requires equal head counts then:
    sdp_utils_cpp.h check_batch_size_and_num_heads_dense). Falcon's multi-query layout calls it that
    way (modeling_falcon.py:350 and 380, transformers 5.17) with the boolean causal mask it always
    builds (line 769, allow_is_causal_skip=False). aten/src/ATen/native/transformers/attention.cpp
    (torch 2.11): scaled_dot_product_attention converts the mask to an additive one in the query dtype;
    _scaled_dot_product_attention_math keeps q, k, v in float32 (allowFP16BF16ReductionMathSDP is off
    by default), scales q and k, matmul -> float32 scores (b x heads x L x S), adds the mask in place,
    and _safe_softmax writes softmax(scores) while its input lives, with a boolean isneginf(scores)
    beside it (9 bytes per score at the peak); then attn.to(bf16) and matmul(attn, v).to(bf16).
    Measured on the H200 (torch 2.11): 9.04 bytes per score from Falcon-7B's two workloads
    (calibration/raw/arch-h200.jsonl). Leaves "attn" (b x heads x L x head_dim)."""
    b, nh, kvh, hd = w.batch, arch.heads, arch.kv_heads, arch.head_dim
    scores = b * nh * new * kv_len
    r.a("m.add", b * new * kv_len * dt)  # convert_boolean_attn_mask: where(mask, 0, -inf)
    r.a("q32", rows * nh * hd * FP32)  # query_.to(kFloat) (key and value likewise)
    r.a("k32", b * kv_len * kvh * hd * FP32)
    r.a("v32", b * kv_len * kvh * hd * FP32)
    r.a("q.s", rows * nh * hd * FP32)  # query_acc * sqrt(scale)
    r.a("k.s", b * kv_len * kvh * hd * FP32)  # key.transpose(-2, -1) * sqrt(scale)
    if b > 1 and new > 1:
        # at::matmul reshapes both operands to (b * heads) batches: the query (its layout follows the
        # transposed projection output) and the key broadcast over the heads become copies
        r.a("q.c", rows * nh * hd * FP32)
        r.a("k.c", b * nh * kv_len * hd * FP32)
    r.a("s32", scores * FP32)
    r.f("q.c", "k.c", "k.s")
    r.a("sm", scores * FP32)  # _safe_softmax: softmax(attn) ...
    r.a("sm.inf", scores)  # ... isneginf(attn) (bool), all() over the rows, where_out into the softmax output
    r.a("sm.rows", b * nh * new)
    r.f("sm.inf", "sm.rows", "s32")
    r.a("probs", scores * dt)  # the second return value, attn.to(origin dtype), discarded by the caller
    if b > 1 and new > 1:
        r.a("v.c", b * nh * kv_len * hd * FP32)  # value broadcast over the heads, reshaped: a copy
    r.a("attn32", rows * nh * hd * FP32)
    r.f("v.c")
    r.a("attn", rows * nh * hd * dt)
    r.f("attn32", "sm", "q.s", "q32", "k32", "v32", "probs", "m.add")


def _attention(r: _Replay, arch: LlmArch, w: Workload, i: int, rows: int, new: int, past: int,
               dt: int, kv_dt: int, masked: bool) -> None:
    b, nh, hd = w.batch, arch.heads, arch.head_dim
    total = past + new
    window = arch.sliding_window if arch.layer_kinds[i] == "sliding" else None
    kept = min(total, window) if window and new == 1 else total
    if arch.mla:
        qk, vd = arch.qk_head_dim, arch.v_head_dim
        r.a("q", rows * nh * qk * dt)
        r.a("ckv", rows * (arch.kv_lora_rank + arch.qk_rope_dim) * dt)
        r.a("kvb", rows * nh * (arch.qk_nope_dim + vd) * dt)
        r.a("k", rows * nh * qk * dt)
        r.a("v", rows * nh * vd * dt)
        r.f("ckv", "kvb")
        _rope(r, "q", rows * nh * qk * dt)
        k_tok, v_tok = nh * qk * kv_dt, nh * vd * kv_dt
    elif arch.family == "falcon" and arch.cache_heads:
        _attention_falcon_new(r, arch, w, i, rows, new, past, dt, kv_dt, masked)
        return
    elif arch.family == "gptj":
        _attention_gptj(r, arch, w, i, rows, new, past, dt, kv_dt, masked)
        return
    elif arch.fused_qkv or arch.rotary_dim or arch.pos != "rope":
        _attention_projections(r, arch, rows, dt)
        k_tok = v_tok = arch.kv_heads * hd * kv_dt
    else:
        r.a("q", rows * nh * hd * dt)
        r.a("k", rows * arch.kv_heads * hd * dt)
        r.a("v", rows * arch.kv_heads * hd * dt)
        if arch.qk_norm:
            _norm(r, "qn", rows * nh, hd, dt)
            r.f("q")
            r.rename("qn", "q")
            _norm(r, "kn", rows * arch.kv_heads, hd, dt)
            r.f("k")
            r.rename("kn", "k")
        _rope(r, "q", rows * nh * hd * dt)
        _rope(r, "k", rows * arch.kv_heads * hd * dt)
        k_tok = v_tok = arch.kv_heads * hd * kv_dt
    # DynamicLayer.update: torch.cat([cache, new]) -> a new tensor; the old one is released
    r.a(f"K{i}.new", b * kept * k_tok)
    r.f(f"K{i}")
    r.rename(f"K{i}.new", f"K{i}")
    r.a(f"V{i}.new", b * kept * v_tok)
    r.f(f"V{i}", "k", "v")
    r.rename(f"V{i}.new", f"V{i}")
    kv_len = total
    if w.attn == "eager" and arch.family == "gptj":
        # GPTJAttention._attn: query / key upcast to float32, scores in float32, / scale_attn, + mask,
        # softmax, .to(value.dtype)
        scores = b * nh * new * kv_len
        r.a("q32", rows * nh * hd * FP32)
        r.a("k32", b * kv_len * nh * hd * FP32)
        r.a("scores", scores * FP32)
        r.a("scaled", scores * FP32)
        r.f("scores")
        if masked:
            r.a("masked", scores * FP32)
            r.f("scaled")
            r.rename("masked", "scaled")
        r.a("sm.out", scores * FP32)
        r.f("scaled", "q32", "k32")
        r.a("probs", scores * dt)
        r.f("sm.out")
        r.a("attn", rows * nh * hd * dt)
        r.f("probs")
    elif w.attn == "eager":
        scores = b * nh * new * kv_len
        if 1 < arch.kv_heads < nh and not arch.mla:  # repeat_kv of a single KV head is a view (stride 0)
            r.a("krep", b * nh * kv_len * hd * dt)
            r.a("vrep", b * nh * kv_len * hd * dt)
        r.a("scores", scores * dt)
        r.a("scaled", scores * dt)
        r.f("scores")
        if masked:
            r.a("masked", scores * dt)
            r.f("scaled")
            r.rename("masked", "scaled")
        r.a("k:sm.in32", scores * FP32)  # softmax(dtype=float32) converts its input first (inside the kernel)
        r.a("sm.out", scores * FP32)
        r.f("k:sm.in32")
        r.a("probs", scores * dt)  # .to(query.dtype); the old attn_weights dies after the assignment
        r.f("sm.out", "scaled")
        r.a("attn", rows * nh * (arch.v_head_dim if arch.mla else hd) * dt)
        r.f("probs", "krep", "vrep")
    elif arch.sdpa_kv_broadcast:
        _sdpa_math(r, arch, w, rows, new, kv_len, dt)
    else:
        # SDPA gets enable_gqa only without a mask; with one, repeat_kv materializes K and V
        if masked and 1 < arch.kv_heads < nh and not arch.mla:  # (one KV head: repeat_kv is a view)
            r.a("krep", b * nh * kv_len * hd * dt)
            r.a("vrep", b * nh * kv_len * hd * dt)
        r.a("attn", rows * nh * (arch.v_head_dim if arch.mla else hd) * dt)
        r.a("lse", b * nh * new * FP32)
        r.f("lse", "krep", "vrep")
    r.f("q", "qkv")
    r.a("attn.t", rows * nh * (arch.v_head_dim if arch.mla else hd) * dt)  # transpose().contiguous()
    r.f("attn")
    r.a("o", rows * arch.hidden * dt)
    r.f("attn.t")


def _rope_kept(r: _Replay, name: str, size: int) -> None:
    """apply_rotary_pos_emb whose input stays referenced by the caller: (x * cos) + (rotate_half(x) * sin)
    leaves `name + ".e"` allocated beside `name` (rotate_half: -x2 then torch.cat; GPT-J's
    rotate_every_two: -x2 then torch.stack, the same sizes)."""
    if size <= (1 << 20):
        r.a(name + ".e", size)
        return
    r.a(name + ".m1", size)
    r.a(name + ".neg", size // 2)
    r.a(name + ".cat", size)
    r.f(name + ".neg")
    r.a(name + ".m2", size)
    r.f(name + ".cat")
    r.a(name + ".e", size)
    r.f(name + ".m1", name + ".m2")


def _cache_update(r: _Replay, i: int, b: int, kept: int, tok_bytes: int) -> None:
    """DynamicLayer.update: torch.cat([cache, new]) -> a new tensor per K and V; the old ones go."""
    for kv in ("K", "V"):
        r.a(f"{kv}{i}.new", b * kept * tok_bytes)
        r.f(f"{kv}{i}")
        r.rename(f"{kv}{i}.new", f"{kv}{i}")


def _attention_falcon_new(r: _Replay, arch: LlmArch, w: Workload, i: int, rows: int, new: int, past: int,
                          dt: int, kv_dt: int, masked: bool) -> None:
    """FalconAttention under new_decoder_architecture (modeling_falcon.py, transformers 5.17): the fused
    query_key_value output is viewed per KV group; key / value are indexed out ([-2], [-1]: copies),
    broadcast to every head and flattened (copies of all heads, as is the query); RoPE makes q_embed and
    k_embed; the cache stores all heads (num_kv_heads = num_heads); the fused output and q_embed live
    until the dense projection. Leaves "o"."""
    b, nh, kvh, hd = w.batch, arch.heads, arch.kv_heads, arch.head_dim
    total = past + new
    r.a("qkv", rows * (nh + 2 * kvh) * hd * dt)
    r.a("k.idx", rows * kvh * hd * dt)
    r.a("v.idx", rows * kvh * hd * dt)
    for name in ("q", "k", "v"):
        r.a(name, rows * nh * hd * dt)
    r.f("k.idx", "v.idx")
    if arch.pos == "rope":
        _rope_kept(r, "q", rows * nh * hd * dt)
        _rope_kept(r, "k", rows * nh * hd * dt)
        r.f("q", "k")
        r.rename("q.e", "q")
        r.rename("k.e", "k")
    _cache_update(r, i, b, total, nh * hd * kv_dt)
    r.f("k", "v")
    scores = b * nh * new * total
    if w.attn == "eager":  # attention_scores = q @ k.T; /= sqrt(d) in place; softmax(scores + mask, dtype)
        r.a("scores", scores * dt)
        r.a("scaled", scores * dt)
        r.a("probs", scores * dt)
        r.f("scaled")
        r.a("attn", rows * nh * hd * dt)
        r.f("probs", "scores")
    else:
        r.a("attn", rows * nh * hd * dt)
        r.a("lse", b * nh * new * FP32)
        r.f("lse")
    r.a("o", rows * arch.hidden * dt)  # permute + reshape of the SDPA output is a view
    r.f("attn", "qkv", "q")


def _attention_gptj(r: _Replay, arch: LlmArch, w: Workload, i: int, rows: int, new: int, past: int,
                    dt: int, kv_dt: int, masked: bool) -> None:
    """GPTJAttention (modeling_gptj.py, transformers 5.17; eager only): q / k / v projections live until the
    layer returns; sincos gathered from embed_positions repeated per sequence (b x n_positions x
    rotary_dim float32) with int64 index tensors; RoPE on the first rotary_dim dims then torch.cat with
    the pass-through part (also when rotary_dim == head_dim); query and key upcast to float32, scores
    in float32, / scale_attn, + mask, softmax, .to(bf16). The bf16 probabilities are returned up to
    GPTJModel's loop (`outputs = block(...)`), which keeps them until the next layer returns. Leaves "o"."""
    b, nh, hd, h = w.batch, arch.heads, arch.head_dim, arch.hidden
    rd = arch.rotary_dim or hd
    total = past + new
    r.a("q", rows * h * dt)
    r.a("k", rows * h * dt)
    r.a("v", rows * h * dt)
    r.a("pos.rep", b * (arch.max_positions or 2048) * rd * FP32)
    r.a("pos.idx", rows * rd * 8)
    r.a("sincos32", rows * rd * FP32)
    r.a("sincos", rows * rd * dt)
    r.f("sincos32")
    _rope_kept(r, "krot", rows * nh * rd * dt)
    _rope_kept(r, "qrot", rows * nh * rd * dt)
    r.a("k.cat", rows * h * dt)
    r.a("q.cat", rows * h * dt)
    _cache_update(r, i, b, total, h * kv_dt)
    r.f("k.cat", "v")
    scores = b * nh * new * total
    r.a("q32", rows * h * FP32)
    r.a("k32", b * total * h * FP32)
    r.a("scores", scores * FP32)
    r.a("scaled", scores * FP32)
    r.f("scores")
    if masked:
        r.a("masked", scores * FP32)
        r.f("scaled")
        r.rename("masked", "scaled")
    r.a("sm.out", scores * FP32)
    r.f("scaled")
    r.a(f"probs{i}", scores * dt)
    r.f("sm.out")
    r.a("attn", rows * h * dt)
    r.f("q32", "k32")
    r.a("attn.t", rows * h * dt)  # _merge_heads: permute().contiguous()
    r.f("attn")
    r.a("o", rows * h * dt)
    r.f("attn.t", "q.cat", "pos.rep", "pos.idx", "sincos", "krot.e", "qrot.e", "k", "q")


# ---- BLOOM and Falcon-RW (ALiBi) -------------------------------------------------------------------------------

def _alibi_tensors(r: _Replay, arch: LlmArch, w: Workload, new: int, past: int, dt: int) -> None:
    """build_alibi_tensor (modeling_bloom.py L57-89 / modeling_falcon.py L160-188, transformers 5.17): slopes x
    positions, b x heads x (past + new), kept as "alibi" for the whole forward. BLOOM computes it in float32 and
    casts (.to(dtype)); Falcon multiplies bfloat16 slopes (a cast only when the model is not bf16)."""
    size = w.batch * arch.heads * (past + new)
    if arch.family == "bloom" or dt != 2:
        r.a("alibi.tmp", size * (FP32 if arch.family == "bloom" else 2))
        r.a("alibi", size * dt)
        r.f("alibi.tmp")
    else:
        r.a("alibi", size * dt)


def _falcon_alibi_mask(r: _Replay, arch: LlmArch, w: Workload, new: int, past: int, dt: int) -> None:
    """FalconModel.forward with alibi (modeling_falcon.py L768-788): create_causal_mask(allow_is_causal_skip=False)
    materializes the b x 1 x new x kv mask (bool for SDPA, `dt` for eager); a bool one becomes 0 / min via
    torch.where; then torch.masked_fill(alibi / sqrt(head_dim), causal_mask < -1, min) broadcasts to
    b x heads x new x kv: that "mask" is what every layer's attention gets, kept for the whole forward."""
    b, kv = w.batch, past + new
    plane = b * new * kv
    sdpa = w.attn != "eager"
    r.a("mask.src", plane * (1 if sdpa else dt))
    if sdpa:
        r.a("mask.where", plane * dt)
        r.f("mask.src")
        r.rename("mask.where", "mask.src")
    r.a("alibi.div", b * arch.heads * kv * dt)
    r.a("mask.lt", plane)
    r.a("mask.alibi", b * arch.heads * new * kv * dt)
    r.f("alibi.div", "mask.lt", "mask.src")


def _bloom_layer(r: _Replay, arch: LlmArch, w: Workload, i: int, rows: int, new: int, past: int, dt: int,
                 kv_dt: int) -> None:
    """BloomBlock + BloomAttention (modeling_bloom.py, transformers 5.17; eager only). L372 input_layernorm; L257
    fused query_key_value; cache update (torch.cat); L265 query_layer.reshape copies the transposed view (batch
    > 1, prompt); L270
    alibi.baddbmm -> scores (query dtype); L280 + attention_mask (a second score-sized tensor; both live until
    the attention returns); L283 softmax(dtype=float32) (its converted input is kernel scratch) .to(dtype): the
    probabilities are returned with the output and kept by BloomModel's loop (`outputs`) until the next block
    returns; L292 bmm, L243 _merge_heads reshape, L307 dense, L107 dropout_add (residual + out). L391
    post_attention_layernorm; BloomMLP (dense_h_to_4h, bloom_gelu written out, dense_4h_to_h, dropout_add).
    Leaves "h2"."""
    b, nh, hd, h = w.batch, arch.heads, arch.head_dim, arch.hidden
    total = past + new
    _norm(r, "x", rows, h, dt, "ln")
    r.a("qkv", rows * 3 * h * dt)
    _cache_update(r, i, b, total, nh * hd * kv_dt)
    if b > 1 and new > 1:  # batch and heads of the transposed view merge without a copy only if one of them is 1
        r.a("q", rows * h * dt)
    scores = b * nh * new * total
    r.a("scores", scores * dt)
    r.a("masked", scores * dt)  # eager: the causal mask is always materialized (b x 1 x new x kv)
    r.a("k:sm.in32", scores * FP32)
    r.a("sm.out", scores * FP32)
    r.f("k:sm.in32")
    r.a(f"probs{i}", scores * dt)
    r.f("sm.out")
    r.a("ctx", rows * h * dt)
    r.a("ctx.m", rows * h * dt)
    r.f("ctx")
    r.a("dense", rows * h * dt)
    r.a("o", rows * h * dt)  # dropout_add: residual + attention output
    r.f("dense", "qkv", "q", "scores", "masked", "ctx.m")
    _norm(r, "x2", rows, h, dt, "ln")
    r.f("x")
    _plain_mlp(r, arch, rows, dt)
    r.a("h2", rows * h * dt)
    r.f("mlp", "x2", "o")


def _falcon_linear(r: _Replay, name: str, nbytes: int, bias: bool) -> None:
    """FalconLinear.forward (modeling_falcon.py L60-65): `input @ self.weight.T`, then `+ self.bias` as a second
    tensor when the layer has a bias (the product is freed when the function returns)."""
    if not bias:
        r.a(name, nbytes)
        return
    r.a(name + ".mm", nbytes)
    r.a(name, nbytes)
    r.f(name + ".mm")


def _falcon_alibi_attention(r: _Replay, arch: LlmArch, w: Workload, i: int, rows: int, new: int, past: int,
                            dt: int, kv_dt: int) -> None:
    """FalconAttention with alibi (modeling_falcon.py L326-437, transformers 5.17). Fused query_key_value
    (FalconLinear); q / k / v are views of it (the transpose + reshape keeps the shape); cache update. SDPA: the
    b x heads x new x kv ALiBi mask goes in as attn_mask (the memory-efficient kernel on CUDA, no score matrix),
    the output's transpose + reshape is a view, dense. Eager: q @ k^T, .to(float32), + alibi, *= 1/sqrt(d) in
    place, softmax(logits + mask, dtype) (its converted input is kernel scratch), probabilities @ v,
    _merge_heads copy, dense; the probabilities are returned and kept by FalconModel's loop like BLOOM's.
    Leaves "o" (and "qkv", freed by the caller when the attention returns)."""
    b, nh, hd, h = w.batch, arch.heads, arch.head_dim, arch.hidden
    kvh = arch.kv_heads
    total = past + new
    _falcon_linear(r, "qkv", rows * (nh + 2 * kvh) * hd * dt, arch.qkv_bias)
    _cache_update(r, i, b, total, kvh * hd * kv_dt)
    if w.attn == "eager":
        scores = b * nh * new * total
        r.a("scores", scores * dt)  # matmul_result, referenced until the return
        r.a("scores32", scores * FP32)  # attention_scores.to(float32), likewise
        r.a("logits", scores * FP32)
        r.a("logits.m", scores * FP32)
        r.a("k:sm.in", scores * dt)
        r.a(f"probs{i}", scores * dt)
        r.f("k:sm.in", "logits.m")
        r.a("attn", rows * h * dt)
        r.a("attn.t", rows * h * dt)
        r.f("attn", "logits", "scores32", "scores")
    else:
        r.a("attn.t", rows * h * dt)
        r.a("lse", b * nh * new * FP32)
        r.f("lse")
    _falcon_linear(r, "o", rows * h * dt, arch.o_bias)
    r.f("attn.t")


def _falcon_alibi_layer(r: _Replay, arch: LlmArch, w: Workload, i: int, rows: int, new: int, past: int, dt: int,
                        kv_dt: int) -> None:
    """FalconDecoderLayer of the RefinedWeb models (alibi, modeling_falcon.py L575-626): input_layernorm; the
    attention; sequential (parallel_attn False): residual = dropout_add(attention_output, residual),
    mlp_layernorm_out = post_attention_layernorm(residual); parallel: the MLP reads the same layer norm output
    and its output gets `+= attention_output` in place. FalconMLP: dense_h_to_4h and dense_4h_to_h are
    FalconLinear (bias -> two tensors), the activation one kernel. Every layer norm output and the attention
    output live until the layer returns. Leaves "h2"."""
    h = arch.hidden
    _norm(r, "x", rows, h, dt, "ln")
    _falcon_alibi_attention(r, arch, w, i, rows, new, past, dt, kv_dt)
    r.f("qkv")
    if not arch.parallel:
        r.a("h1", rows * h * dt)
        _norm(r, "x2", rows, h, dt, "ln")
    _falcon_linear(r, "fc", rows * arch.intermediate * dt, arch.mlp_bias)
    r.a("act", rows * arch.intermediate * dt)
    r.f("fc")
    _falcon_linear(r, "mlp", rows * h * dt, arch.mlp_bias)
    r.f("act")
    r.a("h2", rows * h * dt)
    r.f("x", "x2", "h1", "o", "mlp")


def _attention_projections(r: _Replay, arch: LlmArch, rows: int, dt: int) -> None:
    """q / k / v of the non-Llama families: one fused projection whose q, k, v are views (GPT-2 c_attn,
    NeoX / Falcon / BLOOM query_key_value) or three projections; RoPE on the first rotary_dim dims of
    each head followed by torch.cat with the pass-through part (NeoX, Phi, StableLM: a new full q and
    k), or no RoPE at all (learned positions, ALiBi). Leaves "q" (and "qkv" when fused) allocated."""
    nh, kvh, hd = arch.heads, arch.kv_heads, arch.head_dim
    if arch.fused_qkv and arch.family == "falcon" and 1 < kvh < nh:
        # new_decoder_architecture: the fused output is viewed per KV group and each of q / k / v is
        # flattened out of it (a copy)
        r.a("qkv", rows * (nh + 2 * kvh) * hd * dt)
        r.a("q", rows * nh * hd * dt)
        r.a("k", rows * kvh * hd * dt)
        r.a("v", rows * kvh * hd * dt)
        r.f("qkv")
    elif arch.fused_qkv:
        r.a("qkv", rows * (nh + 2 * kvh) * hd * dt)
    else:
        r.a("q", rows * nh * hd * dt)
        r.a("k", rows * kvh * hd * dt)
        r.a("v", rows * kvh * hd * dt)
    if arch.pos != "rope":
        return
    rd = arch.rotary_dim or hd
    for name, heads in (("q", nh), ("k", kvh)):
        size = rows * heads * rd * dt
        if rd == hd:
            r.a(name + ".r", rows * heads * hd * dt)  # rope of a view of the fused output: a new tensor
            _rope(r, name + ".r", size)
            r.rename(name + ".r", name + ".new")
        else:
            r.a(name + ".r", size)
            _rope(r, name + ".r", size)
            r.f(name + ".r") if size <= (1 << 20) else None
            r.a(name + ".new", rows * heads * hd * dt)  # torch.cat((rotated, pass), dim=-1)
            r.f(name + ".r")
        if name in r.live and (not arch.fused_qkv or arch.family == "falcon"):
            r.f(name)
        r.rename(name + ".new", name)


def _plain_mlp(r: _Replay, arch: LlmArch, rows: int, dt: int) -> None:
    """fc_in -> activation -> fc_out (GPT-2 c_fc/c_proj, NeoX dense_h_to_4h, Falcon, BLOOM, OPT fc1/fc2,
    Phi, Starcoder2). GELU / ReLU are one kernel; GPT-2's NewGELU (gelu_new) and BLOOM's bloom_gelu
    are written out in Python, one tensor per operation. Leaves "mlp" allocated."""
    inter, h = arch.intermediate, arch.hidden
    size = rows * inter * dt
    r.a("fc", size)
    if arch.family == "opt":  # OPTDecoderLayer reassigns hidden_states: the normed input dies here
        r.f("x")
    if arch.act == "gelu_new":
        # 0.5 * x * (1.0 + tanh(sqrt(2 / pi) * (x + 0.044715 * pow(x, 3.0))))
        r.a("g.half", size)
        r.a("g.pow", size)
        for name, prev in (("g.c", "g.pow"), ("g.sum", "g.c"), ("g.s", "g.sum"), ("g.tanh", "g.s"),
                           ("g.one", "g.tanh")):
            r.a(name, size)
            r.f(prev)
        r.a("act", size)
        r.f("g.half", "g.one")
    elif arch.act == "bloom_gelu":
        # x * 0.5 * (1.0 + tanh(0.79788456 * x * (1 + 0.044715 * x * x)))
        for name in ("g.half", "g.k", "g.c", "g.xx"):
            r.a(name, size)
        r.f("g.c")
        r.a("g.one", size)
        r.f("g.xx")
        r.a("g.arg", size)
        r.f("g.k", "g.one")
        r.a("g.tanh", size)
        r.f("g.arg")
        r.a("g.sum", size)
        r.f("g.tanh")
        r.a("act", size)
        r.f("g.half", "g.sum")
    else:
        r.a("act", size)
    r.f("fc")
    r.a("mlp", rows * h * dt)
    r.f("act")


def _mlp(r: _Replay, arch: LlmArch, w: Workload, i: int, rows: int, dt: int, decode: bool) -> None:
    h = arch.hidden
    if arch.is_moe and arch.moe_layers[i]:
        e, k, im = arch.experts, arch.experts_per_token, arch.moe_intermediate
        r.a("router", rows * e * dt)
        r.a("router.p", rows * e * FP32)
        r.a("topk.w", rows * k * FP32)
        r.a("topk.i", rows * k * 8)
        r.f("router", "router.p")
        if decode:
            # grouped_mm switches to batched_mm for decode: selected expert weights are gathered per token
            r.a("w.gate_up", rows * k * 2 * im * h * dt)
            r.a("w.down", rows * k * im * h * dt)
            r.a("e.gate_up", rows * k * 2 * im * dt)
            r.a("e.act", rows * k * im * dt)
            r.a("e.down", rows * k * h * dt)
            r.f("w.gate_up", "w.down", "e.gate_up", "e.act")
        else:
            r.a("sort", rows * k * 8 * 2)
            r.a("e.in", rows * k * h * dt)
            r.a("e.gate_up", rows * k * 2 * im * dt)
            r.a("e.act", rows * k * im * dt)
            r.a("e.prod", rows * k * im * dt)
            r.f("e.gate_up", "e.act", "e.in")
            r.a("e.down", rows * k * h * dt)
            r.f("e.prod")
        r.a("mlp", rows * h * dt)
        r.f("e.down", "topk.w", "topk.i", "sort")
        if arch.shared_intermediate:
            _gated_mlp(r, "s.", rows, arch.shared_intermediate, h, dt)
            r.a("mlp.sum", rows * h * dt)
            r.f("s.mlp", "mlp")
            r.rename("mlp.sum", "mlp")
        return
    if not arch.gated_mlp:
        _plain_mlp(r, arch, rows, dt)
        return
    _gated_mlp(r, "", rows, arch.intermediate, h, dt)


def _gated_mlp(r: _Replay, p: str, rows: int, inter: int, h: int, dt: int) -> None:
    """down_proj(act_fn(gate_proj(x)) * up_proj(x)): leaves `{p}mlp` allocated."""
    r.a(p + "gate", rows * inter * dt)
    r.a(p + "act", rows * inter * dt)
    r.f(p + "gate")
    r.a(p + "up", rows * inter * dt)
    r.a(p + "prod", rows * inter * dt)
    r.f(p + "act", p + "up")
    r.a(p + "mlp", rows * h * dt)
    r.f(p + "prod")


def _forward(r: _Replay, arch: LlmArch, w: Workload, new: int, past: int, dt: int, kv_dt: int,
             opts: dict[str, bool]) -> None:
    """One forward over `new` tokens per sequence with `past` cached ones."""
    b, h = w.batch, arch.hidden
    rows = b * new
    decode = new == 1
    nk = arch.norm if arch.norm == "ln" else "rms"
    r.a("embeds", rows * (arch.embed_dim or h) * dt)
    if getattr(w, "vision", None) is not None and not decode:  # estimators/vision.py VlmWorkload: the vision tower
        w.vision.replay(r, w, dt)
    if arch.pos == "learned":  # wpe / embed_positions lookup, then inputs_embeds + position_embeds
        r.a("pos", rows * h * dt)
        r.a("embeds.sum", rows * h * dt)
    if arch.embed_norm:  # BLOOM word_embeddings_layernorm
        _norm(r, "embeds.ln", rows, h, dt, nk)
    if arch.pos == "alibi":
        _alibi_tensors(r, arch, w, new, past, dt)
    if arch.pos == "rope" or arch.family == "falcon":  # FalconModel computes rotary cos / sin with alibi too
        r.a("cos", b * new * (arch.rotary_dim or arch.head_dim) * dt)
        r.a("sin", b * new * (arch.rotary_dim or arch.head_dim) * dt)
    kinds = set(arch.layer_kinds)
    masks: dict[str, bool] = {}
    for kind in kinds:
        need = w.attn == "eager" or kind == "sliding" or (len(kinds) > 1)
        masks[kind] = need and not decode
        if masks[kind] and not (arch.family == "falcon" and arch.pos == "alibi"):  # that one: _falcon_alibi_mask
            r.a(f"mask.{kind}", b * new * (past + new) * (dt if w.attn == "eager" else 1))
    if arch.family == "falcon" and arch.pos == "alibi":
        _falcon_alibi_mask(r, arch, w, new, past, dt)
    elif arch.family in SDPA_BOOL_MASK and not decode and not any(masks.values()):
        r.a("mask.bool", b * new * (past + new))
    # the model's own references to the embeddings live for the whole forward; what the first layer reads
    # (inputs_embeds + position_embeds, BLOOM's word_embeddings_layernorm output) is released after it
    hidden = "embeds.ln" if arch.embed_norm else "embeds.sum" if arch.pos == "learned" else "embeds"
    for i in range(arch.layers):
        masked = masks.get(arch.layer_kinds[i], False) or (w.attn == "eager" and not decode)
        if arch.mixers and arch.mixers[i] == "mamba":
            (_mamba2_layer if arch.mamba.get("version") == 2 else _mamba_layer)(r, arch, w, i, rows, new, past, dt)
        elif arch.family == "bloom":
            _bloom_layer(r, arch, w, i, rows, new, past, dt, kv_dt)
        elif arch.family == "falcon" and arch.pos == "alibi":
            _falcon_alibi_layer(r, arch, w, i, rows, new, past, dt, kv_dt)
        elif arch.parallel:
            _parallel_layer(r, arch, w, i, rows, new, past, dt, kv_dt, masked, decode and opts["batched_mm"])
        elif arch.post_norm or arch.family == "stablelm":
            _sequential_layer_kept(r, arch, w, i, rows, new, past, dt, kv_dt, masked, decode and opts["batched_mm"])
        else:
            _norm(r, "x", rows, h, dt, nk)
            _attention(r, arch, w, i, rows, new, past, dt, kv_dt, masked)
            r.f("x")
            r.a("h1", rows * h * dt)  # residual + attention output
            if arch.family not in KEEPS_ATTN_OUTPUT:
                r.f("o")
            _norm(r, "x", rows, h, dt, nk)
            _mlp(r, arch, w, i, rows, dt, decode and opts["batched_mm"])
            r.f("x")
            r.a("h2", rows * h * dt)  # residual + mlp output
            r.f("mlp", "h1", "o")
        if hidden != "embeds":
            r.f(hidden)  # the caller's reference to this layer's input dies when the layer returns
        r.f(f"probs{i - 1}")  # GPT-J: the loop's `outputs` of the layer before is replaced
        r.rename("h2", f"hidden{i}")
        hidden = f"hidden{i}"
    r.f(f"probs{arch.layers - 1}")
    _norm(r, "final", rows, h, dt, nk)
    kept = rows if opts["full_logits"] else b  # logits_to_keep=1 (transformers >= 4.45): last position only
    r.a("logits", kept * arch.vocab * dt)
    if opts["full_logits"] or arch.family in LOGITS_FLOAT:
        r.a("logits32", kept * arch.vocab * FP32)  # older LlamaForCausalLM, Mamba*ForCausalLM: logits.float()
        r.f("logits")
        r.rename("logits32", "logits")
    r.f("final", hidden, "embeds", "pos", "embeds.sum", "embeds.ln", "cos", "sin", "mask.bool", "alibi", "mask.alibi", "img_feat",
        *[f"mask.{k}" for k in kinds])
    _generation_step(r, arch, w)


def _generation_step(r: _Replay, arch: LlmArch, w: Workload) -> None:
    """What GenerationMixin._sample does with a step's logits (generation/utils.py L3040-3093, transformers 5.17),
    called as `preflight measure` calls it (greedy, min_new_tokens = output_len, an eos token): the last
    position copied to float32 (`next_token_logits`, referenced until the next step's copy replaces it); the
    logits processors generate() builds for that call, MinLengthLogitsProcessor (min_length = prompt +
    min_new_tokens) and MinNewTokensLengthLogitsProcessor (logits_process.py L154-160, L226-234): each an
    arange(vocab) int64, isin -> bool, scores.clone() and torch.where -> a new float32 b x vocab tensor; the
    processed scores stay referenced until the next step's replace them; argmax; `del outputs` then frees the
    step's logits. So every decode forward runs with two b x vocab float32 tensors alive. No repetition
    penalty and no sampling warpers: GenerationConfig's defaults (repetition_penalty 1.0) with do_sample=False
    build neither."""
    b, v = w.batch, arch.vocab
    r.a("ntl.new", b * v * FP32)
    r.f("ntl")
    r.rename("ntl.new", "ntl")
    scores = "ntl"
    if arch.eos_token:
        r.a("lp1.arange", v * 8)
        r.a("lp1.isin", v)
        r.a("lp1.clone", b * v * FP32)
        r.a("lp1.where", b * v * FP32)
        r.f("lp1.clone", "lp1.arange", "lp1.isin")
        r.a("lp2.clone", b * v * FP32)
        r.a("lp2.arange", v * 8)
        r.a("lp2.isin", v)
        r.a("lp2.where", b * v * FP32)
        r.f("lp2.clone", "lp2.arange", "lp2.isin", "lp1.where")
        scores = "lp2.where"
    r.a("next_tokens", b * 8)
    if scores != "ntl":
        r.f("scores")
        r.rename(scores, "scores")
    r.f("next_tokens", "logits")


def _parallel_layer(r: _Replay, arch: LlmArch, w: Workload, i: int, rows: int, new: int, past: int, dt: int,
                    kv_dt: int, masked: bool, batched: bool) -> None:
    """Attention and MLP both read the layer input (GPT-NeoX use_parallel_residual, GPT-J, Phi, Falcon
    parallel_attn, Cohere, StableLM use_parallel_residual): one shared norm (parallel == 1) or one norm
    per branch (parallel == 2); out = attn + mlp + residual. Leaves "h2" allocated."""
    h = arch.hidden
    nk = arch.norm if arch.norm == "ln" else "rms"
    _norm(r, "x", rows, h, dt, nk)
    if arch.family == "falcon" and arch.parallel == 2:  # FalconDecoderLayer: ln_attn(x) and ln_mlp(x) first
        _norm(r, "x2", rows, h, dt, nk)
    _attention(r, arch, w, i, rows, new, past, dt, kv_dt, masked)
    if arch.family == "falcon" and arch.parallel == 2 and not arch.cache_heads:
        r.f("x")
        r.rename("x2", "x")
    elif arch.family == "falcon" and arch.parallel == 2:
        r.rename("x", "x1")
        r.rename("x2", "x")
        r.rename("x1", "x2")
    elif arch.parallel == 2:
        r.f("x")
        _norm(r, "x", rows, h, dt, nk)
    _mlp(r, arch, w, i, rows, dt, batched)
    if arch.family == "falcon" and arch.cache_heads:
        # FalconDecoderLayer: mlp_output += attention_output (in place); out = residual + mlp_output; both
        # layer norm outputs and the attention output live until the layer returns
        r.a("h2", rows * h * dt)
        r.f("x", "x2", "mlp", "o")
        return
    r.f("x")
    r.a("h1", rows * h * dt)  # mlp + attn
    r.f("mlp", "o")
    r.a("h2", rows * h * dt)  # + residual
    r.f("h1")


def _sequential_layer_kept(r: _Replay, arch: LlmArch, w: Workload, i: int, rows: int, new: int, past: int,
                           dt: int, kv_dt: int, masked: bool, batched: bool) -> None:
    """Sequential layers whose intermediate outputs stay referenced until the layer returns.
    StableLmDecoderLayer (use_parallel_residual False): `hidden_states = input_layernorm(x)` and
    `self_attn_output` stay alive through the MLP, which reads post_attention_layernorm(residual).
    Olmo2DecoderLayer (post-norm): attention reads the layer input itself; post_attention_layernorm
    of its output, residual add; the MLP reads that sum; post_feedforward_layernorm of its output,
    residual add. Leaves "h2"."""
    h = arch.hidden
    nk = arch.norm if arch.norm == "ln" else "rms"
    if arch.post_norm:
        _attention(r, arch, w, i, rows, new, past, dt, kv_dt, masked)
        _norm(r, "on", rows, h, dt, nk)
        r.f("o")
        r.a("h1", rows * h * dt)
        r.f("on")
        _mlp(r, arch, w, i, rows, dt, batched)
        _norm(r, "mn", rows, h, dt, nk)
        r.f("mlp")
        r.a("h2", rows * h * dt)
        r.f("mn", "h1")
        return
    _norm(r, "x", rows, h, dt, nk)
    _attention(r, arch, w, i, rows, new, past, dt, kv_dt, masked)
    r.a("h1", rows * h * dt)  # residual = residual + self_attn_output
    _norm(r, "x2", rows, h, dt, nk)
    r.rename("x", "x1")
    r.rename("x2", "x")
    _mlp(r, arch, w, i, rows, dt, batched)
    r.f("x")
    r.a("h2", rows * h * dt)
    r.f("mlp", "h1", "x1", "o")


def _mamba_layer(r: _Replay, arch: LlmArch, w: Workload, i: int, rows: int, new: int, past: int, dt: int) -> None:
    """MambaBlock of transformers 5.17 (modeling_mamba.py) without the mamba-ssm / causal-conv1d kernels
    (not installed, or no Hub access for `kernels`): the pure-PyTorch fallbacks that the file itself
    defines. Prefill: RMSNorm (float32 temporaries); the padding mask multiplies the input (a copy);
    in_proj -> x | z; causal_conv1d_fn (conv1d output, SiLU); the mask again; x_proj; dt_proj;
    mamba_selective_scan: dt + bias, softplus, then float32 discrete_A = exp(A * dt), discrete_B and
    deltaB_u (b x d_inner x L x d_state each, all three live until the scan returns), a sequential
    scan whose per-step outputs are stacked, + x * D and * silu(z) in float32; out_proj of the bf16
    cast. The cache holds conv_state (b x d_inner x d_conv) and the float32 ssm state per layer.
    Decode: mamba_selective_state_update on one token (small). Leaves "h2"."""
    m, h, b = arch.mamba, arch.hidden, w.batch
    di, ds = m["d_inner"], m["d_state"]
    L = new
    _norm(r, "x", rows, h, dt, "rms")
    if m.get("residual_fp32"):
        r.a("res32", rows * h * FP32)  # residual.to(float32)
    if f"conv{i}" not in r.live:
        r.a(f"conv{i}", b * di * m["d_conv"] * dt)
        r.a(f"ssm{i}", b * di * ds * FP32)
    r.a("xm", rows * h * dt)  # apply_mask_to_padding_states
    r.a("xz", rows * 2 * di * dt)
    r.a("A", di * ds * FP32)
    r.f("xm")
    if new == 1:  # causal_conv1d_update + mamba_selective_state_update: a few b x d_inner (x d_state) tensors
        r.a("step", 6 * b * di * ds * FP32)
        r.a("y", rows * di * dt)
        r.f("step")
    else:
        r.a("conv.out", b * di * (L + m["d_conv"] - 1) * dt)
        r.a("conv.act", rows * di * dt)
        r.f("conv.out")
        r.a("xs", rows * di * dt)  # apply_mask_to_padding_states on the conv output
        r.f("conv.act")
        r.a("xproj", rows * (m["dt_rank"] + 2 * ds) * dt)
        r.a("dt", rows * di * dt)  # dt_proj.weight @ time_step^T
        r.a("dt.b", rows * di * dt)  # dt + delta_bias
        r.a("dt.sp", rows * di * dt)  # softplus
        r.f("dt.b")
        r.a("Adt", rows * di * ds * FP32)
        r.a("dA", rows * di * ds * FP32)
        r.f("Adt")
        r.a("B32", rows * ds * FP32)
        r.a("dB", rows * di * ds * FP32)
        r.f("B32")
        r.a("x32", rows * di * FP32)
        r.a("dBu", rows * di * ds * FP32)
        r.f("x32")
        r.a("steps", rows * di * dt)  # per-step scan outputs (views of each step's matmul) kept in a list
        r.a("stack", rows * di * dt)
        r.a("xD", rows * di * FP32)
        r.a("y32", rows * di * FP32)
        r.f("xD", "stack")
        r.a("silu", rows * di * dt)
        r.a("yz", rows * di * FP32)
        r.f("silu", "y32", "steps", "dA", "dB", "dBu", "dt.sp")
        r.a("y", rows * di * dt)  # scan_output.transpose(1, 2).to(dtype)
        r.f("yz", "dt", "xproj", "xs")
    r.f("xz", "A", "x")
    r.a("o", rows * h * dt)
    r.f("y")
    r.a("h2", rows * h * (FP32 if m.get("residual_fp32") else dt))
    r.f("o", "res32")


def _segment_sum(r: _Replay, name: str, outer: int, chunk: int) -> None:
    """segment_sum (modeling_mamba2.py L73-90) of `outer` rows of `chunk` float32 values, then torch.exp (the
    caller's): masked_fill of the expanded input, cumsum, masked_fill again (each outer x chunk x chunk), with
    chunk x chunk boolean masks (ones, tril, ~). Leaves `name` (the exp)."""
    square = outer * chunk * chunk * FP32
    r.a(name + ".tril1", chunk * chunk)
    r.a(name + ".not", chunk * chunk)
    r.a(name + ".fill1", square)
    r.f(name + ".not")
    r.a(name + ".cumsum", square)
    r.a(name + ".tril2", chunk * chunk)
    r.f(name + ".tril1")
    r.a(name + ".not", chunk * chunk)
    r.a(name + ".fill2", square)
    r.f(name + ".not", name + ".cumsum", name + ".fill1", name + ".tril2")
    r.a(name, square)
    r.f(name + ".fill2")


def _mamba2_chunk_scan(r: _Replay, m: dict, b: int, L: int) -> None:
    """The pure-PyTorch chunked scan of modeling_mamba2.py (transformers 5.17, L255-345; what runs without the
    mamba-ssm kernels), in float32. dt + dt_bias, softplus, clamp; x, B, C to float32 (B, C repeated per head);
    D_residual = D * pad(x); x * dt, A * dt; pad + reshape into chunks (F.pad copies even with zero padding);
    A_cumsum; L = exp(segment_sum(A)); G = (C * B).sum(-1) through a b x chunks x l x l x heads x state product;
    M = (G * L).sum(-1); Y_diag = (M * x).sum(3) through a b x chunks x l x l x heads x head_dim product; decay
    states, B_decay, states (b x chunks x l x heads x head_dim x state product), the inter-chunk recurrence,
    C_times_states (kept until the function returns), Y_off, output + D_residual. Leaves "scan" (the padded
    output) and "states.new" (the final state's storage)."""
    nh, hd, n, g, l = m["heads"], m["head_dim"], m["d_state"], m["n_groups"], m["chunk"]
    di = nh * hd
    Lp = -(-L // l) * l
    c = Lp // l
    rows = b * L
    r.a("dt.b", rows * nh * 2)  # dt (a slice of the bf16 in_proj output) + dt_bias
    r.a("dt.sp", rows * nh * 2)
    r.f("dt.b")
    r.a("dt", rows * nh * 2)  # clamp
    r.f("dt.sp")
    r.a("x32", rows * di * FP32)
    for t in ("B", "C"):
        r.a(t + "32g", rows * g * n * FP32)
        r.a(t + "32", rows * nh * n * FP32)  # repeat_interleave per head
        r.f(t + "32g")
    r.a("pad.d", b * Lp * di * FP32)
    r.a("Dres", b * Lp * di * FP32)
    r.f("pad.d")
    r.a("dt32", rows * nh * FP32)
    r.a("xdt", rows * di * FP32)
    r.f("dt32", "x32")
    r.a("dt32", rows * nh * FP32)
    r.a("Adt", rows * nh * FP32)
    r.f("dt32")
    for t, width in (("x", di), ("A", nh), ("B", nh * n), ("C", nh * n)):
        r.a(t + ".c", b * Lp * width * FP32)  # reshape_into_chunks: pad (a copy), then a view
    r.f("xdt", "Adt", "B32", "C32")
    r.a("Acum", b * Lp * nh * FP32)
    _segment_sum(r, "Lmat", b * nh * c, l)
    square = b * c * l * l * nh * FP32
    r.a("G.prod", square * n)
    r.a("G", square)
    r.f("G.prod")
    r.a("M.prod", square)
    r.a("M", square)
    r.f("M.prod")
    r.a("Yd.prod", square * hd)
    r.a("Ydiag", b * Lp * di * FP32)
    r.f("Yd.prod")
    r.a("dec.sub", b * Lp * nh * FP32)
    r.a("decay", b * Lp * nh * FP32)
    r.f("dec.sub")
    r.a("Bdecay", b * Lp * nh * n * FP32)
    state = b * nh * hd * n * FP32
    r.a("st.prod", b * Lp * di * n * FP32)
    r.a("states", c * state)
    r.f("st.prod")
    r.a("states.prev", state)  # zeros_like(states[:, :1])
    r.a("states.cat", (c + 1) * state)
    r.f("states")
    r.a("dchunk.pad", b * nh * (c + 1) * FP32)
    _segment_sum(r, "dchunk", b * nh, c + 1)
    r.f("dchunk.pad")
    r.a("ns.prod", (c + 1) * (c + 1) * state)
    r.a("states.new", (c + 1) * state)
    r.f("ns.prod", "states.cat")
    r.a("sdo", b * Lp * nh * FP32)  # exp(A_cumsum)
    r.a("Cts", b * Lp * di * n * FP32)  # C_times_states, referenced until the return
    r.a("Yoff.sum", b * Lp * di * FP32)
    r.a("Yoff", b * Lp * di * FP32)
    r.f("Yoff.sum")
    r.a("out0", b * Lp * di * FP32)
    r.a("scan", b * Lp * di * FP32)  # + D_residual
    r.f("out0", "dt", "Dres", "x.c", "A.c", "B.c", "C.c", "Acum", "Lmat", "G", "M", "Ydiag", "decay", "Bdecay",
        "states.prev", "dchunk", "sdo", "Cts", "Yoff")


def _mamba2_layer(r: _Replay, arch: LlmArch, w: Workload, i: int, rows: int, new: int, past: int, dt: int) -> None:
    """Mamba2Block of transformers 5.17 (modeling_mamba2.py) on the pure-PyTorch path (no mamba-ssm /
    causal-conv1d kernels, as `preflight measure` runs it). Prefill: RMSNorm; residual to float32
    (residual_in_fp32); in_proj -> gate | x, B, C | dt (one tensor, split into views); the conv state (b x
    conv_dim x d_conv) and the float32 recurrent state (b x heads x head_dim x state) join the cache;
    causal_conv1d_fn's reference: conv1d over L + d_conv - 1 positions, SiLU of the first L; the chunked scan
    (_mamba2_chunk_scan); MambaRMSNormGated in float32 (gate.to(float32), silu, product, variance, weight);
    out_proj of the cast; residual + output in float32. Decode (one token): causal_conv1d_update and
    selective_state_update's references, a few state-sized float32 temporaries. Leaves "h2"."""
    m, h, b = arch.mamba, arch.hidden, w.batch
    nh, hd, n, g = m["heads"], m["head_dim"], m["d_state"], m["n_groups"]
    di = nh * hd
    conv_dim = di + 2 * g * n
    fp32_res = bool(m.get("residual_fp32"))
    carried32 = fp32_res and i > 0  # the previous block's output is float32: norm(x.to(dtype)) casts a copy
    if carried32:
        r.a("x.in", rows * h * dt)
    _norm(r, "x", rows, h, dt, "rms")
    r.f("x.in")
    if fp32_res and not carried32:
        r.a("res32", rows * h * FP32)  # residual.to(float32) (a no-op once the residual is float32)
    r.a("xz", rows * (di + conv_dim + nh) * dt)
    r.a("A", nh * FP32)
    if f"conv{i}" not in r.live:
        r.a(f"conv{i}", b * conv_dim * m["d_conv"] * dt)
    if new == 1:
        r.a("conv.cat", b * conv_dim * (m["d_conv"] + 1) * dt)
        r.a("conv.act", b * conv_dim * dt)
        r.f("conv.cat")
        r.a("step", 4 * b * nh * hd * n * FP32)  # dA, dB, dBx, the updated state
        r.a("y32", rows * di * FP32)
        r.f("step")
        r.rename("y32", "scan")
    else:
        r.a("conv.out", b * conv_dim * (new + m["d_conv"] - 1) * dt)
        r.a("conv.act", rows * conv_dim * dt)
        r.f("conv.out")
        _mamba2_chunk_scan(r, m, b, new)
        if f"ssm{i}" not in r.live:
            r.a(f"ssm{i}", b * nh * hd * n * FP32)  # update_recurrent_state: zeros_like, then copied into
    r.a("gate32", rows * di * FP32)
    r.a("gate.silu", rows * di * FP32)
    r.f("gate32")
    r.a("gated", rows * di * FP32)
    r.f("gate.silu")
    r.a("g.pow", rows * di * FP32)
    r.a("g.var", rows * FP32)
    r.f("g.pow")
    r.a("g.norm", rows * di * FP32)
    r.a("g.out", rows * di * FP32)
    r.f("g.norm", "gated", "g.var")
    r.a("y", rows * di * dt)  # scan_output.to(dtype)
    r.a("o", rows * h * dt)
    r.f("y", "A", "xz", "conv.act", "g.out", "scan", "states.new", "x")
    r.a("h2", rows * h * (FP32 if fp32_res else dt))
    r.f("o", "res32")


def _decode_may_matter(arch: LlmArch, w: Workload, dt: int, kv_dt: int, prefill_extra: int) -> bool:
    """Whether decode can come near the prefill peak: the cache grows by output_len tokens, each
    step copies one layer's K/V (torch.cat), MoE decode gathers expert weights per token, and up to six
    b x vocab float32 tensors of the logits processors are alive at a step's end (_generation_step)."""
    per_tok = sum(kv_bytes_per_token(arch, kv_dt))
    growth = w.batch * w.output_len * per_tok
    step = (w.batch * (w.input_len + w.output_len) * max(kv_bytes_per_token(arch, kv_dt) or [0])
            + w.batch * arch.vocab * (6 * FP32 + dt) + arch.vocab * 9)
    if arch.is_moe:
        step += w.batch * arch.experts_per_token * 3 * arch.hidden * arch.moe_intermediate * dt
    prefill_cache = w.batch * w.input_len * per_tok
    return prefill_cache + growth + step > 0.8 * prefill_extra


REPLAY_ALL_LAYERS_UP_TO = 64  # deeper models: two short replays, extrapolated (cost independent of depth)


def layer_period(arch: LlmArch) -> tuple[int, int] | None:
    """(prefix, period) such that layer i and layer i + period are built alike for every i >= prefix
    (attention kind, MoE or dense, attention or Mamba); None if no period <= 16 after <= 8 layers."""
    sig = [(arch.layer_kinds[i] if i < len(arch.layer_kinds) else "full",
            bool(arch.moe_layers[i]) if i < len(arch.moe_layers) else False,
            arch.mixers[i] if i < len(arch.mixers) else "attn") for i in range(arch.layers)]
    for q in range(0, 9):
        for p in range(1, 17):
            if q + 3 * p > arch.layers:
                break
            if all(sig[i] == sig[i + p] for i in range(q, arch.layers - p)):
                return q, p
    return None


def _shortened(arch: LlmArch, n: int) -> LlmArch:
    return dataclasses.replace(arch, layers=n, layer_kinds=arch.layer_kinds[:n], moe_layers=arch.moe_layers[:n],
                               mixers=arch.mixers[:n] if arch.mixers else [])


def estimate_transformers(arch: LlmArch, w: Workload, cc: tuple[int, int] | None = None,
                          tensors: list[Tensor] | None = None, decode_samples: int = 2,
                          transformers_version: tuple[int, int] = (5, 17)) -> LlmEstimate:
    """The replay below, on the whole model when it has at most REPLAY_ALL_LAYERS_UP_TO layers. Deeper
    models repeat a block of `period` layers: the replay then runs on two shortened copies (k and k + 1
    repetitions, same first and last layers) and every byte count is extrapolated linearly to the real
    repetition count. Each repetition adds the same weights, cache and allocator segments once the
    caching allocator reaches its steady state (tests/test_archs.py compares the two on 80-layer
    models), so the cost no longer grows with the number of layers."""
    per = layer_period(arch) if arch.layers > REPLAY_ALL_LAYERS_UP_TO else None
    if per is None:
        return _estimate_replay(arch, w, cc, tensors, decode_samples, transformers_version)
    q, p = per
    reps, tail = divmod(arch.layers - q, p)
    k1 = max(2, -(-8 // p))
    e1 = _estimate_replay(_shortened(arch, q + k1 * p + tail), w, cc, None, decode_samples, transformers_version)
    e2 = _estimate_replay(_shortened(arch, q + (k1 + 1) * p + tail), w, cc, None, decode_samples,
                          transformers_version)
    n = reps - k1

    def ext(a: int, b: int) -> int:
        return a + n * (b - a)

    def phase(ph: str) -> dict[str, int]:
        d1, d2 = e1.phase_peaks[ph], e2.phase_peaks.get(ph, e1.phase_peaks[ph])
        alloc = ext(d1["peak_allocated_bytes"], d2["peak_allocated_bytes"])
        return {"peak_allocated_bytes": alloc,
                "peak_reserved_bytes": alloc + d2["peak_reserved_bytes"] - d2["peak_allocated_bytes"]}

    # allocated bytes are exactly affine in the repetition count; the caching allocator's slack
    # (reserved - allocated) is not (deeper models reuse cached activation blocks for later layers'
    # caches): it is taken from the longer replay, not extrapolated
    breakdown = {k: ext(v, e2.breakdown.get(k, v)) for k, v in e1.breakdown.items()}
    breakdown["allocator_slack"] = e2.breakdown["allocator_slack"]
    alloc = ext(e1.peak_allocated_bytes, e2.peak_allocated_bytes)
    est = LlmEstimate(ext(e1.weights_bytes, e2.weights_bytes), ext(e1.kv_cache_bytes, e2.kv_cache_bytes),
                      alloc, alloc + e2.peak_reserved_bytes - e2.peak_allocated_bytes,
                      {ph: phase(ph) for ph in e1.phase_peaks}, breakdown,
                      list(e1.assumptions) + [f"{arch.layers} layers: replayed {q + k1 * p + tail} and "
                                              f"{q + (k1 + 1) * p + tail} layers and extrapolated"],
                      ext(e1.activation_requested_peak_bytes, e2.activation_requested_peak_bytes))
    if tensors:  # exact tensors (safetensors headers, meta device): replace the computed weights by them
        exact = sum(t.bytes for t in tensors if not t.name.startswith("buffer:"))
        delta = exact - est.breakdown["weights"]
        est.breakdown["weights"] = exact
        est.weights_bytes += delta
        est.peak_allocated_bytes += delta
        est.peak_reserved_bytes += delta
        for d in est.phase_peaks.values():
            for k in d:
                d[k] += delta
    return est


def _estimate_replay(arch: LlmArch, w: Workload, cc: tuple[int, int] | None = None,
                     tensors: list[Tensor] | None = None, decode_samples: int = 2,
                     transformers_version: tuple[int, int] = (5, 17)) -> LlmEstimate:
    dt = DTYPE_BYTES.get(w.dtype, 2)
    kv_dt = DTYPE_BYTES.get(w.kv_dtype or w.dtype, dt)
    assumptions: list[str] = []
    if w.attn != "eager" and arch.family in EAGER_ONLY:
        w = dataclasses.replace(w, attn="eager")
        assumptions.append(f"{arch.family}: transformers has no SDPA / flash-attention path for this architecture "
                           f"(_supports_sdpa is unset in modeling_{arch.family}.py): eager attention, with its "
                           f"batch x heads x prompt x prompt score matrices")
    v5 = transformers_version >= (5, 0)
    # quantization as transformers holds it on this GPU (None: dequantized at load)
    quant, qnotes = tq.effective_quant(arch, cc, w.mxfp4_kernels)
    assumptions += qnotes
    dequantized = bool(arch.quant) and quant is None
    qarch = arch if quant is arch.quant else dataclasses.replace(arch, quant=quant)
    method = quant_method(qarch) if quant else None
    if dequantized and tensors:
        tensors = None  # the stored (quantized) header sizes are not what sits on the GPU
    tensors = tensors or weight_tensors(qarch, dt, dequantize_mxfp4=method != "mxfp4", fused_experts=v5,
                                        buffers=True)
    if transformers_version < (4, 45):
        assumptions.append("transformers < 4.45: the prefill computes logits for every prompt position and "
                           "upcasts them to float32")
    assumptions += tq.assumptions_for(method, quant, w.dtype, w.bnb_compute_dtype)
    r = _Replay()
    load_phase = bool(arch.quant)
    if method in ON_THE_FLY_METHODS:
        for t in tensors:
            if t.name.startswith("buffer:"):
                r.a("w:" + t.name, t.bytes)
        tq.replay_load(r, tensors, method, quant, dt, family=arch.family)
    elif dequantized and quant_method(arch) == "mxfp4":
        tq.replay_mxfp4_dequant_load(r, [t for t in tensors if not t.name.startswith("buffer:")], dt)
        for t in tensors:
            if t.name.startswith("buffer:"):
                r.a("w:" + t.name, t.bytes)
    else:
        for t in tensors:
            r.a("w:" + t.name, t.bytes)
    weights_allocated = r.al.allocated
    load_peak = {"peak_allocated_bytes": r.al.peak_allocated, "peak_reserved_bytes": r.al.peak_reserved}
    r.a("cublas.workspace", cublas_workspace_bytes(cc))
    r.reset_peaks()
    phase: dict[str, dict[str, int]] = {}
    base_alloc = r.al.allocated
    opts = {"full_logits": transformers_version < (4, 45), "batched_mm": v5}
    r.qf = tq.forward_model(arch, quant, w.dtype, w.bnb_compute_dtype)
    if r.qf is not None:
        r.qf.rows = w.batch * w.input_len
    _forward(r, arch, w, w.input_len, 0, dt, kv_dt, opts)
    phase["prefill"] = {"peak_allocated_bytes": r.al.peak_allocated, "peak_reserved_bytes": r.al.peak_reserved}
    steps = max(w.output_len - 1, 0)
    if steps and decode_samples and _decode_may_matter(arch, w, dt, kv_dt, r.al.peak_allocated - base_alloc):
        # decode: sample a few steps spread over the generation; the cache grows in between
        picks = sorted({max(1, round(steps * (j + 1) / decode_samples)) for j in range(decode_samples)})
        if r.qf is not None:
            r.qf.rows = w.batch
        for s in picks:
            _forward(r, arch, w, 1, w.input_len + s - 1, dt, kv_dt, opts)
        phase["decode"] = {"peak_allocated_bytes": r.al.peak_allocated, "peak_reserved_bytes": r.al.peak_reserved}
    elif steps:
        phase["decode"] = dict(phase["prefill"])
        assumptions.append("decode not replayed: its cache growth and per-step buffers stay below the prefill peak")
    per_tok = kv_bytes_per_token(arch, kv_dt)
    total_len = w.input_len + w.output_len
    kv = 0
    for i, bpt in enumerate(per_tok):
        win = arch.sliding_window if arch.layer_kinds[i] == "sliding" else None
        kv += w.batch * bpt * (min(total_len, win) if win and w.output_len > 1 else total_len)
    peak_alloc = r.al.peak_allocated
    forward_alloc = peak_alloc
    if load_phase:  # the process peak is the larger of loading and the forward
        phase = {"load": load_peak, **phase}
        peak_alloc = max(peak_alloc, load_peak["peak_allocated_bytes"])
    ws = cublas_workspace_bytes(cc)
    exact = sum(t.bytes for t in tensors if not t.name.startswith("buffer:"))
    buffers = sum(t.bytes for t in tensors if t.name.startswith("buffer:"))
    breakdown = {
        "weights": exact,
        "allocator_rounding": weights_allocated - exact - buffers,
        "kv_cache": kv,
        "activations": max(forward_alloc - base_alloc - kv, 0),
        "cublas_workspace": ws,
        "allocator_slack": r.al.peak_reserved - peak_alloc,
    }
    if buffers:
        breakdown["buffers"] = buffers
    if load_phase:
        breakdown["load_transient"] = max(load_peak["peak_allocated_bytes"] - weights_allocated, 0)
    return LlmEstimate(weights_allocated, kv, peak_alloc, r.al.peak_reserved, phase, breakdown, assumptions,
                       r.peak_requested)


# ---- the engine's flags and entry point (commands/estimate.py builds its parser from these) ----

from gpu_preflight.estimators.engines.base import Engine, Option, bounded_float, positive_int  # noqa: E402

LLM_WORKLOAD_OPTIONS = (
    Option("--dtype", "dtype", "weights and activations: bfloat16 (default), float16 or float32", default="bfloat16"),
    Option("--batch", "batch", "sequences per batch (default 1)", type=positive_int, default=1),
    Option("--input-len", "input_len", "prompt tokens (default 512)", type=positive_int, default=512),
    Option("--output-len", "output_len", "generated tokens (default 128)", type=positive_int, default=128),
)
OPTIONS = LLM_WORKLOAD_OPTIONS + (
    Option("--attn", "attn", "attention implementation (default sdpa)", default="sdpa",
           choices=("sdpa", "eager", "flash_attention_2")),
    Option("--transformers", "transformers", "transformers release to model (default: 5.x behaviour)",
           metavar="VER"),
    Option("--quantize", "quantize", "load a 16-bit checkpoint quantized on the GPU: bitsandbytes 8bit (LLM.int8), "
           "4bit / nf4 (NF4), fp4; torchao int8wo, int4wo, fp8 (float8 weight-only), fp8dq (float8 dynamic "
           "activation); lm_head and embeddings stay 16-bit as transformers keeps them",
           choices=("8bit", "4bit", "nf4", "fp4", "int8wo", "int4wo", "fp8", "fp8dq")),
    Option("--double-quant", "double_quant", "4-bit: quantize the absmax constants too "
           "(bnb_4bit_use_double_quant)", action="store_true", default=False),
    Option("--bnb-compute-dtype", "bnb_compute_dtype", "4-bit bitsandbytes: bnb_4bit_compute_dtype (default float32, "
           "used only with a float16 model; bfloat16 and float32 inputs compute in their own dtype)",
           choices=("float32", "bfloat16", "float16")),
    Option("--mxfp4-kernels", "mxfp4_kernels", "MXFP4 checkpoint (gpt-oss): the `kernels` package and triton >= 3.4 "
           "are installed, so transformers keeps the experts in MXFP4 (otherwise it dequantizes them to bf16)",
           action="store_true", default=False),
    Option("--assume-llama-like", "assume_llama_like", "estimate a model_type the tool has no layout table for as "
           "a Llama-shaped decoder (stated in the report, wider error); without it such a model is refused "
           "unless transformers is installed to count its weights", action="store_true", default=False),
)


def _multimodal_report(source, o: dict[str, Any], w: Workload, targets: list, common: dict[str, Any]):
    """Encoder-decoders (estimators/encdec.py) and vision-language models given images (estimators/vision.py);
    None for a decoder (the path below). The multimodal flags are refused where they do not apply."""
    from gpu_preflight.errors import UsageError
    from gpu_preflight.estimators.arch import model_kind

    kind = model_kind(source.config)
    images, size, audio = o.get("images"), o.get("image_size"), o.get("audio_seconds")
    if audio is not None and kind != "speech_seq2seq":
        raise UsageError("--audio-seconds applies to speech models (Whisper)", hint="drop --audio-seconds")
    if (images is not None or size) and kind != "vlm":
        raise UsageError("--images / --image-size apply to vision-language models (a config with vision_config)",
                         hint="drop --images / --image-size")
    if kind in ("seq2seq", "speech_seq2seq"):
        if o.get("quantize"):
            raise UsageError("--quantize is not modelled for encoder-decoders", hint="drop --quantize")
        from gpu_preflight.estimators import encdec
        from gpu_preflight.estimators.plan import _tensors_in_dtype

        tensors = _tensors_in_dtype(source.tensors, w.dtype)
        report = encdec.encdec_report(source.config, w, targets, common.get("torch"), source.name, tensors,
                                      "safetensors headers" if tensors else None)
        if audio is not None:
            windows = max(1, -(-int(audio * 100) // (encdec.WHISPER_WINDOW_S * 100)))
            report["workload"]["audio_seconds"] = audio
            report["assumptions"].append(f"{audio:g} s of audio: {windows} window(s) of 30 s, transcribed one "
                                         f"after the other (each the same 3000 log-mel frames, 1500 encoder "
                                         f"positions): the peak is that of one window")
        return report
    if kind == "vlm" and (images or 0) > 0:
        from gpu_preflight.estimators import vision

        return vision.vlm_report(source, o, w, targets, common)
    return None


def run_engine(source, o: dict[str, Any], targets: list, common: dict[str, Any]) -> dict[str, Any]:
    from gpu_preflight.errors import UsageError
    from gpu_preflight.estimators.plan import estimate_llm, parse_dtype

    if o["double_quant"] and o["quantize"] not in ("4bit", "nf4", "fp4"):
        raise UsageError("--double-quant applies to 4-bit quantization", hint="add --quantize 4bit")
    if o.get("bnb_compute_dtype") and o["quantize"] not in ("4bit", "nf4", "fp4"):
        raise UsageError("--bnb-compute-dtype applies to bitsandbytes 4-bit quantization", hint="add --quantize 4bit")
    attn = "sdpa" if o["attn"] == "flash_attention_2" else o["attn"]
    w = Workload(batch=o["batch"], input_len=o["input_len"], output_len=o["output_len"],
                 dtype=parse_dtype(o["dtype"]), attn=attn, bnb_compute_dtype=o.get("bnb_compute_dtype"),
                 mxfp4_kernels=bool(o.get("mxfp4_kernels")))
    multimodal = _multimodal_report(source, o, w, targets, common)
    if multimodal is not None:
        return multimodal
    report = estimate_llm(source.config, tensors=source.tensors, workload=w, targets=targets, engine="transformers",
                          torch_version=common.get("torch"), transformers_version=o["transformers"],
                          model_name=source.name, gguf=source.origin == "gguf",
                          quantize=o["quantize"], double_quant=o["double_quant"],
                          assume_llama_like=bool(o.get("assume_llama_like")),
                          searches=not common.get("point_only"))
    if o["attn"] == "flash_attention_2":
        report["workload"]["attn"] = "flash_attention_2"
        report["assumptions"].append("flash_attention_2 modelled like SDPA's flash kernel (no score matrix)")
    return report


def _image_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT, or one number for a square image."""
    import argparse

    parts = str(text).lower().split("x")
    try:
        wd, ht = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
    except ValueError:
        wd = ht = 0
    if not (0 < wd <= 100_000 and 0 < ht <= 100_000):
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT (e.g. 1024x768)")
    return wd, ht


_image_size.__name__ = "size"


MULTIMODAL_OPTIONS = (
    Option("--images", "images", "vision-language models: images per prompt (default: none, the text model "
           "alone)", type=positive_int),
    Option("--image-size", "image_size", "vision-language models: WIDTHxHEIGHT of each image (default: the "
           "processor's own size)", type=_image_size, metavar="WxH"),
    Option("--audio-seconds", "audio_seconds", "speech models (Whisper): seconds of audio (30 s windows)",
           type=bounded_float(0.01, 36000), metavar="S"),
)
OPTIONS = OPTIONS + MULTIMODAL_OPTIONS

ENGINES = (Engine("transformers", ("llm", "gguf"), "Hugging Face transformers generate() on one or more GPUs",
                  OPTIONS, run_engine, default_for=("llm",)),)
