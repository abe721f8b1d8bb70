"""Image / video pipelines (diffusers): memory per phase, from the components' configs.

A pipeline run has phases with their own peaks: text encoding (each encoder), the denoiser's
forward at the image's token count, and the VAE decode, whose activations grow with the pixel
count and are often the real peak. Which components sit on the GPU during a phase depends on the
offload mode. Each phase's transient is counted from the tensors the component's forward keeps
alive at its widest point (documented per class below); weights are the components' parameter
bytes (catalog or safetensors headers).

What each mode keeps on the GPU, from diffusers 0.42.1 (src/diffusers/...) and accelerate:
- none: every component (`pipe.to("cuda")`); --drop-text-encoders: the encoders alone while
  encoding, then the denoiser and VAE without them.
- model (pipelines/pipeline_utils.py enable_model_cpu_offload -> accelerate cpu_offload_with_hook
  chained in model_cpu_offload_seq): the component whose forward runs; the previous one is moved
  to the CPU (and the cache emptied) before the next is loaded (accelerate 1.15.0 hooks.py
  CpuOffload.pre_forward), so at each switch host RAM holds every weight.
- sequential (enable_sequential_cpu_offload -> accelerate cpu_offload): weights live in a CPU
  state dict; each module with parameters of its own is loaded for its forward and dropped after:
  the GPU holds the largest such module, plus every buffer (offload_buffers is false for models
  without parameters of their own). set_module_tensor_to_device empties the CUDA cache each time it
  places a weight (accelerate utils/modeling.py), so nothing stays reserved beyond what is allocated.
  Host RAM holds every weight.
- group (hooks/group_offloading.py, num_blocks_per_group=1): block_level onloads each element of
  the component's ModuleLists as a group and holds the "unmatched" rest (embedders, norms, a UNet's
  mid block) for the whole forward; a transformers text encoder has no top-level ModuleList, so it
  is onloaded whole. leaf_level: one Conv/Linear/Embedding at a time. use_stream prefetches the next
  group (one more block on the GPU) from pinned copies of every weight, which the CUDA caching host
  allocator rounds up to powers of two (aten/src/ATen/core/CachingHostAllocator.h).
- layerwise fp8 (hooks/layerwise_casting.py): leaf Conv/Linear/Embedding weights of the denoiser
  stored in float8 except modules whose path matches pos_embed, patch_embed, norm, ^proj_in$,
  ^proj_out$ or the class's _skip_layerwise_casting_patterns (FLUX's AdaLN linears sit in norm1: they
  stay 16-bit); each layer is upcast for its own forward.
- quantization: nn.Linear weights only (bitsandbytes 8-bit: int8 + fp32 row scale; NF4: 4 bits +
  fp32 absmax per 64; torchao int8 / float8 weight-only: 1 byte + a per-row scale); other tensors keep
  the dtype. Loading quantizes on the GPU after `_caching_allocator_warmup`
  (models/model_loading_utils.py) reserved numel // 4 elements of the dtype.
- SDXL-style pipelines upcast a float16 VAE with force_upcast to float32 for the decode
  (pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl.py); FLUX, SD3 and Lumina2 do not.
- eager attention: torch's math SDPA for DiTs (float32 scores + softmax + a bool mask: 9 bytes per
  score), diffusers' AttnProcessor for UNets (2 x dtype bytes per score); score tensors of different
  sizes in one forward leave cached segments (replayed through estimators/allocator.py).
- host RAM: the weights each mode holds + the process itself (HOST_PROCESS_BYTES, fitted on SDXL's
  H200 runs); loading through host RAM holds every weight once, layerwise-cast denoisers in their
  16-bit dtype (enable_layerwise_casting runs on the loaded model). Streamed group offload pins its
  copies while the modules still reference the pageable weights (ModuleGroup._init_cpu_param_dict):
  every weight + the pinned copies, counted as held while generating too (an upper bound: the
  pageable copies are dropped at the first onload, and glibc may or may not return them).
- VAE tiling (models/autoencoders/autoencoder_kl.py): tiles of the VAE's sample_size pixels (1024
  for the SDXL/FLUX/SD3 VAEs: nothing is tiled up to 1024x1024), overlapping by a quarter; every
  decoded tile is kept until the blend. Slicing decodes a batch one image at a time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.errors import UsageError

FP32 = 4
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3", "clip_model", "image_encoder", "audio_encoder")
DENOISERS = ("transformer", "unet")
MAX_PIXELS = 16384 * 16384
OFFLOADS = ("none", "model", "sequential", "group")


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
    group_type: str = "block_level"  # group offload: block_level | leaf_level
    use_stream: bool = False       # group offload: prefetch the next group on a CUDA stream (pinned host copies)
    record_stream: bool = False    # group offload with streams: record_stream instead of synchronizing
    layerwise_fp8: bool = False    # denoiser weights stored in float8_e4m3fn, upcast per layer
    component_dtype: dict = field(default_factory=dict)  # {"vae": "float32"}: that component's dtype


# The caching allocator keeps freed activation blocks of these phases cached, and their sizes do
# not repeat, so torch's reserved memory (what the process holds) exceeds the allocated peak by
# about this fraction of the phase's transient. Measured on flux.1-dev at 1024x1024 b1
# (reserved peak minus allocated peak, over the transient); other cases are held out.
RESERVE_FACTOR = {"denoise": (1.23, "flux.1-dev denoise 1024x1024 b1: reserved 32.50 vs allocated 31.93 GiB, transient 0.462"),
                  "vae_decode": (0.761, "flux.1-dev vae_decode 1024x1024 b1: reserved 35.66 vs allocated 33.85 GiB, transient 2.377"),
                  "video:denoise": (0.241, "sonic denoise 512x512 x 25 frames: reserved 10.74 vs allocated 9.49 GiB, transient 5.19"),
                  "video:vae_decode": (1.089, "sonic vae_decode chunk 8: reserved 12.69 vs allocated 8.33 GiB, transient 4.00"),
                  # not fitted: under sequential offload accelerate places each module's weights with
                  # set_module_tensor_to_device(clear_cache=True), which calls torch.cuda.empty_cache()
                  # (accelerate 1.15.0 utils/modeling.py): no freed block stays cached between modules
                  "sequential": (0.0, "accelerate empty_cache() per placed weight: reserved = allocated")}
CUBLAS_WORKSPACE = 32 * 1024 * 1024  # allocated at the first matmul and kept (measured, H100 + torch 2.11)

# Host RAM of the Python process itself (resident set, what a 16 GB laptop must hold besides the
# weights). Two fitted constants, each from one pipeline of the H200 runs (calibration/raw/
# diffusion-modes-h200.jsonl: torch 2.11.0+cu130, diffusers 0.42.1, transformers 5.17.0, accelerate
# 1.15.0); the other four pipelines are held out (docs/accuracy.md, "Pipeline memory modes"):
# - "load": while the weights are read into host RAM (torch, diffusers, transformers imported, CUDA
#   context up, no kernel run yet): sdxl-base-1.0's peak RSS while building its four components minus
#   their 6.46 GiB of weights (held out: NewBie, FLUX.1-dev, SD3.5, Sonic, all within 0.01 GiB).
# - "generate": once kernels ran (cuBLAS / cuDNN loaded, the CUDA runtime's host state, the C
#   allocator's free lists): the median over sdxl-base-1.0's model-offload (512, 1024), sequential and
#   block-level group offload runs of peak RSS minus the weights the mode holds.
# Not modelled: freed CPU copies of weights moved to the GPU that glibc keeps (chunks below its mmap
# threshold, malloc.c); they raise the RSS of all-on-GPU runs after loading, never above the load peak.
HOST_PROCESS_BYTES = {
    "load": (1028917290, "sdxl-base-1.0 build: peak RSS 7.42 GiB - 6.46 GiB of weights (H200)"),
    "generate": (2296461354, "sdxl-base-1.0 model / sequential / group runs: median peak RSS - weights held (H200)"),
}


@dataclass
class Phase:
    name: str
    resident_bytes: int
    transient_bytes: int
    detail: str = ""
    reserve_key: str | None = None  # RESERVE_FACTOR entry, default: the phase kind
    host_bytes: int = 0             # weights held in host RAM during the phase (process baseline not included)
    cached_bytes: int = 0           # allocator segments left cached by earlier, smaller attention scores (eager)
    fragmenting_bytes: int | None = None  # the part of the transient the reserve factor applies to (default: all)

    @property
    def peak_allocated_bytes(self) -> int:
        return self.resident_bytes + self.transient_bytes

    @property
    def peak_reserved_bytes(self) -> int:
        factor = RESERVE_FACTOR.get(self.reserve_key or self.name.split(":")[0], (0.0, ""))[0]
        frag = self.transient_bytes if self.fragmenting_bytes is None else self.fragmenting_bytes
        return self.peak_allocated_bytes + int(frag * factor) + self.cached_bytes


@dataclass
class PipelineEstimate:
    weights: dict[str, int]
    phases: list[Phase]
    assumptions: list[str] = field(default_factory=list)
    rounded: tuple[int, int] | None = None  # (height, width) after rounding to the VAE factor
    load_peak_bytes: int = 0           # GPU reserved while loading (warmup + quantizing), mode-dependent
    host_load_bytes: int = 0           # host RAM while loading: every weight on the CPU (+ pinned copies)
    transfer_bytes_per_step: int = 0   # weights moved host -> GPU per denoising step
    transfer_bytes_per_image: int = 0  # weights moved host -> GPU once per image (encoders, VAE, model offload)

    @property
    def peak_allocated_bytes(self) -> int:
        return max(p.peak_allocated_bytes for p in self.phases)

    @property
    def peak_reserved_bytes(self) -> int:
        return max(p.peak_reserved_bytes for p in self.phases)

    @property
    def host_bytes(self) -> int:
        return max(p.host_bytes for p in self.phases)

    @property
    def host_process_load_bytes(self) -> int:
        """Peak RSS while loading through host RAM (from_pretrained, then .to / the offload hooks)."""
        return HOST_PROCESS_BYTES["load"][0] + self.host_load_bytes

    @property
    def host_process_generate_bytes(self) -> int:
        """Peak RSS while generating: the weights the mode holds in host RAM + the process after CUDA work."""
        return HOST_PROCESS_BYTES["generate"][0] + self.host_bytes

    @property
    def host_process_peak_bytes(self) -> int:
        return max(self.host_process_load_bytes, self.host_process_generate_bytes)


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


def component_params(comp: dict) -> int | None:
    w = comp.get("weights") or {}
    if w.get("parameters"):
        return int(w["parameters"])
    s = comp.get("structure") or {}
    if s.get("parameters"):
        return int(s["parameters"])
    if w.get("total_bytes"):
        stored = DTYPE_BYTES.get(str(w.get("dtype") or ""))
        return int(w["total_bytes"]) // stored if stored else None
    return None


def vae_factor(vae_cfg: dict) -> int:
    blocks = _c(vae_cfg, "block_out_channels", default=[128, 256, 512, 512])
    return 2 ** (len(blocks) - 1)


def round_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    return max(multiple, h // multiple * multiple), max(multiple, w // multiple * multiple)


# bytes per quantized nn.Linear weight element, and per output row (scales)
QUANT_FORMATS = {
    # bitsandbytes LLM.int8: int8 weight + one fp32 scale per row (Int8Params.SCB)
    "8bit": (1.0, 4, "bitsandbytes 8-bit"),
    # bitsandbytes NF4: 4-bit codes + one fp32 absmax per block of 64 (diffusers' default, no double quant)
    "4bit": (0.5 + 4 / 64, 0, "bitsandbytes NF4"),
    # torchao Int8WeightOnlyConfig (PerRow): int8 + a per-row scale in the model dtype
    "int8wo": (1.0, None, "torchao int8 weight-only"),
    # torchao Float8WeightOnlyConfig: float8_e4m3fn + a per-row fp32 scale
    "fp8": (1.0, 4, "torchao float8 weight-only"),
}
TORCHAO_WARMUP_FACTOR = 4  # diffusers get_cuda_warm_up_factor(): numel // 4 elements of the dtype reserved


@dataclass
class Part:
    """One component as the modes see it."""
    name: str
    cls: str
    params: int
    dt: int                      # its compute dtype's bytes
    bytes: int                   # resident bytes as stored (quantized / fp8 / dtype)
    structure: dict | None
    diffusers_built: bool        # a diffusers ModelMixin (ModuleList blocks) vs a transformers model
    buffers: int = 0             # persistent buffers' bytes (move with the component; never quantized)

    def per_param(self) -> float:
        return self.bytes / self.params if self.params else float(self.dt)

    def largest_leaf(self) -> int:
        s = self.structure or {}
        n = s.get("largest_leaf_parameters")
        return int(n * self.per_param()) if n else self.bytes // 50

    def block_level(self, stream: bool, record: bool) -> int:
        s = self.structure or {}
        if not self.diffusers_built or not s.get("num_blocks"):
            return self.bytes  # one unmatched group: the whole component
        blocks = s["largest_block_pair_parameters"] if stream else s["largest_block_parameters"]
        if stream and record:
            blocks += s["largest_block_parameters"]
        return int((s["group_unmatched_parameters"] + blocks) * self.per_param())

    def pinned(self, leaf_level: bool = False) -> int:
        """Pinned host copies under group offload with streams, each rounded up to a power of two by
        the CUDA caching host allocator. Leaf level: every Conv/Linear/Embedding group has the stream.
        Block level: the block groups only; the top level's unmatched group is built with stream=None
        (diffusers 0.42.1 hooks/group_offloading.py, _apply_group_offloading_block_level), so a
        transformers encoder (no top-level ModuleList) pins nothing."""
        s = self.structure or {}
        n = s.get("pinned_elements") or self.params
        if leaf_level:
            return int(n * self.per_param())
        if not self.diffusers_built or not s.get("num_blocks"):
            return 0
        blocks = 1.0 - float(s.get("group_unmatched_parameters") or 0) / max(1, self.params)
        return int(n * self.per_param() * blocks)


def _parts(entry: dict, w: ImageWorkload, assumptions: list[str]) -> dict[str, Part]:
    comps: dict[str, dict] = entry.get("components") or {}
    parts: dict[str, Part] = {}
    missing = []
    unknown_cd = [n for n in w.component_dtype if n not in comps]
    if unknown_cd:
        raise UsageError(f"--component-dtype names {', '.join(unknown_cd)}, not a component of this pipeline",
                         hint="components: " + ", ".join(n for n, c in comps.items()
                                                         if isinstance(c, dict) and c.get("class")
                                                         and n != "scheduler" and "tokenizer" not in n))
    approx_q = []
    for name, comp in comps.items():
        if not isinstance(comp, dict) or not comp.get("class") or name == "scheduler" or "tokenizer" in name:
            continue
        dt = DTYPE_BYTES.get(w.component_dtype.get(name, w.dtype), 2)
        params = component_params(comp)
        b = component_bytes(comp, dt) if params is None else params * dt
        if b is None:
            missing.append(name)
            continue
        if params is None:
            params = b // dt
        s = comp.get("structure") or None
        cls = str(comp.get("class"))
        built = name in DENOISERS or name == "vae"  # diffusers ModelMixins; text encoders are transformers models
        if w.quantize and (name in TEXT_ENCODERS or name in DENOISERS):
            per, row_b, _label = QUANT_FORMATS[w.quantize]
            row_b = dt if row_b is None else row_b
            if s and s.get("linear_weight_parameters"):
                # keep-in-fp32 modules (T5's wo) are not quantized; they stay in the dtype (transformers 5)
                lin = int(s["linear_weight_parameters"]) - int(s.get("unquantized_linear_parameters") or 0)
                b = (params - lin) * dt + int(lin * per) + int(s.get("linear_rows", 0)) * row_b
            else:
                b = int(params * per)
                approx_q.append(name)
        if w.layerwise_fp8 and name in DENOISERS:
            if s and s.get("layerwise_castable_parameters") is not None:
                cast = int(s["layerwise_castable_parameters"])
            else:
                cast = int(params * 0.7)
                assumptions.append(f"{name}: which layers layerwise casting skips is unknown (no structure): "
                                   "70 % of the weights assumed cast to fp8")
            b = cast + (params - cast) * dt
        buf, persistent = pos_embed_buffer(cls, comp.get("config") or {}, dt)
        if persistent and (comp.get("weights") or {}).get("includes_buffers"):
            buf = 0  # counted from the safetensors header with the parameters
        parts[name] = Part(name, cls, params, dt, b, s, built, buf)
    if missing:
        assumptions.append(f"no weight size known for {', '.join(missing)}: not counted")
    if approx_q:
        assumptions.append(f"{', '.join(approx_q)}: no layer structure known; every weight counted as quantized")
    return parts


def pos_embed_buffer(cls: str, cfg: dict, dt: int) -> tuple[int, bool]:
    """(bytes, persistent) of the 2D sin-cos position table diffusers' PatchEmbed registers as a buffer
    (models/embeddings.py, diffusers 0.42.1): grid x grid x embed_dim, grid = pos_embed_max_size
    (persistent: saved in the checkpoint; SD3 uses 384) or sample_size // patch_size (not persistent).
    It is cast with the model (bfloat16 / float16). SD3.5-medium: 384 x 384 x 1536 x 2 = 0.42 GiB."""
    if not cls.startswith(("SD3Transformer", "PixArtTransformer", "DiTTransformer")):
        return 0, False
    heads, hd = _c(cfg, "num_attention_heads"), _c(cfg, "attention_head_dim")
    if not heads or not hd:
        return 0, False
    max_size = _c(cfg, "pos_embed_max_size")
    sample = _c(cfg, "sample_size", default=128)
    grid = int(max_size) if max_size else int(sample) // int(_c(cfg, "patch_size", default=2))
    return grid * grid * int(heads) * int(hd) * dt, bool(max_size)


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
    """The denoiser's forward with SDPA (no score matrix materialized); eager attention: eager_attention()."""
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
    family = next((f for f in DIT_WIDTH if cls.startswith(f)), None)
    note = ""
    if family is None:  # an unknown transformer denoiser: the widest measured block, said so
        family, note = max(DIT_WIDTH, key=lambda f: DIT_WIDTH[f][0]), f" (unknown class {cls}: widest measured block)"
    width, _src = DIT_WIDTH[family]
    return int(b * n * d * width * dt), f"{b} x {n} tokens (image + text) x d={d}{note}"


