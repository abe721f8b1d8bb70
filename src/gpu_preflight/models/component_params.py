"""A pipeline component's parameters from its config alone, and what each diffusers mode moves.

Two ways, best first:
1. `count_on_meta(cls, config)`: build the component with diffusers' / transformers' own class on
   the meta device (no memory, no weights, no code from a hub) and walk its modules. Needs the
   optional libraries; DependencyMissing when they are absent.
2. `params_from_config(cls, config)`: closed-form counts for the families the catalog holds
   (FLUX, SD3, Lumina2 and SDXL denoisers, AutoencoderKL, CLIP text, T5 encoder, Gemma 2/3 text),
   written from the layer shapes of diffusers 0.42.1 / transformers 5.x and checked against (1).

`module_structure(model)` is what the estimator's mode physics needs, in elements (numel), so that
any dtype can be applied: the total; nn.Linear weights and their rows (what bitsandbytes / torchao
quantize); what `enable_layerwise_casting` stores in fp8 (diffusers hooks/layerwise_casting.py: leaf
Conv/Linear/Embedding modules whose path matches none of the skip patterns); the largest module with
parameters of its own (sequential offload holds one at a time: accelerate `cpu_offload` hooks modules
with direct parameters); the block-level groups of `apply_group_offloading` (hooks/group_offloading.py:
children that are ModuleList/Sequential, one group per element, `_group_offload_block_modules`
recursed into, the rest one "unmatched" group held for the whole forward); and the elements the
CUDA caching host allocator pins when every tensor is rounded up to a power of two
(aten/src/ATen/core/CachingHostAllocator.h: `PowerOf2Ceil`).
"""

from __future__ import annotations

import math
import re
from typing import Any

# diffusers 0.42.1 hooks/layerwise_casting.py DEFAULT_SKIP_MODULES_PATTERN
LAYERWISE_SKIP = ("pos_embed", "patch_embed", "norm", "^proj_in$", "^proj_out$")
# diffusers 0.42.1 hooks/_common.py _GO_LC_SUPPORTED_PYTORCH_LAYERS (by class name)
CAST_LAYERS = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear",
               "Embedding")


def _pow2(n: int) -> int:
    return 1 << (int(n) - 1).bit_length() if n > 1 else max(int(n), 0)


def module_structure(model) -> dict[str, Any]:
    """Element counts of `model` (built on any device, meta included) for the mode physics."""
    import torch

    seen: set[int] = set()

    def direct(mod) -> int:
        n = 0
        for p in list(mod._parameters.values()):
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    # unique parameters, counted once (tied weights)
    total = 0
    pinned = 0
    uniq: set[int] = set()
    for p in model.parameters():
        if id(p) not in uniq:
            uniq.add(id(p))
            total += p.numel()
            pinned += _pow2(p.numel())
    largest_leaf = 0
    for mod in model.modules():
        n = sum(p.numel() for p in mod._parameters.values() if p is not None)
        largest_leaf = max(largest_leaf, n)
    linear = linear_rows = 0
    # quantizers leave the class's keep-in-fp32 modules alone (transformers quantizers/base.py
    # get_modules_to_not_convert; diffusers quantizers extend modules_to_not_convert the same way):
    # T5's feed-forward output "wo" is one
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or []) | \
        set(getattr(model, "_keep_in_fp32_modules_strict", None) or [])
    kept = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            linear += mod.weight.numel()
            linear_rows += mod.weight.shape[0]
            if keep and any(k in name.split(".") for k in keep):
                kept += mod.weight.numel()
    patterns = list(LAYERWISE_SKIP)
    patterns += list(getattr(model, "_keep_in_fp32_modules", None) or [])
    patterns += list(getattr(model, "_skip_layerwise_casting_patterns", None) or [])
    castable = _castable(model, tuple(set(patterns)))
    seen.clear()
    unmatched, blocks = _block_groups(model, direct)
    return {"parameters": total, "linear_weight_parameters": linear, "linear_rows": linear_rows,
            "unquantized_linear_parameters": kept,
            "layerwise_castable_parameters": castable, "largest_leaf_parameters": largest_leaf,
            "group_unmatched_parameters": unmatched, "group_blocks": blocks,
            "pinned_elements": pinned}


