"""Exact weight tensors of any architecture transformers knows, by building it on the meta device.

When torch and transformers are importable, the model class named in config.json
(`architectures[0]`, looked up in transformers itself; else the Auto class for its task) is
instantiated from the config under `torch.device("meta")`: every parameter and buffer gets its
real shape and dtype, and no memory, weights or network are touched. Remote code is never run:
a config with `auto_map` (a model that needs trust_remote_code) is refused. Tied weights are
counted once (`named_parameters` de-duplicates shared tensors, as the GPU holds one copy).
A `quantization_config` is applied to the counted tensors with the storage layout of its method
(weights.py `_linear`): every nn.Linear but the output head and the skipped modules is quantized.

The package does not require torch or transformers; `available()` says whether this path can run.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.errors import DependencyMissing, ModelSourceError
from gpu_preflight.estimators.weights import Tensor

DROP_KEYS = ("architectures", "auto_map", "transformers_version", "_name_or_path", "quantization_config")
AUTO_ORDER = ("AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoModelForSeq2SeqLM",
              "AutoModelForSpeechSeq2Seq", "AutoModel")
DTYPE_NAMES = {"torch.float32": "float32", "torch.float16": "float16", "torch.bfloat16": "bfloat16",
               "torch.int64": "int64", "torch.bool": "bool", "torch.int32": "int32"}


@dataclass
class MetaCount:
    model_class: str
    tensors: list[Tensor]
    parameters: int
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    buffer_bytes: int = 0
    tied: list[str] = field(default_factory=list)
    transformers_version: str = ""


def auto_order(config: dict) -> tuple[str, ...]:
    """Auto classes to try, the model's own kind first (BART is also a CausalLM: its decoder alone)."""
    from gpu_preflight.estimators.arch import model_kind

    first = {"seq2seq": "AutoModelForSeq2SeqLM", "speech_seq2seq": "AutoModelForSpeechSeq2Seq",
             "vlm": "AutoModelForImageTextToText"}.get(model_kind(config))
    return ((first,) if first else ()) + tuple(n for n in AUTO_ORDER if n != first)


def available() -> bool:
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformers") is not None


def _refuse_remote_code(config: dict) -> None:
    if config.get("auto_map"):
        raise ModelSourceError("this model's config.json has 'auto_map': it needs trust_remote_code (code from the "
                               "model repository), which gpu-preflight never runs",
                               hint="use a model whose architecture is part of transformers itself")


