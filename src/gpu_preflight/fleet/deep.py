"""--deep across GPUs: run the collective child (fleet/collective.py) with a timeout, and the link
speed its bus bandwidth is judged against.

Expected per-direction link bandwidth: NVLink from NVIDIA's product pages (total NVLink bandwidth
per GPU counts both directions, so one direction is half), PCIe from the link generation and width
NVML reports (per lane and direction: 0.985 GB/s Gen3, 1.969 Gen4, 3.938 Gen5, after 128b/130b
encoding; PCI-SIG). An all-reduce reaching under half of it is reported as slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

NVLINK_TOTAL_GB_S = {  # per GPU, both directions
    "H100 SXM": (900, "https://www.nvidia.com/en-us/data-center/h100/"),
    "H200": (900, "https://www.nvidia.com/en-us/data-center/h200/"),
    "GH200": (900, "https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/"),
    "A100 SXM": (600, "https://www.nvidia.com/en-us/data-center/a100/"),
    "B200": (1800, "https://www.nvidia.com/en-us/data-center/dgx-b200/"),
}
PCIE_LANE_GB_S = {3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}  # per direction, after encoding
SLOW_FRACTION = 0.5


def node_deep(backend: str | None = None, timeout_s: float = 120.0, megabytes: int = 256) -> dict[str, Any]:
    """Peer-to-peer matrix and all-reduce bandwidth across this node's GPUs (gloo: CPU processes)."""
    return run_collective(backend or "nccl", timeout_s=timeout_s, megabytes=megabytes)


def run_collective(backend: str, *, timeout_s: float, megabytes: int = 256, nnodes: int = 1, node_rank: int = 0,
                   master: str = "", procs: int = 0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="preflight-collective-") as tmp:
        out = os.path.join(tmp, "out.json")
        argv = [sys.executable, "-m", "gpu_preflight.fleet.collective", out, "--backend", backend,
                "--megabytes", str(megabytes), "--nnodes", str(nnodes), "--node-rank", str(node_rank),
                "--timeout-s", str(max(timeout_s - 5, 5))]
        if master:
            argv += ["--master", master]
        if procs:
            argv += ["--procs", str(procs)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False,  # noqa: S603
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return {"backend": backend, "error": f"all-reduce did not finish within {timeout_s:g} s (hung "
                                                 f"collective: check NCCL_DEBUG=INFO output, P2P and network)",
                    "timed_out": True}
        except OSError as exc:
            return {"backend": backend, "error": f"cannot start the collective test: {exc}"}
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"backend": backend, "error": "collective test failed: " + " | ".join(tail)[:500]}
        if node_rank != 0:
            return {"backend": backend, "node_rank": node_rank, "done": True}
        try:
            with open(out, encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError) as exc:
            return {"backend": backend, "error": f"collective test wrote no result ({exc})"}


def expected_link_gb_s(gpu_name: str | None, nvlink_active: int, pcie_gen: int | None,
                       pcie_width: int | None) -> tuple[float | None, str]:
    """(per-direction GB/s, what it is) for the link an intra-node all-reduce should run at."""
    name = (gpu_name or "").upper()
    if nvlink_active:
        for key, (total, url) in NVLINK_TOTAL_GB_S.items():
            parts = key.upper().split()
            if all(p in name for p in parts):
                return total / 2, f"NVLink, {total} GB/s per GPU both directions ({url})"
    if pcie_gen in PCIE_LANE_GB_S and pcie_width:
        return PCIE_LANE_GB_S[pcie_gen] * pcie_width, f"PCIe Gen{pcie_gen} x{pcie_width}"
    return None, "link speed unknown"
