"""Child process of the training measurements: real training steps, memory per phase.

Usage: python -m gpu_preflight.measurement.train_child SPEC.json OUT.jsonl

SPEC: {"model": {"id", "config"}, "device": "cuda" | "cpu", "deadline_unix": float (optional),
       "cases": [{"name", "mode": "full" | "lora", "micro_batch", "seq_len", "grad_ckpt",
                  "optimizer", "mixed_precision", "param_dtype", "lora_rank", "lora_targets",
                  "steps"}]}

The model is built from its config with random weights on the device (transformers' own classes,
never code from a hub), wrapped with peft LoRA where a case asks for it, and trained for a few
steps the way transformers' Trainer does: the forward under torch.autocast when mixed precision
is on (the weights stay in the dtype they were loaded in), the loss taken from the output (the
output object is dropped at once), loss.backward(), optimizer.step(), zero_grad(set_to_none=True),
with torch's own optimizers. Cases sharing (param_dtype, mode) share one model; checkpointing-off
cases run before checkpointing-on ones (enable_input_require_grads stays on once set).

One JSON line per finished phase (forward, backward, optimizer of every step): torch's
max_memory_allocated / max_memory_reserved since the phase began, and NVML's per-process peak.
On the CPU (tests: --device cpu) a dispatch-mode tracker counts the bytes of live tensor storages
instead (the same quantity as max_memory_allocated, without the caching allocator).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
import weakref

from gpu_preflight.measurement.child import NullSampler, Recorder, text_config

PHASES = ("forward", "backward", "optimizer")


class LiveBytes:
    """CPU stand-in for torch.cuda.max_memory_allocated: every tensor an op returns is tracked by
    its storage until the storage is freed (TorchDispatchMode + weakref.finalize)."""

    def __init__(self, torch):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                        tracker.track(t)
                return out

        self.mode = Mode()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def track(self, t) -> None:
        st = t.untyped_storage()
        key = st.data_ptr()
        n = st.nbytes()
        if n == 0 or key in self.live:
            return
        self.live[key] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, key)

    def track_module(self, module) -> None:
        for t in list(module.parameters()) + list(module.buffers()):
            self.track(t)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def reset_peak(self) -> None:
        self.peak = self.current


class Device:
    """Memory statistics of the device: CUDA (torch + NVML) or the CPU tracker."""

    def __init__(self, torch, kind: str):
        self.torch, self.kind = torch, kind
        if kind == "cuda":
            from gpu_preflight.measurement.nvml_sampler import ProcessMemorySampler

            self.sampler = ProcessMemorySampler(torch.cuda.current_device())
            self.tracker = None
        else:
            self.sampler = NullSampler()
            self.tracker = LiveBytes(torch)

    def sync(self) -> None:
        if self.kind == "cuda":
            self.torch.cuda.synchronize()

    def allocated(self) -> int:
        return self.torch.cuda.memory_allocated() if self.kind == "cuda" else self.tracker.current

    def reserved(self) -> int:
        return self.torch.cuda.memory_reserved() if self.kind == "cuda" else self.tracker.current

    def reset_peaks(self) -> None:
        self.sync()
        if self.kind == "cuda":
            self.torch.cuda.reset_peak_memory_stats()
        else:
            self.tracker.reset_peak()
        self.sampler.reset()

    def peaks(self) -> dict:
        self.sync()
        if self.kind == "cuda":
            a, r = self.torch.cuda.max_memory_allocated(), self.torch.cuda.max_memory_reserved()
            time.sleep(0.01)
        else:
            a = r = self.tracker.peak
        return {"peak_allocated_bytes": a, "peak_reserved_bytes": r, "peak_process_bytes": self.sampler.peak_bytes()}

    def tracking(self):
        import contextlib

        return self.tracker.mode if self.tracker is not None else contextlib.nullcontext()

    def empty_cache(self) -> None:
        gc.collect()
        if self.kind == "cuda":
            self.torch.cuda.empty_cache()


def build_model(torch, config: dict, dtype_name: str, dev: Device):
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dict = text_config(dict(config))
    cfg_dict.pop("quantization_config", None)
    model_type = cfg_dict.pop("model_type")
    for k in ("architectures", "auto_map", "transformers_version", "_name_or_path", "torch_dtype", "dtype"):
        cfg_dict.pop(k, None)
    cfg = AutoConfig.for_model(model_type, **cfg_dict)
    dtype = getattr(torch, dtype_name)
    kwargs = {"attn_implementation": "sdpa"}
    major = int(transformers.__version__.split(".")[0])
    kwargs["dtype" if major >= 5 else "torch_dtype"] = dtype
    with dev.tracking(), torch.device(dev.kind), _skip_hf_init():
        model = AutoModelForCausalLM.from_config(cfg, **kwargs)
    if dev.tracker is not None:
        dev.tracker.track_module(model)
    return model


def _skip_hf_init():
    """Skip transformers' initialize_weights (its per-module init is slow on big models; torch's own
    layer constructors still give random values) but keep init_weights' tie_weights, so tied
    embeddings stay one tensor as in a real run."""
    import contextlib

    from transformers.modeling_utils import PreTrainedModel

    @contextlib.contextmanager
    def patch():
        orig = PreTrainedModel.initialize_weights
        PreTrainedModel.initialize_weights = lambda self: None
        try:
            yield
        finally:
            PreTrainedModel.initialize_weights = orig

    return patch()


def wrap_lora(model, case: dict, dev: Device):
    from peft import LoraConfig, get_peft_model

    targets = case.get("lora_targets") or "all-linear"
    if isinstance(targets, list) and targets == ["all-linear"]:
        targets = "all-linear"
    r = int(case.get("lora_rank", 16))
    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    with dev.tracking():
        pm = get_peft_model(model, cfg)
    if dev.tracker is not None:
        dev.tracker.track_module(pm)
    return pm


def make_optimizer(torch, params, name: str, device: str):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-5, fused=True)
    if name == "adamw_foreach":
        return torch.optim.AdamW(params, lr=1e-5, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-5, foreach=True)
    if name == "adafactor":
        return torch.optim.Adafactor(params, lr=1e-2, foreach=True)
    if name in ("adamw_8bit", "paged_adamw_8bit"):
        import bitsandbytes as bnb

        cls = bnb.optim.PagedAdamW8bit if name.startswith("paged") else bnb.optim.AdamW8bit
        return cls(params, lr=1e-5)
    raise ValueError(f"unknown optimizer {name}")


def sdpa_backend(torch, model, case: dict) -> str | None:
    """The SDPA kernel torch picks for this model's attention shapes (no mask, causal, GQA)."""
    try:
        c = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        b, t = case["micro_batch"], min(case["seq_len"], 256)
        dev = next(model.parameters()).device
        dt = torch.bfloat16 if case.get("mixed_precision", "bf16") != "no" else next(model.parameters()).dtype
        q = torch.empty(b, c.num_attention_heads, t, hd, device=dev, dtype=dt, requires_grad=True)
        k = torch.empty(b, c.num_key_value_heads, t, hd, device=dev, dtype=dt, requires_grad=True)
        gqa = c.num_key_value_heads != c.num_attention_heads
        choice = torch._fused_sdp_choice(q, k, k, None, 0.0, True, scale=None, enable_gqa=gqa)
        try:
            from torch.nn.attention import SDPBackend

            return SDPBackend(choice).name
        except Exception:  # noqa: BLE001
            return str(choice)
    except Exception as exc:  # noqa: BLE001
        return f"unknown: {type(exc).__name__}"


