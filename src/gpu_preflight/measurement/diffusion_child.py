"""Measurement of diffusion pipelines, run inside the measurement child (see child.py).

`run_diffusion(torch, spec, rec, sampler, t0)` builds every model component of one pipeline
(spec["model"]["components"], as in the catalog: {name: {"class", "config", ...}}) on the device
with uninitialized weights, then for each workload {"name", "height", "width", "batch"} records
one phase per text encoder ("encode:<component>"), one denoiser forward ("denoise") and the VAE
decode ("vae_decode"), with the input shapes the diffusers pipeline would pass at that size.

Building costs neither random init nor a transient fp32 copy: each component is instantiated
under accelerate.init_empty_weights() (parameters on the meta device, buffers real on the CPU),
cast to the dtype there, then its parameters are allocated empty on the device and its buffers
copied over (tied parameters stay tied, position-id and rotary buffers keep their values).
diffusers is imported here, lazily. A component whose class cannot be built gets an "error"
record and the rest are measured; a phase that fails gets its error in its own record.
"""

from __future__ import annotations

import re
import time
import traceback

from gpu_preflight.models.component_build import (  # noqa: F401 - re-exported for the measurement children
    _ARG_MAPS,
    _HF_META_KEYS,
    _LUMINA2_FROM_NEXTDIT,
    _hf_config,
    _keep_fp32,
    build_component,
    materialize,
    resolve_component,
)

DENOISERS = ("transformer", "unet", "prior", "decoder")


class _Mem:
    """torch.cuda memory statistics, or zeros on a device without them (cpu)."""

    def __init__(self, torch, device: str):
        self.torch = torch
        self.cuda = str(device).startswith("cuda")

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def allocated(self):
        return self.torch.cuda.memory_allocated() if self.cuda else 0

    def reserved(self):
        return self.torch.cuda.memory_reserved() if self.cuda else 0

    def max_allocated(self):
        return self.torch.cuda.max_memory_allocated() if self.cuda else 0

    def max_reserved(self):
        return self.torch.cuda.max_memory_reserved() if self.cuda else 0

    def reset_peak(self):
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def empty_cache(self):
        if self.cuda:
            self.torch.cuda.empty_cache()


def _oom_types(torch) -> tuple:
    types = [torch.cuda.OutOfMemoryError]
    if hasattr(torch, "OutOfMemoryError"):
        types.append(torch.OutOfMemoryError)
    return tuple(types)


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:600]


def _phase(ctx: dict, base: dict, name: str, fn, extra: dict | None = None) -> dict:
    """run_phase of child.py, device-aware, and a non-OOM failure is recorded instead of raised."""
    mem, sampler, rec = ctx["mem"], ctx["sampler"], ctx["rec"]
    mem.sync()
    before = {"allocated_bytes": mem.allocated(), "reserved_bytes": mem.reserved(),
              "process_bytes": sampler.current_bytes()}
    mem.reset_peak()
    sampler.reset()
    t = time.perf_counter()
    out = {**base, "type": "phase", "phase": name, **(extra or {}), "before": before}
    try:
        fn()
        mem.sync()
        out["oom"] = False
    except ctx["oom"] as exc:
        out["oom"] = True
        out["error"] = str(exc).splitlines()[0][:300]
    except Exception as exc:  # noqa: BLE001 - one failing phase must not end the run
        out["oom"] = False
        out["error"] = _err(exc)
        out["traceback"] = traceback.format_exc()[-2000:]
    out["time_s"] = round(time.perf_counter() - t, 3)
    out["peak_allocated_bytes"] = mem.max_allocated()
    out["peak_reserved_bytes"] = mem.max_reserved()
    time.sleep(0.02)
    out["peak_process_bytes"] = sampler.peak_bytes()
    out["sampler_mode"] = getattr(sampler, "mode", None)
    rec.write(out)
    if out["oom"] or out.get("error"):
        mem.empty_cache()
    return out


# ----------------------------------------------------------------------------------- building


def _sizes(model) -> dict:
    params = list(model.parameters())
    bufs = list(model.buffers())
    by_dtype: dict[str, int] = {}
    for t in params:
        k = str(t.dtype).replace("torch.", "")
        by_dtype[k] = by_dtype.get(k, 0) + t.numel() * t.element_size()
    return {"parameters": sum(p.numel() for p in params),
            "param_bytes": sum(p.numel() * p.element_size() for p in params),
            "buffer_bytes": sum(b.numel() * b.element_size() for b in bufs),
            "param_bytes_by_dtype": by_dtype}


# ----------------------------------------------------------------------------------- inputs


