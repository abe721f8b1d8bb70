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


# ---- the vision tower inside the prefill (replayed through the decoder replay's allocator) -----------------------

@dataclasses.dataclass
class VisionPhase:
    """get_image_features + the merge into the prompt, replayed at the start of the prefill forward, right after
    the token embeddings (the order of the *ForConditionalGeneration forward in transformers 5.17). Carried by
    engines.transformers.Workload(vision=...). SigLIP towers (Gemma 3, PaliGemma) and CLIP (Llava) are replayed
    op by op from their modeling files; Qwen2-VL's windowed tower as one block of vision_activation_bytes.
    Per image the processor's pixel values join the inputs ("in:", kept to the end of generate()); the
    projected image features stay referenced by the model's forward until it returns ("img_feat")."""
    plan: ImagePlan
    images: int            # images per prompt
    text_hidden: int
    use_head: bool = False  # SigLIP's MAP pooling head (vision_use_head, SiglipVisionConfig default True)

    def replay(self, r, w, dt: int) -> None:
        n_img = self.images * w.batch
        p = self.plan
        w_px, h_px = p.pixels
        per_image = 3 * w_px * h_px * (2 if p.model_type.startswith("qwen") else 1)  # Qwen2-VL: temporal patch 2
        r.a("in:pixels", n_img * per_image * dt)
        if p.model_type in ("gemma3", "paligemma"):
            _siglip_tower(r, p, n_img, dt, w.attn, self.use_head)
            _siglip_projector(r, p, n_img, self.text_hidden, dt)
        elif p.model_type == "llava":
            _clip_tower_and_projector(r, p, n_img, self.text_hidden, dt, w.attn)
        else:
            r.a("v.block", vision_activation_bytes(p, n_img, dt) - n_img * per_image * dt)
            r.f("v.block")
            r.a("img_feat", n_img * p.tokens_per_image * self.text_hidden * dt)
        rows = w.batch * w.input_len
        r.a("embeds.ms", rows * self.text_hidden * dt)  # inputs_embeds.masked_scatter(special_image_mask, ...)
        r.f("embeds")
        r.rename("embeds.ms", "embeds")
        if p.model_type == "paligemma" and w.attn != "eager":
            # PaliGemma attends bidirectionally within the prefix (token_type_ids): create_causal_mask gets an
            # or_mask_function, so SDPA's b x 1 x L x L boolean mask is materialized for the whole forward
            # (Gemma 3's text model materializes its full and sliding masks anyway: the decoder replay has them)
            r.a("mask.full", w.batch * w.input_len * w.input_len)


