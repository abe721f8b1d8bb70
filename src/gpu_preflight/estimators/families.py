"""Block layouts of the decoder families that are not Llama-shaped, from their config.json keys.

Each entry names the transformers 5.x modeling file whose modules it describes
(src/transformers/models/<type>/modeling_<type>.py, release 5.17). `normalize` maps a family's
own key names onto the standard ones (hidden_size, num_hidden_layers, ...); `apply` sets the
layout flags on an LlmArch: norm kind, parallel residual, fused q/k/v, plain vs gated MLP and its
activation, biases, partial rotary, learned / ALiBi positions, tied head, state-space mixers.
The tensor list (weights.py) and the activation replay (engines/transformers.py) read only
those flags, so a family is one entry here.
"""

from __future__ import annotations

from typing import Any

# key aliases per family: standard name <- the family's own key (first present wins)
ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "gpt2": {"hidden_size": ("n_embd",), "num_hidden_layers": ("n_layer",), "num_attention_heads": ("n_head",),
             "intermediate_size": ("n_inner",), "max_position_embeddings": ("n_positions",)},
    "gpt_bigcode": {"hidden_size": ("n_embd",), "num_hidden_layers": ("n_layer",),
                    "num_attention_heads": ("n_head",), "intermediate_size": ("n_inner",),
                    "max_position_embeddings": ("n_positions",)},
    "gptj": {"hidden_size": ("n_embd",), "num_hidden_layers": ("n_layer",), "num_attention_heads": ("n_head",),
             "intermediate_size": ("n_inner",), "max_position_embeddings": ("n_positions",)},
    # BLOOM's published files use the legacy n_embed (BloomConfig pops it into hidden_size)
    "bloom": {"hidden_size": ("n_embed",), "num_hidden_layers": ("n_layer",), "num_attention_heads": ("n_head",)},
    "opt": {"intermediate_size": ("ffn_dim",)},
    "falcon": {"intermediate_size": ("ffn_hidden_size",)},
    "dbrx": {"hidden_size": ("d_model",), "num_hidden_layers": ("n_layers",), "num_attention_heads": ("n_heads",),
             "max_position_embeddings": ("max_seq_len",)},
    "jamba": {"num_local_experts": ("num_experts",)},
}
# transformers' config-class defaults for keys a published config.json may omit
DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt2": {"tie_word_embeddings": True, "activation_function": "gelu_new", "n_positions": 1024},
    "gpt_bigcode": {"tie_word_embeddings": True, "activation_function": "gelu_pytorch_tanh", "multi_query": True,
                    "n_positions": 1024},
    "gpt_neox": {"use_parallel_residual": True, "attention_bias": True, "hidden_act": "gelu",
                 "tie_word_embeddings": False},
    "gptj": {"activation_function": "gelu_new", "rotary_dim": 64, "tie_word_embeddings": False},
    "falcon": {"multi_query": True, "parallel_attn": True, "bias": False, "alibi": False,
               "new_decoder_architecture": False, "tie_word_embeddings": True, "activation": "gelu"},
    "bloom": {"tie_word_embeddings": True},
    "opt": {"do_layer_norm_before": True, "enable_bias": True, "layer_norm_elementwise_affine": True,
            "activation_function": "relu", "tie_word_embeddings": True},
    "phi": {"hidden_act": "gelu_new", "partial_rotary_factor": 0.5, "tie_word_embeddings": False},
    "stablelm": {"partial_rotary_factor": 0.25, "use_qkv_bias": False, "use_parallel_residual": False,
                 "qk_layernorm": False, "tie_word_embeddings": False, "hidden_act": "silu"},
    "cohere": {"tie_word_embeddings": True, "use_qk_norm": False, "hidden_act": "silu"},
    "starcoder2": {"use_bias": True, "hidden_act": "gelu_pytorch_tanh", "tie_word_embeddings": True},
    "dbrx": {"tie_word_embeddings": False},
    "mamba": {"tie_word_embeddings": True, "expand": 2, "conv_kernel": 4, "state_size": 16, "use_bias": False,
              "use_conv_bias": True},
    "falcon_mamba": {"tie_word_embeddings": True, "expand": 2, "conv_kernel": 4, "state_size": 16,
                     "use_bias": False, "use_conv_bias": True},
    "mamba2": {"tie_word_embeddings": False, "expand": 2, "conv_kernel": 4, "state_size": 128, "n_groups": 8,
               "head_dim": 64, "use_bias": False, "use_conv_bias": True},
    "jamba": {"tie_word_embeddings": False, "attn_layer_period": 8, "attn_layer_offset": 4,
              "expert_layer_period": 2, "expert_layer_offset": 1, "num_experts": 16, "num_experts_per_tok": 2,
              "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_conv_bias": True,
              "mamba_proj_bias": False},
}
ACTS = {"gelu_new": "gelu_new", "gelu_fast": "gelu_new", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
        "relu": "relu", "silu": "silu", "swish": "silu", "relu2": "relu2"}
