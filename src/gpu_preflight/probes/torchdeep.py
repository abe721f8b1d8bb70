"""`--deep`: import torch in a child process (so a crash or hang cannot take us down)."""

from __future__ import annotations

import json
import os
import sys

from gpu_preflight.snapshots.field import Fact, known, unknown
from gpu_preflight.probes.context import ProbeContext, ProbeTimeout

SOURCE = "torch (subprocess)"


def probe_torch_deep(ctx: ProbeContext, python: str | None = None, timeout_s: float = 120.0) -> Fact:
    script = os.path.join(os.path.dirname(__file__), "torch_deep_child.py")
    argv = [python or sys.executable, script]
    try:
        res = ctx.run(argv, timeout_s)
    except ProbeTimeout as exc:
        return unknown(f"{exc} (importing torch or the GPU smoke test hung)", SOURCE)
    except OSError as exc:
        return unknown(f"could not start {argv[0]}: {exc}", SOURCE)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        return unknown(f"child exited {res.returncode} without a result: {tail[0][:300]}", SOURCE)
    try:
        data = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return unknown(f"child printed invalid JSON: {exc}", SOURCE)
    if "import_error" in data:
        return unknown(f"import torch failed: {data['import_error']}", SOURCE)
    if "crash" in data:
        return unknown(f"torch probe crashed: {data['crash'].strip().splitlines()[-1]}", SOURCE)
    return known(data, SOURCE)