def _castable(model, patterns) -> int:
    def walk(mod, prefix: str) -> int:
        if prefix and any(re.search(p, prefix) for p in patterns):
            return 0
        if type(mod).__name__ in CAST_LAYERS or any(type(mod).__name__ == c for c in CAST_LAYERS):
            return sum(p.numel() for p in mod.parameters())
        return sum(walk(child, f"{prefix}.{name}" if prefix else name) for name, child in mod.named_children())

    return walk(model, "")


def _block_groups(model, direct) -> tuple[int, list[int]]:
    """(elements of the unmatched group, elements of each block group) with num_blocks_per_group=1."""
    import torch

    blocks: list[int] = []
    unmatched = 0
    named = set(getattr(model, "_group_offload_block_modules", None) or [])

    def total(mod) -> int:
        return sum(direct(m) for m in mod.modules())

    for name, child in model.named_children():
        if name in named:
            u, b = _block_groups(child, direct)
            # a named block module's own unmatched group is held during its forward only
            blocks.append(u)
            blocks.extend(b)
        elif isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)):
            for el in child:
                blocks.append(total(el))
        else:
            unmatched += total(child)
    unmatched += direct(model)
    return unmatched, [b for b in blocks if b]


def summarize_blocks(structure: dict) -> dict:
    """The largest block and the largest two consecutive blocks (prefetch holds the next one)."""
    b = structure.get("group_blocks") or []
    pair = max((b[i] + b[i + 1] for i in range(len(b) - 1)), default=b[0] if b else 0)
    return {"largest_block_parameters": max(b, default=0), "largest_block_pair_parameters": pair,
            "num_blocks": len(b)}


def count_on_meta(cls_name: str, config: dict, comp: dict | None = None) -> dict[str, Any]:
    """Structure of a component built on the meta device with the installed diffusers/transformers.

    DependencyMissing when torch / diffusers / transformers / accelerate are not installed; LookupError
    when neither library has the class."""
    from gpu_preflight.errors import DependencyMissing

    try:
        import torch  # noqa: F401
        import accelerate  # noqa: F401
        import diffusers
        import transformers
    except ImportError as exc:
        from gpu_preflight.hints import install_command

        raise DependencyMissing(f"counting parameters from a config needs {exc.name}",
                                hint=install_command("diffusers transformers accelerate torch")) from None
    import torch

    from gpu_preflight.models.component_build import build_component

    spec = dict(comp or {})
    spec.setdefault("class", cls_name)
    spec["config"] = config
    model, notes = build_component(torch, "component", spec, torch.float32, "meta", "eager", diffusers, transformers)
    out = module_structure(model)
    out["built_as"] = notes.get("built_as")
    out["counted_with"] = f"diffusers {diffusers.__version__} / transformers {transformers.__version__} (meta device)"
    return out


# ------------------------------------------------------------------------------------------------
# closed-form counts (no libraries): layer shapes of diffusers 0.42.1 / transformers 5.x


def _get(cfg: dict, *keys, default=None):
    for k in keys:
        if isinstance(cfg, dict) and cfg.get(k) is not None:
            return cfg[k]
    return default