# ---- eager attention: the score matrices, from the source of the attention implementation ----
#
# DiTs (FLUX, SD3, Lumina2...) with diffusers' native attention run torch's scaled_dot_product_attention;
# without a fused kernel (sdpa_kernel(SDPBackend.MATH), what set_attention_backend("_native_math")
# selects) torch runs _scaled_dot_product_attention_math (aten/src/ATen/native/transformers/attention.cpp):
# half/bf16 q, k, v are converted to float32 (allowFP16BF16ReductionMathSDP is off by default), the
# float32 scores are materialized, then _safe_softmax keeps the scores, the float32 softmax and a bool
# isneginf mask alive at once (where_out reuses the softmax's storage): 4 + 4 + 1 bytes per score.
# The 9 bytes agree with the H200 runs (calibration/raw/diffusion-modes-h200.jsonl): FLUX, SD3.5 and
# NewBie at 1024x1024 all give 9.0 bytes per score over their SDPA transient; nothing was fitted.
# UNets: set_default_attn_processor() installs AttnProcessor (diffusers 0.42.1
# models/attention_processor.py get_attention_scores): torch.empty baddbmm input + baddbmm scores, then
# scores + softmax probabilities, in the compute dtype: 2 x dtype bytes per score (float32 scores and
# softmax when upcast_attention is set).
# Order of the calls (allocation events per call, in bytes per score) for the allocator model below.
MATH_SDPA_EVENTS = (("+", "scores", 4), ("+", "softmax", 4), ("+", "isneginf", 1), ("-", "isneginf", 0),
                    ("-", "scores", 0), ("+", "probs_out", 2), ("-", "probs_out", 0), ("-", "softmax", 0))