def run_case(torch, model, case: dict, dev: Device, rec: Recorder, base: dict, vocab: int) -> bool:
    """All steps of one case; returns False when it ran out of memory."""
    import contextlib

    params = [p for p in model.parameters() if p.requires_grad]
    if case.get("grad_ckpt"):
        model.gradient_checkpointing_enable()
    elif getattr(model, "is_gradient_checkpointing", False):
        model.gradient_checkpointing_disable()
    model.train()
    gen = torch.Generator(device=dev.kind).manual_seed(0)
    with dev.tracking():
        ids = torch.randint(10, max(vocab - 10, 11), (case["micro_batch"], case["seq_len"]), device=dev.kind,
                            generator=gen)
        labels = ids.clone()
    mp = case.get("mixed_precision", "bf16")
    ac_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mp)
    opt = None
    ok = True
    info = {**base, "case": case, "trainable_params": sum(p.numel() for p in params),
            "sdpa_backend": sdpa_backend(torch, model, case)}
    try:
        with dev.tracking():
            opt = make_optimizer(torch, params, case.get("optimizer", "adamw"), dev.kind)
        for step in range(int(case.get("steps", 2))):
            for phase in PHASES:
                dev.sync()
                before = {"allocated_bytes": dev.allocated(), "reserved_bytes": dev.reserved(),
                          "process_bytes": dev.sampler.current_bytes()}
                dev.reset_peaks()
                t = time.perf_counter()
                with dev.tracking():
                    if phase == "forward":
                        ctx = torch.autocast(dev.kind, dtype=ac_dtype) if ac_dtype else contextlib.nullcontext()
                        with ctx:
                            loss = model(input_ids=ids, labels=labels).loss
                    elif phase == "backward":
                        loss.backward()
                        loss_value = float(loss.detach().float())
                        del loss
                    else:
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                rec.write({**info, "type": "phase", "phase": phase, "step": step, "before": before,
                           "time_s": round(time.perf_counter() - t, 4), "oom": False, **dev.peaks(),
                           **({"loss": loss_value} if phase == "backward" else {})})
    except torch.cuda.OutOfMemoryError as exc:
        ok = False
        rec.write({**info, "type": "phase", "phase": "oom", "oom": True, "error": str(exc).splitlines()[0][:300]})
    except ImportError as exc:
        rec.write({**info, "type": "skip", "reason": f"{type(exc).__name__}: {exc}"[:300]})
    except Exception as exc:  # noqa: BLE001  (one case's failure must not lose the model's other cases)
        ok = False
        rec.write({**info, "type": "error", "error": f"{type(exc).__name__}: {exc}"[:600],
                   "traceback": traceback.format_exc()[-2000:]})
    finally:
        loss = None
        if opt is not None:
            opt.state.clear()
        del opt
        for p in model.parameters():
            p.grad = None
        dev.empty_cache()
    return ok


