"""Measure the non-tensor GPU memory a PyTorch process pays: CUDA context, cuBLAS/cuBLASLt
workspaces, SDPA kernels, in steps, as NVML sees the process (what nvidia-smi shows).

Usage: python bench/cuda_overheads.py --out overheads.json
Each step prints: NVML process bytes, torch allocated, torch reserved.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def nvml_process_bytes(handle, pid: int) -> int | None:
    import pynvml

    for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
        if p.pid == pid:
            return int(p.usedGpuMemory or 0)
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args()
    import pynvml
    import torch

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    pid = os.getpid()
    used0 = pynvml.nvmlDeviceGetMemoryInfo(h).used
    steps = []

    def record(name: str) -> None:
        torch.cuda.synchronize()
        time.sleep(0.05)
        steps.append({"step": name, "nvml_process_bytes": nvml_process_bytes(h, pid),
                      "device_used_delta_bytes": pynvml.nvmlDeviceGetMemoryInfo(h).used - used0,
                      "allocated_bytes": torch.cuda.memory_allocated(), "reserved_bytes": torch.cuda.memory_reserved()})

    torch.cuda.init()
    torch.empty(1, device="cuda")
    record("context + 1-element tensor")
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    record("+ 32 MiB bf16 tensor")
    (a @ a).sum().item()
    record("+ first bf16 matmul (cuBLAS handle/workspace)")
    a32 = a.float()
    (a32 @ a32).sum().item()
    record("+ first fp32 matmul")
    q = torch.randn(1, 16, 2048, 128, device="cuda", dtype=torch.bfloat16)
    torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    record("+ first SDPA (flash) call")
    lin = torch.nn.Linear(4096, 4096, device="cuda", dtype=torch.bfloat16)
    lin(torch.randn(8, 4096, device="cuda", dtype=torch.bfloat16)).sum().item()
    record("+ first nn.Linear (cuBLASLt)")
    del a, a32, q, lin
    torch.cuda.empty_cache()
    record("after freeing + empty_cache")
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
            "driver": pynvml.nvmlSystemGetDriverVersion(),
            "env": {k: os.environ.get(k) for k in ("CUDA_MODULE_LOADING", "CUBLAS_WORKSPACE_CONFIG",
                                                   "PYTORCH_CUDA_ALLOC_CONF")}}
    for s in steps:
        print(f"{s['step']:<48} nvml {s['nvml_process_bytes'] or 0:>12,} dev {s['device_used_delta_bytes']:>12,} "
              f"alloc {s['allocated_bytes']:>12,} reserved {s['reserved_bytes']:>12,}")
    print(json.dumps(info))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"info": info, "steps": steps}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
