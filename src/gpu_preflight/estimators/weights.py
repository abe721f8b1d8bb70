"""The weight tensors a decoder LLM allocates on the GPU, from its architecture.

One entry per parameter tensor, as transformers lays them out (q/k/v/o projections, gated MLP,
norms, experts as separate or fused tensors, embeddings, untied lm_head). Sizes are exact for
unquantized checkpoints; quantized layouts follow each method's packing (see QUANT_NOTES).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_preflight.estimators.arch import LlmArch

QUANT_NOTES = {
    "gptq": "4-bit GPTQ: int32-packed weights (bits/8 bytes per weight) + fp16 scales and packed zeros per group "
            "of group_size input rows + int32 g_idx",
    "awq": "4-bit AWQ: int32-packed weights + fp16 scales and packed zeros per group",
    "bnb8": "bitsandbytes 8-bit: int8 weights + one fp32 scale per output row",
    "bnb4": "bitsandbytes 4-bit (nf4/fp4): 4-bit weights + one fp32 absmax per 64 weights (uint8 with double "
            "quantization, plus one fp32 per 256 absmax)",
    "fp8": "FP8: 1 byte per weight + fp32 block scales",
    "fbgemm_fp8": "FBGEMM FP8: 1 byte per weight + one fp32 scale per output row",
    "mxfp4": "MXFP4: 4-bit weights + one uint8 scale per 32 weights (expert weights only)",
    "int8wo": "torchao int8 weight-only: int8 weights + fp32 scale and int8 zero point per output row",
    "int8dq": "torchao int8 dynamic activation + int8 weight: int8 weights + fp32 scale and int8 zero point per row",
    "int4wo": "torchao int4 weight-only: 4-bit weights + bf16 scale and zero point per group of 128 inputs",
    "fp8wo": "torchao float8 weight-only: float8_e4m3fn weights + one fp32 scale per output row",
    "fp8dq": "torchao float8 dynamic activation + float8 weight: float8_e4m3fn weights + one fp32 scale per tensor",
}

# Methods whose checkpoint or loader keeps MoE expert weights quantized in transformers >= 5, where the
# experts are fused 3D nn.Parameters rather than nn.Linear modules: replace_with_bnb_linear and torchao's
# param_needs_quantization only touch nn.Linear (transformers 5.17 integrations/bitsandbytes.py,
# quantizers/quantizer_torchao.py), so their experts stay 16-bit; FP8 swaps the experts for FP8Experts
# (integrations/finegrained_fp8.py replace_with_fp8_linear) and MXFP4 quantizes only the experts.
EXPERT_QUANT_METHODS = {"fp8", "mxfp4", "gptq", "awq"}
# Quantized on the GPU while loading (a 16-bit checkpoint): the rest are loaded as stored.
ON_THE_FLY_METHODS = {"bnb4", "bnb8", "int8wo", "int8dq", "int4wo", "fp8wo", "fp8dq"}
TORCHAO_TYPES = {"Int8WeightOnlyConfig": "int8wo", "Int8DynamicActivationInt8WeightConfig": "int8dq",
                 "Int4WeightOnlyConfig": "int4wo", "Float8WeightOnlyConfig": "fp8wo",
                 "Float8DynamicActivationFloat8WeightConfig": "fp8dq"}


@dataclass(frozen=True)
class Tensor:
    name: str
    numel: int
    bytes: int
    quantized: bool = False
    aux: bool = False  # a quantization constant (scale, zero point, code table), not a model parameter


def torchao_type(q: dict | None) -> tuple[str | None, dict]:
    """(method, its _data) of a TorchAoConfig as transformers serializes it: quant_type.default._type."""
    qt = (q or {}).get("quant_type")
    if isinstance(qt, dict):
        qt = qt.get("default", qt)
    if isinstance(qt, dict):
        name = str(qt.get("_type", ""))
        return TORCHAO_TYPES.get(name), dict(qt.get("_data") or {})
    if isinstance(qt, str):  # older string form: "int8_weight_only", "int4_weight_only", "float8_weight_only"
        text = qt.lower()
        for key, method in (("int4", "int4wo"), ("float8_dynamic", "fp8dq"), ("float8", "fp8wo"),
                            ("int8_dynamic", "int8dq"), ("int8", "int8wo")):
            if key in text:
                return method, dict((q or {}).get("quant_type_kwargs") or {})
    return None, {}


def quant_method(arch: LlmArch) -> str | None:
    q = arch.quant
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method", "")).lower()
    if method in ("gptq", "awq"):
        return method
    if method == "bitsandbytes" or "load_in_4bit" in q or "load_in_8bit" in q:
        return "bnb4" if q.get("load_in_4bit") or q.get("bnb_4bit_quant_type") else "bnb8"
    if method == "torchao":
        return torchao_type(q)[0] or "torchao"
    if method == "fbgemm_fp8":
        return "fbgemm_fp8"
    if method == "fp8" or "fp8" in method:
        return "fp8"
    if method == "mxfp4":
        return "mxfp4"
    if method == "compressed-tensors":
        text = str(q).lower()
        if "float" in text and "8" in text:
            return "fp8"
        return "gptq"
    return method or None


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _bnb4_parts(name: str, numel: int, q: dict | None) -> list[Tensor]:
    """bitsandbytes 0.50 Params4bit after quantize_4bit (functional.py; backends/cuda/ops.py): packed uint8
    data ((n + 1) // 2 bytes), absmax float32 per block of 64, the 16-entry float32 code table (one per
    tensor, get_4bit_type). With compress_statistics (double quantization) the absmax is quantized by
    quantize_blockwise(blocksize=256): uint8 absmax, fp32 offset scalar, state2 absmax fp32 per 256 absmax
    and a 256-entry float32 copy of the dynamic code table per tensor."""
    blocks = -(-numel // 64)
    out = [Tensor(name + ".weight", numel, (numel + 1) // 2, True),
           Tensor(name + ".quant_map", 16, 64, True, True)]
    if (q or {}).get("bnb_4bit_use_double_quant"):
        nested = -(-blocks // 256)
        out += [Tensor(name + ".absmax", blocks, blocks, True, True),
                Tensor(name + ".nested_offset", 1, 4, True, True),
                Tensor(name + ".nested_absmax", nested, nested * 4, True, True),
                Tensor(name + ".nested_quant_map", 256, 1024, True, True)]
    else:
        out.append(Tensor(name + ".absmax", blocks, blocks * 4, True, True))
    return out


def _torchao_parts(name: str, method: str, n_in: int, n_out: int, dt: int, q: dict | None) -> list[Tensor] | None:
    """torchao 0.18 tensor subclasses (quantization/quantize_/workflows): None when torchao leaves the
    weight unquantized (int4: in_features not a multiple of group_size; float8 dynamic: a dimension not a
    multiple of 16, _fp8_mm_compat)."""
    numel = n_in * n_out
    data = torchao_type(q)[1]
    if method in ("int8wo", "int8dq"):  # Int8Tensor: qdata int8, scale fp32 (N, 1), zero_point int8 (N, 1)
        return [Tensor(name + ".qdata", numel, numel, True), Tensor(name + ".scale", n_out, n_out * 4, True, True),
                Tensor(name + ".zero_point", n_out, n_out, True, True)]
    if method == "fp8wo":  # Float8Tensor PerRow: qdata float8_e4m3fn, scale fp32 (N, 1)
        return [Tensor(name + ".qdata", numel, numel, True), Tensor(name + ".scale", n_out, n_out * 4, True, True)]
    if method == "fp8dq":  # Float8Tensor PerTensor (the config's default granularity): one fp32 scale
        if n_in % 16 or n_out % 16:
            return None
        return [Tensor(name + ".qdata", numel, numel, True), Tensor(name + ".scale", 1, 4, True, True)]
    if method == "int4wo":
        group = int(data.get("group_size") or 128)
        if n_in % group:
            return None
        if str(data.get("int4_packing_format", "plain")).lower() == "tile_packed_to_4d":
            # Int4TilePackedTo4dTensor: the weight padded to in_features % 1024 == 0 and out_features % 8 == 0,
            # packed to int32 [n/8][k/128][32][4] (k * n / 2 bytes) + bf16 scale_and_zero (k/group, n, 2)
            k, n = _round_up(n_in, 1024), _round_up(n_out, int(data.get("int4_tile_packed_ntile") or 8))
            groups = k // group
            return [Tensor(name + ".qdata", numel, k * n // 2, True),
                    Tensor(name + ".scale_and_zero", groups * n * 2, groups * n * 2 * dt, True, True)]
        # Int4Tensor (plain, the default; needs mslk): qdata (N, K/2) uint8, scale and zero_point (K/group, N)
        groups = n_in // group
        return [Tensor(name + ".qdata", numel, numel // 2, True),
                Tensor(name + ".scale", groups * n_out, groups * n_out * dt, True, True),
                Tensor(name + ".zero_point", groups * n_out, groups * n_out * dt, True, True)]
    return None


def _linear(name: str, n_in: int, n_out: int, dtype_bytes: int, bias: bool, method: str | None,
            quantize: bool, q: dict | None) -> list[Tensor]:
    numel = n_in * n_out
    out: list[Tensor] = []
    torchao = _torchao_parts(name, method, n_in, n_out, dtype_bytes or 2, q) if quantize and method else None
    if not quantize or method is None:
        out.append(Tensor(name + ".weight", numel, numel * dtype_bytes))
    elif torchao is not None:
        out += torchao
    elif method in ("gptq", "awq"):
        bits = int((q or {}).get("bits", (q or {}).get("w_bit", 4)))
        group = int((q or {}).get("group_size", (q or {}).get("q_group_size", 128)) or 128)
        group = n_in if group <= 0 else group
        groups = -(-n_in // group)
        out.append(Tensor(name + ".qweight", numel, numel * bits // 8, True))
        out.append(Tensor(name + ".scales", groups * n_out, groups * n_out * 2, True, True))
        out.append(Tensor(name + ".qzeros", groups * n_out, groups * n_out * bits // 8, True, True))
        if method == "gptq":
            out.append(Tensor(name + ".g_idx", n_in, n_in * 4, True, True))
    elif method == "bnb8":  # Int8Params: CB (= data) int8 + SCB fp32 per output row
        out.append(Tensor(name + ".weight", numel, numel, True))
        out.append(Tensor(name + ".SCB", n_out, n_out * 4, True, True))
    elif method == "bnb4":
        out += _bnb4_parts(name, numel, q)
    elif method == "fp8":
        block = (q or {}).get("weight_block_size")
        out.append(Tensor(name + ".weight", numel, numel, True))
        if block is None and "weight_block_size" in (q or {}):  # per-tensor: one fp32 scalar
            out.append(Tensor(name + ".weight_scale_inv", 1, 4, True, True))
        else:
            bo, bi = (list(block) + [128, 128])[:2] if isinstance(block, (list, tuple)) else (128, 128)
            blocks = -(-n_out // int(bo)) * -(-n_in // int(bi))
            out.append(Tensor(name + ".weight_scale_inv", blocks, blocks * 4, True, True))
    elif method == "fbgemm_fp8":  # FbgemmFp8Linear: fp8 weight, fp32 weight_scale (N, 1), input_scale_ub (1)
        out += [Tensor(name + ".weight", numel, numel, True), Tensor(name + ".weight_scale", n_out, n_out * 4, True, True),
                Tensor(name + ".input_scale_ub", 1, 4, True, True)]
    elif method == "mxfp4":
        out.append(Tensor(name + "_blocks", numel, numel // 2, True))
        out.append(Tensor(name + "_scales", numel // 32, numel // 32, True, True))
    else:
        out.append(Tensor(name + ".weight", numel, numel * dtype_bytes))
    if bias:
        out.append(Tensor(name + ".bias", n_out, n_out * dtype_bytes))
    return out


def _norm_tensors(arch: LlmArch, name: str, width: int, dt: int) -> list[Tensor]:
    """RMSNorm / CohereLayerNorm: weight; LayerNorm: weight + bias; OLMo's LayerNorm: no parameters."""
    if arch.norm == "ln_noparam":
        return []
    out = [Tensor(name + ".weight", width, width * dt)]
    if arch.norm == "ln":
        out.append(Tensor(name + ".bias", width, width * dt))
    return out


