"""Quantized loading in transformers: what stays quantized on a given GPU, the buffers a quantized
linear allocates during the forward, and the load phase that quantizes a 16-bit checkpoint on the GPU.

Sources (read at these releases; cite file and function):
- transformers 5.17: core_model_loading.py convert_and_load_state_dict_in_model (on-the-fly quantization
  loads synchronously, one tensor at a time: "we also use sync loading to avoid worker threads loading
  full-precision tensors to GPU faster than the main thread can quantize them"); modeling_utils.py
  caching_allocator_warmup (one block of the expected weight bytes, param_element_size per quantizer);
  quantizers/quantizer_*.py; integrations/bitsandbytes.py, torchao.py, finegrained_fp8.py, mxfp4.py.
- bitsandbytes 0.50.2: functional.py quantize_4bit / quantize_blockwise, nn/modules.py Params4bit /
  Int8Params / Linear4bit.forward, autograd/_functions.py matmul_4bit / MatMul8bitLt,
  backends/cuda/ops.py (gemm_4bit dispatch, _dequant_linear_fallback, int8_vectorwise_quant).
- torchao 0.18.0: quantization/quant_primitives.py (_quantize_affine_no_dtype_cast, _choose_scale_float8,
  _quantize_affine_float8, _dequantize_affine_float8), quantization/quantize_/workflows/int8/int8_tensor.py,
  float8/float8_tensor.py, int4/int4_tile_packed_to_4d_tensor.py (their aten.linear implementations).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.estimators.arch import DTYPE_BYTES, LlmArch
from gpu_preflight.estimators.weights import ON_THE_FLY_METHODS, Tensor, quant_method, torchao_type

FP32 = 4
# Replay names that are the output of an nn.Linear (engines/transformers.py); "k"/"v" only outside MLA and
# fused q/k/v, "mlp" only when it is a down / fc_out projection (not the sum of the MoE experts).
LINEAR_OUTPUTS = {"q", "k", "v", "qkv", "o", "gate", "up", "mlp", "fc", "s.gate", "s.up", "s.mlp", "ckv", "kvb",
                  "xz", "xproj", "dt"}
BNB_FUSED_MAX_ROWS = 4  # bitsandbytes >= 0.50 gemm_4bit: the fused kernel always serves M <= 4 rows


def effective_quant(arch: LlmArch, cc: tuple[int, int] | None, mxfp4_kernels: bool = False
                    ) -> tuple[dict | None, list[str]]:
    """The quantization_config as transformers 5.17 holds the weights on a GPU of compute capability `cc`:
    None when it dequantizes them to the model dtype at load time. With the reasons, for the report."""
    q = arch.quant if isinstance(arch.quant, dict) else None
    method = quant_method(arch) if q else None
    if q is None or method is None:
        return q, []
    raw = str(q.get("quant_method", "")).lower()
    if raw == "compressed-tensors" and not q.get("use_optimized_inference"):
        return None, ["compressed-tensors checkpoint: transformers decompresses it to the model dtype (at load with "
                      "dequantize=True, on the first forward otherwise: quantizer_compressed_tensors.py); estimated "
                      "dequantized (UNMEASURED)"]
    if method == "fp8" and cc is not None and cc < (8, 9):
        return None, [f"FP8 checkpoint on compute capability {cc[0]}.{cc[1]} < 8.9: transformers dequantizes it to "
                      f"bf16 at load (quantizer_finegrained_fp8.py validate_environment)"]
    if method == "mxfp4":
        if not mxfp4_kernels or (cc is not None and cc < (7, 5)):
            why = "compute capability < 7.5" if mxfp4_kernels else "without --mxfp4-kernels"
            return None, [f"MXFP4 checkpoint {why}: transformers dequantizes the experts to bf16 unless the GPU has "
                          f"compute capability >= 7.5, triton >= 3.4 and the `kernels` package "
                          f"(quantizer_mxfp4.py validate_environment); estimated dequantized"]
        return q, ["MXFP4 experts kept quantized (kernels package + triton >= 3.4, compute capability >= 7.5): "
                   "UNMEASURED"]
    if method in ("fp8dq", "fbgemm_fp8") and cc is not None and cc < (8, 9):
        return q, [f"{method} needs float8 matmuls (compute capability >= 8.9); this GPU has {cc[0]}.{cc[1]}: "
                   f"loading fails there"]
    return q, []


def compute_dtype_bytes(model_dtype: str, bnb_compute_dtype: str | None) -> int:
    """Linear4bit.set_compute_type: a float32 or bfloat16 input becomes the compute dtype; a float16 input
    keeps bnb_4bit_compute_dtype, float32 by default (BitsAndBytesConfig)."""
    if model_dtype in ("bfloat16", "float32"):
        return DTYPE_BYTES[model_dtype]
    return DTYPE_BYTES.get(bnb_compute_dtype or "float32", 4)


@dataclass
class QuantForward:
    """The transient buffers of one quantized linear's forward, allocated around its output in the replay."""
    arch: LlmArch
    method: str
    quant: dict
    dt: int                       # activation bytes
    compute_dt: int               # bnb 4-bit compute dtype bytes
    rows: int = 1                 # tokens in the current forward (batch x new tokens)
    skip: set[str] = field(default_factory=set)

    def n_in(self, name: str, live: dict) -> int | None:
        a = self.arch
        if name == "mlp" and "e.down" in live:
            return None  # the sum of the routed experts, not a projection
        if name in ("k", "v") and (a.mla or a.fused_qkv):
            return None
        if name == "q" and a.fused_qkv:
            return None
        if name == "o":
            if "y.g" in live:  # Mamba out_proj
                return a.mamba["d_inner"]
            return a.heads * (a.v_head_dim if a.mla else a.head_dim)
        if name == "q" and a.mla and a.q_lora_rank:
            return a.q_lora_rank
        if name == "kvb":
            return a.kv_lora_rank
        if name in ("mlp", "fc_out"):
            return a.intermediate
        if name == "s.mlp":
            return a.shared_intermediate
        if name == "xproj":
            return a.mamba["d_inner"]
        if name == "dt":
            return a.mamba["dt_rank"]
        return a.hidden

    def linear(self, r, name: str, nbytes: int) -> None:
        """Allocate the output `name` of a quantized linear with the buffers its forward holds meanwhile."""
        k = self.n_in(name, r.live)
        m = max(self.rows, 1)
        n = nbytes // (m * self.dt) if k else 0
        if not k or n <= 0:
            r._alloc(name, nbytes)
            return
        temps = getattr(self, "_" + self.method, None)
        if temps is None:
            r._alloc(name, nbytes)
            return
        temps(r, name, nbytes, m, k, n)

    # ---- one method each: allocate temporaries, then the output, then free the temporaries ----

    def _bnb4(self, r, name, nbytes, m, k, n):
        if m <= BNB_FUSED_MAX_ROWS:  # gemm_4bit custom kernel: no dequantized copy
            r._alloc(name, nbytes)
            return
        # _dequant_linear_fallback: (nested) absmax_dq fp32 and absmax_dq + offset, B_dq in the compute dtype,
        # F.linear; with a float16 model and a float32 compute dtype the input and the output are cast too
        blocks = -(-k * n // 64)
        cd = self.compute_dt
        if self.quant.get("bnb_4bit_use_double_quant"):
            r._alloc("q.absmax_dq", blocks * FP32)
            r._alloc("q.absmax", blocks * FP32)
        if cd != self.dt:
            r._alloc("q.x", m * k * cd)
        r._alloc("q.w", k * n * cd)
        if cd != self.dt:
            r._alloc("q.y", m * n * cd)
            r._alloc(name, nbytes)
            r.f("q.y", "q.x")
        else:
            r._alloc(name, nbytes)
        r.f("q.w", "q.absmax", "q.absmax_dq")

    def _bnb8(self, r, name, nbytes, m, k, n):
        # MatMul8bitLt (threshold 6.0): A.to(float16); int8_vectorwise_quant: row_stats, int8 rows, |A| >= 6
        # mask; int8_linear_matmul int32; int8_mm_dequant float16, .to(dtype); outlier columns added back by
        # addmm (a new output)
        r._alloc("q.a16", m * k * 2)
        r._alloc("q.sca", m * FP32)
        r._alloc("q.ca", m * k)
        r._alloc("q.abs", m * k * 2)
        r._alloc("q.mask", m * k)
        r.f("q.abs", "q.mask")
        r._alloc("q.i32", m * n * FP32)
        r._alloc("q.f16", m * n * 2)
        r._alloc("q.out", m * n * self.dt)
        r.f("q.f16", "q.i32")
        r._alloc(name, nbytes)  # output.addmm(subA, subB)
        r.f("q.out", "q.a16", "q.sca", "q.ca")

    def _int8wo(self, r, name, nbytes, m, k, n):
        # Int8Tensor weight-only linear: torch.mm(x, qdata.t().to(dtype)) then * scale: the whole weight is cast
        # to the activation dtype on every call (eager), then two outputs
        r._alloc("q.w", k * n * self.dt)
        r._alloc("q.m", nbytes)
        r.f("q.w")
        r._alloc(name, nbytes)
        r.f("q.m")

    def _int8dq(self, r, name, nbytes, m, k, n):
        # dynamic int8 activation: int8 rows + a scale per row, int_scaled_matmul, * weight scale
        r._alloc("q.xq", m * k)
        r._alloc("q.xs", m * FP32)
        r._alloc("q.m", nbytes)
        r._alloc(name, nbytes)
        r.f("q.m", "q.xq", "q.xs")

    def _fp8wo(self, r, name, nbytes, m, k, n):
        # Float8Tensor weight-only: matmul(x, w.dequantize()): qdata.to(float32), * scale, .to(dtype)
        r._alloc("q.w32", k * n * FP32)
        r._alloc("q.ws", k * n * FP32)
        r._alloc("q.w", k * n * self.dt)
        r.f("q.w32", "q.ws")
        r._alloc(name, nbytes)
        r.f("q.w")

    def _fp8dq(self, r, name, nbytes, m, k, n):
        # per-tensor activation scaling: |x|.amax, x.to(float32) / scale, clamp, to float8, then _scaled_mm
        r._alloc("q.abs", m * k * self.dt)
        r.f("q.abs")
        r._alloc("q.x32", m * k * FP32)
        r._alloc("q.xs", m * k * FP32)
        r._alloc("q.xc", m * k * FP32)
        r._alloc("q.x8", m * k)
        r.f("q.x32", "q.xs", "q.xc")
        r._alloc(name, nbytes)
        r.f("q.x8")

    def _int4wo(self, r, name, nbytes, m, k, n):
        data = torchao_type(self.quant)[1]
        if str(data.get("int4_packing_format", "plain")).lower() != "tile_packed_to_4d":
            r._alloc(name, nbytes)  # Int4Tensor (mslk bf16i4bf16 kernel): output only (UNMEASURED)
            return
        # tinygemm: the activation padded to a multiple of 1024 inputs (a copy), _weight_int4pack_mm output
        # over the padded outputs, sliced and reshaped (a copy when outputs were padded)
        kp, np_ = -(-k // 1024) * 1024, -(-n // 8) * 8
        r._alloc("q.x", m * kp * 2)
        if np_ != n:
            r._alloc("q.y", m * np_ * 2)
            r._alloc(name, nbytes)
            r.f("q.y")
        else:
            r._alloc(name, nbytes)
        r.f("q.x")

    def _fp8(self, r, name, nbytes, m, k, n):
        # fine-grained FP8: per-token-group (128) float8 activation + fp32 scales, then the block-scaled matmul
        r._alloc("q.x8", m * k)
        r._alloc("q.xs", m * -(-k // 128) * FP32)
        r._alloc(name, nbytes)
        r.f("q.x8", "q.xs")

    def _fbgemm_fp8(self, r, name, nbytes, m, k, n):
        r._alloc("q.x8", m * k)
        r._alloc("q.xs", m * FP32)
        r._alloc(name, nbytes)
        r.f("q.x8", "q.xs")


def forward_model(arch: LlmArch, quant: dict | None, dtype: str, bnb_compute_dtype: str | None = None
                  ) -> QuantForward | None:
    if not quant:
        return None
    probe = dataclasses.replace(arch, quant=quant)
    method = quant_method(probe)
    if method not in ("bnb4", "bnb8", "int8wo", "int8dq", "fp8wo", "fp8dq", "int4wo", "fp8", "fbgemm_fp8"):
        return None
    dt = DTYPE_BYTES.get(dtype, 2)
    return QuantForward(arch, method, quant, dt, compute_dtype_bytes(dtype, bnb_compute_dtype))


# ---- the load phase ----

# Within a decoder layer transformers' checkpoint keys sort "input_layernorm" < "mlp.*" <
# "post_attention_layernorm" < "self_attn.*" (Llama, Mistral, Qwen2/3, Gemma, Phi-3, Falcon, BLOOM, OPT's fc1/fc2
# ...): the attention projections of the last layer load after its MLP. These families name their attention
# "attn" / "attention", which sorts before "mlp".
ATTENTION_FIRST_FAMILIES = {"gpt2", "gpt_bigcode", "gpt_neox", "gptj"}
_ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "q_norm", "k_norm", "q_a_proj",
                    "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj")
_MLP_NAMES = ("gate_proj", "up_proj", "down_proj", "fc_in", "router", "experts", "shared", "shared_expert_gate")


def _natural(text: str) -> tuple:
    """dot_natural_key: numbers compare as numbers, the rest as text."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in text.split("."))


def _layer_section(rest: str, attention_first: bool) -> int:
    """Where a tensor of a decoder layer sorts among transformers' module names: 0 the first norm
    (input_layernorm), 1 the MLP (mlp.*), 2 the other norms (post_attention_layernorm, ...), 3 attention
    (self_attn.*); for ATTENTION_FIRST_FAMILIES attention sorts first (0)."""
    head = rest.split(".", 1)[0]
    if head in _ATTENTION_NAMES:
        return 0 if attention_first else 3
    if head in _MLP_NAMES:
        return 1
    if head == "norm0":
        return 0
    return 2 if head.startswith("norm") else 1


def load_order_key(name: str, attention_first: bool = False) -> tuple:
    """The order in which transformers 5.17 loads the checkpoint: core_model_loading.py
    convert_and_load_state_dict_in_model sorts the checkpoint keys with dot_natural_key (lm_head,
    model.embed_tokens, model.layers.0 ... model.layers.N numerically, model.norm; inside a layer the module
    names alphabetically, so a Llama layer's self_attn.* come after its mlp.*). Our short tensor names are
    mapped to those module names."""
    if name.startswith("lm_head"):
        return (0, 0, 0, _natural(name))
    if name.startswith("layers."):
        _, i, rest = name.split(".", 2)
        return (2, int(i), _layer_section(rest, attention_first), _natural(rest))
    if name == "norm.weight" or name.startswith("norm."):
        return (3, 0, 0, _natural(name))
    return (1, 0, 0, _natural(name))


def _groups(tensors: list[Tensor], attention_first: bool = False) -> list[list[Tensor]]:
    """Parameters in load order; the parts of one quantized linear together (its 16-bit weight is the unit
    that the loader materializes and quantizes)."""
    out: dict[str, list[Tensor]] = {}
    for t in tensors:
        if t.name.startswith("buffer:"):
            continue
        base = t.name.rsplit(".", 1)[0] if t.quantized else t.name
        out.setdefault(base, []).append(t)
    return [out[k] for k in sorted(out, key=lambda name: load_order_key(name, attention_first))]


def warmup_bytes(tensors: list[Tensor], method: str | None, dt: int) -> int:
    """caching_allocator_warmup: sum of numel x param_element_size (quantized weights 0.5 byte for 4-bit
    bitsandbytes and torchao int4, 1 byte for the 8-bit methods; everything else its dtype)."""
    total = 0
    for group in _groups(tensors):
        main = max(group, key=lambda t: t.numel)
        if main.quantized and method in ON_THE_FLY_METHODS:
            per = 0.5 if method in ("bnb4", "int4wo") else 1.0
            total += int(main.numel * per)
        else:
            total += sum(t.bytes for t in group)
    return total


WARMUP_RETRY_BYTES = 1.5 * 1024**3


def warmup_request_bytes(total: int, unused_reserved_bytes: int = 0) -> int:
    """The block caching_allocator_warmup (transformers 5.17 modeling_utils.py) allocates and frees: the
    expected weight bytes less the memory torch has reserved but not allocated (0 in a fresh process), as a
    float16 tensor of byte_count // 2 elements. (It also caps the block at the GPU's memory - 1.2 GiB, which
    only matters when the weights do not fit anyway.)"""
    unused = max(int(unused_reserved_bytes), 0)
    if total - unused > unused:
        total -= unused
    elif total - unused > WARMUP_RETRY_BYTES:
        total = unused + 1
    else:
        total = 0
    return 2 * int(total // 2)


def replay_load(r, tensors: list[Tensor], method: str | None, quant: dict | None, dt: int,
                warmup: bool = True, family: str | None = None, unused_reserved_bytes: int = 0) -> None:
    """Allocate the weights as transformers loads them. A 16-bit weight that the quantizer converts is
    materialized on the GPU in the model dtype (spawn_materialize .to(device, dtype)), quantized there, and
    released when the conversion returns; other tensors are allocated as stored, in the order of the sorted
    checkpoint keys (load_order_key). `unused_reserved_bytes`: memory the process had reserved but not
    allocated before loading (bench/quant_accuracy.py passes the probe's)."""
    if warmup:
        total = warmup_request_bytes(warmup_bytes(tensors, method, dt), unused_reserved_bytes)
        if total > 0:
            r._alloc("load.warmup", total)
            r.f("load.warmup")
    on_the_fly = method in ON_THE_FLY_METHODS
    for group in _groups(tensors, family in ATTENTION_FIRST_FAMILIES):
        main = max(group, key=lambda t: t.numel)
        if not (on_the_fly and main.quantized):
            for t in group:
                r._alloc("w:" + t.name, t.bytes)
            continue
        n = main.numel
        r._alloc("ld.src", n * dt)
        getattr(_LoadOps, method, _LoadOps.plain)(r, group, n, dt)
        r.f("ld.src")


class _LoadOps:
    """Per-method temporaries while one 16-bit weight of n elements is quantized (after "ld.src")."""

    @staticmethod
    def plain(r, group, n, dt):
        for t in group:
            r._alloc("w:" + t.name, t.bytes)

    @staticmethod
    def bnb4(r, group, n, dt):
        # quantize_4bit: absmax fp32 per 64 + packed output + 64 B code; nested: offset, absmax - offset (fp32),
        # quantize_blockwise(256): code copy, fp32 absmax per 256, uint8 absmax; then the fp32 absmax dies
        blocks = -(-n // 64)
        parts = {t.name.rsplit(".", 1)[1]: t for t in group}
        r._alloc("ld.absmax32", blocks * FP32)
        r._alloc("w:" + parts["weight"].name, parts["weight"].bytes)
        r._alloc("w:" + parts["quant_map"].name, 64)
        if "nested_absmax" in parts:
            r._alloc("w:" + parts["nested_offset"].name, 4)
            r._alloc("ld.centered", blocks * FP32)
            r._alloc("w:" + parts["nested_quant_map"].name, 1024)
            r._alloc("w:" + parts["nested_absmax"].name, parts["nested_absmax"].bytes)
            r._alloc("w:" + parts["absmax"].name, parts["absmax"].bytes)
            r.f("ld.centered", "ld.absmax32")
        else:
            r.rename("ld.absmax32", "w:" + parts["absmax"].name)
        for t in group:
            if "w:" + t.name not in r.live:
                r._alloc("w:" + t.name, t.bytes)

    @staticmethod
    def bnb8(r, group, n, dt):
        # Bnb8bitQuantize: value.to("cpu") then Int8Params._quantize: a float16 copy on the GPU,
        # int8_vectorwise_quant -> row stats (SCB) + int8 data (CB)
        r._alloc("ld.f16", n * 2)
        for t in group:
            r._alloc("w:" + t.name, t.bytes)
        r.f("ld.f16")

    @staticmethod
    def int8wo(r, group, n, dt):
        # choose_qparams_affine (amin / amax per row, small) then quantize_affine:
        # clamp(round(x * (1 / scale)) + zero_point): float32 temporaries, two alive at a time, then .to(int8)
        scale = [t for t in group if t.aux]
        for t in scale:
            r._alloc("w:" + t.name, t.bytes)
        r._alloc("ld.t1", n * FP32)
        r._alloc("ld.t2", n * FP32)
        r.f("ld.t1")
        r._alloc("ld.t3", n * FP32)
        r.f("ld.t2")
        r._alloc("ld.t4", n * FP32)
        r.f("ld.t3")
        for t in group:
            if not t.aux:
                r._alloc("w:" + t.name, t.bytes)
        r.f("ld.t4")

    int8dq = int8wo

    @staticmethod
    def fp8wo(r, group, n, dt):
        # _choose_scale_float8: |x| (model dtype) then amax; _quantize_affine_float8: x.to(float32), / scale,
        # clamp (three float32 tensors alive in the function), round to float8
        r._alloc("ld.abs", n * dt)
        r.f("ld.abs")
        for t in group:
            if t.aux:
                r._alloc("w:" + t.name, t.bytes)
        r._alloc("ld.f32", n * FP32)
        r._alloc("ld.scaled", n * FP32)
        r._alloc("ld.clamped", n * FP32)
        for t in group:
            if not t.aux:
                r._alloc("w:" + t.name, t.bytes)
        r.f("ld.f32", "ld.scaled", "ld.clamped")

    fp8dq = fp8wo

    @staticmethod
    def int4wo(r, group, n, dt):
        # Int4TilePackedTo4dTensor.from_hp (int4_tile_packed_to_4d_tensor.py) over e = k_pad x n_pad elements:
        # F.pad (a copy); _choose_qparams_affine_tinygemm: scale and zero point (e / group each, model dtype);
        # _quantize_affine_tinygemm: clamp(round((x - min_val) / scale)) in the model dtype, .to(int32);
        # quant_2d: (q[:, ::2] << 4 | q[:, 1::2]).to(uint8), _convert_weight_to_int4pack -> qdata; then
        # pack_tinygemm_scales_and_zeros (utils.py): torch.cat of scale and zero, .transpose().contiguous().
        # The int32 codes, the padded copy and the qparams die when from_hp returns. The plain format (needs
        # mslk) is assumed to allocate the same, with scale and zero point kept as they are (UNMEASURED).
        main = max(group, key=lambda t: t.numel)
        aux = [t for t in group if t.aux]
        tiles = any(t.name.endswith("scale_and_zero") for t in aux)
        e = main.bytes * 2
        qparam = sum(t.bytes for t in aux) // 2
        r._alloc("ld.pad", e * dt)
        if tiles:
            r._alloc("ld.scale", qparam)
            r._alloc("ld.zero", qparam)
        else:
            for t in aux:
                r._alloc("w:" + t.name, t.bytes)
        r._alloc("ld.sub", e * dt)
        for prev, nxt in (("ld.sub", "ld.div"), ("ld.div", "ld.round"), ("ld.round", "ld.clamp")):
            r._alloc(nxt, e * dt)
            r.f(prev)
        r._alloc("ld.q32", e * 4)
        r.f("ld.clamp")
        r._alloc("ld.shift", e // 2 * 4)
        r._alloc("ld.or", e // 2 * 4)
        r.f("ld.shift")
        r._alloc("ld.u8", e // 2)
        r.f("ld.or")
        r._alloc("w:" + main.name, main.bytes)
        r.f("ld.u8")
        if tiles:
            r._alloc("ld.cat", 2 * qparam)
            for t in aux:
                r._alloc("w:" + t.name, t.bytes)
            r.f("ld.cat")
        for t in group:
            if "w:" + t.name not in r.live:
                r._alloc("w:" + t.name, t.bytes)
        r.f("ld.q32", "ld.scale", "ld.zero", "ld.pad")


def replay_mxfp4_dequant_load(r, tensors: list[Tensor], dt: int) -> None:
    """gpt-oss MXFP4 experts dequantized at load (integrations/mxfp4.py _convert_moe_packed_tensors), one
    projection of one layer at a time: uint8 blocks (n/2) and scales (n/32, to int32 twice), a bf16 output
    (2n), int32 nibble indices (n/2 x 4 bytes) and the gathered bf16 half (n bytes) per nibble, then
    transpose(1, 2).contiguous() (2n). Other tensors are allocated as stored. Sequential loading assumed
    (pre-quantized checkpoints load with 4 threads: blocks of later layers may already sit on the GPU)."""
    for group in _groups(tensors):
        for t in group:
            if ".experts." in t.name and t.name.endswith(("gate_up_proj", "down_proj")):
                n = t.numel
                r._alloc("ld.blocks", n // 2)
                r._alloc("ld.scales", n // 32)
                r._alloc("ld.exp", n // 32 * 4)
                r._alloc("ld.exp2", n // 32 * 4)
                r.f("ld.exp")
                r._alloc("ld.out", n * dt)
                for half in ("lo", "hi"):
                    r._alloc("ld.idx", n // 2 * 4)
                    r._alloc("ld.gather", n // 2 * dt)
                    r.f("ld.idx", "ld.gather")
                r._alloc("w:" + t.name, t.bytes)
                r.f("ld.out", "ld.blocks", "ld.scales", "ld.exp2")
            else:
                r._alloc("w:" + t.name, t.bytes)


def assumptions_for(method: str | None, quant: dict | None, dtype: str, bnb_compute_dtype: str | None) -> list[str]:
    """What the quantized estimate assumes, each marked measured or not (docs/accuracy.md)."""
    if not method or not quant:
        return []
    out = []
    if method == "bnb4":
        cd = "float32" if compute_dtype_bytes(dtype, bnb_compute_dtype) == 4 else dtype
        out.append(f"bitsandbytes 4-bit storage (bitsandbytes 0.50 layout, checked on CPU): packed 4-bit + absmax "
                   f"per 64 weights + code tables; forward with more than {BNB_FUSED_MAX_ROWS} rows dequantizes each "
                   f"weight to {cd} (gemm_4bit fallback; bitsandbytes 0.50 uses its fused kernel up to 512-1536 rows "
                   f"on some GPUs, so this is an upper bound); GPU peaks UNMEASURED")
    elif method == "bnb8":
        out.append("bitsandbytes LLM.int8 (threshold 6.0): int8 weights + fp32 row scales (checked on CPU); forward "
                   "buffers (float16 input copy, int8 rows, int32 product) from bitsandbytes 0.50 source; GPU peaks "
                   "UNMEASURED")
    elif method in ("int8wo", "int8dq", "fp8wo", "fp8dq", "int4wo"):
        extra = {"int8wo": "each forward casts the whole int8 weight to the model dtype (eager torch.mm path)",
                 "int8dq": "int8 activations per row",
                 "fp8wo": "each forward dequantizes the weight through float32 (8 bytes per weight transient)",
                 "fp8dq": "float8 activations per tensor, torch._scaled_mm",
                 "int4wo": "tile-packed (tinygemm) or plain (mslk) int4, group size 128"}[method]
        measured = ("measured on an H200 with the tinygemm layout (docs/accuracy.md: peaks within 0.1 %)"
                    if method != "int4wo" or str(torchao_type(quant)[1].get("int4_packing_format", "plain")).lower()
                    == "tile_packed_to_4d" else "the plain layout (needs mslk) is UNMEASURED; the tinygemm layout "
                    "was measured on an H200 (docs/accuracy.md)") if method != "int8dq" else "UNMEASURED"
        out.append(f"torchao 0.18 {method}: {extra}; eager (no torch.compile), torchao's torch kernels (with the "
                   f"mslk package on compute capability >= 9.0 float8 uses its own quantize / GEMM kernels, which "
                   f"hold less); {measured}")
    if method in ON_THE_FLY_METHODS:
        out.append("load phase: caching_allocator_warmup's block, then the 16-bit checkpoint loaded one tensor at a "
                   "time in sorted key order and quantized on the GPU (transformers 5.17 sync loading for on-the-fly "
                   "quantization; torchao's load peaks measured exact on an H200); checkpoint dtype = model dtype")
    elif method in ("gptq", "awq"):
        out.append(f"{method.upper()} checkpoint layout (qweight, scales, qzeros{', g_idx' if method == 'gptq' else ''}); "
                   f"gptqmodel's repacking (Marlin) keeps the same bytes, its workspace and any exllama scratch space "
                   f"are not counted (UNMEASURED)")
    return out
