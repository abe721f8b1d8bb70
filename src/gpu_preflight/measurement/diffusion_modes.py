"""Measurement of the memory modes diffusers offers, run inside the measurement child.

`run_modes(torch, spec, rec, sampler, t0)` builds every model component of one pipeline on the
CPU (uninitialized weights, then written once so that their pages are resident, as loaded weights
are), then goes through `spec["setups"]`. Each setup places the components the way one diffusers
mode does, with diffusers' own functions (diffusers 0.42.1, src/diffusers/...):

- "offload": "none": `module.to(device)`, all components resident;
  "model": `DiffusionPipeline.enable_model_cpu_offload` (pipelines/pipeline_utils.py: accelerate
  `cpu_offload_with_hook` chained in the pipeline's `model_cpu_offload_seq`);
  "sequential": `enable_sequential_cpu_offload` (accelerate `cpu_offload`, one leaf module's
  weights at a time); "group": `enable_group_offload(offload_type=block_level|leaf_level,
  num_blocks_per_group=1, use_stream, record_stream)` (hooks/group_offloading.py).
  The calls go through a stand-in `DiffusionPipeline` subclass whose `model_cpu_offload_seq` is
  the real pipeline class's (tokenizers and schedulers are not needed to place weights).
- "layerwise_fp8": `ModelMixin.enable_layerwise_casting(float8_e4m3fn, compute dtype)` on the
  denoiser (hooks/layerwise_casting.py), on the CPU before placement, as the diffusers blog does.
- "torchao": "int8wo" | "fp8wo": what `from_pretrained(quantization_config=TorchAoConfig(...),
  device_map=...)` does (quantizers/torchao/torchao_quantizer.py, models/model_loading_utils.py):
  `_caching_allocator_warmup` reserves numel // 4 elements of the dtype, then each nn.Linear weight
  is moved to the GPU and quantized with `torchao.quantize_` before the next; other tensors move as is.
- "component_dtype": {"vae": "float32"}: that component is cast before placement.

Each setup has "runs" ({"height", "width", "batch", "steps", "attn", "vae_tiling", "vae_slicing",
"drop_text_encoders", "phases"}): one phase record per text encoder, the denoiser's forward run
`steps` times (each timed: seconds per step), and the VAE decode as the pipeline does it (SDXL-style
pipelines upcast a float16 VAE with force_upcast to float32 around the decode). Every record has GPU
allocated / reserved peaks, NVML's per-process peak and the peak host RSS of the phase.

A setup that fails is recorded and the next one runs; components whose weights a setup changed
(fp8 casting, torchao) or whose hooks could not be removed are rebuilt. `spec["deadline_s"]`
(seconds after the child started) skips setups and runs that would not finish in time.
"""

from __future__ import annotations

import gc
import inspect
import time
import traceback

from gpu_preflight.measurement.diffusion_child import (
    DENOISERS,
    _err,
    _get,
    _Mem,
    _oom_types,
    _shapes,
    _sizes,
    build_component,
    denoise_inputs,
    encoder_plan,
    run_encoder,
)
from gpu_preflight.measurement.host_rss import HostMemorySampler

FILL = 0.01
OFFLOADS = ("none", "model", "sequential", "group")
TORCHAO_CONFIGS = {"int8wo": "Int8WeightOnlyConfig", "fp8wo": "Float8WeightOnlyConfig"}
TORCHAO_WARMUP_FACTOR = 4  # TorchAoHfQuantizer.get_cuda_warm_up_factor() for 8-bit weights (diffusers 0.42.1)
RUN_KEYS = ("height", "width", "batch", "steps", "attn", "vae_tiling", "vae_slicing", "drop_text_encoders",
            "frames", "decode_chunk")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "diffusers", "transformers", "accelerate", "torchao", "psutil", "safetensors", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def offload_sequence(diffusers, pipe: dict, names: list[str]) -> str:
    """The pipeline class's model_cpu_offload_seq, else the catalog's, else encoders -> denoiser -> vae."""
    cls = getattr(diffusers, str(pipe.get("pipeline_class") or ""), None)
    seq = getattr(cls, "model_cpu_offload_seq", None) if cls is not None else None
    seq = seq or (pipe.get("defaults") or {}).get("cpu_offload_sequence")
    if seq:
        return seq
    order = [n for n in names if n not in DENOISERS and n != "vae"] + [n for n in DENOISERS if n in names]
    return "->".join(order + (["vae"] if "vae" in names else []))