def _qk_norm_tensors(arch: LlmArch, p: str, dt: int) -> list[Tensor]:
    hd = arch.head_dim
    if arch.family == "phi":  # q_layernorm / k_layernorm: LayerNorm(head_dim)
        return _norm_tensors(arch, p + "q_norm", hd, dt) + _norm_tensors(arch, p + "k_norm", hd, dt)
    if arch.family == "stablelm":  # StableLmLayerNormPerHead: one LayerNorm(head_dim, bias=False) per head
        return [Tensor(p + "q_norm", arch.heads * hd, arch.heads * hd * dt),
                Tensor(p + "k_norm", arch.kv_heads * hd, arch.kv_heads * hd * dt)]
    if arch.family == "cohere" or arch.qk_norm_full:  # weights over (heads, head_dim)
        return [Tensor(p + "q_norm", arch.heads * hd, arch.heads * hd * dt),
                Tensor(p + "k_norm", arch.kv_heads * hd, arch.kv_heads * hd * dt)]
    return [Tensor(p + "q_norm", hd, hd * dt), Tensor(p + "k_norm", hd, hd * dt)]


def _mamba_tensors(arch: LlmArch, p: str, lin, dt: int) -> list[Tensor]:
    """MambaMixer (v1) / Mamba2Mixer parameters (modeling_mamba.py, modeling_mamba2.py)."""
    m, h = arch.mamba, arch.hidden
    di, ds, k = m["d_inner"], m["d_state"], m["d_conv"]
    ts: list[Tensor] = []
    if m["version"] == 2:
        conv = di + 2 * m["n_groups"] * ds
        nh = m["heads"]
        ts += lin("mixer.in_proj", h, di + conv + nh, bool(m["bias"]))
        ts.append(Tensor(p + "mixer.conv1d.weight", conv * k, conv * k * dt))
        if m["conv_bias"]:
            ts.append(Tensor(p + "mixer.conv1d.bias", conv, conv * dt))
        ts += [Tensor(p + "mixer.dt_bias", nh, nh * dt), Tensor(p + "mixer.A_log", nh, nh * dt),
               Tensor(p + "mixer.D", nh, nh * dt), Tensor(p + "mixer.norm", di, di * dt)]
        ts += lin("mixer.out_proj", di, h, bool(m["bias"]))
        return ts
    r = m["dt_rank"]
    ts += lin("mixer.in_proj", h, 2 * di, bool(m["bias"]))
    ts.append(Tensor(p + "mixer.conv1d.weight", di * k, di * k * dt))
    if m["conv_bias"]:
        ts.append(Tensor(p + "mixer.conv1d.bias", di, di * dt))
    ts += lin("mixer.x_proj", di, r + 2 * ds)
    ts += lin("mixer.dt_proj", r, di, True)
    ts += [Tensor(p + "mixer.A_log", di * ds, di * ds * dt), Tensor(p + "mixer.D", di, di * dt)]
    ts += lin("mixer.out_proj", di, h, bool(m["bias"]))
    if m.get("jamba_norms"):
        ts += [Tensor(p + "mixer.dt_layernorm", r, r * dt), Tensor(p + "mixer.b_layernorm", ds, ds * dt),
               Tensor(p + "mixer.c_layernorm", ds, ds * dt)]
    return ts