def attn_processor_events(dt: int, upcast: bool) -> tuple:
    sb = 4 if upcast else dt
    ev = [("+", "baddbmm_input", sb), ("+", "scores", sb), ("-", "baddbmm_input", 0), ("+", "probs", sb),
          ("-", "scores", 0)]
    if sb != dt:  # attention_probs.to(dtype)
        ev += [("+", "probs_dt", dt), ("-", "probs", 0), ("-", "probs_dt", 0)]
    else:
        ev += [("-", "probs", 0)]
    return tuple(ev)


def _events_peak(events: tuple) -> int:
    live = peak = 0
    sizes: dict[str, int] = {}
    for op, name, per in events:
        if op == "+":
            sizes[name] = per
            live += per
            peak = max(peak, live)
        else:
            live -= sizes.pop(name)
    return peak


def cached_score_bytes(calls: list[tuple[int, int]], events: tuple) -> int:
    """Bytes the CUDA caching allocator holds beyond the allocated peak after a sequence of attention
    calls [(scores, _)] whose score tensors differ in size, replayed through the project's model of
    the allocator (estimators/allocator.py: best fit, split, free neighbours merged, segments kept until
    empty_cache()). Score tensors of one size reuse each other's segments; a larger size after smaller
    ones cannot reuse theirs, which stay cached."""
    from gpu_preflight.estimators.allocator import Allocator

    a = Allocator()
    for scores, _extra in calls:
        live: dict[str, int] = {}
        for op, name, per in events:
            if op == "+":
                live[name] = a.malloc(scores * per)
            else:
                a.free(live.pop(name))
    return max(0, a.peak_reserved - a.peak_allocated)


