"""Record every tensor allocation and free of a transformers forward / generate() on the CPU.

Checks the activation replay of estimators/engines/transformers.py without a GPU: the model is built
from a config.json (random weights, transformers' own classes, no remote code) with the same builder
`preflight measure` uses (measurement/child.py), then generate() runs under a TorchDispatchMode that sees
the output of every aten op. A new storage is an allocation; its release is seen through a weak
reference to the storage (torch keeps one Python object per storage for as long as the storage
lives, views included), so the trace follows what the caching allocator would be asked for on a GPU.
Not seen: scratch memory that a kernel allocates internally and frees before returning (CPU and CUDA
kernels differ there: cuBLAS workspaces, flash-attention's own buffers), and allocator rounding.

Usage:
  python bench/trace_allocations.py CONFIG.json|catalog-id [--batch 4] [--input-len 512] [--output-len 4]
         [--dtype bfloat16] [--attn sdpa] [--layers N] [--images N] [--image-size WxH] [--audio-seconds S]
         [--top 15] [--where] [--json]
Prints the activation peak (bytes live above the weights, the KV cache included), the peak of the
first forward (prefill), and the live tensors at the peak grouped by the op (and with --where the
line of transformers code) that made them. Library use: `trace(fn)` -> Trace.

Example (the figures tests/test_archs.py compares the estimator with):
  python bench/trace_allocations.py '{"model_type": "gpt2", "n_embd": 1024, "n_layer": 2, "n_head": 16,
      "vocab_size": 50257}' --batch 4 --input-len 512 --output-len 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import weakref
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
MIB = 1 << 20


@dataclass
class Trace:
    events: list[tuple[str, str, int, int, str]] = field(default_factory=list)  # (alloc|free, op, bytes, live, where)
    peak_bytes: int = 0
    peak_index: int = 0
    peak_live: list[dict] = field(default_factory=list)  # tensors live at the peak
    marks: dict[str, int] = field(default_factory=dict)  # name -> peak bytes up to that mark

    def summary(self, top: int = 15) -> list[tuple[str, int, int]]:
        """(op or code line, count, bytes) of the tensors live at the peak, largest first."""
        groups: dict[str, list[int]] = {}
        for t in self.peak_live:
            g = groups.setdefault(t["where"] or t["op"], [0, 0])
            g[0] += 1
            g[1] += t["nbytes"]
        return sorted(((k, c, b) for k, (c, b) in groups.items()), key=lambda r: -r[2])[:top]


def _where() -> str:
    """The innermost line of transformers (or gpu_preflight) code on the stack."""
    for fr in reversed(traceback.extract_stack(limit=40)):
        f = fr.filename.replace("\\", "/")
        if "/transformers/" in f and "/utils/" not in f:
            return f"{f.split('/transformers/')[-1]}:{fr.lineno} {fr.line or ''}".strip()[:140]
    return ""


def trace(fn, where: bool = False) -> Trace:
    """Run fn() and record the storages its aten ops create and release."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    tr = Trace()
    live: dict[int, dict] = {}
    state = {"live": 0}

    def freed(key: int) -> None:
        info = live.pop(key, None)
        if info is not None:
            state["live"] -= info["nbytes"]
            tr.events.append(("free", info["op"], info["nbytes"], state["live"], info["where"]))

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            flat = out if isinstance(out, (tuple, list)) else (out,)
            for t in flat:
                if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                    continue
                s = t.untyped_storage()
                key, nbytes = id(s), s.nbytes()
                if nbytes == 0:
                    continue
                if key in live:  # a view, an in-place op, or a resize_ of a traced storage
                    delta = nbytes - live[key]["nbytes"]
                    if delta:
                        live[key]["nbytes"] = nbytes
                        state["live"] += delta
                        tr.events.append(("alloc" if delta > 0 else "free", str(func), abs(delta), state["live"],
                                          live[key]["where"]))
                    continue
                if any(isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() == s.data_ptr()
                       for a in _flat_args(args, kwargs)):
                    continue  # in place / view of a storage that existed before the trace (weights, inputs)
                live[key] = {"op": str(func).replace("aten.", ""), "nbytes": nbytes, "shape": tuple(t.shape),
                             "dtype": str(t.dtype).replace("torch.", ""), "where": _where() if where else ""}
                state["live"] += nbytes
                tr.events.append(("alloc", live[key]["op"], nbytes, state["live"], live[key]["where"]))
                weakref.finalize(s, freed, key)
                if state["live"] > tr.peak_bytes:
                    tr.peak_bytes = state["live"]
                    tr.peak_index = len(tr.events)
                    tr.peak_live = [dict(v) for v in live.values()]
            return out

    import gc

    gc.collect()
    with Mode():
        fn(tr)
    gc.collect()
    return tr