def groups(cases: list[dict]) -> list[tuple[tuple[str, str], list[dict]]]:
    """Cases sharing one model: (param dtype, full|lora); checkpointing off first."""
    out: dict[tuple[str, str], list[dict]] = {}
    for c in cases:
        out.setdefault((c.get("param_dtype", "bfloat16"), c.get("mode", "full")), []).append(c)
    return [(k, sorted(v, key=lambda c: bool(c.get("grad_ckpt")))) for k, v in out.items()]


def run(torch, spec: dict, rec: Recorder, dev: Device) -> None:
    model_id = spec["model"]["id"]
    deadline = spec.get("deadline_unix")
    for (dtype_name, mode), cases in groups(spec["cases"]):
        if deadline and time.time() > deadline:
            rec.write({"type": "skip", "model": model_id, "reason": "deadline", "group": [dtype_name, mode]})
            continue
        dev.empty_cache()
        t = time.perf_counter()
        before = dev.allocated()
        model = build_model(torch, spec["model"]["config"], dtype_name, dev)
        base = {"model": model_id, "param_dtype": dtype_name, "mode": mode}
        rec.write({**base, "type": "load", "time_s": round(time.perf_counter() - t, 3),
                   "allocated_bytes": dev.allocated() - before, "reserved_bytes": dev.reserved(),
                   "parameters": sum(p.numel() for p in model.parameters()),
                   "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
                   "buffer_bytes": sum(b.numel() * b.element_size() for b in model.buffers()),
                   "config": spec["model"]["config"]})
        vocab = model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config") \
            else model.config.vocab_size
        if mode == "lora":
            model = wrap_lora(model, cases[0], dev)
        for case in cases:
            if deadline and time.time() > deadline:
                rec.write({**base, "type": "skip", "case": case, "reason": "deadline"})
                continue
            run_case(torch, model, case, dev, rec, base, vocab)
        del model
        dev.empty_cache()


def environment(torch, kind: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    env = {"type": "env", "device": kind, "torch": torch.__version__, "python": sys.version.split()[0],
           "transformers": v("transformers"), "peft": v("peft"), "accelerate": v("accelerate"),
           "bitsandbytes": v("bitsandbytes"), "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF")}
    if kind == "cuda":
        from gpu_preflight.measurement.child import environment as cuda_env

        env.update(cuda_env(torch))
        env["type"] = "env"
    return env


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
    kind = spec.get("device", "cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        rec.write({"type": "error", "error": "torch.cuda.is_available() is False: no usable GPU"})
        return 2
    if kind == "cuda":
        torch.cuda.set_device(spec.get("device_index", 0))
    dev = Device(torch, kind)
    rec.write({**environment(torch, kind), "model": spec["model"]["id"], "import_s": round(time.perf_counter() - t0, 3)})
    if kind == "cuda":
        torch.empty(1, device="cuda")
        dev.sync()
        time.sleep(0.05)
        rec.write({"type": "context", "model": spec["model"]["id"], "allocated_bytes": dev.allocated(),
                   "process_bytes": dev.sampler.current_bytes()})
    try:
        run(torch, spec, rec, dev)
    except Exception as exc:  # noqa: BLE001
        rec.write({"type": "error", "model": spec["model"]["id"], "error": f"{type(exc).__name__}: {exc}"[:600],
                   "traceback": traceback.format_exc()[-3000:]})
        return 4
    finally:
        dev.sampler.close()
    rec.write({"type": "done", "model": spec["model"]["id"], "t_s": round(time.perf_counter() - t0, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
