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
    offload: str = "none"          # none | model | sequential
    vae_tiling: bool = False
    drop_text_encoders: bool = False


@dataclass
class Phase:
    name: str
    resident_bytes: int
    transient_bytes: int
    detail: str = ""

    @property
    def peak_allocated_bytes(self) -> int:
        return self.resident_bytes + self.transient_bytes


@dataclass
class PipelineEstimate:
    weights: dict[str, int]
    phases: list[Phase]
    assumptions: list[str] = field(default_factory=list)
    rounded: tuple[int, int] | None = None  # (height, width) after rounding to the VAE factor

    @property
    def peak_allocated_bytes(self) -> int:
        return max(p.peak_allocated_bytes for p in self.phases)


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
        return int(w["total_bytes"])
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
    hidden (rows x ff) before and after the activation; T5 also keeps its relative-position bias
    (heads x L x L, fp32) for every layer. The output hidden states stay."""
    tc = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    d = int(_c(tc, "hidden_size", "d_model", default=768))
    ff = int(_c(tc, "intermediate_size", "d_ff", default=4 * d))
    heads = int(_c(tc, "num_attention_heads", "num_heads", default=12))
    rows = rows_batch * seq
    per_layer = rows * (6 * d + 3 * ff) * dt
    bias = rows_batch * heads * seq * seq * FP32 if "T5" in cls else 0
    # all hidden states are returned when the pipeline reads a middle layer (hidden_states[-2])
    outputs = rows * d * dt * (int(_c(tc, "num_hidden_layers", "num_layers", default=12)) + 1
                               if "Gemma" in cls or "CLIP" in cls else 1)
    return per_layer + bias + outputs, f"{rows} tokens x d={d}, ff={ff}"


def dit_tokens(cls: str, cfg: dict, lat_h: int, lat_w: int) -> int:
    p = int(_c(cfg, "patch_size", default=2))
    if cls.startswith("Flux"):
        p = 2
    return (lat_h // p) * (lat_w // p)


def denoiser_transient(cls: str, cfg: dict, w: ImageWorkload, lat_h: int, lat_w: int, txt: int, cfg_batch: int,
                       dt: int) -> tuple[int, str]:
    b = w.batch * cfg_batch
    if "UNet" in cls:
        return unet_transient(cfg, b, lat_h, lat_w, txt, dt)
    n = dit_tokens(cls, cfg, lat_h, lat_w) + txt
    heads = int(_c(cfg, "num_attention_heads", "n_heads", default=24))
    hd = int(_c(cfg, "attention_head_dim", "head_dim", default=128))
    d = int(_c(cfg, "dim", "hidden_size", default=heads * hd))
    if cls.startswith("Flux"):
        # single-stream block: x, norm, proj_mlp (4d) + act (4d), q/k/v (3d) + rope copies (2d),
        # attention out (d), cat(attn, mlp) (5d), proj_out (d)
        width = 1 + 1 + 4 + 4 + 3 + 2 + 1 + 5 + 1
    elif cls.startswith("SD3"):
        width = 1 + 1 + 3 + 1 + 4 + 4 + 1 + 2
    else:  # Lumina2 / Next-DiT: SwiGLU FFN w1, w3, act*w3 at ff ~ 4d, plus q/k/v, rope in fp32
        ff = int(_c(cfg, "ffn_hidden_dim", default=4 * d))
        width = 1 + 1 + 3 + 4 + 1 + 1 + 3 * ff / d
    return int(b * n * d * width * dt), f"{b} x {n} tokens (image + text) x d={d}"


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


def vae_decode_transient(cfg: dict, b: int, h: int, w: int, dt: int, tiling: bool) -> tuple[int, str]:
    """AutoencoderKL decoder at the output resolution: the last up block's first resnet holds its
    input (channels[1]), the GroupNorm output and the SiLU output at full size; the 2x nearest
    upsample before it runs in float32 for bfloat16 inputs. With tiling the decoder sees 512x512
    pixel tiles (diffusers' default tile) one at a time, plus the blended output."""
    chans = list(_c(cfg, "block_out_channels", default=[128, 256, 512, 512]))
    if tiling:
        th, tw = min(h, 512), min(w, 512)
        t, _ = vae_decode_transient(cfg, 1, th, tw, dt, False)
        return t + b * 3 * h * w * FP32, f"tiles of {th}x{tw} + the {h}x{w} output"
    c_in = chans[1] if len(chans) > 1 else chans[0]
    pixels = h * w
    resnet = 3 * c_in * pixels * dt
    upsample = c_in * pixels * (FP32 + dt) if dt == 2 else c_in * pixels * dt
    return int(b * max(resnet, upsample + c_in * pixels // 4 * dt)), f"{b} x {h}x{w} x {c_in} channels"


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
    cfg_batch = 2 if (not distilled and (guidance or 0) > 1 and cfg_batched and cfg_passes >= 2) else 1
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
        if w.offload == "model":
            return weights.get(active, 0)
        if w.offload == "sequential":
            layers = int(_c(comps.get(active, {}).get("config") or {}, "num_layers", "num_hidden_layers", default=24))
            return weights.get(active, 0) // max(layers, 1) * 2
        r = total
        if w.drop_text_encoders and active not in enc_names:
            r -= sum(weights[n] for n in enc_names)
        return r

    for name in enc_names:
        cls = comps[name]["class"]
        seq = 77 if "CLIP" in cls and "Jina" not in cls else txt
        t, detail = encoder_transient(cls, comps[name].get("config") or {}, w.batch * cfg_batch, seq, dt)
        phases.append(Phase(f"encode:{name}", resident(name), t, detail))
    if den:
        cls = comps[den]["class"]
        t, detail = denoiser_transient(cls, comps[den].get("config") or {}, w, lat_h, lat_w, txt if "UNet" not in cls else 77,
                                       cfg_batch, dt)
        phases.append(Phase("denoise", resident(den), t, detail))
    if "vae" in weights:
        vdt = FP32 if (w.dtype == "float16" and vae.get("force_upcast") and entry.get("pipeline_class", "").startswith(
            "StableDiffusionXL")) else dt
        if vdt != dt:
            assumptions.append("SDXL upcasts the VAE to float32 for the decode (force_upcast with float16)")
        t, detail = vae_decode_transient(vae, w.batch, rh, rw, vdt, w.vae_tiling)
        extra = weights["vae"] if vdt != dt else 0
        phases.append(Phase("vae_decode", resident("vae") + extra, t, detail))
    if not phases:
        raise UsageError("this pipeline has no component with a known size", hint="pass a diffusers folder with configs")
    return PipelineEstimate(weights, phases, assumptions, rounded)


def with_changes(w: ImageWorkload, **changes: Any) -> ImageWorkload:
    return dataclasses.replace(w, **changes)


# ----------------------------------------------------------------------------------------------
# report


CHANGE_SETS = (  # cheapest first: what each costs in speed
    ((), "as is"),
    ((("drop_text_encoders", True),), "free the text encoders after encoding (re-encode per prompt)"),
    ((("vae_tiling", True),), "VAE tiling (pipe.vae.enable_tiling(): slightly slower decode)"),
    ((("drop_text_encoders", True), ("vae_tiling", True)), "free the text encoders + VAE tiling"),
    ((("offload", "model"),), "model CPU offload (pipe.enable_model_cpu_offload(): a component on the GPU at a time)"),
    ((("offload", "model"), ("vae_tiling", True)), "model CPU offload + VAE tiling"),
    ((("offload", "sequential"), ("vae_tiling", True)),
     "sequential CPU offload + VAE tiling (pipe.enable_sequential_cpu_offload(): much slower)"),
)


def process_peak(est: PipelineEstimate, overhead: int) -> int:
    return est.peak_allocated_bytes + overhead


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
        "phases": {p.name: {"peak_allocated_bytes": p.peak_allocated_bytes, "transient_bytes": p.transient_bytes,
                            "resident_bytes": p.resident_bytes, "detail": p.detail} for p in est.phases},
        "peak_phase": max(est.phases, key=lambda p: p.peak_allocated_bytes).name,
        "fits": fits, "max_resolution": None, "suggestions": [],
        "assumptions": est.assumptions + [f"process overhead {overhead / (1 << 30):.2f} GiB: {overhead_note}",
                                          "diffusion estimates are not yet checked against measurements"],
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
                                                  "fits": True, "headroom_bytes": t.memory_bytes - p2})
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
