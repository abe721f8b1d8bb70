"""Vision-language models given images: image tokens, the vision tower's weights and activations, and the
text decoder with the image tokens added to the prompt (transformers 5.17 generate()).

Image tokens per image, from the config (and the image processor defaults of transformers 5.17, which a
`processor` dict in the model source may override):
- llava: the processor resizes to vision_config.image_size; (image_size / patch_size)^2 patch features
  (the CLS position dropped by vision_feature_select_strategy "default"); the tower sees them + CLS.
- paligemma: (image_size / patch_size)^2 tokens, every patch kept.
- gemma3: mm_tokens_per_image (256) after 4x4 average pooling of the (896 / 14)^2 = 4096 patches.
- qwen2_vl / qwen2_5_vl: dynamic resolution. Qwen2VLImageProcessor.smart_resize rounds height and width
  to multiples of patch_size x spatial_merge_size (28) with min_pixels 56 x 56 and max_pixels
  28 x 28 x 1280; the tower sees (h / 14) x (w / 14) patches, merged 2 x 2 into tokens.
Other vision-language types (Llava-NeXT's anyres tiles, Idefics3 / SmolVLM image splitting, Mllama's
cross-attention layers): weights exact on the meta device, activations not modelled yet (refused with
the weight figure).

The vision tower's weights come from the model transformers builds on the meta device (exact; needs
torch + transformers). Its activations are replayed as a pre-norm ViT over all patches of the batch
(LayerNorm, q / k / v, SDPA without a mask, output projection, MLP), then the projector; the text
decoder is the decoder replay of engines/transformers.py with input_len + image tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from gpu_preflight.errors import ModelSourceError

FP32 = 4
MODELLED = ("llava", "paligemma", "gemma3", "qwen2_vl", "qwen2_5_vl")
QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 56 * 56, 28 * 28 * 1280  # Qwen2VLImageProcessor defaults (min/max_pixels)


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = QWEN_MIN_PIXELS,
                 max_pixels: int = QWEN_MAX_PIXELS) -> tuple[int, int]:
    """Qwen2-VL's resize rule (image_processing_qwen2_vl.smart_resize): both sides multiples of `factor`,
    the area brought within [min_pixels, max_pixels] keeping the aspect ratio."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclasses.dataclass
class ImagePlan:
    model_type: str
    tokens_per_image: int        # tokens added to the prompt per image
    patches_per_image: int       # positions the vision tower attends over per image
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_ffn: int
    patch_size: int
    pixels: tuple[int, int]      # the size the processor feeds the tower (width, height)
    notes: list[str] = dataclasses.field(default_factory=list)


def _vc(config: dict) -> dict:
    vc = config.get("vision_config")
    if not isinstance(vc, dict):
        raise ModelSourceError("config.json has no vision_config", hint="is this a vision-language model?")
    return vc