def _lin(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def _ln(d: int, affine: bool = True, bias: bool = True) -> int:
    return (d + (d if bias else 0)) if affine else 0


def clip_text(cfg: dict) -> int:
    d = int(_get(cfg, "hidden_size", default=768))
    ff = int(_get(cfg, "intermediate_size", default=4 * d))
    layers = int(_get(cfg, "num_hidden_layers", default=12))
    vocab = int(_get(cfg, "vocab_size", default=49408))
    pos = int(_get(cfg, "max_position_embeddings", default=77))
    layer = 4 * _lin(d, d) + 2 * _ln(d) + _lin(d, ff) + _lin(ff, d)
    n = vocab * d + pos * d + layers * layer + _ln(d)
    return n


def clip_text_with_projection(cfg: dict) -> int:
    return clip_text(cfg) + int(_get(cfg, "hidden_size", default=768)) * int(_get(cfg, "projection_dim", default=768))


def t5_encoder(cfg: dict) -> int:
    d = int(_get(cfg, "d_model", default=512))
    ff = int(_get(cfg, "d_ff", default=2048))
    heads = int(_get(cfg, "num_heads", default=8))
    kv = int(_get(cfg, "d_kv", default=64))
    layers = int(_get(cfg, "num_layers", default=6))
    vocab = int(_get(cfg, "vocab_size", default=32128))
    buckets = int(_get(cfg, "relative_attention_num_buckets", default=32))
    gated = "gated" in str(_get(cfg, "feed_forward_proj", default="relu"))
    inner = heads * kv
    attn = 4 * d * inner
    mlp = (3 if gated else 2) * d * ff
    return vocab * d + layers * (attn + mlp + 2 * d) + buckets * heads + d


def flux_transformer(cfg: dict) -> int:
    heads = int(_get(cfg, "num_attention_heads", default=24))
    hd = int(_get(cfg, "attention_head_dim", default=128))
    d = heads * hd
    cin = int(_get(cfg, "in_channels", default=64))
    cout = int(_get(cfg, "out_channels", default=cin) or cin)
    joint = int(_get(cfg, "joint_attention_dim", default=4096))
    pooled = int(_get(cfg, "pooled_projection_dim", default=768))
    n2 = int(_get(cfg, "num_layers", default=19))
    n1 = int(_get(cfg, "num_single_layers", default=38))
    mlp = 4 * d
    emb = _lin(256, d) + _lin(d, d) + _lin(pooled, d) + _lin(d, d)  # timestep + text (pooled) embedders
    if _get(cfg, "guidance_embeds", default=False):
        emb += _lin(256, d) + _lin(d, d)
    top = emb + _lin(joint, d) + _lin(cin, d) + _lin(d, 2 * d) + _lin(d, cout)  # context, x, norm_out, proj_out
    qk = 2 * hd  # RMSNorm on q and k (weight only)
    double = 2 * _lin(d, 6 * d) + 3 * _lin(d, d) * 2 + 2 * _lin(d, d) + 2 * qk + 2 * (_lin(d, mlp) + _lin(mlp, d))
    single = _lin(d, 3 * d) + _lin(d, mlp) + _lin(d + mlp, d) + 3 * _lin(d, d) + qk
    return top + n2 * double + n1 * single


FAMILIES = {
    "CLIPTextModel": clip_text,
    "CLIPTextModelWithProjection": clip_text_with_projection,
    "T5EncoderModel": t5_encoder,
    "FluxTransformer2DModel": flux_transformer,
}


def params_from_config(cls_name: str, config: dict) -> int | None:
    """Closed-form parameter count for a known class, else None."""
    fn = FAMILIES.get(cls_name)
    if fn is None or not isinstance(config, dict):
        return None
    try:
        n = fn(config)
    except (TypeError, ValueError):
        return None
    return n if n > 0 and math.isfinite(n) else None


def weights_from_config(cls_name: str, config: dict, comp: dict | None = None) -> tuple[dict | None, int | None, str]:
    """(structure or None, parameters or None, how it was counted) for a component without weight files."""
    from gpu_preflight.errors import DependencyMissing

    try:
        s = count_on_meta(cls_name, config, comp)
        return s, int(s["parameters"]), f"built on the meta device ({s['counted_with']})"
    except DependencyMissing:
        pass
    except Exception:  # noqa: BLE001 - a config the installed library cannot build: try the closed forms
        pass
    n = params_from_config(cls_name, config)
    if n:
        return None, n, f"closed-form count for {cls_name} from config.json"
    return None, None, ""