def _unet_levels(cfg: dict, lat_h: int, lat_w: int) -> list[dict]:
    """The self-attention levels of a (spatio-temporal) UNet's down path, highest resolution first."""
    types = list(_c(cfg, "down_block_types", default=[]))
    chans = list(_c(cfg, "block_out_channels", default=[320, 640, 1280]))
    heads_cfg = _c(cfg, "num_attention_heads") or _c(cfg, "attention_head_dim", default=8)  # SDXL names heads
    tlpb = _c(cfg, "transformer_layers_per_block", default=1)
    levels = []
    for lvl, kind in enumerate(types):
        if "CrossAttn" not in kind or lvl >= len(chans):
            continue
        heads = int(heads_cfg[lvl] if isinstance(heads_cfg, list) else heads_cfg)
        layers = int(tlpb[lvl] if isinstance(tlpb, list) else tlpb)
        levels.append({"level": lvl, "tokens": (lat_h >> lvl) * (lat_w >> lvl), "heads": heads,
                       "channels": int(chans[lvl]), "layers": layers})
    return levels


def eager_attention(cls: str, cfg: dict, w: ImageWorkload, lat_h: int, lat_w: int, txt: int, cfg_batch: int,
                    dt: int, sdpa_t: int, components: dict) -> tuple[int, int, str]:
    """(transient, cached bytes, detail) of the denoiser's forward with materialized attention scores."""
    b = w.batch * cfg_batch
    if "UNet" in cls:
        video = "SpatioTemporal" in cls
        batch = b * ((w.frames or 14) if video else 1)  # spatial attention sees every frame as an image
        upcast = bool(_c(cfg, "upcast_attention", default=False))
        events = attn_processor_events(dt, upcast)
        per = _events_peak(events)
        levels = _unet_levels(cfg, lat_h, lat_w)
        lpb = int(_c(cfg, "layers_per_block", default=2))
        calls, widest = [], 0
        for i, lv in enumerate(levels):
            scores = batch * lv["heads"] * lv["tokens"] ** 2
            # alive beside the scores: AttnProcessor's hidden, norm, q, k, v and their head-batched copies
            # (8), the Transformer2DModel's residual, GroupNorm and proj_in outputs (3), this level's resnet
            # output and input (2), and the skip connections of the levels above (layers_per_block + 1 each)
            above = sum((lpb + 1) * u["channels"] * u["tokens"] for u in levels[:i]) if levels else 0
            live = batch * ((8 + 3 + 2) * lv["channels"] * lv["tokens"] + above) * dt
            widest = max(widest, scores * per + live)
            calls += [(scores, live)] * (lpb * lv["layers"])
        for lv in reversed(levels):
            calls += [(batch * lv["heads"] * lv["tokens"] ** 2, 0)] * ((lpb + 1) * lv["layers"])
        cached = cached_score_bytes(calls, events)
        top = levels[0] if levels else {"heads": 0, "tokens": 0}
        return max(sdpa_t, widest), cached, (f"eager attention (AttnProcessor, {per} bytes per score): "
                                             f"{batch} x {top['heads']} heads x {top['tokens']}^2 scores")
    heads = int(_c(cfg, "num_attention_heads", "n_heads", default=24))
    img = dit_tokens(cls, cfg, lat_h, lat_w)
    if cls.startswith("SD3") and "text_encoder_3" in components:
        txt = 77 + txt  # CLIP tokens padded to 77, then T5's: the joint sequence of SD3
    elif cls.startswith("SD3"):
        txt = 77
    joint = [(b * heads * (img + txt) ** 2, 0)]
    if cls.startswith("Flux"):
        calls = joint * (int(_c(cfg, "num_layers", default=19)) + int(_c(cfg, "num_single_layers", default=38)))
    elif cls.startswith("SD3"):
        dual = len(_c(cfg, "dual_attention_layers", default=[]) or [])
        calls = []
        for i in range(int(_c(cfg, "num_layers", default=24))):
            calls += joint + ([(b * heads * img ** 2, 0)] if i < dual else [])  # attn2: image tokens only
    elif cls.startswith(("Lumina2", "NextDiT")):
        # Lumina2Transformer2DModel.forward: context_refiner (caption), noise_refiner (image), then the
        # joint layers (models/transformers/transformer_lumina2.py)
        refine = int(_c(cfg, "num_refiner_layers", "n_refiner_layers", default=2))
        calls = [(b * heads * txt ** 2, 0)] * refine + [(b * heads * img ** 2, 0)] * refine + \
            joint * int(_c(cfg, "num_layers", "n_layers", default=26))
    else:
        calls = joint * int(_c(cfg, "num_layers", "n_layers", default=24))
    per = _events_peak(MATH_SDPA_EVENTS)
    widest = max(c[0] for c in calls)
    return sdpa_t + widest * per, cached_score_bytes(calls, MATH_SDPA_EVENTS), \
        f"eager attention (torch math SDPA, {per} bytes per score in float32): {b} x {heads} heads x {img + txt}^2"


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
    With tiling (only when the latents exceed one tile) the decoder sees tiles of the VAE's
    sample_size pixels one at a time (the whole batch per tile); every decoded tile is kept until
    the rows are blended and concatenated, then the output is assembled (rows + image)."""
    tile = int(_c(cfg, "sample_size", default=512) if not isinstance(_c(cfg, "sample_size"), list)
               else _c(cfg, "sample_size")[0])
    if tiling and (h > tile or w > tile):
        factor = vae_factor(cfg)
        t_lat = tile // factor
        step = int(t_lat * 0.75)  # tile_overlap_factor 0.25
        n_tiles = math.ceil((h // factor) / step) * math.ceil((w // factor) / step)
        t, _ = vae_decode_transient(cfg, b, min(h, tile), min(w, tile), dt, False)
        kept = n_tiles * b * 3 * min(h, tile) * min(w, tile) * dt + 2 * b * 3 * h * w * dt
        return t + kept, f"{n_tiles} tiles of {min(h, tile)}x{min(w, tile)} + the {h}x{w} output"
    chans = list(_c(cfg, "block_out_channels", default=[128, 256, 512, 512]))
    scale = (chans[1] if len(chans) > 1 else chans[0]) / 256
    per, _src = VAE_BYTES_PER_PIXEL
    note = " (tiling does nothing below the VAE's tile size)" if tiling else ""
    return int(b * h * w * per * scale * dt / 2), f"{b} x {h}x{w} pixels{note}"


def _upcasts_vae(entry: dict, vae_cfg: dict, vae_dtype: str) -> bool:
    """SDXL-style pipelines decode a float16 force_upcast VAE in float32."""
    defaults = entry.get("defaults") or {}
    upcast_class = bool(defaults.get("vae_upcast_on_decode")) or \
        str(entry.get("pipeline_class") or "").startswith("StableDiffusionXL")
    return upcast_class and vae_dtype == "float16" and bool(vae_cfg.get("force_upcast"))


# ----------------------------------------------------------------------------------------------


def estimate_pipeline(entry: dict, w: ImageWorkload) -> PipelineEstimate:
    comps: dict[str, dict] = entry.get("components") or {}
    defaults = entry.get("defaults") or {}
    if w.height <= 0 or w.width <= 0:
        raise UsageError("height and width must be positive")
    if w.height * w.width > MAX_PIXELS:
        raise UsageError(f"{w.height}x{w.width} is far beyond what any pipeline generates",
                         hint="use at most 16384x16384 (and see `--vae-tiling`)")
    if w.offload not in OFFLOADS:
        raise UsageError(f"unknown offload mode {w.offload!r}", hint="use " + ", ".join(OFFLOADS))
    dt = DTYPE_BYTES.get(w.dtype, 2)
    assumptions: list[str] = []
    parts = _parts(entry, w, assumptions)
    weights = {n: p.bytes + p.buffers for n, p in parts.items()}
    if w.quantize:
        label = QUANT_FORMATS[w.quantize][2]
        assumptions.append(f"{label} of the denoiser's and text encoders' nn.Linear weights (other tensors keep "
                           f"{w.dtype}); activations unchanged")
    if w.layerwise_fp8:
        assumptions.append("layerwise casting: the denoiser's Conv/Linear/Embedding weights stored in float8_e4m3fn "
                           "except norm / pos_embed / patch_embed / proj_in / proj_out layers "
                           "(transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, "
                           f"compute_dtype=torch.{w.dtype}))")
    for name, d in w.component_dtype.items():
        assumptions.append(f"{name} kept in {d} (--component-dtype {name}={d})")
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
    enc_names = [n for n in parts if n in TEXT_ENCODERS]
    den = next((n for n in DENOISERS if n in parts), None)
    vae_dtype = w.component_dtype.get("vae", w.dtype)
    upcast = "vae" in parts and _upcasts_vae(entry, vae, vae_dtype)
    vae_dt = FP32 if upcast else DTYPE_BYTES.get(vae_dtype, dt)
    if upcast:
        assumptions.append("SDXL-style pipeline: the float16 VAE (force_upcast) is cast to float32 for the decode")

    def gpu_bytes(name: str, active: str, vae_fp32: bool = False) -> int:
        p = parts[name]
        up = 2 if vae_fp32 and name == "vae" else 1
        own = p.bytes * up + p.buffers
        if w.offload == "none":
            if w.drop_text_encoders:
                # prompts are encoded with only the encoders loaded; they are freed before the denoiser
                # and VAE are loaded (encode -> del encoders -> load transformer + vae)
                return own if (name in enc_names) == (active in enc_names) else 0
            return own
        if w.offload == "sequential":
            # enable_sequential_cpu_offload passes offload_buffers=len(model._parameters) > 0 (diffusers
            # 0.42.1 pipelines/pipeline_utils.py): no model has parameters of its own at the top, so
            # accelerate's AlignDevicesHook moves every buffer to the GPU for good (hooks.py init_hook)
            return p.buffers + (p.largest_leaf() * up if name == active else 0)
        if name != active:
            return 0
        if w.offload == "model":
            return own
        # group offload
        if w.group_type == "leaf_level":
            return p.largest_leaf() * (2 if w.use_stream else 1) + p.buffers
        return p.block_level(w.use_stream, w.record_stream) * up + p.buffers

    all_weights = sum(p.bytes + p.buffers for p in parts.values())

    def host_bytes(active: str) -> int:
        """Weights in host RAM during the phase (the process itself comes on top: HOST_PROCESS_BYTES)."""
        if w.offload == "none":
            return sum(parts[n].bytes + parts[n].buffers for n in enc_names) \
                if w.drop_text_encoders and active not in enc_names else 0
        if w.offload == "model":
            # accelerate CpuOffload.pre_forward moves the previous model to the CPU before this one
            # leaves it (hooks.py): at that moment every weight is in host RAM
            return all_weights
        if w.offload == "sequential":
            return all_weights - sum(p.buffers for p in parts.values())  # CPU state dict, buffers on the GPU
        if w.offload == "group" and w.use_stream:
            # the pinned copies are made from the pageable weights, which the module's parameters then
            # stop referencing; freed pageable chunks below glibc's mmap threshold stay resident (glibc
            # malloc.c returns heap memory from the top only): counted as kept, an upper bound
            return all_weights + sum(p.pinned(w.group_type == "leaf_level") for p in parts.values())
        return all_weights  # group offload without streams: the CPU copies stay

    def resident(active: str, vae_fp32: bool = False) -> int:
        return CUBLAS_WORKSPACE + sum(gpu_bytes(n, active, vae_fp32) for n in parts)

    for name in enc_names:
        cls = comps[name]["class"]
        seq = 77 if "CLIP" in cls and "Jina" not in cls else txt
        # each prompt is encoded once (the negative prompt in its own call) and repeated per image
        t, detail = encoder_transient(cls, comps[name].get("config") or {}, 1, seq, parts[name].dt)
        phases.append(Phase(f"encode:{name}", resident(name), t, detail, host_bytes=host_bytes(name)))
    if den and "SpatioTemporal" in comps[den]["class"] and not w.frames:
        w = dataclasses.replace(w, frames=int(defaults.get("frames") or 14))
    if den:
        cls = comps[den]["class"]
        ddt = parts[den].dt
        dcfg = comps[den].get("config") or {}
        t, detail = denoiser_transient(cls, dcfg, w, lat_h, lat_w, txt if "UNet" not in cls else 77, cfg_batch, ddt)
        frag, cached = None, 0
        if w.attn == "eager":
            sdpa_t = t
            t, cached, detail = eager_attention(cls, dcfg, w, lat_h, lat_w, txt, cfg_batch, ddt, sdpa_t, parts)
            frag = min(sdpa_t, t)  # the score blocks repeat in size: only the other activations fragment
        if w.layerwise_fp8:  # the layer being run is upcast: its 16-bit copy lives for its forward
            s = parts[den].structure or {}
            t += int(s.get("largest_leaf_parameters", 0)) * ddt
        phases.append(Phase("denoise", resident(den), t, detail,
                            "video:denoise" if "SpatioTemporal" in cls else None, host_bytes=host_bytes(den),
                            cached_bytes=cached, fragmenting_bytes=frag))
    video = bool(den and "SpatioTemporal" in comps[den]["class"])
    if video:
        w = dataclasses.replace(w, frames=w.frames or int(defaults.get("frames") or 14),
                                decode_chunk=w.decode_chunk or int(defaults.get("decode_chunk_size") or 8))
    if "vae" in parts and video:
        per, _src = VIDEO_VAE_BYTES_PER_PIXEL_FRAME
        chunk = min(w.decode_chunk, w.frames)
        t = int(chunk * rh * rw * per * vae_dt / 2)
        # all frames' latents stay on the GPU while they are decoded chunk by chunk
        latents = w.batch * w.frames * int(defaults.get("latent_channels") or 4) * lat_h * lat_w * dt
        phases.append(Phase("vae_decode", resident("vae") + latents, t, f"{chunk} frames x {rh}x{rw} per call",
                            "video:vae_decode", host_bytes=host_bytes("vae")))
    elif "vae" in parts:
        t, detail = vae_decode_transient(vae, 1 if w.vae_slicing else w.batch, rh, rw, vae_dt, w.vae_tiling)
        if w.vae_slicing and w.batch > 1:  # the decoded slices, then their concatenation
            t += 2 * w.batch * 3 * rh * rw * vae_dt
        phases.append(Phase("vae_decode", resident("vae", vae_fp32=upcast), t, detail, host_bytes=host_bytes("vae")))
    if not phases:
        raise UsageError("this pipeline has no component with a known size", hint="pass a diffusers folder with configs")
    if w.offload == "sequential":
        for p in phases:
            p.reserve_key, p.cached_bytes = "sequential", 0
        assumptions.append("sequential offload: accelerate empties the CUDA cache each time it places a weight, so "
                           "the reserved peak is the allocated peak; buffers stay on the GPU")
    if w.attn == "eager":
        assumptions.append("eager attention: the S x S attention probabilities of the denoiser are materialized "
                           "(physics from the tensor sizes; the measured constants are for SDPA)")
    if video:
        assumptions.append(f"video: {w.frames} frames per denoiser call, VAE decode in chunks of {w.decode_chunk} frames; "
                           "model-specific extra modules (Sonic's audio attention, face and frame-interpolation "
                           "models) are counted by their weights only")
    est = PipelineEstimate(weights, phases, assumptions, rounded)
    _load_and_transfers(est, parts, w, den, enc_names)
    if est.load_peak_bytes:  # quantizing on the GPU while loading: the allocator keeps the warmup reserve
        est.phases.insert(0, Phase("load", est.load_peak_bytes, 0, "weights quantized on the GPU after "
                                   "diffusers' allocator warmup (numel // 4 elements of the dtype)",
                                   host_bytes=0))
    return est


def _loaded_bytes(p: Part, w: ImageWorkload) -> int:
    """A component's bytes in host RAM while the pipeline is loaded. Layerwise casting is enabled on a
    model loaded in its dtype: LayerwiseCastingHook.initialize_hook casts each layer then
    (`module.to(dtype=storage_dtype)`, diffusers 0.42.1 hooks/layerwise_casting.py; from_pretrained has
    no storage dtype), so the load holds the 16-bit weights."""
    if w.layerwise_fp8 and p.name in DENOISERS:
        return p.params * p.dt + p.buffers
    return p.bytes + p.buffers


def _load_and_transfers(est: PipelineEstimate, parts: dict[str, Part], w: ImageWorkload, den: str | None,
                        enc_names: list[str]) -> None:
    total = sum(p.bytes + p.buffers for p in parts.values())
    # every weight in host RAM before it is placed (pinned copies: generating side)
    est.host_load_bytes = sum(_loaded_bytes(p, w) for p in parts.values())
    if w.quantize and w.offload == "none":
        # from_pretrained(quantization_config=..., device_map=...) first reserves numel // 4 elements of
        # the dtype per quantized component (_caching_allocator_warmup), then moves each weight to the
        # GPU in the dtype and quantizes it there: the reserve stays cached
        reserved = 0
        for n, p in parts.items():
            if n in DENOISERS or n in TEXT_ENCODERS:
                lin = int((p.structure or {}).get("largest_leaf_parameters", 0)) * p.dt
                reserved += max(p.bytes + lin, p.params // TORCHAO_WARMUP_FACTOR * p.dt) + p.buffers
            else:
                reserved += p.bytes + p.buffers
        est.load_peak_bytes = reserved
    moved = {n: p.bytes + p.buffers for n, p in parts.items()}
    if w.offload == "none":
        est.transfer_bytes_per_step = 0
        est.transfer_bytes_per_image = sum(moved[n] for n in enc_names) if w.drop_text_encoders else 0
    elif w.offload == "model":
        est.transfer_bytes_per_step = 0
        est.transfer_bytes_per_image = total
    else:
        est.transfer_bytes_per_step = moved.get(den, 0) if den else 0
        est.transfer_bytes_per_image = total - est.transfer_bytes_per_step


# ----------------------------------------------------------------------------------------------
# report


# What to change, cheapest first (in speed and quality), each with the exact flags that apply it.
# (settings, what it is, flags, what it costs)
CHANGE_SETS = (
    ((), "as is", "", "none"),
    ((("drop_text_encoders", True),), "encode the prompt first, free the text encoders, then load the denoiser and VAE",
     "--drop-text-encoders", "encoders reload (or stay on the CPU) for each new prompt"),
    ((("vae_tiling", True),), "VAE tiling (pipe.vae.enable_tiling())", "--vae-tiling",
     "decode a little slower, tile seams blended"),
    ((("drop_text_encoders", True), ("vae_tiling", True)), "free the text encoders after encoding + VAE tiling",
     "--drop-text-encoders --vae-tiling", "both of the above"),
    ((("vae_slicing", True), ("vae_tiling", True)), "VAE slicing + tiling (decode a batch one image at a time)",
     "--vae-slicing --vae-tiling", "decode a little slower"),
    ((("drop_text_encoders", True), ("vae_slicing", True), ("vae_tiling", True)),
     "free the text encoders + VAE slicing and tiling", "--drop-text-encoders --vae-slicing --vae-tiling",
     "encoders reload per prompt, decode a little slower"),
    ((("layerwise_fp8", True),), "denoiser weights stored in fp8, upcast layer by layer "
     "(pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=...))",
     "--layerwise-fp8", "a cast per layer per step, small quality loss"),
    ((("layerwise_fp8", True), ("drop_text_encoders", True), ("vae_tiling", True)),
     "fp8 layerwise casting + free the text encoders + VAE tiling", "--layerwise-fp8 --drop-text-encoders --vae-tiling",
     "all three of the above"),
    ((("offload", "model"),), "model CPU offload (pipe.enable_model_cpu_offload(): one component on the GPU at a time)",
     "--offload model", "each component crosses PCIe once per image"),
    ((("offload", "model"), ("vae_tiling", True), ("vae_slicing", True)), "model CPU offload + VAE tiling and slicing",
     "--offload model --vae-tiling --vae-slicing", "as above, plus tiled, sliced decode"),
    ((("quantize", "8bit"),), "8-bit weights for the denoiser and text encoders (bitsandbytes)", "--quantize 8bit",
     "int8 matmuls: slower steps, small quality loss"),
    ((("quantize", "4bit"),), "4-bit NF4 weights for the denoiser and text encoders (bitsandbytes)", "--quantize 4bit",
     "NF4 dequantization per step, some quality loss"),
    ((("quantize", "4bit"), ("drop_text_encoders", True), ("vae_tiling", True)),
     "4-bit weights + free the text encoders after encoding + VAE tiling",
     "--quantize 4bit --drop-text-encoders --vae-tiling", "all three of the above"),
    ((("offload", "model"), ("layerwise_fp8", True), ("vae_tiling", True)),
     "model CPU offload + fp8 layerwise casting + VAE tiling", "--offload model --layerwise-fp8 --vae-tiling",
     "offload transfers + per-layer casts"),
    ((("offload", "group"), ("use_stream", True), ("vae_tiling", True)),
     "group offload at block level with CUDA streams + VAE tiling "
     "(pipe.enable_group_offload(onload_device, offload_type='block_level', num_blocks_per_group=1, use_stream=True))",
     "--offload group --use-stream --vae-tiling", "every block crosses PCIe each step, overlapped with compute; "
     "pinned host copies of all weights"),
    ((("offload", "group"), ("group_type", "leaf_level"), ("use_stream", True), ("vae_tiling", True)),
     "group offload at leaf level with CUDA streams + VAE tiling "
     "(pipe.enable_group_offload(onload_device, offload_type='leaf_level', use_stream=True))",
     "--offload group --group-type leaf_level --use-stream --vae-tiling",
     "every layer crosses PCIe each step, overlapped; pinned host copies"),
    ((("offload", "sequential"), ("vae_tiling", True), ("vae_slicing", True)),
     "sequential CPU offload + VAE tiling and slicing (pipe.enable_sequential_cpu_offload())",
     "--offload sequential --vae-tiling --vae-slicing",
     "every layer crosses PCIe each step, not overlapped: much slower"),
)


def mode_evidence(settings: dict) -> str:
    """How a change set's modes were checked (docs/accuracy.md, "Pipeline memory modes")."""
    unmeasured = []
    q = settings.get("quantize")
    if q in ("8bit", "4bit"):
        unmeasured.append("bitsandbytes (published FLUX figures: 10-15 % under)")
    elif q == "fp8":
        unmeasured.append("torchao float8 weight-only (published FLUX figures: within 2 %)")
    # torchao int8 weight-only and leaf-level group offload with streams: measured on NewBie (H200)
    if settings.get("offload") == "group" and settings.get("group_type") == "leaf_level" and \
            not settings.get("use_stream"):
        unmeasured.append("leaf-level group offload without streams")
    if settings.get("record_stream"):
        unmeasured.append("group offload with record_stream")
    if unmeasured:
        return "modelled, not measured: " + ", ".join(unmeasured)
    return "a measured mode (H200 runs: docs/accuracy.md, Pipeline memory modes)"


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
                            "resident_bytes": p.resident_bytes, "detail": p.detail,
                            "host_weights_bytes": p.host_bytes} for p in est.phases},
        # issue 15: weights held in host RAM while generating / while loading (the Python + torch + CUDA
        # process itself comes on top), the GPU reserve while loading, and PCIe traffic per step / image
        "host_weights_bytes": est.host_bytes,
        "host_weights_load_bytes": est.host_load_bytes,
        # the process's resident set: weights + the Python/torch/CUDA process (HOST_PROCESS_BYTES, fitted
        # on H200 runs), while loading through host RAM and while generating; the peak is the larger
        "host_process_load_bytes": est.host_process_load_bytes,
        "host_process_generate_bytes": est.host_process_generate_bytes,
        "host_process_peak_bytes": est.host_process_peak_bytes,
        "load_peak_reserved_bytes": est.load_peak_bytes,
        "transfer_bytes_per_step": est.transfer_bytes_per_step,
        "transfer_bytes_per_image": est.transfer_bytes_per_image,
        "peak_phase": max(est.phases, key=lambda p: p.peak_reserved_bytes).name,
        "fits": fits, "max_resolution": None, "suggestions": [],
        "assumptions": est.assumptions + [f"process overhead {overhead / (1 << 30):.2f} GiB: {overhead_note}",
                                          "host RAM: the process itself is {:.2f} GiB while loading and {:.2f} GiB "
                                          "once kernels ran (fitted on sdxl-base-1.0, H200, torch 2.11); weights "
                                          "loaded through host RAM pass through it whole".format(
                                              HOST_PROCESS_BYTES["load"][0] / (1 << 30),
                                              HOST_PROCESS_BYTES["generate"][0] / (1 << 30)),
                                          "checked against H100 measurements: docs/accuracy.md (pipelines)"],
    }
    if est.rounded:
        report["rounded_size"] = {"height": est.rounded[0], "width": est.rounded[1]}
    if targets:
        t = targets[0]
        report["max_resolution"] = max_square(entry, w, t.memory_bytes, overhead)
        if not fits[0]["fits"]:
            for changes, label, flags, cost in CHANGE_SETS[1:]:
                try:
                    w2 = dataclasses.replace(w, **dict(changes))
                    e2 = estimate_pipeline(entry, w2)
                except UsageError:
                    continue
                p2 = process_peak(e2, overhead)
                if p2 <= t.memory_bytes:
                    report["suggestions"].append({"change": label, "settings": dict(changes), "flag": flags,
                                                  "cost": cost, "peak_process_bytes": p2, "fits": True,
                                                  "headroom_bytes": t.memory_bytes - p2,
                                                  "host_weights_bytes": e2.host_bytes,
                                                  "host_process_peak_bytes": e2.host_process_peak_bytes,
                                                  "evidence": mode_evidence(dict(changes))})
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

