"""Child process of `preflight measure`: build a model on the GPU and record memory per phase.

Usage: python -m gpu_preflight.measurement.child SPEC.json OUT.jsonl

SPEC: {"model": {"id", "config"}, "dtype", "attn", "workloads": [{"name", "batch", "input_len",
"output_len"}], "device_index", "weights_path"}; diffusion pipelines (model.kind != "llm"): see
diffusion_child.py ("device": "cpu" runs them without a GPU, for tests). Weights are random
(memory does not depend on their values) unless weights_path names a local folder. No code from
a hub is ever run: configs are instantiated with transformers' own classes only (trust_remote_code
stays off).
Every finished phase is appended to OUT at once (flushed), so a crash keeps what was measured.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

MIB = 1 << 20


class Recorder:
    def __init__(self, path: str):
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())


class NullSampler:
    """Stands in for the NVML sampler when measuring on the CPU (tests): reports 0."""

    mode = "none"

    def reset(self) -> None:
        pass

    def peak_bytes(self) -> int:
        return 0

    def current_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


def environment(torch) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    import pynvml

    pynvml.nvmlInit()
    return {"gpu": torch.cuda.get_device_name(), "capability": "%d.%d" % torch.cuda.get_device_capability(),
            "gpu_memory_total_bytes": torch.cuda.get_device_properties(0).total_memory,
            "driver": pynvml.nvmlSystemGetDriverVersion(), "cuda": torch.version.cuda,
            "torch": torch.__version__, "transformers": v("transformers"), "diffusers": v("diffusers"),
            "accelerate": v("accelerate"), "python": sys.version.split()[0],
            "cudnn": torch.backends.cudnn.version(),
            "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF")}


def text_config(config: dict) -> dict:
    """Multimodal checkpoints (Gemma 3 4B+...) measured without images: their language model only."""
    if "text_config" in config and isinstance(config["text_config"], dict):
        tc = dict(config["text_config"])
        tc.setdefault("model_type", config.get("model_type", "") + "_text")
        return tc
    return config


# which transformers Auto class builds each kind of model (estimators/arch.model_kind names the kind)
AUTO_CLASS = {"llm": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM",
              "speech_seq2seq": "AutoModelForSpeechSeq2Seq", "vlm": "AutoModelForImageTextToText"}


def model_kind(spec: dict) -> str:
    """llm (decoder; a multimodal config without images measures its text model), seq2seq,
    speech_seq2seq or vlm (a multimodal config measured with images)."""
    from gpu_preflight.estimators.arch import model_kind as kind_of

    kind = kind_of(spec["model"]["config"])
    if kind == "vlm" and not any(w.get("images") for w in spec.get("workloads") or [spec.get("workload") or {}]):
        return "llm"
    return kind


def build_model(torch, spec: dict):
    """The model of spec["model"]["config"] with random weights on the spec's device (transformers'
    own classes; no remote code). Falls back to eager attention when the architecture has no SDPA."""
    import transformers
    from transformers import AutoConfig

    kind = model_kind(spec)
    cfg_dict = dict(spec["model"]["config"])
    if kind == "llm":
        cfg_dict = text_config(cfg_dict)
    cfg_dict.pop("quantization_config", None)
    model_type = cfg_dict.pop("model_type")
    for k in ("architectures", "auto_map", "transformers_version", "_name_or_path"):
        cfg_dict.pop(k, None)
    cfg = AutoConfig.for_model(model_type, **cfg_dict)
    dtype = getattr(torch, spec.get("dtype", "bfloat16"))
    kwargs = {"attn_implementation": spec.get("attn", "sdpa")}
    major = int(transformers.__version__.split(".")[0])
    kwargs["dtype" if major >= 5 else "torch_dtype"] = dtype
    device = "cpu" if spec.get("device") == "cpu" else "cuda"
    auto_cls = getattr(transformers, AUTO_CLASS[kind])
    try:
        return _build(torch, auto_cls, cfg, spec, kwargs, device)
    except ValueError as exc:
        # BLOOM, GPT-J, Mamba...: "does not support an attention implementation through
        # scaled_dot_product_attention": use the implementation the model has, and say so
        if "attention implementation" not in str(exc) or kwargs["attn_implementation"] == "eager":
            raise
        print(f"note: {model_type} has no {kwargs['attn_implementation']} attention in transformers "
              f"{transformers.__version__}; measuring with eager", file=sys.stderr)
        kwargs["attn_implementation"] = "eager"
        return _build(torch, auto_cls, cfg, spec, kwargs, device)


build_llm = build_model  # the name earlier callers used


def _build(torch, auto_cls, cfg, spec: dict, kwargs: dict, device: str):
    if spec.get("weights_path"):
        return auto_cls.from_pretrained(spec["weights_path"], device_map={"": 0}, **kwargs)
    with torch.device(device):
        model = auto_cls.from_config(cfg, **kwargs)
    return model.eval()


def _vocab(model) -> int:
    c = model.config
    return (c.get_text_config() if hasattr(c, "get_text_config") else c).vocab_size


def generation_inputs(torch, model, spec: dict, w: dict) -> dict:
    """Keyword arguments of model.generate() for workload `w`: random token ids (and for the
    other kinds the encoder input or the images, see measurement/multimodal_inputs.py)."""
    kind = model_kind({**spec, "workloads": [w]})
    dev = model.device
    gen = torch.Generator(device=dev.type).manual_seed(0)
    if kind in ("seq2seq", "speech_seq2seq", "vlm"):
        from gpu_preflight.measurement.multimodal_inputs import inputs_for

        return inputs_for(torch, model, kind, w, gen)
    vocab = _vocab(model)
    ids = torch.randint(10, max(vocab - 10, 11), (w["batch"], w["input_len"]), device=dev, generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def generate(model, inputs: dict, new_tokens: int) -> None:
    """model.generate, greedy, exactly `new_tokens` tokens. Whisper's own generate() needs a processor's
    generation config (languages, timestamps); on one 30 s window it runs GenerationMixin.generate, so
    that is called directly ("_plain_generate")."""
    kwargs = {k: v for k, v in inputs.items() if not k.startswith("_")}
    fn = model.generate
    if inputs.get("_plain_generate"):
        from transformers.generation.utils import GenerationMixin

        def fn(**kw):
            return GenerationMixin.generate(model, **kw)
    fn(**kwargs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)


class _NoCuda:
    """torch.cuda's statistics on a CPU-only dry run (tests): every figure is 0."""

    @staticmethod
    def synchronize() -> None:
        pass

    reset_peak_memory_stats = empty_cache = synchronize

    @staticmethod
    def memory_allocated() -> int:
        return 0

    memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated


