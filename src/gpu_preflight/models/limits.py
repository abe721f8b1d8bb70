"""Validate a model's config before any estimator reads it: types, signs and sane sizes.

`validate_source(source)` runs where a ModelSource enters (models/source.py, after it is read from
a folder, a GGUF, the catalog or the Hub). It checks every config field the estimators read (and
a few they may read), each against a rule: the JSON type, > 0 where zero makes no model, and an
upper limit that no real model comes near (the limit is in the message), so that a hostile or
mistyped config gets one line naming the field and what is allowed instead of a crash deep in
the estimator or minutes of work. It also refuses NaN and Infinity anywhere in a config.

Fields the rules do not name are left alone; null means "not set" and is always allowed. The
limits are far above the largest published models (2025: up to ~200 layers, hidden 16,384 to
~25,600, 384 routed experts, vocabularies of ~260k tokens, contexts of 10M tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gpu_preflight.errors import ModelSourceError

MAX_LAYERS = 10_000
MAX_HIDDEN = 1_000_000
MAX_EXPERTS = 100_000
MAX_EXPERT_LAYERS = 1_000_000  # experts x layers: DeepSeek-V3 256 x 58, Kimi K2 384 x 60, Qwen3-Next 512 x 48
MAX_VOCAB = 10_000_000
MAX_HEADS = 100_000
MAX_INTERMEDIATE = 10_000_000
MAX_POSITIONS = 1_000_000_000
MAX_HEAD_DIM = 65_536
MAX_CHANNELS = 65_536
MAX_CONFIG_DEPTH = 32


@dataclass(frozen=True)
class Rule:
    kind: str  # "int" | "bool" | "str" | "number" | "obj" | "int_list" | "str_list" | "int_or_list"
    low: float = 1
    high: float = math.inf
    max_items: int = 64
    min_items: int = 0
    why: str = ""  # said after the limit, e.g. "no real model has more"

    def allowed(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return "a string"
        if self.kind == "obj":
            return "an object"
        if self.kind == "str_list":
            return "a list of strings"
        span = _span(self.low, self.high)
        if self.kind == "number":
            return f"a finite number {span}"
        if self.kind == "int_list":
            return f"a list of {self.min_items} to {self.max_items} whole numbers, each {span}"
        if self.kind == "int_or_list":
            return f"a whole number {span}, or a list of them"
        return f"a whole number {span}"


def _span(low: float, high: float) -> str:
    if high == math.inf:
        return f">= {low:,g}" if isinstance(low, float) else f">= {low:,}"
    return f"from {_num(low)} to {_num(high)}"


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _int(low: int = 1, high: float = math.inf, why: str = "") -> Rule:
    return Rule("int", low, high, why=why)


NO_REAL = "no real model has more"
BOOL, STR, OBJ, STR_LIST = Rule("bool"), Rule("str"), Rule("obj"), Rule("str_list")

# Rules for LLM configs (top level and text_config) and the text encoders of pipelines.
LLM_RULES: dict[str, Rule] = {
    "hidden_size": _int(1, MAX_HIDDEN, NO_REAL), "n_embd": _int(1, MAX_HIDDEN, NO_REAL),
    "d_model": _int(1, MAX_HIDDEN, NO_REAL),
    "num_hidden_layers": _int(1, MAX_LAYERS, NO_REAL), "n_layer": _int(1, MAX_LAYERS, NO_REAL),
    "num_layers": _int(1, MAX_LAYERS, NO_REAL),
    "num_attention_heads": _int(1, MAX_HEADS, NO_REAL), "n_head": _int(1, MAX_HEADS, NO_REAL),
    "num_heads": _int(1, MAX_HEADS, NO_REAL),
    "num_key_value_heads": _int(1, MAX_HEADS, NO_REAL), "num_kv_heads": _int(1, MAX_HEADS, NO_REAL),
    "head_dim": _int(1, MAX_HEAD_DIM, NO_REAL),
    "intermediate_size": _int(1, MAX_INTERMEDIATE, NO_REAL), "ffn_dim": _int(1, MAX_INTERMEDIATE, NO_REAL),
    "n_inner": _int(1, MAX_INTERMEDIATE, NO_REAL), "d_ff": _int(1, MAX_INTERMEDIATE, NO_REAL),
    "moe_intermediate_size": _int(1, MAX_INTERMEDIATE, NO_REAL),
    "shared_expert_intermediate_size": _int(0, MAX_INTERMEDIATE, NO_REAL),
    "vocab_size": _int(1, MAX_VOCAB, NO_REAL),
    "max_position_embeddings": _int(1, MAX_POSITIONS, NO_REAL),
    "num_local_experts": _int(0, MAX_EXPERTS, NO_REAL), "num_experts": _int(0, MAX_EXPERTS, NO_REAL),
    "n_routed_experts": _int(0, MAX_EXPERTS, NO_REAL),
    "num_experts_per_tok": _int(1, MAX_EXPERTS, NO_REAL), "experts_per_token": _int(1, MAX_EXPERTS, NO_REAL),
    "moe_top_k": _int(1, MAX_EXPERTS, NO_REAL),
    "n_shared_experts": _int(0, MAX_EXPERTS, NO_REAL),
    "first_k_dense_replace": _int(0, MAX_LAYERS), "decoder_sparse_step": _int(1, MAX_LAYERS),
    "moe_layer_freq": _int(1, MAX_LAYERS), "max_window_layers": _int(0, MAX_LAYERS * 100),
    "sliding_window": _int(1, MAX_POSITIONS, NO_REAL),
    "sliding_window_pattern": _int(1, MAX_LAYERS), "_sliding_window_pattern": _int(1, MAX_LAYERS),
    "kv_lora_rank": _int(1, MAX_HIDDEN), "q_lora_rank": _int(1, MAX_HIDDEN),
    "qk_nope_head_dim": _int(0, MAX_HEAD_DIM), "qk_rope_head_dim": _int(0, MAX_HEAD_DIM),
    "v_head_dim": _int(1, MAX_HEAD_DIM),
    "tie_word_embeddings": BOOL, "attention_bias": BOOL, "mlp_bias": BOOL, "use_sliding_window": BOOL,
    "model_type": STR, "torch_dtype": STR, "dtype": STR,
    "layer_types": Rule("str_list", max_items=MAX_LAYERS), "mlp_only_layers": Rule("int_list", 0, MAX_LAYERS,
                                                                                     max_items=MAX_LAYERS),
    "quantization_config": OBJ, "text_config": OBJ,
    "rope_theta": Rule("number", 0.0), "rms_norm_eps": Rule("number", 0.0), "layer_norm_eps": Rule("number", 0.0),
}

QUANT_RULES: dict[str, Rule] = {
    "bits": _int(1, 32), "w_bit": _int(1, 32), "group_size": _int(-1, MAX_HIDDEN), "q_group_size": _int(-1, MAX_HIDDEN),
    "quant_method": STR, "load_in_4bit": BOOL, "load_in_8bit": BOOL, "bnb_4bit_use_double_quant": BOOL,
    "bnb_4bit_quant_type": STR, "modules_to_not_convert": STR_LIST, "llm_int8_skip_modules": STR_LIST,
}

# Diffusers components (VAE, UNet, image transformers); text encoders also get LLM_RULES.
COMPONENT_RULES: dict[str, Rule] = {
    "block_out_channels": Rule("int_list", 1, MAX_CHANNELS, max_items=16, min_items=1),
    "layers_per_block": _int(1, 100), "latent_channels": _int(1, 1024), "in_channels": _int(1, MAX_CHANNELS),
    "out_channels": _int(1, MAX_CHANNELS), "norm_num_groups": _int(1, MAX_CHANNELS),
    "force_upcast": BOOL, "scaling_factor": Rule("number", 0.0), "shift_factor": Rule("number", -math.inf),
    "attention_head_dim": Rule("int_or_list", 1, MAX_HEAD_DIM), "num_attention_heads": Rule("int_or_list", 1, MAX_HEADS),
    "cross_attention_dim": Rule("int_or_list", 1, MAX_HIDDEN), "joint_attention_dim": _int(1, MAX_HIDDEN),
    "pooled_projection_dim": _int(1, MAX_HIDDEN), "num_layers": _int(1, MAX_LAYERS, NO_REAL),
    "num_single_layers": _int(0, MAX_LAYERS, NO_REAL), "dim": _int(1, MAX_HIDDEN, NO_REAL),
    "n_heads": _int(1, MAX_HEADS, NO_REAL), "sample_size": Rule("int_or_list", 1, 1 << 20),
    "_class_name": STR,
}
# What the image-transformer estimate reads as single integers (a list there is not modelled).
DENOISER_INT_FIELDS = ("patch_size", "num_attention_heads", "attention_head_dim")


def validate_source(source: Any) -> None:
    """Raise ModelSourceError for the first config field that breaks a rule (see above)."""
    label = _label(source)
    if source.components:
        for name, component in source.components.items():
            cls = component.metadata.get("class") or (component.config or {}).get("_class_name")
            cls = cls[-1] if isinstance(cls, (list, tuple)) and cls else cls
            validate_component(name, cls if isinstance(cls, str) else "", component.config, f"{label}: {name}")
        return
    if source.kind == "diffusion":
        return  # a pipeline whose components could not be read: nothing to estimate from
    validate_llm_config(source.config, label)


def validate_llm_config(config: Any, label: str = "config.json") -> None:
    if not isinstance(config, dict):
        raise ModelSourceError(f"{label} is not a JSON object", hint="pass the model's config.json")
    check_finite(config, label)
    _check_fields(config, LLM_RULES, label)
    _check_relations(config, label)
    text = config.get("text_config")
    if isinstance(text, dict):
        _check_fields(text, LLM_RULES, f"{label} text_config")
        _check_relations(text, f"{label} text_config")
    for where, sub in (("", config), ("text_config.", text if isinstance(text, dict) else {})):
        q = sub.get("quantization_config")
        if isinstance(q, dict):
            _check_fields(q, QUANT_RULES, f"{label} {where}quantization_config")


def validate_component(name: str, cls: str, config: Any, label: str) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise ModelSourceError(f"{label} config is not a JSON object", hint="re-download the component's config.json")
    check_finite(config, label)
    if _is_text_encoder(name):
        validate_llm_config(config, label)
        return
    _check_fields(config, COMPONENT_RULES, label)
    if cls and "UNet" not in cls and name in ("transformer", "unet", "prior", "decoder"):
        for field_name in DENOISER_INT_FIELDS:
            value = config.get(field_name)
            if value is not None and not _whole(value):
                raise ModelSourceError(
                    f"{label}: {field_name} is {_describe(value)}; gpu-preflight models {cls} with a single whole"
                    f" number here", hint="this transformer layout (a video model?) is not modelled yet")
        p = config.get("patch_size")
        if p is not None and not 1 <= p <= 64:
            raise ModelSourceError(f"{label}: patch_size is {_num(p)}; allowed: a whole number from 1 to 64",
                                   hint=_HINT)


def check_finite(config: Any, label: str) -> None:
    """NaN / Infinity / -Infinity anywhere (json.loads accepts them; no real config has one)."""
    stack: list[tuple[Any, str, int]] = [(config, "", 0)]
    while stack:
        node, at, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise ModelSourceError(f"{label} nests deeper than {MAX_CONFIG_DEPTH} levels", hint=_HINT)
        if isinstance(node, float) and not math.isfinite(node):
            raise ModelSourceError(f"{label}: {at or 'the config'} is {node!r}; allowed: a finite number", hint=_HINT)
        if isinstance(node, dict):
            stack.extend((v, f"{at}.{k}" if at else str(k), depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{at}[{i}]", depth + 1) for i, v in enumerate(node))


_HINT = "fix the config (or re-download it); the limits are in docs/reliability.md"


def _check_fields(config: dict, rules: dict[str, Rule], label: str) -> None:
    for name, rule in rules.items():
        if name in config and config[name] is not None and not _ok(config[name], rule):
            value = config[name]
            why = f" ({rule.why})" if rule.why and _whole(value) and value > rule.high else ""
            raise ModelSourceError(f"{label}: {name} is {_describe(value)}; allowed: {rule.allowed()}{why}",
                                   hint=_HINT)


def _check_relations(cfg: dict, label: str) -> None:
    heads = _first(cfg, "num_attention_heads", "n_head")
    kv = _first(cfg, "num_key_value_heads", "num_kv_heads")
    if _whole(heads) and _whole(kv) and kv > heads:
        raise ModelSourceError(f"{label}: num_key_value_heads is {_num(kv)}, more than num_attention_heads"
                               f" ({_num(heads)}); allowed: 1 to num_attention_heads", hint=_HINT)
    experts = _first(cfg, "num_local_experts", "num_experts", "n_routed_experts")
    per_tok = _first(cfg, "num_experts_per_tok", "experts_per_token", "moe_top_k")
    if _whole(experts) and experts > 0 and _whole(per_tok) and per_tok > experts:
        raise ModelSourceError(f"{label}: num_experts_per_tok is {_num(per_tok)}, more than the {_num(experts)}"
                               " experts; allowed: 1 to the number of experts", hint=_HINT)
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers")
    if _whole(experts) and _whole(layers) and experts * layers > MAX_EXPERT_LAYERS:
        raise ModelSourceError(f"{label}: {_num(experts)} experts x {_num(layers)} layers is {_num(experts * layers)}"
                               f" expert blocks; allowed: at most {MAX_EXPERT_LAYERS:,} (the largest real models have"
                               " about 25,000)", hint=_HINT)


def _first(cfg: dict, *names: str) -> Any:
    for n in names:
        if cfg.get(n) is not None:
            return cfg[n]
    return None


def _whole(value: Any) -> bool:
    """An int, or a float with no fraction (configs written by some tools say 4096.0)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _ok(value: Any, rule: Rule) -> bool:
    kind = rule.kind
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "obj":
        return isinstance(value, dict)
    if kind == "str_list":
        return isinstance(value, list) and len(value) <= max(rule.max_items, 64) and all(isinstance(v, str) for v in value)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and rule.low <= value <= rule.high
    if kind == "int":
        return _whole(value) and rule.low <= value <= rule.high
    if kind == "int_list":
        return isinstance(value, list) and rule.min_items <= len(value) <= rule.max_items and all(
            _whole(v) and rule.low <= v <= rule.high for v in value)
    if kind == "int_or_list":
        items = value if isinstance(value, list) else [value]
        return 1 <= len(items) <= rule.max_items and all(_whole(v) and rule.low <= v <= rule.high for v in items)
    return True


def _describe(value: Any) -> str:
    """The value, short, never more than a few characters of a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return repr(value)
        if isinstance(value, int) and abs(value) >= 10**15:
            return f"about 10^{len(str(abs(value))) - 1}" if value > 0 else "a huge negative number"
        if isinstance(value, float) and abs(value) >= 1e15:
            return f"{value:.3g}"
        return _num(value) if _whole(value) else f"{value:g}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" + ("..." if len(value) > 40 else "")
    if isinstance(value, list):
        return "an empty list" if not value else f"a list of {len(value):,}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_text_encoder(name: str) -> bool:
    return name.startswith(("text_encoder", "clip_model", "image_encoder", "audio_encoder"))


def _label(source: Any) -> str:
    if source.origin == "gguf":
        return f"{source.path or source.name} (GGUF metadata, as config.json keys)"
    if source.origin == "catalog":
        return f"catalog model {source.name}"
    path = source.path or source.name
    if source.origin == "folder" and path and not str(path).endswith(".json"):
        return f"{path}/config.json" if not source.components else str(path)
    return str(path)