def _attention_tensors(arch: LlmArch, p: str, lin, dt: int) -> list[Tensor]:
    h = arch.hidden
    ts: list[Tensor] = []
    if arch.mla:
        qk = arch.heads * arch.qk_head_dim
        if arch.q_lora_rank:
            ts += lin("q_a_proj", h, arch.q_lora_rank) + [Tensor(p + "q_a_layernorm", arch.q_lora_rank,
                                                                 arch.q_lora_rank * dt)]
            ts += lin("q_b_proj", arch.q_lora_rank, qk)
        else:
            ts += lin("q_proj", h, qk)
        ts += lin("kv_a_proj_with_mqa", h, arch.kv_lora_rank + arch.qk_rope_dim)
        ts.append(Tensor(p + "kv_a_layernorm", arch.kv_lora_rank, arch.kv_lora_rank * dt))
        ts += lin("kv_b_proj", arch.kv_lora_rank, arch.heads * (arch.qk_nope_dim + arch.v_head_dim))
        ts += lin("o_proj", arch.heads * arch.v_head_dim, h)
        return ts
    hd = arch.head_dim
    if arch.fused_qkv:
        ts += lin("qkv_proj", h, (arch.heads + 2 * arch.kv_heads) * hd, arch.qkv_bias)
    else:
        ts += lin("q_proj", h, arch.heads * hd, arch.qkv_bias)
        ts += lin("k_proj", h, arch.kv_heads * hd, arch.qkv_bias)
        ts += lin("v_proj", h, arch.kv_heads * hd, arch.qkv_bias)
    ts += lin("o_proj", arch.heads * hd, h, arch.o_bias)
    if arch.qk_norm:
        ts += _qk_norm_tensors(arch, p, dt)
    return ts


