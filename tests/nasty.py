"""Run `preflight` on a nasty input and judge the outcome against the reliability bar (no tests here).

The bar (docs/reliability.md): every bad input ends within 15 s and 500 MiB with exit
3 and a one-line error (`preflight: error: ...`, then at most a `  hint:` line; argparse's usage
lines may come first), never "internal error" and never a traceback; a legal input ends with
0, 1 or 2 within the same bounds. Used by tests/test_reliability.py and bench/fuzz_long.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "fixtures" / "nasty"
TIME_LIMIT_S = 15.0
MEMORY_LIMIT_BYTES = 500 * 1024 * 1024


@dataclass
class Outcome:
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    peak_bytes: int | None  # traced Python allocations (in-process) or max RSS (subprocess)
    problems: list[str] = field(default_factory=list)


class _Timeout(Exception):
    pass


def load_manifest() -> list[dict[str, Any]]:
    return json.loads((CORPUS / "manifest.json").read_text())["cases"]


def case_argv(case: dict[str, Any], root: Path = CORPUS / "cases") -> list[str]:
    return [a.replace("{case}", str(root / case["id"])) for a in case["argv"]]


def run_inprocess(argv: list[str], time_limit_s: float = TIME_LIMIT_S) -> Outcome:
    """cli.main(argv) in this process, with SIGALRM as the time limit and tracemalloc's peak as
    the memory figure (Python allocations; the subprocess runner measures RSS)."""
    from gpu_preflight import cli

    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit_s)
    tracemalloc.start()
    t0 = time.monotonic()
    rc: int | None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(argv)
            except SystemExit as exc:  # argparse usage errors
                rc = exc.code if isinstance(exc.code, int) else 3
    except _Timeout:
        rc = None
    finally:
        seconds = time.monotonic() - t0
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return Outcome(rc, out.getvalue(), err.getvalue(), seconds, peak)


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


# A child's max RSS (getrusage / wait4) includes the memory of the process it was started from:
# Linux carries the old address space's high-water mark across fork (or vfork) and exec. So the
# children are started by a small helper process that starts once and stays small, never by the
# test process or the fuzzer (which grow).
_SPAWNER = r"""
import json, os, resource, subprocess, sys, time
for line in sys.stdin:
    req = json.loads(line)
    t0 = time.monotonic()
    with open(req["out"], "wb") as out, open(req["err"], "wb") as err:  # never held in this process
        proc = subprocess.Popen(req["argv"], stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=req["cwd"])
    try:
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (req["as_bytes"], req["as_bytes"]))
    except (AttributeError, OSError):
        pass
    deadline = t0 + req["limit_s"]
    timed_out = False
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            _, status, ru = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(0.005)
    sys.stdout.write(json.dumps({"rc": None if timed_out else os.waitstatus_to_exitcode(status),
                                 "seconds": time.monotonic() - t0, "maxrss": ru.ru_maxrss * 1024}) + "\n")
    sys.stdout.flush()
"""
_spawner: subprocess.Popen | None = None
_spawner_lock = threading.Lock()
_persistent = False  # tests start one helper per run: a lasting child of pytest would confuse the
# watch tests' fake NVML, which takes the test process's first child for the watched command


def keep_spawner() -> None:
    """Keep one helper for all runs (bench/fuzz_long.py: thousands of runs, no watch fakes)."""
    global _persistent
    _persistent = True


def _spawn(argv: list[str], limit_s: float, cwd: str | None, as_bytes: int) -> dict[str, Any]:
    global _spawner
    import tempfile

    with _spawner_lock, tempfile.TemporaryDirectory(prefix="preflight-nasty-") as tmp:
        if _spawner is None or _spawner.poll() is not None:
            _spawner = subprocess.Popen([sys.executable, "-c", _SPAWNER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
        assert _spawner.stdin is not None and _spawner.stdout is not None
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        _spawner.stdin.write(json.dumps({"argv": argv, "limit_s": limit_s, "cwd": cwd, "as_bytes": as_bytes,
                                         "out": out, "err": err}) + "\n")
        _spawner.stdin.flush()
        result = json.loads(_spawner.stdout.readline())
        if not _persistent:
            _spawner.stdin.close()
            _spawner.stdout.close()
            _spawner.wait()
            _spawner = None
        with open(out, "rb") as f_out, open(err, "rb") as f_err:
            result["out"] = f_out.read().decode("utf-8", "replace")
            result["err"] = f_err.read().decode("utf-8", "replace")
        return result


def run_subprocess(argv: list[str], time_limit_s: float = TIME_LIMIT_S, cwd: str | None = None,
                   address_space_bytes: int = 4 << 30) -> Outcome:
    """`python -m gpu_preflight ARGV` in a child: killed at the time limit, its own max RSS from
    os.wait4, and an address-space cap (4 GiB, set with prlimit right after the start) so a
    runaway read cannot take the machine down. Started by a small helper process (see above),
    so the RSS is the child's alone; its output goes to files, never through the helper."""
    r = _spawn([sys.executable, "-m", "gpu_preflight", *argv], time_limit_s, cwd, address_space_bytes)
    return Outcome(r["rc"], r["out"], r["err"], r["seconds"], r["maxrss"])


def judge(outcome: Outcome, expect: str = "error", not_in_output: list[str] | None = None,
          time_limit_s: float = TIME_LIMIT_S, memory_limit_bytes: int = MEMORY_LIMIT_BYTES) -> list[str]:
    """What is wrong with an outcome (empty: it meets the bar)."""
    problems: list[str] = []
    both = outcome.stdout + outcome.stderr
    if outcome.rc is None:
        problems.append(f"did not end within {time_limit_s:g} s")
    if outcome.seconds > time_limit_s:
        problems.append(f"took {outcome.seconds:.1f} s")
    if outcome.peak_bytes is not None and outcome.peak_bytes > memory_limit_bytes:
        problems.append(f"used {outcome.peak_bytes / 2**20:.0f} MiB")
    if "internal error" in both:
        problems.append("internal error: " + next(line for line in both.splitlines() if "internal error" in line))
    if "Traceback (most recent call last)" in both:
        problems.append("a traceback")
    if "check crashed" in both:
        problems.append("a check crashed")
    if expect == "error":
        if outcome.rc not in (None, 3):
            problems.append(f"exit {outcome.rc}, expected 3")
        errors = [line for line in outcome.stderr.splitlines() if line.startswith("preflight") and ": error: " in line]
        if len(errors) != 1:
            problems.append(f"{len(errors)} error lines on stderr, expected 1")
        tail = outcome.stderr.splitlines()[-2:] if outcome.stderr else []
        if errors and not any(line == errors[0] for line in tail):
            problems.append("the error line is not at the end of stderr")
    elif expect == "ok":
        if outcome.rc not in (0, 1, 2):
            problems.append(f"exit {outcome.rc}, expected 0, 1 or 2: {outcome.stderr.strip()[:300]}")
    for text in not_in_output or []:
        if text in both:
            problems.append(f"output contains {text!r}")
    return problems