def _vit_attention(r, n: int, n_img: int, d: int, heads: int, dt: int, attn: str) -> None:
    """q / k / v projections, attention over each image's positions, output projection (SiglipAttention /
    CLIPAttention: SDPA without a mask, or eager: scores * scaling, softmax in float32 (its converted input is
    kernel scratch), .to(dtype), @ v, transpose(1, 2).contiguous()). Leaves "v.o"."""
    for t in ("v.q", "v.k", "v.v"):
        r.a(t, n * d * dt)
    if attn == "eager":
        scores = n_img * heads * (n // n_img) ** 2
        r.a("v.s0", scores * dt)
        r.a("v.s", scores * dt)
        r.f("v.s0")
        r.a("k:v.s32", scores * 4)
        r.a("v.p32", scores * 4)
        r.f("k:v.s32")
        r.a("v.p", scores * dt)
        r.f("v.p32")
        r.a("v.a0", n * d * dt)
        r.a("v.a", n * d * dt)
        r.f("v.a0", "v.p", "v.s")
    else:
        r.a("v.a", n * d * dt)
        r.a("k:v.lse", n * heads * 4)
        r.f("k:v.lse")
    r.a("v.o", n * d * dt)
    r.f("v.a", "v.q", "v.k", "v.v")


def _siglip_tower(r, p: ImagePlan, n_img: int, dt: int, attn: str, use_head: bool) -> None:
    """SiglipVisionTransformer (models/siglip/modeling_siglip.py, transformers 5.17): patch conv (L178), + the
    position table (L184; the embeddings stay referenced until the tower returns), encoder layers (L343-354:
    layer_norm1, attention, residual add, layer_norm2, fc1 / activation / fc2, residual add; each layer's output
    replaces the one before), post_layernorm (L612); with vision_use_head the MAP head (L635-641: a key / value
    projection of every position and its contiguous copy). Leaves "v.post"."""
    n, d, f = n_img * p.patches_per_image, p.vision_hidden, p.vision_ffn
    r.a("v.conv", n * d * dt)
    r.a("v.pos", p.patches_per_image * d * dt)
    r.a("v.emb", n * d * dt)
    r.f("v.pos", "v.conv")
    hidden = "v.emb"
    for i in range(p.vision_layers):
        r.a("v.ln1", n * d * dt)
        _vit_attention(r, n, n_img, d, p.vision_heads, dt, attn)
        r.f("v.ln1")
        r.a("v.h", n * d * dt)
        r.f("v.o")
        r.a("v.ln2", n * d * dt)
        r.a("v.fc1", n * f * dt)
        r.a("v.act", n * f * dt)
        r.f("v.fc1")
        r.a("v.fc2", n * d * dt)
        r.f("v.act", "v.ln2")
        r.a(f"v.out{i}", n * d * dt)
        r.f("v.fc2", "v.h")
        if hidden != "v.emb":
            r.f(hidden)
        hidden = f"v.out{i}"
    r.a("v.post", n * d * dt)
    if use_head:
        r.a("v.head.kv", n * 2 * d * dt)
        r.a("v.head.kvc", n * 2 * d * dt)
        r.f("v.head.kv", "v.head.kvc")
    r.f("v.emb", hidden)


def _siglip_projector(r, p: ImagePlan, n_img: int, ht: int, dt: int) -> None:
    """Gemma3MultiModalProjector (models/gemma3/modeling_gemma3.py L680-695): the post-norm output transposed
    and made contiguous, average-pooled to mm_tokens_per_image, Gemma3RMSNorm in float32 (x.float(), pow,
    product, (1 + weight) product, type_as), then @ mm_input_projection_weight. PaliGemmaMultiModalProjector
    (models/paligemma/modeling_paligemma.py L90-97): one linear to the text width. The projected features
    ("img_feat") are referenced by the model's forward until it returns."""
    n, d = n_img * p.patches_per_image, p.vision_hidden
    m = n_img * p.tokens_per_image
    if p.model_type == "gemma3":
        r.a("v.t", n * d * dt)
        r.a("v.pool", m * d * dt)
        r.a("v.x32", m * d * 4)
        r.a("v.pow", m * d * 4)
        r.f("v.pow")
        r.a("v.n32", m * d * 4)
        r.f("v.x32")
        r.a("v.w32", m * d * 4)
        r.f("v.n32")
        r.a("v.norm", m * d * dt)
        r.f("v.w32")
        r.a("img_feat", m * ht * dt)
        r.f("v.t", "v.pool", "v.norm")
    else:
        r.a("img_feat", m * ht * dt)
    r.f("v.post")


def _clip_tower_and_projector(r, p: ImagePlan, n_img: int, ht: int, dt: int, attn: str) -> None:
    """CLIPVisionTransformer (models/clip/modeling_clip.py, transformers 5.17) as Llava calls it, with
    output_hidden_states=True (models/llava/modeling_llava.py L154-159): patch conv (L209), torch.cat with the
    class embedding (L213), + positions (L217), pre_layrnorm (L633); every layer's output is kept in
    hidden_states until the projector has run. Layers: layer_norm1, attention, residual add, layer_norm2, fc1,
    quick_gelu written out (1.702 * x, sigmoid, product), fc2, residual add. LlavaMultiModalProjector (L100-106):
    linear_1, GELU, linear_2 over the selected layer's patch positions; then torch.cat of the per-image
    features (L244, a copy: "img_feat", referenced until the forward returns)."""
    n, d, f = n_img * p.patches_per_image, p.vision_hidden, p.vision_ffn
    m = n_img * p.tokens_per_image
    r.a("v.conv", n_img * (p.patches_per_image - 1) * d * dt)
    r.a("v.cat", n * d * dt)
    r.a("v.pos", p.patches_per_image * d * dt)
    r.a("v.emb", n * d * dt)
    r.f("v.pos", "v.cat", "v.conv")
    r.a("v.hs0", n * d * dt)  # pre_layrnorm: hidden_states[0]
    r.f("v.emb")
    kept = ["v.hs0"]
    for i in range(p.vision_layers):
        r.a("v.ln1", n * d * dt)
        _vit_attention(r, n, n_img, d, p.vision_heads, dt, attn)
        r.f("v.ln1")
        r.a("v.h", n * d * dt)
        r.f("v.o")
        r.a("v.ln2", n * d * dt)
        r.a("v.fc1", n * f * dt)
        r.a("v.g1", n * f * dt)
        r.a("v.g2", n * f * dt)
        r.f("v.g1")
        r.a("v.act", n * f * dt)
        r.f("v.g2", "v.fc1")
        r.a("v.fc2", n * d * dt)
        r.f("v.act", "v.ln2")
        r.a(f"v.hs{i + 1}", n * d * dt)
        r.f("v.fc2", "v.h")
        kept.append(f"v.hs{i + 1}")
    r.a("v.l1", m * ht * dt)
    r.a("v.gelu", m * ht * dt)
    r.f("v.l1")
    r.a("v.l2", m * ht * dt)
    r.f("v.gelu", *kept)
    r.a("img_feat", m * ht * dt)
    r.f("v.l2")


def vlm_workload(w, phase: VisionPhase, input_len: int):
    """The decoder workload with the image tokens in the prompt and the vision tower replayed in its prefill."""
    from gpu_preflight.estimators.engines.transformers import Workload

    @dataclasses.dataclass
    class VlmWorkload(Workload):
        vision: Any = None

    fields = {f.name: getattr(w, f.name) for f in dataclasses.fields(Workload)}
    return VlmWorkload(**{**fields, "input_len": input_len}, vision=phase)


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
    full = meta_count.full_config(cfg)
    plan = image_plan(full, o.get("image_size"), cfg.get("_processor"))
    mc = meta_count.count_weights(cfg, w.dtype)
    text_names = ("language_model", "lm_head", "model.embed_tokens", "model.layers", "model.norm")
    vision_bytes = sum(t.bytes for t in mc.tensors
                       if not any(k in t.name for k in text_names) and not t.name.startswith("buffer:"))
    added = images * plan.tokens_per_image
    text_cfg = text_config_of(cfg)
    phase = vision_phase(full, plan, images, text_cfg)
    w2 = vlm_workload(w, phase, w.input_len + added)
    report = estimate_llm(text_cfg, workload=w2, targets=targets, engine="transformers",
                          torch_version=common.get("torch"), transformers_version=o.get("transformers"),
                          model_name=source.name)
    report["workload"].pop("vision", None)
    above = _vision_above_text(text_cfg, w2)
    extra = vision_bytes
    for k in ("peak_allocated_bytes", "peak_reserved_bytes", "peak_process_bytes"):
        report[k] += extra
    for f in report["fits"]:
        f["peak_process_bytes_per_gpu"] += extra
        f["headroom_bytes"] -= extra
        f["fits"] = f["headroom_bytes"] >= 0
    report["breakdown"]["vision_weights"] = vision_bytes
    report["breakdown"]["vision_activations_above_text"] = above
    report["kind"] = "vlm"
    report["workload"].update({"images": images, "image_size": list(plan.pixels), "text_input_len": w.input_len})
    report["architecture"].update({"model_type_vlm": plan.model_type, "image_tokens_per_image": plan.tokens_per_image,
                                   "vision_patches_per_image": plan.patches_per_image,
                                   "vision_weights_source": f"meta device ({mc.model_class})"})
    report["max_context_tokens"] = report["max_batch"] = None  # searched on the text model alone: not shown
    report["suggestions"] = []
    report["assumptions"] += plan.notes + [
        f"{images} image(s) x {plan.tokens_per_image} tokens added to the {w.input_len}-token prompt; the vision "
        f"tower runs once at the start of the prefill over {images * w.batch * plan.patches_per_image} patches, "
        f"replayed with the decoder (its peak is the process peak where it exceeds the text layers')"]
    return report


def vision_phase(full: dict, plan: ImagePlan, images: int, text_cfg: dict) -> VisionPhase:
    """The VisionPhase of a model: `full` is config.json with transformers' class defaults (meta_count.full_config),
    which says whether a SigLIP tower has its MAP head (vision_use_head)."""
    from gpu_preflight.estimators.arch import parse_llm

    vc = full.get("vision_config") or {}
    use_head = plan.model_type in ("gemma3", "paligemma") and bool(vc.get("vision_use_head", True))
    return VisionPhase(plan, images, parse_llm(text_cfg).hidden, use_head)


def _vision_above_text(text_cfg: dict, w2) -> int:
    """Activation bytes the vision tower adds to the decoder's peak (replays with and without it)."""
    from gpu_preflight.estimators.arch import parse_llm
    from gpu_preflight.estimators.engines.transformers import Workload, estimate_transformers

    arch = parse_llm(text_cfg)
    plain = Workload(**{f.name: getattr(w2, f.name) for f in dataclasses.fields(Workload)})
    with_vision = estimate_transformers(arch, w2).breakdown["activations"]
    return max(0, with_vision - estimate_transformers(arch, plain).breakdown["activations"])


def text_config_of(config: dict) -> dict:
    """The language model's config: text_config, or (Qwen2-VL's older layout) the top-level keys."""
    if isinstance(config.get("text_config"), dict) and "hidden_size" in config["text_config"]:
        return {**config, "vision_config": None}
    mt = str(config.get("model_type") or "")
    return {k: v for k, v in config.items() if k != "vision_config"} | {"model_type": mt + "_text"}
