"""Build a pipeline component from its config with diffusers' / transformers' own classes.

On the meta device (no memory: parameter counts, structure) or materialized on a device with
uninitialized (or constant) weights for measurements. Only classes of the installed diffusers and
transformers are used; nothing from a hub, no trust_remote_code. The libraries are imported by the
caller and passed in, so this module imports only the standard library.
"""

from __future__ import annotations

import re


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:600]


# NewBie's NextDiT_CLIP constructor arguments -> diffusers Lumina2Transformer2DModel config keys.
_LUMINA2_FROM_NEXTDIT = {
    "patch_size": "patch_size", "in_channels": "in_channels", "dim": "hidden_size", "n_layers": "num_layers",
    "n_refiner_layers": "num_refiner_layers", "n_heads": "num_attention_heads", "n_kv_heads": "num_kv_heads",
    "multiple_of": "multiple_of", "ffn_dim_multiplier": "ffn_dim_multiplier", "norm_eps": "norm_eps",
    "cap_feat_dim": "cap_feat_dim", "axes_dims": "axes_dim_rope", "axes_lens": "axes_lens",
}
_ARG_MAPS = {"Lumina2Transformer2DModel": _LUMINA2_FROM_NEXTDIT}
_HF_META_KEYS = ("architectures", "auto_map", "transformers_version", "_name_or_path", "torch_dtype", "dtype",
                 "quantization_config")
def resolve_component(name: str, comp: dict, diffusers, transformers) -> tuple[str, type, dict, dict]:
    """(library, class, config, notes) for a catalog component; LookupError if it cannot be built."""
    notes: dict = {}
    cls_name = comp.get("measure_class") or comp["class"]
    m = re.search(r"\((\w+)\)", comp.get("loaded_as") or "")
    if m and not comp.get("measure_class"):
        # e.g. NewBie loads Gemma-3 through AutoModel -> Gemma3Model (no LM head)
        notes["catalog_class"] = cls_name
        cls_name = m.group(1)
    cfg = dict(comp.get("config") or {})
    if cls_name and hasattr(diffusers, cls_name):
        return "diffusers", getattr(diffusers, cls_name), cfg, notes
    if cls_name and hasattr(transformers, cls_name):
        return "transformers", getattr(transformers, cls_name), cfg, notes
    alt = comp.get("closest_diffusers_class")
    if alt and alt in _ARG_MAPS and hasattr(diffusers, alt) and comp.get("constructor_args"):
        args = comp["constructor_args"]
        mapping = _ARG_MAPS[alt]
        cfg = {mapping[k]: v for k, v in args.items() if k in mapping}
        notes.update({"catalog_class": comp["class"], "substitute_for": comp["class"],
                      "dropped_args": sorted(k for k in args if k not in mapping and not k.startswith("_"))})
        return "diffusers", getattr(diffusers, alt), cfg, notes
    raise LookupError(f"component {name}: class {cls_name!r} is in neither diffusers nor transformers"
                      + (f" (and no usable substitute {alt!r})" if alt else ""))


def _hf_config(transformers, cfg: dict):
    cfg = dict(cfg)
    for k in _HF_META_KEYS:
        cfg.pop(k, None)
    model_type = cfg.pop("model_type")
    return transformers.AutoConfig.for_model(model_type, **cfg)


def _keep_fp32(torch, model, dtype) -> list[str]:
    """What from_pretrained(torch_dtype=dtype) keeps in fp32 (transformers/diffusers rules)."""
    keep = set()
    if dtype in (torch.float16, torch.bfloat16):
        keep |= set(getattr(model, "_keep_in_fp32_modules_strict", None) or [])
    if dtype == torch.float16:
        keep |= set(getattr(model, "_keep_in_fp32_modules", None) or [])
    if not keep:
        return []
    hit = []
    for n, mod in model.named_modules():
        if n and any(k in n.split(".") for k in keep):
            mod.to(torch.float32)
            hit.append(n)
    return sorted(keep) if hit else []


def materialize(torch, model, device: str, fill: float | None = None) -> None:
    """to_empty() that keeps tied parameters tied and copies real buffers (no fp32 transient).

    `fill` writes a constant into every new parameter: on the CPU an untouched allocation is not
    resident, so host-RAM measurements need the pages written, as loading real weights does."""
    done: dict[int, tuple] = {}
    for mod in model.modules():
        for store, is_param in ((mod._parameters, True), (mod._buffers, False)):
            for n, t in list(store.items()):
                if t is None:
                    continue
                hit = done.get(id(t))
                if hit is None:
                    if t.is_meta:
                        data = torch.empty_like(t, device=device)
                        if fill is not None:
                            data.fill_(fill if data.is_floating_point() else 0)
                    else:
                        data = t.detach().to(device)
                    new = torch.nn.Parameter(data, requires_grad=False) if is_param else data
                    done[id(t)] = hit = (t, new)  # keep t alive so its id is not reused
                store[n] = hit[1]


def build_component(torch, name: str, comp: dict, dtype, device: str, attn: str, diffusers, transformers,
                    fill: float | None = None):
    import accelerate

    lib, cls, cfg, notes = resolve_component(name, comp, diffusers, transformers)
    with accelerate.init_empty_weights(include_buffers=False):
        if lib == "diffusers":
            model = cls.from_config(cfg)
        else:
            try:
                model = cls._from_config(_hf_config(transformers, cfg), attn_implementation=attn)
            except (TypeError, ValueError, ImportError) as exc:
                # e.g. Gemma2 has no sdpa: the pipeline gets transformers' default (eager) too
                notes["attn_fallback"] = _err(exc)[:200]
                model = cls._from_config(_hf_config(transformers, cfg))
    if lib == "transformers":
        # accelerate's meta patch re-wraps parameters, which unties tied ones (T5 shared /
        # encoder.embed_tokens); from_pretrained ties them again, so do the same.
        try:
            model.tie_weights()
        except Exception as exc:  # noqa: BLE001
            notes["tie_weights_error"] = _err(exc)[:200]
        notes["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    model.to(dtype)
    fp32 = _keep_fp32(torch, model, dtype)
    if fp32:
        notes["kept_fp32_modules"] = fp32
    if device != "meta":
        materialize(torch, model, device, fill)
    model.eval()
    model.requires_grad_(False)
    notes["built_as"] = f"{lib}.{cls.__name__}"
    return model, notes