# Families whose positions index a table of fixed size: a position past its last row is an index error (a
# CUDA device-side assert that kills the process), not a loss of quality. model_type -> the table size that
# transformers' config class uses when config.json omits max_position_embeddings / n_positions. Sources
# (transformers 5.17, src/transformers/models/): gpt2/modeling_gpt2.py:493 and gpt_bigcode/
# modeling_gpt_bigcode.py:378 (wpe = nn.Embedding(max_position_embeddings)), opt/modeling_opt.py:54 and 290
# (OPTLearnedPositionalEmbedding: max_position_embeddings + 2 rows, positions offset by 2), gptj/
# modeling_gptj.py:104 and 193 (embed_positions buffer of max_positions rows, read with torch.gather).
POSITION_TABLES = {"gpt2": 1024, "gpt_bigcode": 1024, "opt": 2048, "gptj": 2048}


def normalize(mt: str, cfg: dict) -> dict:
    out = {**DEFAULTS.get(mt, {}), **cfg}
    for std, names in ALIASES.get(mt, {}).items():
        if out.get(std) is None:
            for n in names:
                if out.get(n) is not None:
                    out[std] = out[n]
                    break
    if mt == "dbrx":
        attn, ffn = out.get("attn_config") or {}, out.get("ffn_config") or {}
        out.setdefault("num_key_value_heads", attn.get("kv_n_heads", 1))
        out.setdefault("num_local_experts", ffn.get("moe_num_experts", 4))
        out.setdefault("num_experts_per_tok", ffn.get("moe_top_k", 1))
        out.setdefault("intermediate_size", ffn.get("ffn_hidden_size", 3584))
    if mt in ("mamba", "falcon_mamba", "mamba2"):
        out.setdefault("num_attention_heads", 1)  # no attention; keeps the generic parser's checks
        out["num_key_value_heads"] = 0
        out["head_dim"] = 1
        out.setdefault("intermediate_size", int(out["expand"]) * int(out["hidden_size"]))
    if mt == "falcon" and out.get("new_decoder_architecture"):
        out.setdefault("num_key_value_heads", out.get("num_kv_heads"))
    elif mt == "falcon":
        out["num_key_value_heads"] = 1 if out.get("multi_query") else out.get("num_attention_heads")
    if mt == "gpt_bigcode":
        out["num_key_value_heads"] = 1 if out.get("multi_query") else out.get("num_attention_heads")
    if mt == "bloom" and out.get("intermediate_size") is None:
        out["intermediate_size"] = 4 * int(out["hidden_size"])
    return out


def _rotary_fraction(cfg: dict, default: float) -> float:
    rp = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else {}
    for v in (rp.get("partial_rotary_factor"), cfg.get("partial_rotary_factor"), cfg.get("rotary_pct")):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return default


