"""The GGUF a model would become: llama.cpp's tensor layout and its per-tensor quantization recipe.

`gguf_tensors(config)` lists the tensors convert_hf_to_gguf.py writes for a Hugging Face config
(names, ggml shapes fastest-varying first); `quantize(tensors, "Q4_K_M", ...)` assigns each tensor
the type llama-quantize gives it, following `llama_tensor_get_type_impl` in src/llama-quant.cpp
(llama.cpp 0c1e57098 / llama-cpp-python 0.3.36; the same rules in 4227c9be / 0.3.16, 2025-08):

- only 2-D and 3-D tensors whose name ends in "weight" are quantized; norms, the MoE router
  (ffn_gate_inp) and 1-D tensors keep their type (F32 as converted);
- output.weight (and token_embd.weight when the embeddings are tied) gets Q6_K, unless its rows do
  not divide into 256-element blocks (then Q8_0);
- Q4_K_M / Q5_K_M: attn_v and ffn_down get Q6_K in the first and last eighth of the layers and
  every third layer in between (`use_more_bits`); Q3_K_M / Q3_K_L / Q2_K / Q4_K_S have their own
  attn_v / attn_output / ffn_down bumps; 8-expert models (Mixtral) get Q8_0 attn_v / attn_k;
  70B-class Llama (80 layers, GQA) gets Q5_K attn_v where the recipe says Q3_K/Q4_K;
- a tensor whose row length does not divide into the type's block falls back (Q4_K -> Q5_0,
  Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0, then F16).

Types that need an importance matrix (IQ1/IQ2/IQ3_XXS) are not predicted: their mix depends on
data the recipe does not see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpu_preflight.errors import UsageError
from gpu_preflight.models.gguf import GGML_TYPES

TYPE_SIZES: dict[str, tuple[int, int]] = {name: (blk, size) for name, blk, size in GGML_TYPES.values()}
GGUF_ALIGNMENT = 32

# llama_ftype name -> (id in enum llama_ftype, default tensor type): include/llama.h and
# llama_ftype_get_default_type in src/llama-quant.cpp
FTYPES: dict[str, tuple[int, str]] = {
    "F32": (0, "F32"), "F16": (1, "F16"), "BF16": (32, "BF16"),
    "Q4_0": (2, "Q4_0"), "Q4_1": (3, "Q4_1"), "Q5_0": (8, "Q5_0"), "Q5_1": (9, "Q5_1"), "Q8_0": (7, "Q8_0"),
    "Q2_K": (10, "Q2_K"), "Q3_K_S": (11, "Q3_K"), "Q3_K_M": (12, "Q3_K"), "Q3_K_L": (13, "Q3_K"),
    "Q4_K_S": (14, "Q4_K"), "Q4_K_M": (15, "Q4_K"), "Q5_K_S": (16, "Q5_K"), "Q5_K_M": (17, "Q5_K"),
    "Q6_K": (18, "Q6_K"), "IQ4_NL": (25, "IQ4_NL"), "IQ4_XS": (30, "IQ4_XS"),
}
NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M",
                 "Q2_K_S")
_FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "IQ4_XS": "IQ4_NL"}
_FLOAT = ("F32", "F16", "BF16")


@dataclass
class PlannedTensor:
    name: str
    ne: tuple[int, ...]     # ggml order: ne[0] is the row length
    type: str

    @property
    def nbytes(self) -> int:
        blk, size = TYPE_SIZES[self.type]
        n = 1
        for d in self.ne[1:]:
            n *= d
        return self.ne[0] // blk * size * n


@dataclass
class ModelShape:
    """What the recipe and the tensor list depend on (from config.json or GGUF metadata)."""

    arch: str               # GGUF general.architecture: llama, qwen2, qwen3, gemma2, gemma3, phi3, qwen2moe, qwen3moe
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    tied: bool
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ff_shexp: int = 0
    qkv_bias: bool = False
    qk_norm: bool = False
    post_norms: bool = False
    fused_qkv: bool = False
    rope_freqs: bool = False


def gguf_tensors(s: ModelShape, float_type: str = "BF16") -> list[PlannedTensor]:
    """The tensors of the converted (unquantized) GGUF, in llama.cpp's names and shapes."""
    E, hd = s.n_embd, s.head_dim
    q, kv = s.n_head * hd, s.n_head_kv * hd
    f, n32 = float_type, "F32"
    out = [PlannedTensor("token_embd.weight", (E, s.n_vocab), f)]
    if s.rope_freqs:
        out.append(PlannedTensor("rope_freqs.weight", (hd // 2,), n32))
    out.append(PlannedTensor("output_norm.weight", (E,), n32))
    if not s.tied:
        out.append(PlannedTensor("output.weight", (E, s.n_vocab), f))
    for il in range(s.n_layer):
        p = f"blk.{il}."
        out.append(PlannedTensor(p + "attn_norm.weight", (E,), n32))
        if s.fused_qkv:
            out.append(PlannedTensor(p + "attn_qkv.weight", (E, q + 2 * kv), f))
        else:
            out += [PlannedTensor(p + "attn_q.weight", (E, q), f), PlannedTensor(p + "attn_k.weight", (E, kv), f),
                    PlannedTensor(p + "attn_v.weight", (E, kv), f)]
        if s.qkv_bias:
            out += [PlannedTensor(p + "attn_q.bias", (q,), n32), PlannedTensor(p + "attn_k.bias", (kv,), n32),
                    PlannedTensor(p + "attn_v.bias", (kv,), n32)]
        if s.qk_norm:
            out += [PlannedTensor(p + "attn_q_norm.weight", (hd,), n32),
                    PlannedTensor(p + "attn_k_norm.weight", (hd,), n32)]
        out.append(PlannedTensor(p + "attn_output.weight", (q, E), f))
        if s.post_norms:
            out.append(PlannedTensor(p + "post_attention_norm.weight", (E,), n32))
        out.append(PlannedTensor(p + "ffn_norm.weight", (E,), n32))
        if s.n_expert:
            X, F = s.n_expert, s.n_ff_exp
            out += [PlannedTensor(p + "ffn_gate_inp.weight", (E, X), n32),
                    PlannedTensor(p + "ffn_gate_exps.weight", (E, F, X), f),
                    PlannedTensor(p + "ffn_up_exps.weight", (E, F, X), f),
                    PlannedTensor(p + "ffn_down_exps.weight", (F, E, X), f)]
            if s.n_ff_shexp:
                S = s.n_ff_shexp
                out += [PlannedTensor(p + "ffn_gate_inp_shexp.weight", (E,), n32),
                        PlannedTensor(p + "ffn_gate_shexp.weight", (E, S), f),
                        PlannedTensor(p + "ffn_up_shexp.weight", (E, S), f),
                        PlannedTensor(p + "ffn_down_shexp.weight", (S, E), f)]
        elif s.fused_qkv:
            out += [PlannedTensor(p + "ffn_up.weight", (E, 2 * s.n_ff), f),
                    PlannedTensor(p + "ffn_down.weight", (s.n_ff, E), f)]
        else:
            out += [PlannedTensor(p + "ffn_gate.weight", (E, s.n_ff), f),
                    PlannedTensor(p + "ffn_up.weight", (E, s.n_ff), f),
                    PlannedTensor(p + "ffn_down.weight", (s.n_ff, E), f)]
        if s.post_norms:
            out.append(PlannedTensor(p + "post_ffw_norm.weight", (E,), n32))
    return out


def parse_ftype(name: str) -> str:
    key = name.strip().upper()
    if key in NEEDS_IMATRIX:
        raise UsageError(f"--quant {name}: llama-quantize needs an importance matrix for this type, so its "
                         f"tensor mix depends on data", hint="pass a published .gguf of this quantization instead")
    if key not in FTYPES:
        raise UsageError(f"--quant {name} is not a llama.cpp file type gpu-preflight predicts",
                         hint="use one of " + ", ".join(FTYPES))
    return key


def quantize(tensors: list[PlannedTensor], ftype: str, s: ModelShape) -> list[PlannedTensor]:
    """Each tensor with the type `llama-quantize --ftype` gives it (no imatrix, no overrides)."""
    ftype = parse_ftype(ftype)
    default = FTYPES[ftype][1]
    st = _State(s, ftype, tensors)
    return [PlannedTensor(t.name, t.ne, st.type_of(t, default)) for t in tensors]


class _State:
    def __init__(self, s: ModelShape, ftype: str, tensors: list[PlannedTensor]):
        self.s, self.ftype = s, ftype
        self.tied = not any(t.name == "output.weight" for t in tensors)
        self.n_attn_v = sum(1 for t in tensors if _category(t.name) in ("attn_v", "attn_qkv"))
        self.i_attn_v = self.i_down = 0
        self.n_gqa = s.n_head // max(s.n_head_kv, 1)
        self.is_70b = s.arch == "llama" and s.n_layer == 80 and s.n_head != s.n_head_kv

    def type_of(self, t: PlannedTensor, default: str) -> str:
        if not _quantizable(t):
            return t.type
        if default in _FLOAT:
            return default
        new = self._impl(t, default)
        return _fallback(t, new)

    def _impl(self, t: PlannedTensor, new: str) -> str:
        s, ft, cat = self.s, self.ftype, _category(t.name)
        more = _use_more_bits
        if cat == "output" or (self.tied and cat == "token_embd"):
            blk = TYPE_SIZES[new][0]
            if t.ne[0] % blk:
                return "Q8_0"
            return new if new == "Q8_0" else "Q6_K"
        if cat == "token_embd":
            return new
        if cat in ("attn_v", "attn_qkv"):  # category_is_attn_v: the fused QKV follows attn_v's rules
            i, n = self.i_attn_v, self.n_attn_v
            if ft == "Q2_K":
                new = "Q4_K" if self.n_gqa >= 4 else "Q3_K"
            elif ft == "Q3_K_M":
                new = "Q5_K" if i < 2 else "Q4_K"
            elif ft == "Q3_K_L":
                new = "Q5_K"
            elif ft in ("IQ4_NL", "IQ4_XS") and self.n_gqa >= 4:
                new = "Q5_K"
            elif ft in ("Q4_K_M", "Q5_K_M") and more(i, n):
                new = "Q6_K"
            elif ft == "Q4_K_S" and i < 4:
                new = "Q5_K"
            if self.is_70b and new in ("Q3_K", "Q4_K"):
                new = "Q5_K"
            if s.n_expert == 8:
                new = "Q8_0"
            self.i_attn_v += 1
            return new
        if cat == "attn_k":
            return "Q8_0" if s.n_expert == 8 else new
        if cat == "ffn_down":
            i, n = self._layer(t.name, self.i_down), s.n_layer
            self.i_down += 1
            if ft == "Q2_K":
                return "Q3_K"
            if ft == "Q3_K_M":
                return "Q5_K" if i < n // 16 else "Q4_K"
            if ft == "Q3_K_L":
                return "Q5_K"
            if ft == "Q4_K_M":
                return "Q6_K" if more(i, n) else new
            if ft in ("IQ4_NL", "IQ4_XS") and i < n // 8:
                return "Q5_K"
            if ft == "Q5_K_M" and more(i, n):
                return "Q6_K"
            if ft == "Q4_K_S" and i < n // 8:
                return "Q5_K"
            return new
        if cat == "attn_output":
            if s.n_expert == 8:
                if ft in ("Q2_K", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ4_XS"):
                    return "Q5_K"
                return new
            return {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(ft, new)
        return new

    def _layer(self, name: str, counter: int) -> int:
        if self.s.n_expert > 1:
            m = re.match(r"blk\.(\d+)\.", name)
            if m:
                return int(m.group(1))
        return counter


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_qkv"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def _quantizable(t: PlannedTensor) -> bool:
    """tensor_allows_quantization: 2-D/3-D tensors ending in "weight", except norms and routers."""
    if len([d for d in t.ne]) < 2 or not t.name.endswith("weight"):
        return False
    if "_norm.weight" in t.name or "ffn_gate_inp.weight" in t.name:
        return False
    return not any(k in t.name for k in (".position_embd", "attn_rel_b.weight", "ssm_conv1d"))


def _fallback(t: PlannedTensor, new: str) -> str:
    """tensor_type_fallback: a row that does not split into the type's blocks takes a 32-block type."""
    blk = TYPE_SIZES[new][0]
    if t.ne[0] % blk == 0:
        return new
    alt = _FALLBACK.get(new, new if blk <= 32 else None)
    if alt is None or t.ne[0] % TYPE_SIZES[alt][0]:
        return "F16"
    return alt


def tensor_data_bytes(tensors: list[PlannedTensor]) -> int:
    """Bytes of the tensor data section: each tensor padded to the GGUF alignment (32)."""
    return sum(-(-t.nbytes // GGUF_ALIGNMENT) * GGUF_ALIGNMENT for t in tensors)


def header_bytes_estimate(s: ModelShape, n_tensors: int) -> int:
    """The metadata before the tensor data: mostly the tokenizer (a token string, a type and a score
    per token, plus BPE merges), and one info record per tensor (name, dims, type, offset)."""
    per_token = 8 + 8 + 4 + 4  # length prefix, ~8 bytes of text, token_type, score
    merges = 2 * s.n_vocab * 20 if s.n_vocab > 100_000 else s.n_vocab * 20
    return s.n_vocab * per_token + merges + n_tensors * 64 + 16_384


def predict_file_bytes_for_shape(s: ModelShape, ftype: str) -> tuple[int, list[PlannedTensor]]:
    tensors = quantize(gguf_tensors(s), ftype, s)
    return tensor_data_bytes(tensors) + header_bytes_estimate(s, len(tensors)), tensors