from gpu_preflight.estimators.engines.base import Engine, Option, bounded_float, positive_int  # noqa: E402

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
    Option("--quantize", "quantize", "nn.Linear weights of the denoiser and text encoders: bitsandbytes 8bit / 4bit "
           "(NF4), torchao int8wo or fp8 (float8 weight-only)", choices=("8bit", "4bit", "int8wo", "fp8")),
    Option("--drop-text-encoders", "drop_text_encoders", "free the text encoders after encoding",
           action="store_true", default=False),
    Option("--attn", "attn", "attention: sdpa (default) or eager (materialized scores)", default="sdpa",
           choices=("sdpa", "eager")),
    Option("--group-type", "group_type", "with --offload group: block_level (default: each ModuleList element) or "
           "leaf_level (each Linear/Conv)", default="block_level", choices=("block_level", "leaf_level")),
    Option("--use-stream", "use_stream", "with --offload group: prefetch the next group on a CUDA stream "
           "(pinned host copies)", action="store_true", default=False),
    Option("--record-stream", "record_stream", "with --offload group --use-stream: record_stream=True",
           action="store_true", default=False),
    Option("--layerwise-fp8", "layerwise_fp8", "store the denoiser's weights in float8, upcast layer by layer "
           "(enable_layerwise_casting)", action="store_true", default=False),
    Option("--component-dtype", "component_dtype", "one component in another dtype, e.g. vae=float32 (repeatable)",
           action="append", metavar="NAME=DTYPE"),
)


