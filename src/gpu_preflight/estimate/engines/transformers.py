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

from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.estimate.allocator import Allocator
from gpu_preflight.estimate.arch import DTYPE_BYTES, LlmArch
from gpu_preflight.estimate.weights import Tensor, quant_method, weight_tensors

GIB = 1 << 30
FP32 = 4


@dataclass
class Workload:
    batch: int = 1
    input_len: int = 512
    output_len: int = 128
    dtype: str = "bfloat16"
    attn: str = "sdpa"  # sdpa | eager | flash_attention_2
    kv_dtype: str | None = None


@dataclass
class LlmEstimate:
    weights_bytes: int
    kv_cache_bytes: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    phase_peaks: dict[str, dict[str, int]]
    breakdown: dict[str, int]
    assumptions: list[str] = field(default_factory=list)


class _Replay:
    """Named allocations replayed through the allocator model; records the phase peaks."""

    def __init__(self) -> None:
        self.al = Allocator()
        self.live: dict[str, int] = {}
        self.sizes: dict[str, int] = {}

    def a(self, name: str, nbytes: int) -> None:
        if nbytes <= 0:
            return
        if name in self.live:
            self.f(name)
        self.live[name] = self.al.malloc(int(nbytes))
        self.sizes[name] = int(nbytes)

    def f(self, *names: str) -> None:
        for n in names:
            h = self.live.pop(n, None)
            if h is not None:
                self.al.free(h)
                self.sizes.pop(n, None)

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
    return [2 * arch.kv_heads * arch.head_dim * kv_dt] * arch.layers


def _norm(r: _Replay, name: str, rows: int, width: int, dt: int) -> None:
    """RMSNorm: x.float(); pow(2).mean(); x * rsqrt(var + eps); weight * x.to(dtype)."""
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
    if w.attn == "eager":
        scores = b * nh * new * kv_len
        if arch.kv_heads < nh and not arch.mla:
            r.a("krep", b * nh * kv_len * hd * dt)
            r.a("vrep", b * nh * kv_len * hd * dt)
        r.a("scores", scores * dt)
        r.a("scaled", scores * dt)
        r.f("scores")
        if masked:
            r.a("masked", scores * dt)
            r.f("scaled")
            r.rename("masked", "scaled")
        r.a("sm.in32", scores * FP32)  # softmax(dtype=float32) converts its input first
        r.a("sm.out", scores * FP32)
        r.f("sm.in32")
        r.a("probs", scores * dt)  # .to(query.dtype); the old attn_weights dies after the assignment
        r.f("sm.out", "scaled")
        r.a("attn", rows * nh * (arch.v_head_dim if arch.mla else hd) * dt)
        r.f("probs", "krep", "vrep")
    else:
        # SDPA gets enable_gqa only without a mask; with one, repeat_kv materializes K and V
        if masked and arch.kv_heads < nh and not arch.mla:
            r.a("krep", b * nh * kv_len * hd * dt)
            r.a("vrep", b * nh * kv_len * hd * dt)
        r.a("attn", rows * nh * (arch.v_head_dim if arch.mla else hd) * dt)
        r.a("lse", b * nh * new * FP32)
        r.f("lse", "krep", "vrep")
    r.f("q")
    r.a("attn.t", rows * nh * (arch.v_head_dim if arch.mla else hd) * dt)  # transpose().contiguous()
    r.f("attn")
    r.a("o", rows * arch.hidden * dt)
    r.f("attn.t")


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
    r.a("embeds", rows * h * dt)
    r.a("cos", b * new * arch.head_dim * dt)
    r.a("sin", b * new * arch.head_dim * dt)
    kinds = set(arch.layer_kinds)
    masks: dict[str, bool] = {}
    for kind in kinds:
        need = w.attn == "eager" or kind == "sliding" or (len(kinds) > 1)
        masks[kind] = need and not decode
        if masks[kind]:
            r.a(f"mask.{kind}", b * new * (past + new) * (dt if w.attn == "eager" else 1))
    hidden = "embeds"
    for i in range(arch.layers):
        masked = masks.get(arch.layer_kinds[i], False) or (w.attn == "eager" and not decode)
        _norm(r, "x", rows, h, dt)
        _attention(r, arch, w, i, rows, new, past, dt, kv_dt, masked)
        r.f("x")
        r.a("h1", rows * h * dt)  # residual + attention output
        r.f("o")
        _norm(r, "x", rows, h, dt)
        _mlp(r, arch, w, i, rows, dt, decode and opts["batched_mm"])
        r.f("x")
        r.a("h2", rows * h * dt)  # residual + mlp output
        r.f("mlp", "h1")
        if hidden != "embeds":
            r.f(hidden)  # the caller's reference to this layer's input dies when the layer returns
        r.rename("h2", f"hidden{i}")
        hidden = f"hidden{i}"
    _norm(r, "final", rows, h, dt)
    kept = rows if opts["full_logits"] else b  # logits_to_keep=1 (transformers >= 4.45): last position only
    r.a("logits", kept * arch.vocab * dt)
    if opts["full_logits"]:
        r.a("logits32", kept * arch.vocab * FP32)  # older LlamaForCausalLM: logits.float()
        r.f("logits")
        r.rename("logits32", "logits")
    r.f("final", hidden, "embeds", "cos", "sin", *[f"mask.{k}" for k in kinds])
    r.a("next_logits", b * arch.vocab * FP32)  # generate copies the last logits to float32
    r.f("logits")
    r.a("next_tokens", b * 8)
    r.f("next_logits")