def _mlp_tensors(arch: LlmArch, i: int, p: str, lin, method, fused_experts: bool, dt: int) -> list[Tensor]:
    h = arch.hidden
    ts: list[Tensor] = []
    if arch.is_moe and arch.moe_layers[i]:
        ts.append(Tensor(p + "router", h * arch.experts, h * arch.experts * dt))
        if fused_experts and method not in EXPERT_QUANT_METHODS:
            # transformers >= 5 stores each layer's experts as two 3D tensors:
            # gate_up_proj (E, 2*I, h) and down_proj (E, h, I); bitsandbytes and torchao leave them 16-bit
            e, im = arch.experts, arch.moe_intermediate
            ts.append(Tensor(p + "experts.gate_up_proj", e * 2 * im * h, e * 2 * im * h * dt))
            ts.append(Tensor(p + "experts.down_proj", e * im * h, e * im * h * dt))
        else:
            for e in range(arch.experts):
                for name, a, b in (("gate", h, arch.moe_intermediate), ("up", h, arch.moe_intermediate),
                                   ("down", arch.moe_intermediate, h)):
                    ts += lin(f"experts.{e}.{name}", a, b, quantize=method is not None)
        if arch.shared_intermediate:
            for name, a, b in (("gate", h, arch.shared_intermediate), ("up", h, arch.shared_intermediate),
                               ("down", arch.shared_intermediate, h)):
                ts += lin(f"shared.{name}", a, b)
            if arch.model_type == "qwen2_moe":
                ts.append(Tensor(p + "shared_expert_gate", h, h * dt))
        return ts
    inter = arch.intermediate
    if arch.gated_mlp:
        ts += lin("gate_proj", h, inter, arch.mlp_bias) + lin("up_proj", h, inter, arch.mlp_bias)
    else:  # plain MLP: fc_in -> activation -> fc_out (GPT-2, NeoX, GPT-J, Falcon, BLOOM, OPT, Phi, Starcoder2)
        ts += lin("fc_in", h, inter, arch.mlp_bias)
    ts += lin("down_proj", inter, h, arch.mlp_bias)
    return ts


