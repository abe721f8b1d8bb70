"""A decoder LLM's memory-relevant shape, read from config.json keys.

Covers dense decoders (MHA / GQA / MQA, explicit head_dim), tied embeddings, sliding-window and
hybrid local/global layers, MoE (Mixtral, Qwen-MoE, DeepSeek with shared experts and dense first
layers), multi-head latent attention (DeepSeek-V2/V3) and quantized checkpoints, plus the
block layouts of the families in `FAMILIES` (GPT-2, GPT-NeoX, GPT-J, Falcon, BLOOM, OPT, Phi,
StableLM, OLMo, Cohere, Starcoder2, DBRX, Mamba, Jamba...; see estimators/families.py). A model
type in none of them is refused (`UnknownArchitecture`) unless the caller asks for the generic
Llama-like assumption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.errors import ModelSourceError

# Llama-shaped decoders: RMSNorm before attention and MLP, separate q/k/v/o, gated MLP, RoPE.
LLAMA_LIKE = {
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "phi3", "mixtral",
    "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "gpt_oss", "granite", "olmo2", "ministral",
    "smollm3", "glm4", "olmo", "helium", "qwen2_vl_text", "qwen2_5_vl_text", "llava_text", "mistral3_text",
}
# Families with their own block layout (estimators/families.py reads their config keys).
OWN_LAYOUT = {"gpt2", "gpt_bigcode", "gpt_neox", "gptj", "falcon", "bloom", "opt", "phi", "stablelm", "cohere",
              "starcoder2", "dbrx", "mamba", "falcon_mamba", "mamba2", "jamba"}
KNOWN_TYPES = LLAMA_LIKE | OWN_LAYOUT


# encoder-decoder model types modelled by estimators/encdec.py (speech: the encoder reads log-mel frames)
SEQ2SEQ_TYPES = {"t5", "mt5", "umt5", "bart", "mbart"}
SPEECH_SEQ2SEQ_TYPES = {"whisper"}


def model_kind(config: dict) -> str:
    """llm (decoder-only), seq2seq (text encoder-decoder), speech_seq2seq (Whisper) or vlm (a config
    that nests a vision tower: vision_config)."""
    mt = str(config.get("model_type") or "")
    if mt in SPEECH_SEQ2SEQ_TYPES:
        return "speech_seq2seq"
    if mt in SEQ2SEQ_TYPES or (config.get("is_encoder_decoder") and "vision_config" not in config):
        return "seq2seq"
    if isinstance(config.get("vision_config"), dict):
        return "vlm"
    return "llm"


class UnknownArchitecture(ModelSourceError):
    """A model_type whose layout the estimator has no table for."""
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "fp8": 1, "int8": 1, "float64": 8}


@dataclass
class LlmArch:
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_positions: int | None
    tied: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    norms_per_layer: int = 2
    gated_mlp: bool = True
    # block layout (estimators/families.py): defaults are the Llama layout
    family: str = "llama"
    norm: str = "rms"               # rms | ln (weight + bias) | ln_nobias | ln_noparam
    act: str = "silu"               # silu | gelu | gelu_new | gelu_tanh | relu | bloom_gelu
    parallel: int = 0               # 0: sequential; 1: attn and MLP read one norm; 2: each its own norm
    fused_qkv: bool = False         # one q/k/v projection (views of its output)
    pos: str = "rope"               # rope | learned | alibi | none
    rotary_dim: int | None = None   # partial rotary: rotated dims per head
    sdpa_kv_broadcast: bool = False  # K / V with fewer heads than Q handed to torch SDPA as is (Falcon MQA)
    learned_positions: int = 0      # rows of a learned position table (GPT-2, OPT)
    lm_head_bias: bool = False
    embed_norm: bool = False        # BLOOM: LayerNorm right after the embedding
    final_norm: bool = True
    qk_norm_full: bool = False      # OLMo-2: q/k norms over all heads, not per head
    embed_dim: int | None = None    # OPT word_embed_proj_dim (project_in / project_out)
    cache_heads: int | None = None  # heads per token in the KV cache when not kv_heads (Falcon new arch: all)
    post_norm: bool = False         # OLMo-2: norm the attention / MLP output before the residual add
    mixers: list[str] = field(default_factory=list)  # per layer "attn" | "mamba" (empty: all attn)
    mamba: dict[str, int] = field(default_factory=dict)
    assumed: bool = False           # --assume-llama-like on an unknown model_type
    eos_token: bool = True          # an eos_token_id (generate()'s min-length logits processors need one)
    layer_kinds: list[str] = field(default_factory=list)  # "full" | "sliding" per layer
    sliding_window: int | None = None
    # MoE
    experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    shared_experts: int = 0
    shared_intermediate: int = 0
    moe_layers: list[bool] = field(default_factory=list)
    # MLA
    mla: bool = False
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_dim: int = 0
    qk_rope_dim: int = 0
    v_head_dim: int = 0
    # checkpoint
    config_dtype: str | None = None
    quant: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    used_fields: list[str] = field(default_factory=list)

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_dim + self.qk_rope_dim if self.mla else self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.experts > 0


# Defaults of transformers' config classes for keys that checkpoints omit (config.json only stores
# values that differ from the class defaults). Source: transformers
# src/transformers/models/gemma3/configuration_gemma3.py (Gemma3TextConfig.__init__).
MODEL_DEFAULTS = {
    "gemma3_text": {"vocab_size": 262208, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                    "max_position_embeddings": 131072, "sliding_window": 4096, "sliding_window_pattern": 6,
                    "tie_word_embeddings": True},
}


def _get(cfg: dict, *names: str, default: Any = None) -> Any:
    for n in names:
        if n in cfg and cfg[n] is not None:
            return cfg[n]
    return default


def _int(cfg: dict, name: str, *alts: str, required: bool = True) -> int | None:
    v = _get(cfg, name, *alts)
    if v is None:
        if required:
            raise ModelSourceError(f"config.json has no {name!r}", hint="is this a decoder LLM config?")
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or int(v) != v:
        raise ModelSourceError(f"config.json field {name!r} must be a non-negative integer, got {v!r}")
    return int(v)


# model types whose config class has no default eos_token_id (transformers 5.17, AutoConfig.for_model(type)):
# without one in config.json, generate() builds no min-length logits processors
NO_DEFAULT_EOS = ("dbrx", "gpt_oss", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe")

# class defaults of a language model nested as text_config whose published file omits its sizes (llava-hf's
# Llava 1.5 configs keep only vocab_size / max_position_embeddings / rms_norm_eps of a Llama): LlamaConfig in
# transformers 5.17 (models/llama/configuration_llama.py, the dataclass fields)
TEXT_CONFIG_DEFAULTS = {
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": False},
}


def _sparse_text_config(tc: Any) -> dict | None:
    """A text_config without hidden_size filled with its class defaults (TEXT_CONFIG_DEFAULTS), or None."""
    if isinstance(tc, dict) and "hidden_size" not in tc and tc.get("model_type") in TEXT_CONFIG_DEFAULTS:
        return {**TEXT_CONFIG_DEFAULTS[tc["model_type"]], **tc}
    return None


def text_part(config: dict) -> dict:
    """Multimodal checkpoints (Gemma 3, Llava...) carry the language model in text_config."""
    tc = _sparse_text_config(config.get("text_config")) or config.get("text_config")
    if isinstance(tc, dict) and "hidden_size" in tc:
        merged = dict(tc)
        merged.setdefault("model_type", str(config.get("model_type", "")) + "_text")
        for k in ("quantization_config", "torch_dtype", "dtype", "tie_word_embeddings"):
            if k in config and k not in merged:
                merged[k] = config[k]
        return merged
    return config


def _layer_kinds(cfg: dict, mt: str, layers: int) -> tuple[list[str], int | None]:
    window = _get(cfg, "sliding_window")
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        kinds = ["sliding" if "sliding" in str(t) or "local" in str(t) else "full" for t in types]
        return kinds, window if "sliding" in kinds else None
    if mt.startswith("qwen") and not cfg.get("use_sliding_window", False):
        return ["full"] * layers, None
    if mt == "gemma2" and window:
        return ["sliding" if (i + 1) % 2 else "full" for i in range(layers)], window
    if mt in ("gemma3", "gemma3_text") and window:
        pattern = int(_get(cfg, "sliding_window_pattern", "_sliding_window_pattern", default=6))
        return ["full" if (i + 1) % pattern == 0 else "sliding" for i in range(layers)], window
    if window and mt in ("mistral", "mixtral", "phi3", "starcoder2", "qwen2", "qwen3") and window < int(
            _get(cfg, "max_position_embeddings", default=1 << 30)):
        mwl = _get(cfg, "max_window_layers")
        if mt.startswith("qwen") and mwl is not None:
            return ["sliding" if i >= mwl else "full" for i in range(layers)], window
        return ["sliding"] * layers, window
    return ["full"] * layers, None


def parse_llm(config: dict, assume_llama_like: bool = True) -> LlmArch:
    """The architecture of `config`. A model_type without a layout table is refused
    (UnknownArchitecture) when `assume_llama_like` is False (the transformers engine's path, see
    plan.resolve_architecture); other callers get the generic Llama-like reading with a warning."""
    if not isinstance(config, dict):
        raise ModelSourceError("config.json is not a JSON object")
    cfg = text_part(config)
    mt = str(cfg.get("model_type") or "unknown")
    if mt in MODEL_DEFAULTS:
        cfg = {**MODEL_DEFAULTS[mt], **cfg}
    if mt not in KNOWN_TYPES and not assume_llama_like:
        raise UnknownArchitecture(
            f"model_type {mt!r} has no layout table in this estimator, so its weights and activations would "
            f"be guesses", hint="install transformers (and torch) to count its weights exactly on the meta device, "
                                "or pass --assume-llama-like to estimate it as a Llama-shaped decoder (wider error)")
    from gpu_preflight.estimators import families

    if mt in OWN_LAYOUT:
        cfg = families.normalize(mt, cfg)
    hidden = _int(cfg, "hidden_size", "n_embd", "d_model")
    layers = _int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _int(cfg, "num_attention_heads", "n_head")
    if hidden == 0 or layers == 0 or heads == 0:
        raise ModelSourceError("config.json has a zero hidden_size / num_hidden_layers / num_attention_heads")
    kv_heads = _int(cfg, "num_key_value_heads", "num_kv_heads", required=False) or heads
    head_dim = _int(cfg, "head_dim", required=False) or hidden // heads
    inter = _int(cfg, "intermediate_size", "ffn_dim", "n_inner", required=False) or 4 * hidden
    vocab = _int(cfg, "vocab_size")
    arch = LlmArch(
        model_type=mt, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        intermediate=inter, vocab=vocab, max_positions=_int(cfg, "max_position_embeddings", required=False),
        tied=bool(cfg.get("tie_word_embeddings", mt in ("gemma", "gemma2", "gemma3", "gemma3_text"))),
        config_dtype=_get(cfg, "dtype", "torch_dtype"), quant=cfg.get("quantization_config"),
    )
    if mt not in KNOWN_TYPES:
        arch.assumed = True
        arch.warnings.append(f"unknown model_type {mt!r}: ASSUMED LLAMA-LIKE (--assume-llama-like): RMSNorm, gated "
                             f"MLP, separate q/k/v, RoPE, from hidden_size, num_hidden_layers, num_attention_heads, "
                             f"num_key_value_heads, intermediate_size, vocab_size; the real layout may differ by "
                             f"+-40 % in weights")
    qwen2_bias = ("qwen2", "qwen2_moe", "qwen2_vl_text", "qwen2_5_vl_text")  # q/k/v with bias, o without
    arch.qkv_bias = bool(cfg.get("attention_bias", mt in qwen2_bias))
    arch.o_bias = bool(cfg.get("attention_bias", False)) and mt not in qwen2_bias
    arch.mlp_bias = bool(cfg.get("mlp_bias", False))
    arch.qk_norm = mt in ("qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2")
    arch.qk_norm_full = arch.post_norm = mt == "olmo2"
    arch.norms_per_layer = 4 if mt in ("gemma2", "gemma3", "gemma3_text") else 2
    if mt == "olmo":
        arch.norm = "ln_noparam"
    arch.layer_kinds, arch.sliding_window = _layer_kinds(cfg, mt, layers)
    arch.eos_token = cfg["eos_token_id"] is not None if "eos_token_id" in cfg else mt not in NO_DEFAULT_EOS
    _moe(cfg, mt, arch)
    if mt in OWN_LAYOUT:
        families.apply(mt, cfg, arch)
    if mt in ("deepseek_v2", "deepseek_v3") or "kv_lora_rank" in cfg:
        arch.mla = True
        arch.q_lora_rank = _int(cfg, "q_lora_rank", required=False)
        arch.kv_lora_rank = _int(cfg, "kv_lora_rank")
        arch.qk_nope_dim = _int(cfg, "qk_nope_head_dim")
        arch.qk_rope_dim = _int(cfg, "qk_rope_head_dim")
        arch.v_head_dim = _int(cfg, "v_head_dim")
        arch.kv_heads = heads
    return arch


def _moe(cfg: dict, mt: str, arch: LlmArch) -> None:
    experts = _get(cfg, "num_local_experts", "num_experts", "n_routed_experts")
    if not experts:
        arch.moe_layers = [False] * arch.layers
        return
    arch.experts = int(experts)
    arch.experts_per_token = int(_get(cfg, "num_experts_per_tok", "experts_per_token", "moe_top_k", default=2))
    arch.moe_intermediate = int(_get(cfg, "moe_intermediate_size", default=arch.intermediate))
    arch.shared_experts = int(_get(cfg, "n_shared_experts", default=0) or 0)
    if cfg.get("shared_expert_intermediate_size"):
        arch.shared_experts = 1
        arch.shared_intermediate = int(cfg["shared_expert_intermediate_size"])
    elif arch.shared_experts:
        arch.shared_intermediate = arch.shared_experts * arch.moe_intermediate
    first_dense = int(_get(cfg, "first_k_dense_replace", default=0) or 0)
    step = int(_get(cfg, "decoder_sparse_step", "moe_layer_freq", default=1) or 1)
    mlp_only = set(cfg.get("mlp_only_layers") or [])
    arch.moe_layers = [i >= first_dense and (i + 1) % step == 0 and i not in mlp_only for i in range(arch.layers)] \
        if mt.startswith("qwen") else [i >= first_dense and i % step == 0 for i in range(arch.layers)]