def pipeline_entry(source) -> dict:
    """A ModelSource of a pipeline as the dict the diffusion estimator and measurement child take."""
    def weights(c):
        if c.metadata.get("weights"):
            return c.metadata["weights"]
        if c.tensors:  # safetensors headers of a diffusers folder or Hub repo
            return {"parameters": sum(t.numel for t in c.tensors), "includes_buffers": True}
        return None

    def cls(c):
        value = c.metadata.get("class") or (c.config or {}).get("_class_name")
        return value[-1] if isinstance(value, (list, tuple)) and value else value

    comps = {n: {"class": cls(c), "config": c.config, "weights": weights(c), "structure": c.metadata.get("structure")}
             for n, c in (source.components or {}).items()}
    counted = []
    for n, c in comps.items():
        # issue 15: a folder with configs but no safetensors (or .bin weights): count from the config
        if c["weights"] is None and c["class"] and isinstance(c["config"], dict) and c["config"] and \
                "Scheduler" not in str(c["class"]) and "tokenizer" not in n:
            from gpu_preflight.models.component_params import weights_from_config

            structure, params, how = weights_from_config(c["class"], c["config"], c)
            if params:
                c["weights"] = {"parameters": params}
                c["structure"] = c["structure"] or structure
                counted.append(f"{n}: {params:,} parameters, {how}")
    notes = [f"no weight files: sizes counted from the configs ({'; '.join(counted)})"] if counted else []
    return {"components": comps,
            "config_counts": notes,
            "defaults": source.metadata.get("defaults") or {},
            "pipeline_class": (source.pipeline_index or {}).get("_class_name", ""),
            "model_index": source.pipeline_index or {}}