def layer_norm_count(arch: LlmArch, i: int) -> int:
    if arch.mixers and arch.mixers[i] == "mamba" and arch.family != "jamba":
        return 1  # MambaBlock: one norm before the mixer, no MLP
    if arch.parallel == 1:
        return 1
    return arch.norms_per_layer


def weight_tensors(arch: LlmArch, dtype_bytes: int = 2, dequantize_mxfp4: bool = False,
                   fused_experts: bool = True, buffers: bool = False) -> list[Tensor]:
    """Parameter tensors as transformers lays them out; with `buffers`, also the buffers its modules
    register (rotary tables, GPT-J position tables, BigCode's mask), which transformers allocates on the
    GPU next to the weights."""
    method = quant_method(arch)
    q = arch.quant if isinstance(arch.quant, dict) else None
    if method == "mxfp4" and dequantize_mxfp4:
        method = None
    skip = set((q or {}).get("modules_to_not_convert") or (q or {}).get("llm_int8_skip_modules") or [])
    h, dt = arch.hidden, dtype_bytes
    emb = arch.embed_dim or h
    ts: list[Tensor] = [Tensor("embed_tokens.weight", arch.vocab * emb, arch.vocab * emb * dt)]
    if arch.learned_positions:
        ts.append(Tensor("embed_positions.weight", arch.learned_positions * h, arch.learned_positions * h * dt))
    if arch.embed_norm:
        ts += _norm_tensors(arch, "embed_norm", h, dt)
    if emb != h:  # OPT project_in / project_out (no bias)
        ts += [Tensor("project_in.weight", emb * h, emb * h * dt), Tensor("project_out.weight", emb * h, emb * h * dt)]
    quant_dense = method not in (None, "mxfp4")  # MXFP4 quantizes expert weights only
    for i in range(arch.layers):
        p = f"layers.{i}."

        def lin(name, n_in, n_out, bias=False, quantize=quant_dense, p=p):
            return _linear(p + name, n_in, n_out, dt, bias, method, quantize and not any(s in name for s in skip), q)

        mamba = bool(arch.mixers) and arch.mixers[i] == "mamba"
        ts += _mamba_tensors(arch, p, lin, dt) if mamba else _attention_tensors(arch, p, lin, dt)
        if not mamba or arch.family == "jamba":
            ts += _mlp_tensors(arch, i, p, lin, method, fused_experts, dt)
        for k in range(layer_norm_count(arch, i)):
            ts += _norm_tensors(arch, p + f"norm{k}", h, dt)
    if arch.final_norm:
        ts += _norm_tensors(arch, "norm", h, dt)
    if not arch.tied:
        ts.append(Tensor("lm_head.weight", arch.vocab * emb, arch.vocab * emb * dt))
    if arch.lm_head_bias:
        ts.append(Tensor("lm_head.bias", arch.vocab, arch.vocab * dt))
    return ts + buffer_tensors(arch, dt) if buffers else ts


