"""Non-PyTorch GPU memory of a process: CUDA context, kernel images, cuBLAS/cuDNN handles.

nvidia-smi's per-process number = this + torch.cuda.memory_reserved(). It is not computable
from first principles (driver internals, lazily loaded kernels), so it is measured per GPU
architecture and torch build and kept here with the measurement it came from.
"""

from __future__ import annotations

GIB = 1 << 30

# (compute capability major, torch major.minor) -> bytes, with provenance.
MEASURED = {
    (9, "2.11"): {
        "context_bytes": 545_259_520,
        "process_overhead_bytes": int(0.680 * GIB),
        "short": "measured on H100 + torch 2.11.0+cu130 (calibration/raw/llm-h100-a.jsonl)",
        "source": "calibration/raw/llm-h100-a.jsonl: H100 80GB HBM3, driver 580.159.04, torch 2.11.0+cu130, "
                  "transformers 5.17.0. 'context' record = 0.508 GiB after torch.empty(1); NVML process bytes minus "
                  "torch reserved bytes over 23 workloads of 10 models ranged 0.670-0.701 GiB (lazily loaded "
                  "kernels grow it); 0.680 GiB is the value for one workload in a fresh process.",
    },
}
DEFAULT_KEY = (9, "2.11")


def process_overhead(cc: tuple[int, int] | None = None, torch_version: str | None = None) -> tuple[int, str]:
    """(bytes, provenance). Falls back to the nearest measurement and says so."""
    tv = ".".join((torch_version or "").split(".")[:2])
    key = (cc[0] if cc else None, tv)
    if key in MEASURED:
        m = MEASURED[key]
        return m["process_overhead_bytes"], m["short"]
    m = MEASURED[DEFAULT_KEY]
    return m["process_overhead_bytes"], m["short"] + "; not measured for this GPU / torch, used as is"