def _cu(torch):
    return torch.cuda if torch.cuda.is_available() else _NoCuda


def snapshot(torch, sampler, t0) -> dict:
    _cu(torch).synchronize()
    return {"allocated_bytes": _cu(torch).memory_allocated(), "reserved_bytes": _cu(torch).memory_reserved(),
            "process_bytes": sampler.current_bytes(), "t_s": round(time.perf_counter() - t0, 3)}


def run_phase(torch, sampler, rec, base: dict, name: str, fn) -> dict:
    _cu(torch).synchronize()
    before = {"allocated_bytes": _cu(torch).memory_allocated(), "reserved_bytes": _cu(torch).memory_reserved(),
              "process_bytes": sampler.current_bytes()}
    _cu(torch).reset_peak_memory_stats()
    sampler.reset()
    t = time.perf_counter()
    out = {**base, "type": "phase", "phase": name, "before": before}
    try:
        fn()
        _cu(torch).synchronize()
        out["oom"] = False
    except torch.cuda.OutOfMemoryError as exc:
        out["oom"] = True
        out["error"] = str(exc).splitlines()[0][:300]
    out["time_s"] = round(time.perf_counter() - t, 3)
    out["peak_allocated_bytes"] = _cu(torch).max_memory_allocated()
    out["peak_reserved_bytes"] = _cu(torch).max_memory_reserved()
    time.sleep(0.02)
    out["peak_process_bytes"] = sampler.peak_bytes()
    out["sampler_mode"] = sampler.mode
    rec.write(out)
    return out