def buffer_tensors(arch: LlmArch, dt: int) -> list[Tensor]:
    """Buffers the model allocates next to its parameters (named "buffer:..."; not parameters)."""
    out: list[Tensor] = []
    if arch.pos == "rope" and not arch.mla:  # RotaryEmbedding: inv_freq + original_inv_freq, float32
        half = (arch.rotary_dim or arch.head_dim) // 2
        out.append(Tensor("buffer:rotary_emb", 2 * half, 2 * half * 4))
    if arch.family == "gpt_bigcode":  # a max_positions x max_positions bool causal mask
        n = arch.learned_positions
        out.append(Tensor("buffer:bias", n * n, n * n))
    if arch.family == "gptj":  # GPTJAttention.embed_positions per layer: max_positions x rotary_dim float32
        n = (arch.max_positions or 2048) * (arch.rotary_dim or arch.head_dim)
        out += [Tensor(f"buffer:layers.{i}.embed_positions", n, n * 4) for i in range(arch.layers)]
    if arch.family == "falcon_mamba":  # dt / B / C RMSNorm weights registered as buffers
        m = arch.mamba
        n = m["dt_rank"] + 2 * m["d_state"]
        out += [Tensor(f"buffer:layers.{i}.mixer.norms", n, n * dt) for i in range(arch.layers)]
    return out


def parameter_count(tensors: list[Tensor]) -> int:
    """Model parameters: buffers and quantization constants (scales, zero points, code tables) excluded."""
    return sum(t.numel for t in tensors if not t.name.startswith("buffer:") and not t.aux and not t.name.endswith(
        (".scales", ".qzeros", ".g_idx", ".SCB", ".absmax", "_scales", ".weight_scale_inv")))
