"""The weight tensors a decoder LLM allocates on the GPU, from its architecture.

One entry per parameter tensor, as transformers lays them out (q/k/v/o projections, gated MLP,
norms, experts as separate or fused tensors, embeddings, untied lm_head). Sizes are exact for
unquantized checkpoints; quantized layouts follow each method's packing (see QUANT_NOTES).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_preflight.estimate.arch import LlmArch

QUANT_NOTES = {
    "gptq": "4-bit GPTQ: int32-packed weights (bits/8 bytes per weight) + fp16 scales and packed zeros per group "
            "of group_size input rows + int32 g_idx",
    "awq": "4-bit AWQ: int32-packed weights + fp16 scales and packed zeros per group",
    "bnb8": "bitsandbytes 8-bit: int8 weights + one fp32 scale per output row",
    "bnb4": "bitsandbytes 4-bit (nf4/fp4): 4-bit weights + one fp32 absmax per 64 weights (uint8 with double "
            "quantization)",
    "fp8": "FP8: 1 byte per weight + fp32 block scales",
    "mxfp4": "MXFP4: 4-bit weights + one uint8 scale per 32 weights (expert weights only)",
}


@dataclass(frozen=True)
class Tensor:
    name: str
    numel: int
    bytes: int
    quantized: bool = False


def quant_method(arch: LlmArch) -> str | None:
    q = arch.quant
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method", "")).lower()
    if method in ("gptq", "awq"):
        return method
    if method == "bitsandbytes" or "load_in_4bit" in q or "load_in_8bit" in q:
        return "bnb4" if q.get("load_in_4bit") or q.get("bnb_4bit_quant_type") else "bnb8"
    if method in ("fp8", "fbgemm_fp8") or "fp8" in method:
        return "fp8"
    if method == "mxfp4":
        return "mxfp4"
    if method == "compressed-tensors":
        text = str(q).lower()
        if "float" in text and "8" in text:
            return "fp8"
        return "gptq"
    return method or None


def _linear(name: str, n_in: int, n_out: int, dtype_bytes: int, bias: bool, method: str | None,
            quantize: bool, q: dict | None) -> list[Tensor]:
    numel = n_in * n_out
    out: list[Tensor] = []
    if not quantize or method is None:
        out.append(Tensor(name + ".weight", numel, numel * dtype_bytes))
    elif method in ("gptq", "awq"):
        bits = int((q or {}).get("bits", (q or {}).get("w_bit", 4)))
        group = int((q or {}).get("group_size", (q or {}).get("q_group_size", 128)) or 128)
        group = n_in if group <= 0 else group
        groups = -(-n_in // group)
        out.append(Tensor(name + ".qweight", numel, numel * bits // 8, True))
        out.append(Tensor(name + ".scales", groups * n_out, groups * n_out * 2, True))
        out.append(Tensor(name + ".qzeros", groups * n_out, groups * n_out * bits // 8, True))
        if method == "gptq":
            out.append(Tensor(name + ".g_idx", n_in, n_in * 4, True))
    elif method == "bnb8":
        out.append(Tensor(name + ".weight", numel, numel, True))
        out.append(Tensor(name + ".SCB", n_out, n_out * 4, True))
    elif method == "bnb4":
        blocks = -(-numel // 64)
        double = bool((q or {}).get("bnb_4bit_use_double_quant"))
        out.append(Tensor(name + ".weight", numel, -(-numel // 2), True))
        out.append(Tensor(name + ".absmax", blocks, blocks * (1 if double else 4), True))
    elif method == "fp8":
        blocks = -(-n_in // 128) * -(-n_out // 128)
        out.append(Tensor(name + ".weight", numel, numel, True))
        out.append(Tensor(name + ".weight_scale_inv", blocks, blocks * 4, True))
    elif method == "mxfp4":
        out.append(Tensor(name + "_blocks", numel, numel // 2, True))
        out.append(Tensor(name + "_scales", numel // 32, numel // 32, True))
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
        if fused_experts and method is None:
            # transformers >= 5 stores each layer's experts as two 3D tensors:
            # gate_up_proj (E, 2*I, h) and down_proj (E, h, I)
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
    return sum(t.numel for t in tensors if not t.name.startswith("buffer:") and not t.name.endswith((".scales", ".qzeros", ".g_idx", ".SCB", ".absmax",
                                                                 "_scales", ".weight_scale_inv")))