def parse_component_dtypes(items: list[str]) -> dict[str, str]:
    """["vae=float32", ...] -> {"vae": "float32"}; UsageError for anything else."""
    from gpu_preflight.estimators.plan import parse_dtype

    out: dict[str, str] = {}
    for item in items:
        name, sep, dtype = str(item).partition("=")
        if not sep or not name.strip() or not dtype.strip():
            raise UsageError(f"--component-dtype {item!r} is not NAME=DTYPE", hint="e.g. --component-dtype vae=float32")
        out[name.strip()] = parse_dtype(dtype.strip())
    return out


def run_engine(source, o: dict, targets: list, common: dict) -> dict:
    from gpu_preflight.estimators.overheads import process_overhead
    from gpu_preflight.estimators.plan import parse_dtype

    entry = pipeline_entry(source)
    d = entry["defaults"]
    group_flags = [f for f, v in (("--use-stream", o.get("use_stream")), ("--record-stream", o.get("record_stream")),
                                  ("--group-type", o.get("group_type") != "block_level")) if v]
    if group_flags and o["offload"] != "group":
        raise UsageError(f"{group_flags[0]} applies to --offload group", hint="add --offload group, or drop the flag")
    if o.get("record_stream") and not o.get("use_stream"):
        raise UsageError("--record-stream needs --use-stream", hint="add --use-stream")
    w = ImageWorkload(height=o["height"] or int(d.get("height", 1024)), width=o["width"] or int(d.get("width", 1024)),
                      batch=o["batch"], guidance_scale=o["guidance_scale"], steps=o["steps"],
                      dtype=parse_dtype(o["dtype"]), offload=o["offload"],
                      vae_tiling=o["vae_tiling"],
                      vae_slicing=o["vae_slicing"], quantize=o["quantize"], drop_text_encoders=o["drop_text_encoders"],
                      frames=o["frames"], decode_chunk=o["decode_chunk"], attn=o["attn"],
                      group_type=o.get("group_type") or "block_level", use_stream=bool(o.get("use_stream")),
                      record_stream=bool(o.get("record_stream")), layerwise_fp8=bool(o.get("layerwise_fp8")),
                      component_dtype=parse_component_dtypes(o.get("component_dtype") or []))
    cc = targets[0].cc if targets else None
    overhead, note = process_overhead(cc, common.get("torch"))
    report = pipeline_report(entry, w, targets, overhead, note, source.name)
    report["assumptions"] = entry.get("config_counts", []) + report["assumptions"]
    if (source.metadata or {}).get("single_file"):
        report["single_file"] = source.metadata["single_file"]
    return report


ENGINES = (Engine("diffusers", ("pipeline",), "diffusers image and video pipelines", OPTIONS, run_engine,
                  default_for=("pipeline",)),)