def apply(mt: str, cfg: dict, a) -> None:  # a: LlmArch
    """Set the layout flags of family `mt` (modules of transformers' modeling_<mt>.py)."""
    a.family = mt
    a.qkv_bias = a.o_bias = a.mlp_bias = False
    a.qk_norm = False
    act = ACTS.get(str(cfg.get("hidden_act") or cfg.get("activation_function") or cfg.get("activation") or "gelu"),
                   "gelu")
    if mt in ("gpt2", "gpt_bigcode"):
        # GPT2Block: ln_1, c_attn (fused, bias), c_proj (bias), ln_2, mlp c_fc / c_proj (bias); wpe table
        a.norm, a.gated_mlp, a.act, a.fused_qkv, a.pos = "ln", False, act, True, "learned"
        a.qkv_bias = a.o_bias = a.mlp_bias = True
        a.learned_positions = int(cfg.get("max_position_embeddings") or 1024)
        a.tied = bool(cfg.get("tie_word_embeddings", True))
    elif mt == "gpt_neox":
        # GPTNeoXLayer: input_layernorm + post_attention_layernorm (both read x when parallel), fused
        # query_key_value, dense; GPTNeoXMLP dense_h_to_4h / dense_4h_to_h with bias; partial rotary
        a.norm, a.gated_mlp, a.act, a.fused_qkv = "ln", False, act, True
        a.parallel = 2 if cfg.get("use_parallel_residual", True) else 0
        a.qkv_bias = a.o_bias = bool(cfg.get("attention_bias", True))
        a.mlp_bias = True
        a.rotary_dim = int(a.head_dim * _rotary_fraction(cfg, 0.25))
    elif mt == "gptj":
        # GPTJBlock: one ln_1 for both branches; q/k/v/out_proj without bias; fc_in / fc_out with bias;
        # lm_head with bias; rotary on the first rotary_dim dims (interleaved)
        a.norm, a.gated_mlp, a.act, a.parallel = "ln", False, act, 1
        a.mlp_bias = a.lm_head_bias = True
        a.rotary_dim = int(cfg.get("rotary_dim") or a.head_dim)
    elif mt == "falcon":
        # FalconDecoderLayer: parallel_attn with one input_layernorm (7B/40B old) or ln_attn + ln_mlp
        # (new_decoder_architecture); fused query_key_value (MQA: q + 1 k + 1 v head); bias=config.bias
        a.norm, a.gated_mlp, a.act, a.fused_qkv = "ln", False, act, True
        # old multi-query layout: SDPA gets the single K / V head without enable_gqa (lines 350, 380)
        a.sdpa_kv_broadcast = bool(cfg.get("multi_query")) and not cfg.get("new_decoder_architecture")
        if cfg.get("parallel_attn", True):
            n_ln = cfg.get("num_ln_in_parallel_attn") or (2 if cfg.get("new_decoder_architecture") else 1)
            a.parallel = 2 if n_ln == 2 else 1
        a.qkv_bias = a.o_bias = a.mlp_bias = bool(cfg.get("bias", False))
        a.pos = "alibi" if cfg.get("alibi") else "rope"
        if cfg.get("new_decoder_architecture"):
            # FalconAttention: num_kv_heads = num_heads under new_decoder_architecture (K and V are
            # broadcast to every query head before the cache update): the cache holds all heads
            a.cache_heads = a.heads
        a.tied = bool(cfg.get("tie_word_embeddings", True))
    elif mt == "bloom":
        # BloomBlock: LayerNorms, fused query_key_value and dense with bias, 4h MLP with bias, ALiBi,
        # word_embeddings_layernorm after the embedding; no SDPA path (eager attention only)
        a.norm, a.gated_mlp, a.act, a.fused_qkv, a.pos = "ln", False, "bloom_gelu", True, "alibi"
        a.qkv_bias = a.o_bias = a.mlp_bias = True
        a.embed_norm = True
        a.tied = bool(cfg.get("tie_word_embeddings", True))
    elif mt == "opt":
        # OPTDecoderLayer: self_attn_layer_norm, q/k/v/out_proj (enable_bias), final_layer_norm, fc1 / fc2;
        # learned positions with offset 2; project_in / project_out when word_embed_proj_dim != hidden
        bias = bool(cfg.get("enable_bias", True))
        a.norm = "ln" if cfg.get("layer_norm_elementwise_affine", True) else "ln_noparam"
        a.gated_mlp, a.act, a.pos = False, act, "learned"
        a.qkv_bias = a.o_bias = a.mlp_bias = bias
        a.learned_positions = int(cfg.get("max_position_embeddings") or 2048) + 2
        a.embed_dim = int(cfg.get("word_embed_proj_dim") or a.hidden)
        a.final_norm = bool(cfg.get("do_layer_norm_before", True)) and not cfg.get("_remove_final_layer_norm")
        a.tied = bool(cfg.get("tie_word_embeddings", True))
    elif mt == "phi":
        # PhiDecoderLayer: one input_layernorm, attention and MLP in parallel; q/k/v/dense with bias;
        # fc1 / fc2 with bias; final_layernorm; lm_head with bias; partial rotary
        a.norm, a.gated_mlp, a.act, a.parallel = "ln", False, act, 1
        a.qkv_bias = a.o_bias = a.mlp_bias = a.lm_head_bias = True
        a.rotary_dim = int(a.head_dim * _rotary_fraction(cfg, 0.5))
        a.qk_norm = bool(cfg.get("qk_layernorm"))
    elif mt == "stablelm":
        # StableLmDecoderLayer: LayerNorm (weight + bias); sequential or use_parallel_residual; gated MLP
        a.norm, a.act = "ln", act
        a.parallel = 1 if cfg.get("use_parallel_residual") else 0
        a.qkv_bias = bool(cfg.get("use_qkv_bias"))
        a.rotary_dim = int(a.head_dim * _rotary_fraction(cfg, 0.25))
        a.qk_norm = bool(cfg.get("qk_layernorm"))
    elif mt == "cohere":
        # CohereDecoderLayer: one CohereLayerNorm (weight only) for attention and MLP in parallel
        a.norm, a.act, a.parallel = "ln_nobias", act, 1
        a.qkv_bias = a.o_bias = bool(cfg.get("attention_bias"))
        a.qk_norm = bool(cfg.get("use_qk_norm"))
        a.tied = bool(cfg.get("tie_word_embeddings", True))
    elif mt == "starcoder2":
        # Starcoder2DecoderLayer: LayerNorms, q/k/v/o and c_fc / c_proj with bias (use_bias), plain MLP
        a.norm, a.gated_mlp, a.act = "ln", False, act
        a.qkv_bias = a.o_bias = a.mlp_bias = bool(cfg.get("use_bias", True))
        a.tied = bool(cfg.get("tie_word_embeddings", True))
    elif mt == "dbrx":
        # DbrxBlock: norm_1 / norm_2 LayerNorm without bias, fused Wqkv, out_proj, MoE with w1 / v1 / w2
        a.norm, a.fused_qkv = "ln_nobias", True
    elif mt in ("mamba", "falcon_mamba", "mamba2"):
        _mamba(mt, cfg, a)
    elif mt == "jamba":
        _jamba(cfg, a)


