"""Image / video pipelines (diffusers): memory per phase, from the components' configs.

A pipeline run has phases with their own peaks: text encoding (each encoder), the denoiser's
forward at the image's token count, and the VAE decode, whose activations grow with the pixel
count and are often the real peak. Which components sit on the GPU during a phase depends on the
offload mode. Each phase's transient is counted from the tensors the component's forward keeps
alive at its widest point (documented per class below); weights are the components' parameter
bytes (catalog or safetensors headers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.errors import UsageError

FP32 = 4
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3", "clip_model", "image_encoder", "audio_encoder")
DENOISERS = ("transformer", "unet")
MAX_PIXELS = 16384 * 16384


@dataclass
class ImageWorkload:
    height: int = 1024
    width: int = 1024
    batch: int = 1                 # images per prompt
    guidance_scale: float | None = None
    steps: int | None = None
    dtype: str = "bfloat16"
    offload: str = "none"          # none | model | sequential | group
    vae_tiling: bool = False
    vae_slicing: bool = False      # decode the images of a batch one at a time
    quantize: str | None = None    # None | "8bit" | "4bit" (bitsandbytes) | "fp8": denoiser and text encoders
    attn: str = "sdpa"             # sdpa (diffusers' default processor) | eager (materialized scores)
    frames: int | None = None      # video: frames the denoiser sees per call (default: the pipeline's)
    decode_chunk: int | None = None  # video: frames per VAE decode call (default: the pipeline's)
    drop_text_encoders: bool = False


# The caching allocator keeps freed activation blocks of these phases cached, and their sizes do
# not repeat, so torch's reserved memory (what the process holds) exceeds the allocated peak by
# about this fraction of the phase's transient. Measured on flux.1-dev at 1024x1024 b1
# (reserved peak minus allocated peak, over the transient); other cases are held out.
RESERVE_FACTOR = {"denoise": (1.23, "flux.1-dev denoise 1024x1024 b1: reserved 32.50 vs allocated 31.93 GiB, transient 0.462"),
                  "vae_decode": (0.761, "flux.1-dev vae_decode 1024x1024 b1: reserved 35.66 vs allocated 33.85 GiB, transient 2.377"),
                  "video:denoise": (0.241, "sonic denoise 512x512 x 25 frames: reserved 10.74 vs allocated 9.49 GiB, transient 5.19"),
                  "video:vae_decode": (1.089, "sonic vae_decode chunk 8: reserved 12.69 vs allocated 8.33 GiB, transient 4.00")}
CUBLAS_WORKSPACE = 32 * 1024 * 1024  # allocated at the first matmul and kept (measured, H100 + torch 2.11)


@dataclass
class Phase:
    name: str
    resident_bytes: int
    transient_bytes: int
    detail: str = ""
    reserve_key: str | None = None  # RESERVE_FACTOR entry, default: the phase kind

    @property
    def peak_allocated_bytes(self) -> int:
        return self.resident_bytes + self.transient_bytes

    @property
    def peak_reserved_bytes(self) -> int:
        factor = RESERVE_FACTOR.get(self.reserve_key or self.name.split(":")[0], (0.0, ""))[0]
        return self.peak_allocated_bytes + int(self.transient_bytes * factor)


@dataclass
class PipelineEstimate:
    weights: dict[str, int]
    phases: list[Phase]
    assumptions: list[str] = field(default_factory=list)
    rounded: tuple[int, int] | None = None  # (height, width) after rounding to the VAE factor

    @property
    def peak_allocated_bytes(self) -> int:
        return max(p.peak_allocated_bytes for p in self.phases)

    @property
    def peak_reserved_bytes(self) -> int:
        return max(p.peak_reserved_bytes for p in self.phases)


def _c(cfg: dict, *keys, default=None):
    for k in keys:
        if isinstance(cfg, dict) and cfg.get(k) is not None:
            return cfg[k]
    return default


def component_bytes(comp: dict, dt: int) -> int | None:
    w = comp.get("weights") or {}
    params = w.get("parameters")
    if params:
        buffers = w.get("buffers") or 0
        buf = buffers if isinstance(buffers, int) else 0
        return int(params) * dt + buf * dt
    if w.get("total_bytes"):
        stored = DTYPE_BYTES.get(str(w.get("dtype") or ""))
        # a file stored in another float width is cast to the run dtype when loaded
        return int(w["total_bytes"]) // stored * dt if stored else int(w["total_bytes"])
    return None


def vae_factor(vae_cfg: dict) -> int:
    blocks = _c(vae_cfg, "block_out_channels", default=[128, 256, 512, 512])
    return 2 ** (len(blocks) - 1)


def round_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    return max(multiple, h // multiple * multiple), max(multiple, w // multiple * multiple)


# ----------------------------------------------------------------------------------------------
# transients per component class


def encoder_transient(cls: str, cfg: dict, rows_batch: int, seq: int, dt: int) -> tuple[int, str]:
    """One encoder layer at a time: hidden (rows x d) for input, attention q/k/v/out and the MLP
    hidden (rows x ff) before and after the activation. T5 runs eager attention with its relative
    position bias: scores, bias and softmax in float32 (heads x L x L x 12 bytes) and its
    feed-forward in float32 (rows x d_ff x 8 bytes). Gemma/CLIP return every layer's hidden states
    (the pipelines read hidden_states[-2])."""
    tc = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    d = int(_c(tc, "hidden_size", "d_model", default=768))
    ff = int(_c(tc, "intermediate_size", "d_ff", default=4 * d))
    heads = int(_c(tc, "num_attention_heads", "num_heads", default=12))
    rows = rows_batch * seq
    if "T5" in cls:
        return rows * ff * 8 + rows_batch * heads * seq * seq * 12, f"{rows} tokens x d_ff={ff}, {heads} heads"
    if "Gemma" in cls:
        width, _src = GEMMA_ENCODER_WIDTH
        return int(rows * d * dt * width), f"{rows} tokens x d={d}"
    per_layer = rows * (6 * d + 3 * ff) * dt
    outputs = rows * d * dt * (int(_c(tc, "num_hidden_layers", "num_layers", default=12)) + 1)
    return per_layer + outputs, f"{rows} tokens x d={d}, ff={ff}"


# Gemma text encoders (eager attention, every layer's hidden states returned): live bytes per token
# in units of hidden_size x dtype bytes, measured on lumina-image-2.0's Gemma-2-2B at 256 tokens
# (+0.080 GiB); NewBie's Gemma-3-4B at 512 tokens is held out.
GEMMA_ENCODER_WIDTH = (73.0, "lumina-image-2.0 encode:text_encoder 1024x1024: +0.080 GiB over 256 tokens x 2304")


def dit_tokens(cls: str, cfg: dict, lat_h: int, lat_w: int) -> int:
    p = int(_c(cfg, "patch_size", default=2))
    if cls.startswith("Flux"):
        p = 2
    return (lat_h // p) * (lat_w // p)


# Activation width of one denoiser block (live bytes / (tokens x hidden x dtype bytes)), measured
# once per family at 1024x1024, batch 1 on the H100 (calibration/raw/diffusion-h100.jsonl, phase
# "denoise", peak minus resident); every other size, batch and pipeline is held out.
DIT_WIDTH = {
    "Flux": (17.52, "flux.1-dev 1024x1024 b1: +0.462 GiB over 4608 tokens x 3072"),
    "SD3": (13.42, "sd3.5-medium 1024x1024 b1 (CFG batch 2): +0.340 GiB over 4429 tokens x 1536"),
    "Lumina2": (26.7, "lumina-image-2.0 1024x1024 b1: +0.499 GiB over 4352 tokens x 2304"),
}
# SDXL UNet: bytes per latent pixel per image in the CFG batch, sdxl-base-1.0 1024x1024 b1 (+0.319 GiB, batch 2)
UNET_BYTES_PER_LATENT_PIXEL = (10453, "sdxl-base-1.0 1024x1024 b1: +0.319 GiB over 2 x 128 x 128 latents")


def denoiser_transient(cls: str, cfg: dict, w: ImageWorkload, lat_h: int, lat_w: int, txt: int, cfg_batch: int,
                       dt: int) -> tuple[int, str]:
    b = w.batch * cfg_batch
    if "SpatioTemporal" in cls:
        per, _src = VIDEO_UNET_BYTES
        frames = w.frames or 14
        return int(b * frames * lat_h * lat_w * per * dt / 2), f"{b} x {frames} frames x {lat_h}x{lat_w} latents"
    if "UNet" in cls:
        per, _src = UNET_BYTES_PER_LATENT_PIXEL
        return int(b * lat_h * lat_w * per * dt / 2), f"{b} x {lat_h}x{lat_w} latents"
    n = dit_tokens(cls, cfg, lat_h, lat_w) + txt
    heads = int(_c(cfg, "num_attention_heads", "n_heads", default=24))
    hd = int(_c(cfg, "attention_head_dim", "head_dim", default=128))
    d = int(_c(cfg, "dim", "hidden_size", default=heads * hd))
    scores = 0
    if w.attn == "eager":
        # without SDPA the attention probabilities are materialized: bf16 scores, then softmax in float32
        # (input converted, output) and the cast back: about 10 bytes per score, for all heads
        scores = b * heads * n * n * 10
    family = next((f for f in DIT_WIDTH if cls.startswith(f)), None)
    note = ""
    if family is None:  # an unknown transformer denoiser: the widest measured block, said so
        family, note = max(DIT_WIDTH, key=lambda f: DIT_WIDTH[f][0]), f" (unknown class {cls}: widest measured block)"
    width, _src = DIT_WIDTH[family]
    return int(b * n * d * width * dt) + scores, f"{b} x {n} tokens (image + text) x d={d}{note}" + \
        (" + eager attention scores" if scores else "")


def unet_transient(cfg: dict, b: int, lat_h: int, lat_w: int, txt: int, dt: int) -> tuple[int, str]:
    """UNet2DConditionModel: the skip connections of the down path stay alive until the up path
    uses them (layers_per_block + 1 per level); the widest moment is the first up block at the
    highest resolution (cat of the skip and the feature map, resnet norm/act/conv)."""
    chans = _c(cfg, "block_out_channels", default=[320, 640, 1280])
    lpb = int(_c(cfg, "layers_per_block", default=2))
    skips = 0
    for level, c in enumerate(chans):
        s = (lat_h >> level) * (lat_w >> level)
        skips += (lpb + 1) * c * s
    c0 = chans[0]
    s0 = lat_h * lat_w
    widest = (2 * c0 + 2 * c0 + c0) * s0
    return int(b * (skips + widest) * dt), f"{b} x {lat_h}x{lat_w} latents, channels {chans}"


# Video (StableVideoDiffusion structure, as Sonic uses it), measured in float16 on the H100
# (calibration/raw/diffusion-video-h100.jsonl, sonic 512x512, 25 frames, decode chunk 8); the 14-frame,
# chunk-4 and 576x1024 cases are held out.
VIDEO_UNET_BYTES = (18141, "sonic denoise 512x512 x 25 frames, CFG batch 3: +5.19 GiB over 3 x 25 x 64 x 64 latents")
VIDEO_VAE_BYTES_PER_PIXEL_FRAME = (2048.6, "sonic vae_decode 512x512, chunk 8: +4.001 GiB over 8 x 512 x 512 pixels")

# AutoencoderKL decoder (block_out_channels 128/256/512/512): live bytes per output pixel per image
# in bfloat16, measured on flux.1-dev at 1024x1024 b1 (+2.377 GiB); the other five pipelines,
# 512 and 2048 and batch 4 are held out. A batch of 4 measured 16 % below 4x this.
VAE_BYTES_PER_PIXEL = (2434, "flux.1-dev vae_decode 1024x1024 b1: +2.377 GiB")


def vae_decode_transient(cfg: dict, b: int, h: int, w: int, dt: int, tiling: bool) -> tuple[int, str]:
    """The decoder's full-resolution up blocks dominate; their activations scale with the pixel count.
    With tiling the decoder sees 512x512 pixel tiles (diffusers' default) one at a time, plus the
    blended float32 output."""
    if tiling:
        th, tw = min(h, 512), min(w, 512)
        t, _ = vae_decode_transient(cfg, 1, th, tw, dt, False)
        return t + b * 3 * h * w * FP32, f"tiles of {th}x{tw} + the {h}x{w} output"
    chans = list(_c(cfg, "block_out_channels", default=[128, 256, 512, 512]))
    scale = (chans[1] if len(chans) > 1 else chans[0]) / 256
    per, _src = VAE_BYTES_PER_PIXEL
    return int(b * h * w * per * scale * dt / 2), f"{b} x {h}x{w} pixels"


# ----------------------------------------------------------------------------------------------


def estimate_pipeline(entry: dict, w: ImageWorkload) -> PipelineEstimate:
    comps: dict[str, dict] = entry.get("components") or {}
    defaults = entry.get("defaults") or {}
    if w.height <= 0 or w.width <= 0:
        raise UsageError("height and width must be positive")
    if w.height * w.width > MAX_PIXELS:
        raise UsageError(f"{w.height}x{w.width} is far beyond what any pipeline generates",
                         hint="use at most 16384x16384 (and see `--vae-tiling`)")
    dt = DTYPE_BYTES.get(w.dtype, 2)
    assumptions: list[str] = []
    weights: dict[str, int] = {}
    missing = []
    for name, comp in comps.items():
        if not isinstance(comp, dict) or not comp.get("class") or name == "scheduler" or "tokenizer" in name:
            continue
        b = component_bytes(comp, dt)
        if b is None:
            missing.append(name)
            continue
        weights[name] = b
    if missing:
        assumptions.append(f"no weight size known for {', '.join(missing)}: not counted")
    if w.quantize:
        # bitsandbytes: int8 weights + one fp32 scale per row (~1 byte/param), or 4-bit NF4 + one fp32
        # absmax per 64 weights (~0.5625 byte/param); norms, embeddings and the VAE stay in `dtype`
        per_param = {"8bit": 1.0, "4bit": 0.5625, "fp8": 1.0}[w.quantize]
        for name in list(weights):
            if name in TEXT_ENCODERS or name in DENOISERS:
                weights[name] = int(weights[name] / dt * per_param)
        fmt = "float8 weights (e.g. torchao float8 weight-only or layerwise casting)" if w.quantize == "fp8" \
            else f"{w.quantize} bitsandbytes quantization"
        assumptions.append(f"{fmt} of the denoiser and text encoders: weight bytes from the format; activations "
                           f"unchanged; not yet checked against measurements")
    vae = comps.get("vae", {}).get("config") or {}
    factor = int(defaults.get("vae_scale_factor") or vae_factor(vae))
    mult = factor * int(defaults.get("latent_packing") or defaults.get("patch_size") or 1)
    rh, rw = round_size(w.height, w.width, mult)
    rounded = None
    if (rh, rw) != (w.height, w.width):
        rounded = (rh, rw)
        assumptions.append(f"{w.height}x{w.width} is not a multiple of {mult}: diffusers works at {rh}x{rw}")
    lat_h, lat_w = rh // factor, rw // factor
    guidance = w.guidance_scale if w.guidance_scale is not None else defaults.get("guidance_scale", 0)
    distilled = bool(defaults.get("guidance_distilled"))
    cfg_batched = bool(defaults.get("cfg_batched", True))
    cfg_passes = int(defaults.get("cfg_passes", 2))
    guided = guidance is None or guidance > 1  # no scale given: the pipeline's own guidance passes apply
    cfg_batch = cfg_passes if (not distilled and guided and cfg_batched and cfg_passes >= 2) else 1
    if distilled:
        assumptions.append("guidance-distilled model: one denoiser pass per step, no CFG batch doubling")
    elif cfg_batch == 1 and (guidance or 0) > 1:
        assumptions.append("classifier-free guidance runs as separate passes (batch not doubled)")
    txt = int(defaults.get("max_sequence_length") or 77)
    phases: list[Phase] = []
    enc_names = [n for n in weights if n in TEXT_ENCODERS]
    den = next((n for n in DENOISERS if n in weights), None)
    total = sum(weights.values())

    def resident(active: str) -> int:
        return CUBLAS_WORKSPACE + _weights_resident(active)

    def _weights_resident(active: str) -> int:
        if w.offload == "model":
            return weights.get(active, 0)
        if w.offload in ("sequential", "group"):
            # sequential: one submodule at a time; group offload (block level, with prefetch): about two blocks
            layers = int(_c(comps.get(active, {}).get("config") or {}, "num_layers", "num_hidden_layers", default=24))
            return weights.get(active, 0) // max(layers, 1) * 2
        enc = sum(weights[n] for n in enc_names)
        if w.drop_text_encoders:
            # prompts are encoded with only the encoders loaded; they are freed before the denoiser
            # and VAE are loaded (encode -> del encoders -> load transformer + vae)
            return enc if active in enc_names else total - enc
        return total

    for name in enc_names:
        cls = comps[name]["class"]
        seq = 77 if "CLIP" in cls and "Jina" not in cls else txt
        # each prompt is encoded once (the negative prompt in its own call) and repeated per image
        t, detail = encoder_transient(cls, comps[name].get("config") or {}, 1, seq, dt)
        phases.append(Phase(f"encode:{name}", resident(name), t, detail))
    if den and "SpatioTemporal" in comps[den]["class"] and not w.frames:
        w = dataclasses.replace(w, frames=int(defaults.get("frames") or 14))
    if den:
        cls = comps[den]["class"]
        t, detail = denoiser_transient(cls, comps[den].get("config") or {}, w, lat_h, lat_w, txt if "UNet" not in cls else 77,
                                       cfg_batch, dt)
        phases.append(Phase("denoise", resident(den), t, detail,
                            "video:denoise" if "SpatioTemporal" in cls else None))
    video = bool(den and "SpatioTemporal" in comps[den]["class"])
    if video:
        w = dataclasses.replace(w, frames=w.frames or int(defaults.get("frames") or 14),
                                decode_chunk=w.decode_chunk or int(defaults.get("decode_chunk_size") or 8))
    if "vae" in weights and video:
        per, _src = VIDEO_VAE_BYTES_PER_PIXEL_FRAME
        chunk = min(w.decode_chunk, w.frames)
        t = int(chunk * rh * rw * per * dt / 2)
        # all frames' latents stay on the GPU while they are decoded chunk by chunk
        latents = w.batch * w.frames * int(defaults.get("latent_channels") or 4) * lat_h * lat_w * dt
        phases.append(Phase("vae_decode", resident("vae") + latents, t, f"{chunk} frames x {rh}x{rw} per call",
                            "video:vae_decode"))
    elif "vae" in weights:
        vdt = FP32 if (w.dtype == "float16" and vae.get("force_upcast") and entry.get("pipeline_class", "").startswith(
            "StableDiffusionXL")) else dt
        if vdt != dt:
            assumptions.append("SDXL upcasts the VAE to float32 for the decode (force_upcast with float16)")
        t, detail = vae_decode_transient(vae, 1 if w.vae_slicing else w.batch, rh, rw, vdt, w.vae_tiling)
        extra = weights["vae"] if vdt != dt else 0
        phases.append(Phase("vae_decode", resident("vae") + extra, t, detail))
    if not phases:
        raise UsageError("this pipeline has no component with a known size", hint="pass a diffusers folder with configs")
    if w.attn == "eager":
        assumptions.append("eager attention: the S x S attention probabilities of the denoiser are materialized "
                           "(physics from the tensor sizes; the measured constants are for SDPA)")
    if video:
        assumptions.append(f"video: {w.frames} frames per denoiser call, VAE decode in chunks of {w.decode_chunk} frames; "
                           "model-specific extra modules (Sonic's audio attention, face and frame-interpolation "
                           "models) are counted by their weights only")
    return PipelineEstimate(weights, phases, assumptions, rounded)


# ----------------------------------------------------------------------------------------------
# report


CHANGE_SETS = (  # cheapest first: what each costs in speed
    ((), "as is"),
    ((("drop_text_encoders", True),), "encode the prompt first, free the text encoders, then load the transformer and VAE"),
    ((("vae_tiling", True),), "VAE tiling (pipe.vae.enable_tiling(): slightly slower decode)"),
    ((("drop_text_encoders", True), ("vae_tiling", True)), "free the text encoders after encoding + VAE tiling"),
    ((("quantize", "8bit"),), "8-bit weights for the denoiser and text encoders (bitsandbytes)"),
    ((("quantize", "4bit"),), "4-bit NF4 weights for the denoiser and text encoders (bitsandbytes)"),
    ((("quantize", "4bit"), ("drop_text_encoders", True), ("vae_tiling", True)),
     "4-bit weights + free the text encoders after encoding + VAE tiling"),
    ((("offload", "model"),), "model CPU offload (pipe.enable_model_cpu_offload(): a component on the GPU at a time)"),
    ((("offload", "model"), ("vae_tiling", True)), "model CPU offload + VAE tiling"),
    ((("offload", "group"), ("vae_tiling", True)),
     "group offload at block level + VAE tiling (apply_group_offloading(..., offload_type='block_level'))"),
    ((("offload", "sequential"), ("vae_tiling", True)),
     "sequential CPU offload + VAE tiling (pipe.enable_sequential_cpu_offload(): much slower)"),
)


def process_peak(est: PipelineEstimate, overhead: int) -> int:
    return est.peak_reserved_bytes + overhead


def pipeline_report(entry: dict, w: ImageWorkload, targets: list, overhead: int, overhead_note: str,
                    model_name: str) -> dict[str, Any]:
    from gpu_preflight import __version__

    est = estimate_pipeline(entry, w)
    peak = process_peak(est, overhead)
    fits = [{"gpu": t.name, "gpu_id": t.gpu_id, "count": t.count, "memory_bytes": t.memory_bytes,
             "memory_source": t.source, "fits": peak <= t.memory_bytes, "headroom_bytes": t.memory_bytes - peak,
             "peak_process_bytes_per_gpu": peak} for t in targets]
    report: dict[str, Any] = {
        "schema": "gpu-preflight.estimate", "schema_version": 1, "tool_version": __version__,
        "model": model_name, "kind": "diffusion", "engine": "diffusers",
        "workload": dataclasses.asdict(w),
        "peak_allocated_bytes": est.peak_allocated_bytes,
        "peak_process_bytes": peak,
        "breakdown": {**{f"weights:{k}": v for k, v in est.weights.items()},
                      "largest_transient": max(p.transient_bytes for p in est.phases),
                      "cuda_context_and_libraries": overhead},
        "peak_reserved_bytes": est.peak_reserved_bytes,
        "phases": {p.name: {"peak_allocated_bytes": p.peak_allocated_bytes, "transient_bytes": p.transient_bytes,
                            "peak_reserved_bytes": p.peak_reserved_bytes,
                            "resident_bytes": p.resident_bytes, "detail": p.detail} for p in est.phases},
        "peak_phase": max(est.phases, key=lambda p: p.peak_reserved_bytes).name,
        "fits": fits, "max_resolution": None, "suggestions": [],
        "assumptions": est.assumptions + [f"process overhead {overhead / (1 << 30):.2f} GiB: {overhead_note}",
                                          "checked against H100 measurements: docs/accuracy.md (pipelines)"],
    }
    if est.rounded:
        report["rounded_size"] = {"height": est.rounded[0], "width": est.rounded[1]}
    if targets:
        t = targets[0]
        report["max_resolution"] = max_square(entry, w, t.memory_bytes, overhead)
        if not fits[0]["fits"]:
            for changes, label in CHANGE_SETS[1:]:
                w2 = dataclasses.replace(w, **dict(changes))
                p2 = process_peak(estimate_pipeline(entry, w2), overhead)
                if p2 <= t.memory_bytes:
                    report["suggestions"].append({"change": label, "settings": dict(changes), "peak_process_bytes": p2,
                                                  "fits": True, "headroom_bytes": t.memory_bytes - p2,
                                                  "flag": " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                                                                   for k, v in changes)})
                    break
    return report


def max_square(entry: dict, w: ImageWorkload, memory: int, overhead: int) -> int | None:
    best = None
    for side in range(256, 8192 + 1, 64):
        try:
            e = estimate_pipeline(entry, dataclasses.replace(w, height=side, width=side))
        except UsageError:
            break
        if process_peak(e, overhead) <= memory:
            best = side
        else:
            break
    return best


# ---- the engine's flags and entry point (commands/estimate.py builds its parser from these) ----

from gpu_preflight.estimate.engines.base import Engine, Option, bounded_float, positive_int  # noqa: E402

OPTIONS = (
    Option("--dtype", "dtype", "component dtype: bfloat16 (default), float16 or float32", default="bfloat16"),
    Option("--batch", "batch", "images per prompt (default 1)", type=positive_int, default=1),
    Option("--height", "height", "image height in pixels (default: the pipeline's)", type=positive_int),
    Option("--width", "width", "image width in pixels (default: the pipeline's)", type=positive_int),
    Option("--guidance-scale", "guidance_scale", "CFG scale; > 1 doubles the denoiser batch unless distilled",
           type=bounded_float(0.0, 100.0)),
    Option("--steps", "steps", "denoising steps (memory does not depend on it)", type=positive_int),
    Option("--offload", "offload", "where the weights live between uses (default none)", default="none",
           choices=("none", "model", "sequential", "group")),
    Option("--vae-tiling", "vae_tiling", "decode the latents in tiles", action="store_true", default=False),
    Option("--vae-slicing", "vae_slicing", "decode a batch one image at a time", action="store_true", default=False),
    Option("--frames", "frames", "video: frames per denoiser call (default: the pipeline's)", type=positive_int),
    Option("--decode-chunk", "decode_chunk", "video: frames per VAE decode call (decode_chunk_size)",
           type=positive_int),
    Option("--quantize", "quantize", "weights of the denoiser and text encoders: bitsandbytes 8bit / 4bit (NF4), "
           "or fp8", choices=("8bit", "4bit", "fp8")),
    Option("--drop-text-encoders", "drop_text_encoders", "free the text encoders after encoding",
           action="store_true", default=False),
    Option("--attn", "attn", "attention: sdpa (default) or eager (materialized scores)", default="sdpa",
           choices=("sdpa", "eager")),
)


def pipeline_entry(source) -> dict:
    """A ModelSource of a pipeline as the dict the diffusion estimator and measurement child take."""
    def weights(c):
        if c.metadata.get("weights"):
            return c.metadata["weights"]
        if c.tensors:  # safetensors headers of a diffusers folder or Hub repo
            return {"parameters": sum(t.numel for t in c.tensors)}
        return None

    def cls(c):
        value = c.metadata.get("class") or (c.config or {}).get("_class_name")
        return value[-1] if isinstance(value, (list, tuple)) and value else value

    return {"components": {n: {"class": cls(c), "config": c.config, "weights": weights(c)}
                           for n, c in (source.components or {}).items()},
            "defaults": source.metadata.get("defaults") or {},
            "pipeline_class": (source.pipeline_index or {}).get("_class_name", ""),
            "model_index": source.pipeline_index or {}}


def run_engine(source, o: dict, targets: list, common: dict) -> dict:
    from gpu_preflight.estimate.overheads import process_overhead
    from gpu_preflight.estimate.plan import parse_dtype

    entry = pipeline_entry(source)
    d = entry["defaults"]
    w = ImageWorkload(height=o["height"] or int(d.get("height", 1024)), width=o["width"] or int(d.get("width", 1024)),
                      batch=o["batch"], guidance_scale=o["guidance_scale"], steps=o["steps"],
                      dtype=parse_dtype(o["dtype"]), offload=o["offload"], vae_tiling=o["vae_tiling"],
                      vae_slicing=o["vae_slicing"], quantize=o["quantize"], drop_text_encoders=o["drop_text_encoders"],
                      frames=o["frames"], decode_chunk=o["decode_chunk"], attn=o["attn"])
    cc = targets[0].cc if targets else None
    overhead, note = process_overhead(cc, common.get("torch"))
    return pipeline_report(entry, w, targets, overhead, note, source.name)


ENGINES = (Engine("diffusers", ("pipeline",), "diffusers image and video pipelines", OPTIONS, run_engine,
                  default_for=("pipeline",)),)
