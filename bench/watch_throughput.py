#!/usr/bin/env python3
"""How fast `preflight watch` passes and scans a chatty command's output.

Three measurements:
  1. scanner: CPU time of the pump's scan (diagnose.may_hold_trigger's prefilter, then bytes.lower +
     diagnose.TRIGGER_LOWER on the slices it lets through, lines cut out around hits) per MB of five
     kinds of output, one thread, one core; for comparison the scan before the prefilter ("trie": lower +
     TRIGGER_LOWER on every slice) and the first one ("old": diagnose.TRIGGER with re.IGNORECASE);
  2. firehose: a child that writes SIZE MB of log lines as fast as it can, to /dev/null, to a
     bare read loop, and under watch; the child times its own write() calls (`child_blocked_s`):
     watch should hold it back no more than the bare reader does; what watch could not scan
     meanwhile is reported (`output.unscanned_bytes`);
  3. paced: the same at RATE MB/s (default 200): everything should be scanned (unscanned 0) and
     the child should finish in SIZE / RATE seconds.

    python bench/watch_throughput.py OUT.json [--size-mb 200] [--rate-mb-s 200]

Prints a table and writes the numbers, the machine and the load average to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gpu_preflight.watcher import diagnose  # noqa: E402
from gpu_preflight.watcher.stream import OutputPump  # noqa: E402

LINE = b"step 123 loss 0.12345 lr 0.0001 tokens/s 12345.6 eta 00:12:34 mem 1.2 GiB cuda:0 Epoch [3/10] ....\n"
CHILD = r"""
import sys, time
size_mb, rate = float(sys.argv[1]), float(sys.argv[2])
line = b"step 123 loss 0.12345 lr 0.0001 tokens/s 12345.6 eta 00:12:34 mem 1.2 GiB cuda:0 Epoch [3/10] ....\n"
block = line * (1048576 // len(line))
out = sys.stdout.buffer
t0 = time.monotonic()
n = int(size_mb * 1e6 // len(block))
blocked = 0.0
for i in range(n):
    t = time.monotonic()
    out.write(block)
    blocked += time.monotonic() - t
    if rate > 0:
        ahead = (i + 1) * len(block) / (rate * 1e6) - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
out.write(b"RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
out.flush()
sys.stderr.write(f"BLOCKED {blocked:.4f}\n")
"""


def corpora(seed: int = 1) -> dict[str, bytes]:
    rnd = random.Random(seed)
    words = [b"the", b"model", b"loads", b"weights", b"from", b"every", b"shard", b"and", b"device", b"driver",
             b"memory", b"allocated", b"cuda", b"kernel", b"compute", b"values", b"success", b"\n"]
    return {
        "training log lines": LINE * 40000,
        "tqdm progress bars": b"\r 45%|####################5              | 4512/10000 [00:12<00:15, 356.21it/s]" * 40000,
        "JSON lines": b'{"iter": 1234, "loss": 0.123, "grad_norm": 1.5, "lr": 3e-4, "tok_s": 12345, "mem_gib": 12.5}\n' * 40000,
        "words (GPU-ish prose)": b" ".join(rnd.choice(words) for _ in range(700000)),
        "random bytes": rnd.randbytes(4_000_000),
    }


def scanner_rate(data: bytes, use_old: bool = False, reps: int = 3, prefilter: bool = True) -> float:
    """MB of output scanned per CPU second, through the pump's own scanning code."""
    best = float("inf")
    hits: list[str] = []
    for _ in range(reps):
        pump = OutputPump({}, {}, diagnose.TRIGGER if use_old else diagnose.TRIGGER_LOWER,
                          on_line=lambda s, t, line: hits.append(line),
                          prefilter=diagnose.may_hold_trigger if prefilter and not use_old else None)
        if use_old:  # the old scan: the case-insensitive regex on the raw chunk
            def look(name, t, chunk, pump=pump):
                if pump.trigger.search(chunk):
                    pump._look_lines(name, t, chunk)
        else:
            look = pump._look
        t0 = time.thread_time()
        for i in range(0, len(data), 1 << 20):
            look("stdout", 0.0, data[i:i + (1 << 20)])
        best = min(best, time.thread_time() - t0)
    return len(data) / 1e6 / max(best, 1e-9)


def run_child(size_mb: float, rate: float, how: str, tmp: Path) -> dict:
    """how: "devnull" (stdout is /dev/null), "pipe" (a bare 64 KiB read loop, the least any
    reader costs), "watch" (under preflight watch). `blocked_s` is the time the child spent
    inside write(): what its reader held it back."""
    cmd = [sys.executable, "-c", CHILD, str(size_mb), str(rate)]
    out_dir = tmp / f"w-{time.monotonic_ns()}"
    if how == "watch":
        cmd = [sys.executable, "-m", "gpu_preflight", "watch", "--quiet", "--out", str(out_dir), "--"] + cmd
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    t0 = time.monotonic()
    if how == "pipe":
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        fd = p.stdout.fileno()
        while os.read(fd, 65536):
            pass
        stderr = p.stderr.read()
        rc = p.wait()
    else:
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=900)
        stderr, rc = r.stderr, r.returncode
    wall = time.monotonic() - t0
    blocked = next((float(x.split()[1]) for x in stderr.decode().splitlines() if x.startswith("BLOCKED")), None)
    res = {"wall_s": round(wall, 3), "rc": rc, "mb_s": round(size_mb / wall, 1), "child_blocked_s": blocked}
    watched = how == "watch"
    if watched:
        rec = json.loads((out_dir / "watch.json").read_text())
        res.update(unscanned_mb=round(rec["output"].get("unscanned_bytes", 0) / 1e6, 1),
                   stdout_mb=round(rec["output"]["stdout_bytes"] / 1e6, 1),
                   oom_found=any(d.get("kind") == "oom" for d in rec.get("diagnosis") or []),
                   watcher_cpu_s=rec["watcher"].get("cpu_s"))
    return res


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--size-mb", type=float, default=200)
    ap.add_argument("--rate-mb-s", type=float, default=200)
    args = ap.parse_args()
    result = {"machine": machine(), "scanner_mb_per_cpu_s": {}, "trie_scanner_mb_per_cpu_s": {},
              "old_scanner_mb_per_cpu_s": {}}
    print(f"{'output kind':24} {'scan MB/s':>10} {'trie only':>10} {'old scan':>10}")
    for name, data in corpora().items():
        new = scanner_rate(data)
        trie = scanner_rate(data, prefilter=False)
        old = scanner_rate(data[: 2_000_000], use_old=True, reps=1)
        result["scanner_mb_per_cpu_s"][name] = round(new, 1)
        result["trie_scanner_mb_per_cpu_s"][name] = round(trie, 1)
        result["old_scanner_mb_per_cpu_s"][name] = round(old, 1)
        print(f"{name:24} {new:10.0f} {trie:10.0f} {old:10.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for kind, rate in (("firehose", 0), ("paced", args.rate_mb_s)):
            for how in ("devnull", "pipe", "watch"):
                result[f"{kind}_{how}"] = run_child(args.size_mb, rate, how, t)
    result["size_mb"], result["rate_mb_s"] = args.size_mb, args.rate_mb_s
    result["machine"]["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    for k in [k for k in result if k.startswith(("firehose_", "paced_"))]:
        print(f"{k:18} {json.dumps(result[k])}")
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
