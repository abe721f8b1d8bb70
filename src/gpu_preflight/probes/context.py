"""What probes may touch: environment variables, files, subprocesses, NVML, libcuda.

Tests build a ProbeContext with a fake filesystem root, a scripted runner and a fake NVML
module, so every probe can be replayed on a CPU-only machine. Probes never modify os.environ.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str


class ProbeTimeout(Exception):
    def __init__(self, what: str, timeout_s: float):
        super().__init__(f"{what} timed out after {timeout_s:g} s")


def run_subprocess(argv: list[str], timeout_s: float, env: Mapping[str, str] | None = None) -> RunResult:
    """Run argv (no shell) with a timeout; raises ProbeTimeout or OSError."""
    try:
        proc = subprocess.run(  # noqa: S603 - argv list, never a shell
            argv,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProbeTimeout(" ".join(argv[:2]), timeout_s) from exc
    return RunResult(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class ProbeContext:
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    root: str = "/"
    run: Callable[..., RunResult] = run_subprocess
    nvml: Any = None  # a pynvml-like module; None means "import pynvml"
    cuda_driver: Any = None  # callable returning the libcuda probe dict; None means ctypes
    timeout_s: float = 5.0

    def path(self, p: str) -> str:
        return os.path.join(self.root, p.lstrip("/")) if self.root != "/" else p

    def read_text(self, p: str, limit: int = 1 << 20) -> str:
        with open(self.path(p), encoding="utf-8", errors="replace") as fh:
            return fh.read(limit)

    def exists(self, p: str) -> bool:
        return os.path.exists(self.path(p))

    def listdir(self, p: str) -> list[str]:
        return sorted(os.listdir(self.path(p)))

    def realpath(self, p: str) -> str:
        real = os.path.realpath(self.path(p))
        if self.root != "/" and real.startswith(self.root.rstrip("/")):
            real = "/" + real[len(self.root.rstrip("/")):].lstrip("/")
        return real

    def which(self, name: str) -> str | None:
        search = self.environ.get("PATH", "")
        if self.root == "/":
            return shutil.which(name, path=search)
        for d in search.split(os.pathsep):
            cand = os.path.join(d, name)
            if d and os.access(self.path(cand), os.X_OK):
                return cand
        return None


def call_with_timeout(fn: Callable[[], Any], timeout_s: float, name: str,
                      describe: Callable[[BaseException], str]) -> tuple[Any, str | None]:
    """Run fn() in a daemon thread (a wedged GPU or driver cannot hang the caller):
    (result, None), or (None, reason) when it raised (`describe(exc)`) or did not return in time."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = fn()
        except Exception as exc:  # noqa: BLE001 - becomes the reason
            box["error"] = describe(exc)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return None, f"NVML timed out after {timeout_s:g} s (GPU or driver not responding)"
    if "error" in box:
        return None, box["error"]
    return box["result"], None

