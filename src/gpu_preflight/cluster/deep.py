"""--deep across GPUs: run the collective child (cluster/collective.py) with a timeout. The link
speeds its bus bandwidth is judged against live in compatibility/links.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any


def node_deep(backend: str | None = None, timeout_s: float = 120.0, megabytes: int = 256) -> dict[str, Any]:
    """Peer-to-peer matrix and all-reduce bandwidth across this node's GPUs (gloo: CPU processes)."""
    return run_collective(backend or "nccl", timeout_s=timeout_s, megabytes=megabytes)


def run_collective(backend: str, *, timeout_s: float, megabytes: int = 256, nnodes: int = 1, node_rank: int = 0,
                   master: str = "", procs: int = 0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="preflight-collective-") as tmp:
        out = os.path.join(tmp, "out.json")
        argv = [sys.executable, "-m", "gpu_preflight.cluster.collective", out, "--backend", backend,
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