def build_on_meta(config: dict, dtype: str = "bfloat16"):
    """(model, class name) built from `config` on the meta device; raises ModelSourceError if transformers
    cannot build it."""
    _refuse_remote_code(config)
    if not available():
        from gpu_preflight.hints import install_command

        raise DependencyMissing("counting weights on the meta device needs torch and transformers",
                                hint=install_command("torch", "transformers"))
    import torch
    import transformers
    from transformers import AutoConfig

    d = {k: v for k, v in config.items() if k not in DROP_KEYS}
    mt = d.pop("model_type", None)
    if not mt:
        raise ModelSourceError("config.json has no 'model_type'", hint="is this a transformers model config?")
    try:
        cfg = AutoConfig.for_model(mt, **d)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelSourceError(f"transformers {transformers.__version__} cannot read this config: "
                               f"{str(exc).splitlines()[0][:200]}", hint="upgrade transformers") from None
    names = [a for a in (config.get("architectures") or []) if isinstance(a, str)]
    classes = [getattr(transformers, n, None) for n in names[:1]] + [getattr(transformers, n) for n in
                                                                      auto_order(config)]
    dt = getattr(torch, dtype)
    last: Exception | None = None
    for cls in classes:
        if cls is None:
            continue
        try:
            with torch.device("meta"):
                if hasattr(cls, "from_config"):
                    model = cls.from_config(cfg, dtype=dt)
                else:
                    model = cls._from_config(cfg, dtype=dt)
            return model, type(model).__name__
        except (ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as exc:
            last = exc
    raise ModelSourceError(f"transformers cannot build model_type {mt!r}: {str(last).splitlines()[0][:200]}",
                           hint="upgrade transformers, or check config.json")


def full_config(config: dict) -> dict:
    """config.json with transformers' class defaults filled in (nested vision / text configs included)."""
    from transformers import AutoConfig

    d = {k: v for k, v in config.items() if k not in DROP_KEYS}
    mt = d.pop("model_type")
    out = AutoConfig.for_model(mt, **d).to_dict()
    out["model_type"] = mt
    return out


def count_weights(config: dict, dtype: str = "bfloat16") -> MetaCount:
    """Every parameter and buffer of the model as it sits on the GPU (tied tensors once)."""
    model, cls_name = build_on_meta(config, dtype)
    import transformers

    from gpu_preflight.estimators.arch import DTYPE_BYTES
    from gpu_preflight.estimators.weights import _linear

    quant = config.get("quantization_config") or (config.get("text_config") or {}).get("quantization_config")
    method, skip, head = None, set(), _output_head_names(model)
    if isinstance(quant, dict):
        from gpu_preflight.estimators.arch import LlmArch
        from gpu_preflight.estimators.weights import quant_method

        probe = LlmArch("x", 1, 1, 1, 1, 1, 1, 1, None, False, quant=quant)
        method = quant_method(probe)
        skip = set(quant.get("modules_to_not_convert") or quant.get("llm_int8_skip_modules") or [])
    linear_weights = _linear_weight_names(model) if method else {}
    tensors: list[Tensor] = []
    by_dtype: dict[str, int] = {}
    params = 0
    seen: dict[int, str] = {}
    tied: list[str] = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.append(f"{name} = {seen[id(p)]}")
            continue
        seen[id(p)] = name
        numel = p.numel()
        params += numel
        dname = DTYPE_NAMES.get(str(p.dtype), str(p.dtype))
        module = name.rsplit(".", 1)[0]
        if method and name in linear_weights and module not in head and not any(s in name for s in skip):
            n_out, n_in = linear_weights[name]
            parts = _linear(module, n_in, n_out, 0, False, method, True, quant)
            tensors += parts
            by_dtype["quantized"] = by_dtype.get("quantized", 0) + sum(t.bytes for t in parts)
            continue
        nbytes = numel * p.element_size()
        tensors.append(Tensor(name, numel, nbytes))
        by_dtype[dname] = by_dtype.get(dname, 0) + nbytes
    buf = 0
    for name, b in model.named_buffers():
        nbytes = b.numel() * b.element_size()
        buf += nbytes
        dname = DTYPE_NAMES.get(str(b.dtype), str(b.dtype))
        by_dtype[dname] = by_dtype.get(dname, 0) + nbytes
        tensors.append(Tensor("buffer:" + name, b.numel(), nbytes))
    del DTYPE_BYTES
    return MetaCount(cls_name, tensors, params, by_dtype, buf, tied, transformers.__version__)


def _linear_weight_names(model) -> dict[str, tuple[int, int]]:
    import torch

    out = {}
    for mname, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            out[f"{mname}.weight"] = (mod.out_features, mod.in_features)
    return out


def _output_head_names(model) -> set[str]:
    """transformers keeps the output embedding unquantized (replace_with_bnb_linear skips it)."""
    try:
        head = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        head = None
    if head is None:
        return {"lm_head"}
    return {n for n, m in model.named_modules() if m is head} | {"lm_head"}


def summary(mc: MetaCount) -> dict[str, Any]:
    return {"model_class": mc.model_class, "parameters": mc.parameters, "bytes_by_dtype": mc.bytes_by_dtype,
            "buffer_bytes": mc.buffer_bytes, "tied": mc.tied[:8], "transformers": mc.transformers_version}