def run_llm(torch, spec, rec, sampler, t0) -> None:
    """Decoders, encoder-decoders and vision-language models: load, then per workload a one-token
    generate (prefill) and the full generate."""
    model_id = spec["model"].get("id")
    t = time.perf_counter()
    model = build_model(torch, spec)
    load = {"type": "phase", "phase": "load", "model": model_id, "time_s": round(time.perf_counter() - t, 3),
            **snapshot(torch, sampler, t0), "peak_allocated_bytes": _cu(torch).max_memory_allocated(),
            "peak_reserved_bytes": _cu(torch).max_memory_reserved(), "peak_process_bytes": sampler.peak_bytes(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "buffer_bytes": sum(b.numel() * b.element_size() for b in model.buffers()),
            "attn_used": getattr(model.config, "_attn_implementation", None), "model_class": type(model).__name__}
    rec.write(load)
    for w in spec["workloads"]:
        base = {"model": model_id, "workload": w, "dtype": spec.get("dtype", "bfloat16"),
                "attn": spec.get("attn", "sdpa"), "attn_used": load["attn_used"]}
        inputs = generation_inputs(torch, model, spec, w)
        shapes = {k: list(v.shape) for k, v in inputs.items() if hasattr(v, "shape")}
        if isinstance(inputs.get("_image_tokens"), int):
            shapes["image_tokens"] = inputs["_image_tokens"]

        def run(n):
            with torch.inference_mode():
                generate(model, inputs, n)

        _cu(torch).empty_cache()
        run_phase(torch, sampler, rec, {**base, "input_shapes": shapes}, "prefill", lambda: run(1))
        _cu(torch).empty_cache()
        r = run_phase(torch, sampler, rec, base, "generate", lambda: run(w["output_len"]))
        del inputs
        if r.get("oom"):
            _cu(torch).empty_cache()


def main(argv: list[str]) -> int:
    spec_path, out_path = argv[1], argv[2]
    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    rec = Recorder(out_path)
    t0 = time.perf_counter()
    try:
        import torch
    except ImportError as exc:
        rec.write({"type": "error", "error": f"torch is not installed: {exc}"})
        return 2
    if spec.get("device", "cuda") == "cpu":  # tests without a GPU: no NVML, no CUDA statistics
        sampler = NullSampler()
        rec.write({"type": "env", "device": "cpu", "torch": torch.__version__, "python": sys.version.split()[0],
                   "import_s": round(time.perf_counter() - t0, 3)})
    elif not torch.cuda.is_available():
        rec.write({"type": "error", "error": "torch.cuda.is_available() is False: no usable GPU"})
        return 2
    else:
        from gpu_preflight.measurement.nvml_sampler import ProcessMemorySampler

        torch.cuda.set_device(spec.get("device_index", 0))
        sampler = ProcessMemorySampler(spec.get("device_index", 0))
        rec.write({"type": "env", **environment(torch), "import_s": round(time.perf_counter() - t0, 3)})
        torch.empty(1, device="cuda")
        torch.cuda.synchronize()
        time.sleep(0.05)
        rec.write({"type": "phase", "phase": "context", **snapshot(torch, sampler, t0)})
    try:
        kind = spec["model"].get("kind", "llm")
        if kind == "llm":
            run_llm(torch, spec, rec, sampler, t0)
        else:
            from gpu_preflight.measurement.diffusion_child import run_diffusion

            run_diffusion(torch, spec, rec, sampler, t0)
    except torch.cuda.OutOfMemoryError as exc:
        rec.write({"type": "error", "oom": True, "error": str(exc).splitlines()[0][:400],
                   "allocated_bytes": torch.cuda.memory_allocated()})
        return 3
    except Exception as exc:  # noqa: BLE001
        rec.write({"type": "error", "error": f"{type(exc).__name__}: {exc}"[:600],
                   "traceback": traceback.format_exc()[-3000:]})
        return 4
    finally:
        sampler.close()
    rec.write({"type": "done", "t_s": round(time.perf_counter() - t0, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