def _get(cfg, key, default=None):
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _text_cfg(model):
    c = model.config
    return c.get_text_config() if hasattr(c, "get_text_config") else c


def encoder_plan(pipe: dict, name: str, model) -> dict:
    """Sequence length, call kwargs and number of calls the diffusers pipeline uses for one text encoder."""
    defaults = pipe.get("defaults") or {}
    tc = _text_cfg(model)
    mt = str(_get(model.config, "model_type", ""))
    pclass = pipe.get("pipeline_class") or ""
    if mt.startswith("clip"):
        seq = int(_get(tc, "max_position_embeddings", 77))
    elif name == "clip_model" and defaults.get("clip_max_length"):
        seq = int(defaults["clip_max_length"])
    else:
        seq = int(defaults.get("max_sequence_length") or 256)
    # FLUX: CLIP pooled output and T5 last state; SD3: CLIPs with hidden_states, T5 last state;
    # SDXL: CLIPs with hidden_states[-2]; Lumina2 / NewBie: Gemma hidden_states[-2] with a mask.
    hidden = not (pclass.startswith("Flux") or mt == "t5")
    mask = mt.startswith("gemma")
    model_index = pipe.get("model_index") or {}
    cfg_passes = int(defaults.get("cfg_passes") or 1)
    negative = cfg_passes > 1 and not model_index.get("force_zeros_for_empty_prompt", False)
    return {"seq_len": seq, "output_hidden_states": hidden, "attention_mask": mask,
            "calls_per_generation": 2 if negative else 1}


def run_encoder(torch, model, plan: dict, batch: int, device: str):
    tc = _text_cfg(model)
    vocab = int(_get(tc, "vocab_size", 32000) or 32000)
    high = max(min(vocab, 30000), 10)
    ids = torch.randint(3, high, (batch, plan["seq_len"]), device=device)
    kwargs = {"output_hidden_states": plan["output_hidden_states"]}
    if plan["attention_mask"]:
        kwargs["attention_mask"] = torch.ones_like(ids)
    with torch.inference_mode():
        out = model(ids, **kwargs)
    return out