def _flat_args(args, kwargs):
    for a in list(args) + list((kwargs or {}).values()):
        if isinstance(a, (list, tuple)):
            yield from a
        else:
            yield a


def load_config(text: str) -> tuple[str, dict]:
    """(name, config) from inline JSON, a config.json path, or a catalog id."""
    if text.lstrip().startswith("{"):
        cfg = json.loads(text)
        return cfg.get("model_type", "model"), cfg
    if os.path.exists(text):
        with open(text, encoding="utf-8") as fh:
            return os.path.basename(os.path.dirname(os.path.abspath(text))) or text, json.load(fh)
    from gpu_preflight.models.catalog import load_catalog

    return text, dict(load_catalog().find(text).config)


def run(config: dict, workload: dict, dtype: str = "bfloat16", attn: str = "sdpa", where: bool = False,
        extra: dict | None = None) -> dict:
    """Trace generate() of the model built from `config` on the CPU; figures in bytes."""
    import torch

    from gpu_preflight.measurement import child

    torch.manual_seed(0)
    spec = {"model": {"id": "trace", "config": config, **(extra or {})}, "dtype": dtype, "attn": attn,
            "device": "cpu", "workloads": [workload]}
    model = child.build_model(torch, spec)
    inputs = child.generation_inputs(torch, model, spec, workload)
    first: dict[str, int] = {}

    def go(tr: Trace) -> None:
        calls = {"n": 0}

        def pre_hook(_mod, _args, _kwargs):
            calls["n"] += 1
            if calls["n"] == 2 and "prefill" not in first:
                first["prefill"] = tr.peak_bytes  # the peak up to the start of the first decode step

        h = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
        try:
            with torch.inference_mode():
                child.generate(model, inputs, workload["output_len"])
        finally:
            h.remove()

    tr = trace(go, where=where)
    return {"activation_peak_bytes": tr.peak_bytes, "prefill_peak_bytes": first.get("prefill", tr.peak_bytes),
            "attn_used": getattr(model.config, "_attn_implementation", None), "model_class": type(model).__name__,
            "trace": tr}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="inline JSON config, a config.json path, or a catalog id")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=4)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--layers", type=int, help="override the number of layers (keeps big configs cheap)")
    ap.add_argument("--images", type=int, default=None, help="vision-language models: images per prompt")
    ap.add_argument("--image-size", default=None, help="vision-language models: WxH of each image")
    ap.add_argument("--audio-seconds", type=float, default=None, help="speech models: seconds of audio")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--where", action="store_true", help="group the live set by transformers code line (slower)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    name, cfg = load_config(args.model)
    if args.layers:
        for k in ("num_hidden_layers", "n_layer", "n_layers", "num_layers"):
            if k in cfg:
                cfg[k] = args.layers
    wl = {"batch": args.batch, "input_len": args.input_len, "output_len": args.output_len}
    for k in ("images", "image_size", "audio_seconds"):
        if getattr(args, k) is not None:
            wl[k] = getattr(args, k)
    res = run(cfg, wl, args.dtype, args.attn, where=args.where)
    tr = res.pop("trace")
    if args.json:
        print(json.dumps({**res, "model": name, "workload": wl, "live_at_peak": tr.summary(args.top)}))
        return 0
    print(f"{name} ({res['model_class']}, attention {res['attn_used']}), {wl}")
    print(f"activation peak {tr.peak_bytes / MIB:.2f} MiB  (prefill {res['prefill_peak_bytes'] / MIB:.2f} MiB; "
          f"{len(tr.events)} events)")
    for what, count, nbytes in tr.summary(args.top):
        print(f"  {nbytes / MIB:10.2f} MiB  x{count:<4} {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