def _decode_may_matter(arch: LlmArch, w: Workload, dt: int, kv_dt: int, prefill_extra: int) -> bool:
    """Whether decode can come near the prefill peak: the cache grows by output_len tokens, each
    step copies one layer's K/V (torch.cat), and MoE decode gathers expert weights per token."""
    per_tok = sum(kv_bytes_per_token(arch, kv_dt))
    growth = w.batch * w.output_len * per_tok
    step = w.batch * (w.input_len + w.output_len) * max(kv_bytes_per_token(arch, kv_dt)) + w.batch * arch.vocab * 8
    if arch.is_moe:
        step += w.batch * arch.experts_per_token * 3 * arch.hidden * arch.moe_intermediate * dt
    prefill_cache = w.batch * w.input_len * per_tok
    return prefill_cache + growth + step > 0.8 * prefill_extra


def estimate_transformers(arch: LlmArch, w: Workload, cc: tuple[int, int] | None = None,
                          tensors: list[Tensor] | None = None, decode_samples: int = 2,
                          transformers_version: tuple[int, int] = (5, 17)) -> LlmEstimate:
    dt = DTYPE_BYTES.get(w.dtype, 2)
    kv_dt = DTYPE_BYTES.get(w.kv_dtype or w.dtype, dt)
    assumptions: list[str] = []
    method = quant_method(arch)
    v5 = transformers_version >= (5, 0)
    tensors = tensors or weight_tensors(arch, dt, dequantize_mxfp4=True, fused_experts=v5)
    if transformers_version < (4, 45):
        assumptions.append("transformers < 4.45: the prefill computes logits for every prompt position and "
                           "upcasts them to float32")
    if method == "mxfp4":
        assumptions.append("MXFP4 checkpoint: transformers dequantizes to bf16 unless its MXFP4 Triton kernels are "
                           "installed; estimated dequantized")
    r = _Replay()
    for t in tensors:
        r.a("w:" + t.name, t.bytes)
    weights_allocated = r.al.allocated
    r.a("cublas.workspace", cublas_workspace_bytes(cc))
    r.reset_peaks()
    phase: dict[str, dict[str, int]] = {}
    base_alloc = r.al.allocated
    opts = {"full_logits": transformers_version < (4, 45), "batched_mm": v5}
    _forward(r, arch, w, w.input_len, 0, dt, kv_dt, opts)
    phase["prefill"] = {"peak_allocated_bytes": r.al.peak_allocated, "peak_reserved_bytes": r.al.peak_reserved}
    steps = max(w.output_len - 1, 0)
    if steps and decode_samples and _decode_may_matter(arch, w, dt, kv_dt, r.al.peak_allocated - base_alloc):
        # decode: sample a few steps spread over the generation; the cache grows in between
        picks = sorted({max(1, round(steps * (j + 1) / decode_samples)) for j in range(decode_samples)})
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
    ws = cublas_workspace_bytes(cc)
    exact = sum(t.bytes for t in tensors)
    breakdown = {
        "weights": exact,
        "allocator_rounding": weights_allocated - exact,
        "kv_cache": kv,
        "activations": max(peak_alloc - base_alloc - kv, 0),
        "cublas_workspace": ws,
        "allocator_slack": r.al.peak_reserved - peak_alloc,
    }
    return LlmEstimate(weights_allocated, kv, peak_alloc, r.al.peak_reserved, phase, breakdown, assumptions)


# ---- the engine's flags and entry point (commands/estimate.py builds its parser from these) ----

from gpu_preflight.estimate.engines.base import Engine, Option, positive_int  # noqa: E402

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
    Option("--quantize", "quantize", "load a 16-bit checkpoint quantized by bitsandbytes: 8bit (LLM.int8) or 4bit "
           "(NF4); lm_head and embeddings stay 16-bit as transformers keeps them",
           choices=("8bit", "4bit", "nf4", "fp4")),
    Option("--double-quant", "double_quant", "4-bit: quantize the absmax constants too "
           "(bnb_4bit_use_double_quant)", action="store_true", default=False),
)


def run_engine(source, o: dict[str, Any], targets: list, common: dict[str, Any]) -> dict[str, Any]:
    from gpu_preflight.errors import UsageError
    from gpu_preflight.estimate.plan import estimate_llm, parse_dtype

    if o["double_quant"] and o["quantize"] not in ("4bit", "nf4", "fp4"):
        raise UsageError("--double-quant applies to 4-bit quantization", hint="add --quantize 4bit")
    attn = "sdpa" if o["attn"] == "flash_attention_2" else o["attn"]
    w = Workload(batch=o["batch"], input_len=o["input_len"], output_len=o["output_len"],
                 dtype=parse_dtype(o["dtype"]), attn=attn)
    report = estimate_llm(source.config, tensors=source.tensors, workload=w, targets=targets, engine="transformers",
                          torch_version=common.get("torch"), transformers_version=o["transformers"],
                          model_name=source.name, gguf=source.origin == "gguf",
                          quantize=o["quantize"], double_quant=o["double_quant"],
                          searches=not common.get("point_only"))
    if o["attn"] == "flash_attention_2":
        report["workload"]["attn"] = "flash_attention_2"
        report["assumptions"].append("flash_attention_2 modelled like SDPA's flash kernel (no score matrix)")
    return report


ENGINES = (Engine("transformers", ("llm", "gguf"), "Hugging Face transformers generate() on one or more GPUs",
                  OPTIONS, run_engine, default_for=("llm",)),)