def denoise_inputs(torch, pipe: dict, model, w: dict, dtype, device: str) -> tuple[dict, dict]:
    """(kwargs for one forward, meta) with the shapes the pipeline passes at w's size."""
    defaults = pipe.get("defaults") or {}
    c = model.config
    cls = type(model).__name__
    H, W, B = int(w["height"]), int(w["width"]), int(w.get("batch", 1))
    vsf = int(defaults.get("vae_scale_factor") or 8)
    cfg_passes = int(defaults.get("cfg_passes") or 1)
    batched = bool(defaults.get("cfg_batched")) and cfg_passes > 1
    n = B * cfg_passes if batched else B
    meta = {"batch": n, "passes_per_step": 1 if batched else cfg_passes}
    seq = int(defaults.get("max_sequence_length") or 256)

    def randn(*shape, dt=dtype):
        return torch.randn(*shape, device=device, dtype=dt)

    if cls == "FluxTransformer2DModel":
        lh, lw = 2 * (H // (vsf * 2)), 2 * (W // (vsf * 2))
        tokens = (lh // 2) * (lw // 2)
        img_ids = torch.zeros(lh // 2, lw // 2, 3, device=device)
        img_ids[..., 1] += torch.arange(lh // 2, device=device)[:, None]
        img_ids[..., 2] += torch.arange(lw // 2, device=device)[None, :]
        kw = {"hidden_states": randn(n, tokens, c.in_channels),
              "encoder_hidden_states": randn(n, seq, c.joint_attention_dim),
              "pooled_projections": randn(n, c.pooled_projection_dim),
              "timestep": torch.full((n,), 1.0, device=device, dtype=dtype),
              "img_ids": img_ids.reshape(tokens, 3).to(dtype),
              "txt_ids": torch.zeros(seq, 3, device=device, dtype=dtype),
              "guidance": torch.full((n,), 3.5, device=device, dtype=torch.float32) if c.guidance_embeds else None,
              "return_dict": False}
        meta["image_tokens"], meta["text_tokens"] = tokens, seq
    elif cls == "UNet2DConditionModel":
        text_len = 77
        time_dim = int(c.addition_time_embed_dim or 256)
        n_time = 6
        pooled_dim = int(c.projection_class_embeddings_input_dim) - n_time * time_dim
        kw = {"sample": randn(n, c.in_channels, H // vsf, W // vsf),
              "timestep": torch.tensor(999.0, device=device),
              "encoder_hidden_states": randn(n, text_len, c.cross_attention_dim),
              "added_cond_kwargs": {"text_embeds": randn(n, pooled_dim), "time_ids": randn(n, n_time)},
              "return_dict": False}
        meta["text_tokens"] = text_len
    elif cls == "SD3Transformer2DModel":
        comps = pipe.get("components") or {}
        clip_len = 77
        text_len = clip_len + (seq if "text_encoder_3" in comps else clip_len)
        kw = {"hidden_states": randn(n, c.in_channels, H // vsf, W // vsf),
              "timestep": torch.full((n,), 999.0, device=device),
              "encoder_hidden_states": randn(n, text_len, c.joint_attention_dim),
              "pooled_projections": randn(n, c.pooled_projection_dim),
              "return_dict": False}
        meta["image_tokens"] = (H // vsf // c.patch_size) * (W // vsf // c.patch_size)
        meta["text_tokens"] = text_len
    elif cls == "Lumina2Transformer2DModel":
        # The caption is padded to max_sequence_length; the transformer keeps only the tokens the
        # mask marks valid. All valid (the most) unless the workload gives "text_tokens".
        valid = min(int(w.get("text_tokens") or seq), seq)
        mask = torch.zeros(n, seq, device=device, dtype=torch.long)
        mask[:, :valid] = 1
        kw = {"hidden_states": randn(n, c.in_channels, H // vsf, W // vsf),
              "timestep": torch.full((n,), 0.5, device=device),
              "encoder_hidden_states": randn(n, seq, int(c.cap_feat_dim)),
              "encoder_attention_mask": mask,
              "return_dict": False}
        meta["image_tokens"] = (H // vsf // c.patch_size) * (W // vsf // c.patch_size)
        meta["text_tokens"] = valid
    elif cls == "UNetSpatioTemporalConditionModel":
        # StableVideoDiffusion-style: (batch, frames, channels, h, w); image latents concatenated
        # on channels (in_channels 8); one image embedding token; 3 added time ids
        frames = int(w.get("frames") or defaults.get("frames") or 14)
        kw = {"sample": randn(n, frames, c.in_channels, H // vsf, W // vsf),
              "timestep": torch.tensor(1.0, device=device),
              "encoder_hidden_states": randn(n, 1, c.cross_attention_dim),
              "added_time_ids": randn(n, 3),
              "return_dict": False}
        meta["frames"] = frames
    else:
        raise NotImplementedError(f"no denoiser input recipe for {cls}")
    return kw, meta


def _shapes(obj):
    if hasattr(obj, "shape"):
        return {"shape": list(obj.shape), "dtype": str(obj.dtype).replace("torch.", "")}
    if isinstance(obj, dict):
        return {k: _shapes(v) for k, v in obj.items() if v is not None and not isinstance(v, bool)}
    return obj


# ----------------------------------------------------------------------------------- main


def run_diffusion(torch, spec: dict, rec, sampler, t0) -> None:
    import diffusers
    import transformers

    try:
        diffusers.utils.logging.set_verbosity_error()
        transformers.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001
        pass
    if spec.get("setups"):
        from gpu_preflight.measurement.diffusion_modes import run_modes

        run_modes(torch, spec, rec, sampler, t0)
        return
    pipe = spec["model"]
    model_id = pipe.get("id")
    pipeline = pipe.get("catalog_id") or model_id
    dtype_name = spec.get("dtype", "bfloat16")
    dtype = getattr(torch, dtype_name)
    device = spec.get("device", "cuda")
    attn = spec.get("attn", "sdpa")
    mem = _Mem(torch, device)
    ctx = {"mem": mem, "sampler": sampler, "rec": rec, "oom": _oom_types(torch)}
    head = {"model": model_id, "pipeline": pipeline, "dtype": dtype_name}
    comps = pipe.get("components") or {}

    # 1. build every model component
    models: dict = {}
    totals = {"parameters": 0, "param_bytes": 0, "buffer_bytes": 0}
    t_load = time.perf_counter()
    mem.reset_peak()
    sampler.reset()
    for name, comp in comps.items():
        if not isinstance(comp, dict) or comp.get("weights") is None or "Scheduler" in str(comp.get("class")):
            continue  # schedulers, tokenizers: no device memory
        if comp.get("skip"):
            continue
        t = time.perf_counter()
        before = mem.allocated()
        try:
            model, notes = build_component(torch, name, comp, dtype, device, attn, diffusers, transformers)
        except ctx["oom"] as exc:
            mem.empty_cache()
            rec.write({**head, "type": "error", "phase": f"load:{name}", "component": name,
                       "class": comp.get("class"), "oom": True, "fatal": False,
                       "error": str(exc).splitlines()[0][:300], "allocated_bytes": mem.allocated()})
            continue
        except Exception as exc:  # noqa: BLE001 - skip this component, measure the rest
            rec.write({**head, "type": "error", "phase": f"load:{name}", "component": name,
                       "class": comp.get("class"), "oom": False, "fatal": False, "error": _err(exc),
                       "traceback": traceback.format_exc()[-2000:]})
            continue
        mem.sync()
        models[name] = model
        sizes = _sizes(model)
        for k in totals:
            totals[k] += sizes[k]
        rec.write({**head, "type": "phase", "phase": f"load:{name}", "component": name,
                   "class": comp.get("class"), **notes, "time_s": round(time.perf_counter() - t, 3),
                   "allocated_bytes": mem.allocated(), "allocated_delta_bytes": mem.allocated() - before,
                   "reserved_bytes": mem.reserved(), "process_bytes": sampler.current_bytes(),
                   "peak_allocated_bytes": mem.max_allocated(), **sizes,
                   "t_s": round(time.perf_counter() - t0, 3)})
    # peak_allocated_bytes of load:<c> and load: the peak since the first component started
    rec.write({**head, "type": "phase", "phase": "load", "components": sorted(models),
               "time_s": round(time.perf_counter() - t_load, 3), "allocated_bytes": mem.allocated(),
               "reserved_bytes": mem.reserved(), "process_bytes": sampler.current_bytes(),
               "peak_allocated_bytes": mem.max_allocated(), "peak_reserved_bytes": mem.max_reserved(),
               "peak_process_bytes": sampler.peak_bytes(), **totals, "t_s": round(time.perf_counter() - t0, 3)})

    encoders = [n for n, m in models.items() if isinstance(m, transformers.PreTrainedModel)]
    denoiser = next((n for n in DENOISERS if n in models), None)
    vae = models.get("vae")

    # 2. per workload: text encoders, one denoiser forward, VAE decode
    for w in spec.get("workloads") or []:
        base = {**head, "workload": w}
        B = int(w.get("batch", 1))
        for name in encoders:
            model = models[name]
            plan = encoder_plan(pipe, name, model)
            # diffusers encodes each prompt once (batch = number of prompts) and repeats the
            # embeddings num_images_per_prompt times; the negative prompt is a separate call.
            eb = int(w.get("encode_batch", w.get("prompts", 1)))
            extra = {"component": name, "inputs": {"input_ids": {"shape": [eb, plan["seq_len"]], "dtype": "int64"},
                                                   "attention_mask": plan["attention_mask"],
                                                   "output_hidden_states": plan["output_hidden_states"]},
                     "calls_per_generation": plan["calls_per_generation"]}
            mem.empty_cache()
            _phase(ctx, base, f"encode:{name}",
                   lambda m=model, p=plan, b=eb: run_encoder(torch, m, p, b, device), extra)
        if denoiser:
            model = models[denoiser]
            extra = {"component": denoiser}
            try:  # the shapes, from the same recipe on the meta device (allocates nothing)
                kw_meta, meta = denoise_inputs(torch, pipe, model, w, dtype, "meta")
                extra.update(meta, inputs=_shapes(kw_meta))
                del kw_meta
            except Exception as exc:  # noqa: BLE001 - the phase below records the failure
                extra["inputs_error"] = _err(exc)

            def denoise(m=model):
                kw, _ = denoise_inputs(torch, pipe, m, w, dtype, device)
                with torch.inference_mode():
                    m(**kw)

            mem.empty_cache()
            _phase(ctx, base, "denoise", denoise, extra)
        if vae is not None:
            defaults = pipe.get("defaults") or {}
            vsf = int(defaults.get("vae_scale_factor") or 8)
            ch = int(_get(vae.config, "latent_channels", defaults.get("latent_channels", 4)))
            shape = [B, ch, 2 * (int(w["height"]) // (vsf * 2)), 2 * (int(w["width"]) // (vsf * 2))]
            vdt = next(vae.parameters()).dtype
            temporal = "Temporal" in type(vae).__name__
            if temporal:  # video: the pipeline decodes decode_chunk_size frames per call
                chunk = int(w.get("decode_chunk") or defaults.get("decode_chunk_size") or 8)
                shape = [chunk, ch, shape[2], shape[3]]

            def decode(v=vae, s=shape, dt=vdt):
                z = torch.randn(*s, device=device, dtype=dt)
                with torch.inference_mode():
                    if temporal:
                        v.decode(z, num_frames=s[0], return_dict=False)
                    else:
                        v.decode(z, return_dict=False)

            mem.empty_cache()
            _phase(ctx, base, "vae_decode", decode,
                   {"component": "vae", "inputs": {"latents": {"shape": shape, "dtype": str(vdt).replace("torch.", "")}}})