def make_holder(diffusers, pipe: dict, models: dict):
    """A DiffusionPipeline with these components, so its offload methods can be called as is."""
    seq = offload_sequence(diffusers, pipe, list(models))
    names = list(models)

    def __init__(self, **components):
        diffusers.DiffusionPipeline.__init__(self)
        self.register_modules(**components)

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
    __init__.__signature__ = inspect.Signature(params)
    cls = type("MeasuredPipeline", (diffusers.DiffusionPipeline,),
               {"__init__": __init__, "model_cpu_offload_seq": seq, "_exclude_from_cpu_offload": [],
                "_optional_components": []})
    return cls(**models), seq


def _device_bytes(model) -> dict:
    out: dict[str, int] = {}
    seen = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        key = t.device.type
        if key == "cpu":
            try:
                if t.is_pinned():
                    key = "cpu_pinned"
            except RuntimeError:
                pass
        out[key] = out.get(key, 0) + t.numel() * t.element_size()
    return out


class Stage:
    """The components of one pipeline and the measurement context."""

    def __init__(self, torch, spec: dict, rec, sampler, t0: float):
        import diffusers
        import transformers

        self.torch, self.spec, self.rec, self.sampler, self.t0 = torch, spec, rec, sampler, t0
        self.diffusers, self.transformers = diffusers, transformers
        self.pipe = spec["model"]
        self.device = spec.get("device", "cuda")
        self.dtype_name = spec.get("dtype", "bfloat16")
        self.dtype = getattr(torch, self.dtype_name)
        self.mem = _Mem(torch, self.device)
        self.host = HostMemorySampler()
        self.oom = _oom_types(torch)
        self.head = {"model": self.pipe.get("id"), "pipeline": self.pipe.get("catalog_id") or self.pipe.get("id"),
                     "dtype": self.dtype_name}
        self.models: dict = {}
        self.component_dtypes: dict[str, str] = {}
        self.holder = None
        self.dropped = False  # text encoders moved off the GPU by a drop_text_encoders run

    # ------------------------------------------------------------------ time
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def time_left(self) -> float:
        deadline = self.spec.get("deadline_s")
        return float("inf") if deadline is None else float(deadline) - self.elapsed()

    # ------------------------------------------------------------------ measuring
    def measure(self, base: dict, name: str, fn, extra: dict | None = None) -> dict:
        mem, sampler, host = self.mem, self.sampler, self.host
        mem.sync()
        before = {"allocated_bytes": mem.allocated(), "reserved_bytes": mem.reserved(),
                  "process_bytes": sampler.current_bytes(), "host_rss_bytes": host.current_bytes()}
        mem.reset_peak()
        sampler.reset()
        host.reset()
        out = {**self.head, **base, "type": "phase", "phase": name, **(extra or {}), "before": before}
        t = time.perf_counter()
        try:
            result = fn()
            mem.sync()
            if isinstance(result, dict):
                out.update(result)
            out["oom"] = False
        except self.oom as exc:
            out["oom"] = True
            out["error"] = str(exc).splitlines()[0][:300]
        except Exception as exc:  # noqa: BLE001 - one failing phase must not end the run
            out["oom"] = False
            out["error"] = _err(exc)
            out["traceback"] = traceback.format_exc()[-2500:]
        out["time_s"] = round(time.perf_counter() - t, 4)
        out["peak_allocated_bytes"] = mem.max_allocated()
        out["peak_reserved_bytes"] = mem.max_reserved()
        time.sleep(0.02)
        out["peak_process_bytes"] = sampler.peak_bytes()
        out["peak_host_rss_bytes"] = host.peak_bytes()
        out["after"] = {"allocated_bytes": mem.allocated(), "reserved_bytes": mem.reserved(),
                        "host_rss_bytes": host.current_bytes()}
        out["host_detail"] = host.detail()
        out["sampler_mode"] = getattr(sampler, "mode", None)
        out["host_sampler_mode"] = host.mode
        out["t_s"] = round(self.elapsed(), 3)
        self.rec.write(out)
        if out["oom"] or out.get("error"):
            gc.collect()
            mem.empty_cache()
        return out

    # ------------------------------------------------------------------ building
    def component_specs(self) -> dict:
        out = {}
        for name, comp in (self.pipe.get("components") or {}).items():
            if not isinstance(comp, dict) or comp.get("weights") is None or comp.get("skip"):
                continue
            if "Scheduler" in str(comp.get("class")):
                continue
            out[name] = comp
        return out

    def build(self, name: str, comp: dict, dtype_name: str | None = None) -> None:
        torch = self.torch
        dtype_name = dtype_name or self.component_dtypes.get(name) or self.dtype_name

        def make():
            model, notes = build_component(torch, name, comp, getattr(torch, dtype_name), "cpu", "sdpa",
                                           self.diffusers, self.transformers, fill=FILL)
            self.models[name] = model
            return {**notes, **_sizes(model), "component_dtype": dtype_name}

        self.models.pop(name, None)
        gc.collect()
        self.measure({"component": name, "class": comp.get("class")}, f"build:{name}", make)

    def build_all(self) -> None:
        for name, comp in self.component_specs().items():
            self.build(name, comp)
        self.rec.write({**self.head, "type": "phase", "phase": "built", "components": sorted(self.models),
                        "host_rss_bytes": self.host.current_bytes(), "host_detail": self.host.detail(),
                        "placement": {n: _device_bytes(m) for n, m in self.models.items()}, "t_s": round(self.elapsed(), 3)})

    def encoders(self) -> list[str]:
        return [n for n, m in self.models.items() if isinstance(m, self.transformers.PreTrainedModel)]

    def denoiser(self) -> str | None:
        return next((n for n in DENOISERS if n in self.models), None)

    # ------------------------------------------------------------------ setups
    def apply(self, setup: dict) -> dict:
        """Place the components as the setup's mode does; returns notes for the setup record."""
        torch, dev = self.torch, self.device
        notes: dict = {}
        for name, dt in (setup.get("component_dtype") or {}).items():
            if name in self.models:
                self.models[name].to(getattr(torch, dt))
                notes.setdefault("cast", {})[name] = dt
        den = self.denoiser()
        if setup.get("layerwise_fp8") and den:
            storage = getattr(torch, setup.get("storage_dtype", "float8_e4m3fn"))
            self.models[den].enable_layerwise_casting(storage_dtype=storage, compute_dtype=self.dtype)
            notes["layerwise_fp8"] = den
        quant = setup.get("torchao")
        qnames = set(setup.get("quantize_components") or ([den] if den else [])) if quant else set()
        offload = setup.get("offload", "none")
        if offload == "none":
            if quant:
                self.warmup(qnames)
            for name, model in self.models.items():
                if name in qnames:
                    notes.setdefault("quantized", {})[name] = self.load_quantized(model, quant)
                else:
                    model.to(dev)
            return notes
        if quant:
            raise ValueError("torchao quantization is measured with the components resident (offload none)")
        self.holder, seq = make_holder(self.diffusers, self.pipe, self.models)
        notes["offload_sequence"] = seq
        if offload == "model":
            self.holder.enable_model_cpu_offload(device=dev)
        elif offload == "sequential" and dev == "cpu":
            # CPU dry runs only: the pipeline method offloads to "cpu:0", which accelerate's
            # set_module_tensor_to_device mishandles on the CPU; the same per-component call:
            from accelerate import cpu_offload

            for model in self.models.values():
                cpu_offload(model, torch.device("cpu"), offload_buffers=len(model._parameters) > 0)
        elif offload == "sequential":
            self.holder.enable_sequential_cpu_offload(device=dev)
        elif offload == "group":
            kind = setup.get("group_type", "block_level")
            self.holder.enable_group_offload(
                onload_device=torch.device(dev), offload_device=torch.device("cpu"), offload_type=kind,
                num_blocks_per_group=1 if kind == "block_level" else None,
                use_stream=bool(setup.get("use_stream")), record_stream=bool(setup.get("record_stream")),
                low_cpu_mem_usage=bool(setup.get("low_cpu_mem_usage")))
        else:
            raise ValueError(f"unknown offload {offload!r}")
        return notes

    def warmup(self, names) -> None:
        """diffusers' _caching_allocator_warmup: one empty tensor of numel // factor elements."""
        numel = sum(p.numel() for n in names if n in self.models for p in self.models[n].parameters())
        if numel and self.device != "cpu":
            t = self.torch.empty(max(1, numel // TORCHAO_WARMUP_FACTOR), dtype=self.dtype, device=self.device)
            del t

    def load_quantized(self, model, quant: str) -> dict:
        """Each tensor to the device in module order; every nn.Linear weight quantized on arrival."""
        import torchao
        from torchao import quantization as tq

        config = getattr(tq, TORCHAO_CONFIGS[quant])()
        torch, dev = self.torch, self.device
        skip = set(getattr(model, "_keep_in_fp32_modules", None) or [])
        count = 0
        moved: dict[int, tuple] = {}  # tied parameters (T5 shared / embed_tokens) move once
        for mname, module in model.named_modules():
            for pname, p in list(module._parameters.items()):
                if p is None:
                    continue
                if id(p) in moved:
                    module._parameters[pname] = moved[id(p)][1]
                    continue
                module._parameters[pname] = torch.nn.Parameter(p.data.to(dev), requires_grad=False)
                if isinstance(module, torch.nn.Linear) and pname == "weight" and not any(
                        k in mname.split(".") for k in skip):
                    torchao.quantize_(module, config)
                    count += 1
                moved[id(p)] = (p, module._parameters[pname])
            for bname, b in list(module._buffers.items()):
                if b is not None:
                    module._buffers[bname] = b.to(dev)
        return {"config": TORCHAO_CONFIGS[quant], "linear_layers": count}

    def undo(self, setup: dict, rebuild: bool = True) -> None:
        """Hooks off, everything back on the CPU; components whose weights changed are rebuilt."""
        torch = self.torch
        dirty = set()
        self.dropped = False
        if self.holder is not None:
            try:
                self.holder.remove_all_hooks()
            except Exception:  # noqa: BLE001
                dirty |= set(self.models)
            self.holder = None
        for name, model in self.models.items():
            for module in model.modules():
                registry = getattr(module, "_diffusers_hook", None)
                if registry is None:
                    continue
                for hook_name in list(registry.hooks):
                    try:
                        registry.remove_hook(hook_name, recurse=False)
                    except Exception:  # noqa: BLE001 - e.g. layerwise casting cannot be undone
                        dirty.add(name)
        if setup.get("layerwise_fp8") and self.denoiser():
            dirty.add(self.denoiser())
        if setup.get("torchao"):
            dirty |= set(setup.get("quantize_components") or [self.denoiser()])
        for name, model in self.models.items():
            if name in dirty:
                continue
            try:
                model.to("cpu")
                if any(p.device.type != "cpu" for p in model.parameters()):
                    dirty.add(name)
            except Exception:  # noqa: BLE001
                dirty.add(name)
        for name, dt in (setup.get("component_dtype") or {}).items():
            if name in self.models and name not in dirty:
                self.models[name].to(getattr(torch, self.component_dtypes.get(name) or self.dtype_name))
        specs = self.component_specs()
        for name in sorted(n for n in dirty if n in specs):
            self.models.pop(name, None)
        gc.collect()
        self.mem.empty_cache()
        if rebuild:
            for name in sorted(n for n in dirty if n in specs):
                self.build(name, specs[name])

    # ------------------------------------------------------------------ one run
    def run(self, setup: dict, run: dict) -> None:
        torch = self.torch
        w = {k: run[k] for k in RUN_KEYS if k in run}
        w.setdefault("batch", 1)
        w.setdefault("name", run.get("name") or f"{w['height']}x{w['width']}b{w['batch']}")
        steps = int(run.get("steps", setup.get("steps", self.spec.get("steps", 2))))
        attn = run.get("attn", "sdpa")
        phases = run.get("phases") or ["encode", "denoise", "decode"]
        base = {"setup": setup["name"], "offload": setup.get("offload", "none"), "workload": w, "steps": steps,
                "attn": attn, "vae_tiling": bool(run.get("vae_tiling")), "vae_slicing": bool(run.get("vae_slicing")),
                "drop_text_encoders": bool(run.get("drop_text_encoders")),
                "layerwise_fp8": bool(setup.get("layerwise_fp8")), "torchao": setup.get("torchao"),
                "component_dtype": setup.get("component_dtype") or {},
                **({k: setup[k] for k in ("group_type", "use_stream", "record_stream") if k in setup}
                   if setup.get("offload") == "group" else {})}
        records = []
        drop = bool(run.get("drop_text_encoders")) and setup.get("offload", "none") == "none"
        if self.dropped and not drop:  # a previous run freed the encoders: back on the GPU
            for name in self.encoders():
                self.models[name].to(self.device)
            self.dropped = False
        if drop:
            # the prompt was encoded before and the encoders freed: denoiser and VAE alone (the
            # encode phase itself is the encoders alone, as under model offload)
            phases = [p for p in phases if p != "encode"]
            for name in self.encoders():
                self.models[name].to("cpu")
            gc.collect()
            self.mem.empty_cache()
        if "encode" in phases:
            for name in self.encoders():
                model = self.models[name]
                plan = encoder_plan(self.pipe, name, model)
                eb = int(run.get("encode_batch", 1))
                extra = {"component": name, "inputs": {"input_ids": {"shape": [eb, plan["seq_len"]], "dtype": "int64"},
                                                       "output_hidden_states": plan["output_hidden_states"]}}
                self.mem.empty_cache()
                records.append(self.measure(base, f"encode:{name}",
                                            lambda m=model, p=plan, b=eb: self._encode(m, p, b), extra))
        den = self.denoiser()
        if "denoise" in phases and den:
            model = self.models[den]
            extra = {"component": den}
            try:
                kw_meta, meta = denoise_inputs(torch, self.pipe, model, w, self.dtype, "meta")
                extra.update(meta, inputs=_shapes(kw_meta))
                del kw_meta
            except Exception as exc:  # noqa: BLE001
                extra["inputs_error"] = _err(exc)
            self.mem.empty_cache()
            records.append(self.measure(base, "denoise", lambda m=model: self._denoise(m, w, steps, attn), extra))
        vae = self.models.get("vae")
        if "decode" in phases and vae is not None:
            self.mem.empty_cache()
            records.append(self.measure(base, "vae_decode", lambda: self._decode(vae, w, run), {"component": "vae"}))
        if self.holder is not None and setup.get("offload") == "model":
            self.holder.maybe_free_model_hooks()  # what the pipeline does at the end of __call__
        self.dropped = self.dropped or drop
        ok = [r for r in records if not r.get("error")]
        self.rec.write({**self.head, **base, "type": "run", "phases": [r["phase"] for r in records],
                        "errors": [r["phase"] for r in records if r.get("error")],
                        "peak_reserved_bytes": max((r["peak_reserved_bytes"] for r in ok), default=0),
                        "peak_allocated_bytes": max((r["peak_allocated_bytes"] for r in ok), default=0),
                        "peak_process_bytes": max((r["peak_process_bytes"] for r in ok), default=0),
                        "peak_host_rss_bytes": max((r["peak_host_rss_bytes"] for r in ok), default=0),
                        "seconds_per_step": next((r.get("seconds_per_step") for r in ok if r["phase"] == "denoise"),
                                                 None),
                        "t_s": round(self.elapsed(), 3)})

    def _encode(self, model, plan: dict, batch: int) -> dict:
        torch = self.torch
        cfg = model.config
        if str(_get(cfg, "model_type", "")).endswith("vision_model"):  # image encoders (SVD: CLIP vision)
            size = int(_get(cfg, "image_size", 224))
            pixels = torch.randn(batch, int(_get(cfg, "num_channels", 3)), size, size, device=self.device,
                                 dtype=self.dtype)
            with torch.inference_mode():
                model(pixel_values=pixels)
            return {"pixel_values": [batch, 3, size, size]}
        run_encoder(torch, model, plan, batch, self.device)
        return {}

    def _denoise(self, model, w: dict, steps: int, attn: str) -> dict:
        torch = self.torch
        kw, _ = denoise_inputs(torch, self.pipe, model, w, self.dtype, self.device)
        restore = None
        ctx = None
        if attn == "eager":
            if hasattr(model, "set_default_attn_processor") and "UNet" in type(model).__name__:
                restore = dict(model.attn_processors)
                model.set_default_attn_processor()  # AttnProcessor: baddbmm scores + softmax
            else:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                ctx = sdpa_kernel([SDPBackend.MATH])  # what set_attention_backend("_native_math") selects
        times = []
        try:
            if ctx is not None:
                ctx.__enter__()
            with torch.inference_mode():
                for _ in range(steps):
                    self.mem.sync()
                    t = time.perf_counter()
                    model(**kw)
                    self.mem.sync()
                    times.append(round(time.perf_counter() - t, 4))
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
            if restore is not None:
                model.set_attn_processor(restore)
        return {"step_times_s": times, "seconds_per_step": times[-1] if times else None}

    def _decode(self, vae, w: dict, run: dict) -> dict:
        torch = self.torch
        defaults = self.pipe.get("defaults") or {}
        vsf = int(defaults.get("vae_scale_factor") or 8)
        ch = int(_get(vae.config, "latent_channels", defaults.get("latent_channels", 4)))
        B = int(w.get("batch", 1))
        shape = [B, ch, 2 * (int(w["height"]) // (vsf * 2)), 2 * (int(w["width"]) // (vsf * 2))]
        temporal = "Temporal" in type(vae).__name__
        if temporal:
            chunk = int(w.get("decode_chunk") or defaults.get("decode_chunk_size") or 8)
            shape = [chunk, ch, shape[2], shape[3]]
        # SDXL-style pipelines: "make sure the VAE is in float32 mode, as it overflows in float16"
        upcast = bool(defaults.get("vae_upcast_on_decode")) and next(vae.parameters()).dtype == torch.float16 \
            and bool(_get(vae.config, "force_upcast", False))
        if upcast:
            vae.to(dtype=torch.float32)
        vdt = next(vae.parameters()).dtype
        if run.get("vae_tiling") and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
        if run.get("vae_slicing") and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        try:
            z = torch.randn(*shape, device=self.device, dtype=vdt)
            with torch.inference_mode():
                if temporal:
                    vae.decode(z, num_frames=shape[0], return_dict=False)
                else:
                    vae.decode(z, return_dict=False)
        finally:
            if run.get("vae_tiling") and hasattr(vae, "disable_tiling"):
                vae.disable_tiling()
            if run.get("vae_slicing") and hasattr(vae, "disable_slicing"):
                vae.disable_slicing()
            if upcast:
                vae.to(dtype=torch.float16)
        return {"inputs": {"latents": {"shape": shape, "dtype": str(vdt).replace("torch.", "")}},
                "vae_upcast": upcast}

    # ------------------------------------------------------------------ one setup
    def run_setup(self, setup: dict, last: bool = False) -> None:
        name = setup["name"]
        need = float(setup.get("est_s", 10))
        if self.time_left() < need:
            self.rec.write({**self.head, "type": "skipped", "setup": name, "reason": "deadline",
                            "time_left_s": round(self.time_left(), 1), "t_s": round(self.elapsed(), 3)})
            return
        notes: dict = {}

        def place():
            notes.update(self.apply(setup))
            return {"notes": notes}

        r = self.measure({"setup": name, "offload": setup.get("offload", "none"),
                          "layerwise_fp8": bool(setup.get("layerwise_fp8")), "torchao": setup.get("torchao"),
                          "component_dtype": setup.get("component_dtype") or {},
                          **{k: setup[k] for k in ("group_type", "use_stream", "record_stream") if k in setup}},
                         f"setup:{name}", place)
        self.rec.write({**self.head, "type": "placement", "setup": name,
                        "placement": {n: _device_bytes(m) for n, m in self.models.items()},
                        "allocated_bytes": self.mem.allocated(), "reserved_bytes": self.mem.reserved(),
                        "host_rss_bytes": self.host.current_bytes(), "host_detail": self.host.detail(),
                        "t_s": round(self.elapsed(), 3)})
        if not r.get("error"):
            for run in setup.get("runs") or []:
                if self.time_left() < float(run.get("est_s", setup.get("est_run_s", 2))):
                    self.rec.write({**self.head, "type": "skipped", "setup": name, "run": run, "reason": "deadline",
                                    "t_s": round(self.elapsed(), 3)})
                    continue
                try:
                    self.run(setup, run)
                except Exception as exc:  # noqa: BLE001 - record and go on with the next run
                    self.rec.write({**self.head, "type": "error", "setup": name, "run": run, "error": _err(exc),
                                    "traceback": traceback.format_exc()[-2500:]})
        t = time.perf_counter()
        try:
            self.undo(setup, rebuild=not last)
            self.rec.write({**self.head, "type": "undo", "setup": name, "time_s": round(time.perf_counter() - t, 3),
                            "allocated_bytes": self.mem.allocated(), "host_rss_bytes": self.host.current_bytes(),
                            "t_s": round(self.elapsed(), 3)})
        except Exception as exc:  # noqa: BLE001 - a broken state: stop this pipeline
            self.rec.write({**self.head, "type": "error", "setup": name, "phase": "undo", "fatal": True,
                            "error": _err(exc), "traceback": traceback.format_exc()[-2500:]})
            raise


def run_modes(torch, spec: dict, rec, sampler, t0) -> None:
    try:
        import diffusers
        import transformers

        diffusers.utils.logging.set_verbosity_error()
        transformers.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001
        pass
    stage = Stage(torch, spec, rec, sampler, t0)
    rec.write({**stage.head, "type": "env_extra", **_versions(), "host_rss_bytes": stage.host.current_bytes(),
               "host_detail": stage.host.detail(), "host_sampler_mode": stage.host.mode,
               "deadline_s": spec.get("deadline_s"), "t_s": round(stage.elapsed(), 3)})
    try:
        stage.build_all()
        setups = spec.get("setups") or []
        for i, setup in enumerate(setups):
            stage.run_setup(setup, last=i == len(setups) - 1)
    finally:
        stage.host.close()
