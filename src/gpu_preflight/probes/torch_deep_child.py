"""Run in a child process by `preflight doctor --deep`: import torch and exercise the GPU.

Prints one JSON object on stdout. Standard library + torch only; every step is guarded so a
failure is reported as data. This creates a CUDA context: only run when the user asks.
"""

import json
import sys
import time
import traceback
import warnings


def step(out, key, fn):
    try:
        out[key] = {"value": fn()}
    except BaseException as exc:  # noqa: BLE001
        out[key] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:400]}"}


def main():
    out = {}
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            import torch
        except BaseException as exc:  # noqa: BLE001
            print(json.dumps({"import_error": f"{type(exc).__name__}: {exc}"}))
            return
        out["import_s"] = round(time.perf_counter() - t0, 3)
        out["version"] = torch.__version__
        out["cuda"] = torch.version.cuda
        step(out, "cudnn_version", lambda: torch.backends.cudnn.version())
        step(out, "is_available", torch.cuda.is_available)
        step(out, "device_count", torch.cuda.device_count)
        step(out, "arch_list", torch.cuda.get_arch_list)
        devices = []
        count = out["device_count"].get("value") or 0
        for i in range(count):
            dev = {"index": i}
            step(dev, "name", lambda i=i: torch.cuda.get_device_name(i))
            step(dev, "capability", lambda i=i: "%d.%d" % torch.cuda.get_device_capability(i))
            step(dev, "smoke", lambda i=i: smoke(torch, i))
            devices.append(dev)
        out["devices"] = devices
        if count:
            step(out, "sdpa_backends", lambda: sdpa_backends(torch))
        out["extensions"] = import_extensions()
    out["warnings"] = [str(w.message)[:400] for w in caught]
    out["total_s"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(out))


def smoke(torch, index):
    """A small matmul per dtype against a float64 CPU reference: relative error or the error text."""
    results = {}
    device = torch.device("cuda", index)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(256, 256, generator=gen, dtype=torch.float64)
    b = torch.randn(256, 256, generator=gen, dtype=torch.float64)
    ref = a @ b
    for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                              ("fp16", torch.float16, False), ("bf16", torch.bfloat16, False)):
        prev = torch.backends.cuda.matmul.allow_tf32
        try:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            got = (a.to(device, dtype) @ b.to(device, dtype)).double().cpu()
            err = float((got - ref).norm() / ref.norm())
            results[name] = {"ok": err == err and err < 5e-2, "rel_error": err}
        except BaseException as exc:  # noqa: BLE001
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
    return results


EXTENSION_MODULES = {"torchvision": "torchvision", "torchaudio": "torchaudio", "xformers": "xformers.ops",
                     "flash-attn": "flash_attn", "vllm": "vllm._C", "bitsandbytes": "bitsandbytes"}


def import_extensions():
    """Import each installed compiled extension (after torch): 'undefined symbol' shows here."""
    import importlib
    import importlib.util

    res = {}
    for dist, module in EXTENSION_MODULES.items():
        if importlib.util.find_spec(module.split(".")[0]) is None:
            continue
        try:
            importlib.import_module(module)
            res[dist] = {"ok": True}
        except BaseException as exc:  # noqa: BLE001 - report, never crash the probe
            res[dist] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:400]}
    return res


def sdpa_backends(torch):
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return {"error": "torch.nn.attention.sdpa_kernel needs torch >= 2.3"}
    import torch.nn.functional as F

    results = {}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            results[name.lower()] = {"ok": False, "error": "not in this torch"}
            continue
        q = torch.randn(1, 8, 128, 64, device="cuda", dtype=torch.float16)
        try:
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(q, q, q)
            torch.cuda.synchronize()
            results[name.lower()] = {"ok": True}
        except BaseException as exc:  # noqa: BLE001
            results[name.lower()] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
    return results


if __name__ == "__main__":
    try:
        main()
    except BaseException:  # noqa: BLE001
        print(json.dumps({"crash": traceback.format_exc()[-2000:]}))
        sys.exit(0)