def _mamba(mt: str, cfg: dict, a) -> None:
    """MambaBlock: RMSNorm + MambaMixer (in_proj, depthwise conv1d, x_proj, dt_proj, A_log, D, out_proj);
    the cache holds a conv state and an SSM state per layer instead of keys and values."""
    a.mixers = ["mamba"] * a.layers
    a.pos = "none"
    a.kv_heads = 0
    d_inner = int(cfg.get("intermediate_size") or int(cfg["expand"]) * a.hidden)
    m = {"version": 2 if mt == "mamba2" else 1, "d_inner": d_inner, "d_state": int(cfg["state_size"]),
         "d_conv": int(cfg["conv_kernel"]), "bias": int(bool(cfg.get("use_bias"))),
         "conv_bias": int(bool(cfg.get("use_conv_bias", True))),
         "residual_fp32": int(bool(cfg.get("residual_in_fp32", True)))}
    rank = cfg.get("time_step_rank")
    m["dt_rank"] = int(-(-a.hidden // 16) if rank in (None, "auto") else rank)
    if mt == "mamba2":
        m["n_groups"] = int(cfg.get("n_groups", 8))
        m["heads"] = int(cfg.get("num_heads") or d_inner // int(cfg.get("head_dim", 64)))
        m["head_dim"] = d_inner // m["heads"]  # (normalize() overwrote head_dim for the attention-free parser)
        m["chunk"] = int(cfg.get("chunk_size", 256))  # Mamba2Config default; the PyTorch scan's chunk length
    a.mamba = m
    a.tied = bool(cfg.get("tie_word_embeddings", mt != "mamba2"))


def _jamba(cfg: dict, a) -> None:
    """JambaAttentionDecoderLayer every attn_layer_period layers (offset attn_layer_offset), JambaMambaMixer
    elsewhere (with dt / B / C RMSNorms); sparse MoE every expert_layer_period layers."""
    period, offset = int(cfg["attn_layer_period"]), int(cfg["attn_layer_offset"])
    a.mixers = ["attn" if i % period == offset else "mamba" for i in range(a.layers)]
    ep, eo = int(cfg["expert_layer_period"]), int(cfg["expert_layer_offset"])
    if a.experts:
        a.moe_layers = [i % ep == eo for i in range(a.layers)]
    a.layer_kinds = ["full"] * a.layers
    d_inner = int(cfg["mamba_expand"]) * a.hidden
    rank = cfg.get("mamba_dt_rank", "auto")
    a.mamba = {"version": 1, "d_inner": d_inner, "d_state": int(cfg["mamba_d_state"]),
               "d_conv": int(cfg["mamba_d_conv"]), "bias": int(bool(cfg.get("mamba_proj_bias"))),
               "conv_bias": int(bool(cfg.get("mamba_conv_bias", True))), "residual_fp32": 0,
               "dt_rank": int(-(-a.hidden // 16) if rank in (None, "auto") else rank), "jamba_norms": 1}


def position_table_limit(a) -> int | None:  # a: LlmArch
    """How many positions the model can index (0 .. limit - 1) when they come from a fixed-size table
    (POSITION_TABLES); None when positions are computed (RoPE, ALiBi, none), where a longer context
    runs and only its quality is in question."""
    if a.model_type not in POSITION_TABLES:
        return None
    return int(a.max_positions or POSITION_TABLES[a.model_type])