def image_plan(config: dict, image_size: tuple[int, int] | None, processor: dict | None = None) -> ImagePlan:
    """Image tokens and tower shape for one image of `image_size` (width, height; None: the processor's size)."""
    mt = str(config.get("model_type") or "")
    vc = _vc(config)
    proc = processor or {}
    if mt not in MODELLED:
        raise ModelSourceError(f"image tokens of model_type {mt!r} are not modelled (modelled: "
                               f"{', '.join(MODELLED)})", hint="estimate the text model alone (drop --images), "
                                                              "or measure it with preflight measure")
    if mt in ("qwen2_vl", "qwen2_5_vl"):
        p = int(vc.get("patch_size", 14))
        merge = int(vc.get("spatial_merge_size", 2))
        wd, ht = image_size or (proc.get("width", 1024), proc.get("height", 1024))
        rh, rw = smart_resize(ht, wd, p * merge, int(proc.get("min_pixels", QWEN_MIN_PIXELS)),
                              int(proc.get("max_pixels", QWEN_MAX_PIXELS)))
        patches = (rh // p) * (rw // p)
        hidden = int(vc.get("embed_dim", vc.get("hidden_size", 1280))) if mt == "qwen2_vl" \
            else int(vc.get("hidden_size", 1280))
        heads = int(vc.get("num_heads", 16))
        ffn = int(vc.get("intermediate_size", 0) or hidden * float(vc.get("mlp_ratio", 4)))
        return ImagePlan(mt, patches // (merge * merge), patches, hidden, int(vc.get("depth", 32)), heads, ffn, p,
                         (rw, rh), [f"Qwen2-VL dynamic resolution: {wd}x{ht} resized to {rw}x{rh} "
                                    f"(multiples of {p * merge}, {QWEN_MIN_PIXELS}..{QWEN_MAX_PIXELS} pixels): "
                                    f"{patches} patches, {patches // (merge * merge)} tokens"])
    size = int(vc.get("image_size", 224 if mt == "paligemma" else 896 if mt == "gemma3" else 336))
    p = int(vc.get("patch_size", 14))
    patches = (size // p) ** 2
    hidden, layers = int(vc.get("hidden_size", 1152)), int(vc.get("num_hidden_layers", 27))
    heads, ffn = int(vc.get("num_attention_heads", 16)), int(vc.get("intermediate_size", 4304))
    note = f"the processor resizes every image to {size}x{size}"
    if mt == "llava":
        tokens = patches if config.get("vision_feature_select_strategy", "default") == "default" else patches + 1
        return ImagePlan(mt, tokens, patches + 1, hidden, layers, heads, ffn, p, (size, size),
                         [note + f": {patches} patch features (+ CLS in the tower)"])
    if mt == "gemma3":
        tokens = int(config.get("mm_tokens_per_image", 256))
        return ImagePlan(mt, tokens, patches, hidden, layers, heads, ffn, p, (size, size),
                         [note + f": {patches} patches pooled to {tokens} tokens"])
    return ImagePlan(mt, patches, patches, hidden, layers, heads, ffn, p, (size, size), [note])


def vision_activation_bytes(plan: ImagePlan, images: int, dt: int) -> int:
    """Peak of the vision tower over all images of the batch: patch embeddings, one pre-norm ViT layer's
    live tensors (residual, norm, q / k / v, SDPA output and its transpose, MLP hidden and activation)
    plus the tower's input and the merged features; no score matrix (SDPA)."""
    n = images * plan.patches_per_image
    d, f = plan.vision_hidden, plan.vision_ffn
    pixels = images * plan.pixels[0] * plan.pixels[1] * 3 * (2 if plan.model_type.startswith("qwen") else 1)
    embed = pixels * dt + n * d * dt * 2         # pixel_values, patch embeddings (+ positions)
    layer_attn = n * d * dt * (2 + 3 + 2)         # residual, norm, q / k / v, attention out + transpose
    layer_mlp = n * d * dt * 3 + n * f * dt * 2   # residual, h1, norm, fc1 and its activation
    return embed + max(layer_attn, layer_mlp)


def vlm_report(source, o: dict[str, Any], w, targets: list, common: dict[str, Any]) -> dict[str, Any]:
    """The decoder report for input_len + image tokens, plus the vision tower's weights and activations."""
    from gpu_preflight.estimators import meta_count
    from gpu_preflight.estimators.arch import DTYPE_BYTES
    from gpu_preflight.estimators.plan import estimate_llm

    images = int(o["images"])
    if not meta_count.available():
        from gpu_preflight.errors import DependencyMissing
        from gpu_preflight.hints import install_command

        raise DependencyMissing("the vision tower's weights are counted on the meta device, which needs torch and "
                                "transformers", hint=install_command("torch", "transformers"))
    cfg = source.config
    plan = image_plan(meta_count.full_config(cfg), o.get("image_size"), cfg.get("_processor"))
    mc = meta_count.count_weights(cfg, w.dtype)
    text_names = ("language_model", "lm_head", "model.embed_tokens", "model.layers", "model.norm")
    vision_bytes = sum(t.bytes for t in mc.tensors
                       if not any(k in t.name for k in text_names) and not t.name.startswith("buffer:"))
    added = images * plan.tokens_per_image
    text_cfg = text_config_of(cfg)
    w2 = dataclasses.replace(w, input_len=w.input_len + added)
    report = estimate_llm(text_cfg, workload=w2, targets=targets, engine="transformers",
                          torch_version=common.get("torch"), transformers_version=o.get("transformers"),
                          model_name=source.name)
    dt = DTYPE_BYTES.get(w.dtype, 2)
    v_act = vision_activation_bytes(plan, images * w.batch, dt)
    text_act = report["breakdown"].get("activations", 0) + report["breakdown"].get("kv_cache", 0)
    extra = vision_bytes + max(0, v_act - text_act)
    for k in ("peak_allocated_bytes", "peak_reserved_bytes", "peak_process_bytes"):
        report[k] += extra
    for f in report["fits"]:
        f["peak_process_bytes_per_gpu"] += extra
        f["headroom_bytes"] -= extra
        f["fits"] = f["headroom_bytes"] >= 0
    report["breakdown"]["vision_weights"] = vision_bytes
    report["breakdown"]["vision_activations_above_text"] = max(0, v_act - text_act)
    report["kind"] = "vlm"
    report["workload"].update({"images": images, "image_size": list(plan.pixels), "text_input_len": w.input_len})
    report["architecture"].update({"model_type_vlm": plan.model_type, "image_tokens_per_image": plan.tokens_per_image,
                                   "vision_patches_per_image": plan.patches_per_image,
                                   "vision_weights_source": f"meta device ({mc.model_class})"})
    report["max_context_tokens"] = report["max_batch"] = None  # searched on the text model alone: not shown
    report["suggestions"] = []
    report["assumptions"] += plan.notes + [
        f"{images} image(s) x {plan.tokens_per_image} tokens added to the {w.input_len}-token prompt; the vision "
        f"tower runs once in the prefill over {images * w.batch * plan.patches_per_image} patches (its peak "
        f"counted where it exceeds the text prefill's)"]
    return report


def text_config_of(config: dict) -> dict:
    """The language model's config: text_config, or (Qwen2-VL's older layout) the top-level keys."""
    if isinstance(config.get("text_config"), dict) and "hidden_size" in config["text_config"]:
        return {**config, "vision_config": None}
    mt = str(config.get("model_type") or "")
    return {k: v for k, v in config.items() if k != "vision_config"} | {"model_type": mt + "_text"}
