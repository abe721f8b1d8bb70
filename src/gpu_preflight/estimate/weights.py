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


def weight_tensors(arch: LlmArch, dtype_bytes: int = 2, dequantize_mxfp4: bool = False,
                   fused_experts: bool = True) -> list[Tensor]:
    method = quant_method(arch)
    q = arch.quant if isinstance(arch.quant, dict) else None
    if method == "mxfp4" and dequantize_mxfp4:
        method = None
    skip = set((q or {}).get("modules_to_not_convert") or (q or {}).get("llm_int8_skip_modules") or [])
    h, dt = arch.hidden, dtype_bytes
    ts: list[Tensor] = [Tensor("embed_tokens.weight", arch.vocab * h, arch.vocab * h * dt)]
    for i in range(arch.layers):
        p = f"layers.{i}."
        quant_dense = method not in (None, "mxfp4")  # MXFP4 quantizes expert weights only

        def lin(name, n_in, n_out, bias=False, quantize=quant_dense):
            return _linear(p + name, n_in, n_out, dt, bias, method, quantize and not any(s in name for s in skip), q)

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
        else:
            hd = arch.head_dim
            ts += lin("q_proj", h, arch.heads * hd, arch.qkv_bias)
            ts += lin("k_proj", h, arch.kv_heads * hd, arch.qkv_bias)
            ts += lin("v_proj", h, arch.kv_heads * hd, arch.qkv_bias)
            ts += lin("o_proj", arch.heads * hd, h, arch.o_bias)
            if arch.qk_norm:
                ts += [Tensor(p + "q_norm", hd, hd * dt), Tensor(p + "k_norm", hd, hd * dt)]
        is_moe = arch.is_moe and arch.moe_layers[i]
        if is_moe:
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
        else:
            inter = arch.intermediate
            ts += lin("gate_proj", h, inter, arch.mlp_bias) + lin("up_proj", h, inter, arch.mlp_bias)
            ts += lin("down_proj", inter, h, arch.mlp_bias)
        ts += [Tensor(p + f"norm{k}", h, h * dt) for k in range(arch.norms_per_layer)]
    ts.append(Tensor("norm.weight", h, h * dt))
    if not arch.tied:
        ts.append(Tensor("lm_head.weight", arch.vocab * h, arch.vocab * h * dt))
    return ts


def parameter_count(tensors: list[Tensor]) -> int:
    return sum(t.numel for t in tensors if not t.name.endswith((".scales", ".qzeros", ".g_idx", ".SCB", ".absmax",
                                                                 "_scales", ".weight_scale_inv")))
