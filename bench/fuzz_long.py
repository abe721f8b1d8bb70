#!/usr/bin/env python3
"""The long fuzz run: everything tests/ does briefly, for as long as you give it.

    python bench/fuzz_long.py OUT_DIR [--budget-s 1800] [--seed N] [--skip-hypothesis]

Stages, each with its share of the budget:
  1. corpus: every case of tests/fixtures/nasty/ in a child process (real RSS via wait4, killed
     at 15 s), plus the special files (FIFO, /dev/zero, links out of a model folder);
  2. mutate: random byte edits, cuts and splices of the corpus files and of valid seeds
     (config.json, safetensors, GGUF, snapshots), each run through the CLI in a child;
  3. watch: 20 parallel runs in one folder, SIGTERM / SIGKILL mid-run, a command that writes
     200 MB of output (records kept, exit codes right, nothing of ours left behind);
  4. hypothesis: tests/test_fuzz.py under the "long" profile (3,000 examples per property).

Every outcome is judged against the bar in tests/nasty.py (exit 3 and one error line for bad
input, 0-2 for legal input, 15 s, 500 MiB, never "internal error"). A failing input is copied to
OUT_DIR/failures/ with its command line, ready to be added to the corpus. OUT_DIR/summary.json
holds the counts, the slowest and largest cases, the machine and the versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from nasty import CORPUS, case_argv, judge, keep_spawner, load_manifest, run_subprocess  # noqa: E402


class Run:
    def __init__(self, out: Path, budget_s: float, seed: int):
        self.out, self.deadline, self.rng = out, time.monotonic() + budget_s, random.Random(seed)
        self.results: dict[str, dict] = {}
        self.failures: list[dict] = []
        self.slowest: list[tuple[float, str]] = []
        self.largest: list[tuple[int, str]] = []
        (out / "failures").mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, stage: str, label: str, argv: list[str], expect: str = "error", inputs: list[Path] = (),
              not_in_output: list[str] | None = None, cwd: str | None = None) -> bool:
        outcome = run_subprocess(argv, cwd=cwd)
        problems = judge(outcome, expect, not_in_output)
        if expect == "either":
            problems = judge(outcome, "ok" if outcome.rc in (0, 1, 2) else "error", not_in_output)
        stats = self.results.setdefault(stage, {"runs": 0, "failures": 0, "exit_codes": {}})
        stats["runs"] += 1
        stats["exit_codes"][str(outcome.rc)] = stats["exit_codes"].get(str(outcome.rc), 0) + 1
        self.slowest = sorted(self.slowest + [(round(outcome.seconds, 2), label)], reverse=True)[:10]
        if outcome.peak_bytes:
            self.largest = sorted(self.largest + [(outcome.peak_bytes // 2**20, label)], reverse=True)[:10]
        if problems:
            stats["failures"] += 1
            keep = self.out / "failures" / f"{len(self.failures):04d}"
            keep.mkdir(parents=True, exist_ok=True)
            for p in inputs:
                if p.is_dir():
                    shutil.copytree(p, keep / p.name, symlinks=True)
                elif p.exists():
                    shutil.copy(p, keep / p.name)
            record = {"stage": stage, "label": label, "argv": argv, "problems": problems,
                      "stderr": outcome.stderr[-2000:]}
            (keep / "case.json").write_text(json.dumps(record, indent=1))
            self.failures.append(record)
            print(f"FAIL {stage} {label}: {problems}", flush=True)
        return not problems


def stage_corpus(run: Run, tmp: Path) -> None:
    for case in load_manifest():
        if run.left() <= 0:
            return
        run.check("corpus", case["id"], case_argv(case), case["expect"],
                  inputs=[CORPUS / "cases" / case["id"]], not_in_output=case.get("not_in_output"))
    fifo = tmp / "fifo.json"
    os.mkfifo(fifo)
    secret = tmp / "secret.txt"
    secret.write_bytes(b"SECRETPW private\n")
    model = tmp / "linkmodel"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                                                   "num_attention_heads": 4, "vocab_size": 100}))
    (model / "model.safetensors").symlink_to(secret)
    leaked = int.from_bytes(b"SECRETPW", "little")
    for label, argv, hide in (("fifo-snapshot", ["doctor", "--from", str(fifo)], None),
                              ("fifo-config", ["estimate", str(fifo), "--gpu", "h100"], None),
                              ("dev-zero-snapshot", ["doctor", "--from", "/dev/zero"], None),
                              ("dev-zero-model", ["estimate", "/dev/zero", "--gpu", "h100"], None),
                              ("link-out-of-folder", ["estimate", str(model), "--gpu", "h100"],
                               ["SECRET", str(leaked), f"{leaked:,}"])):
        run.check("special", label, argv, not_in_output=hide)


SEEDS = {
    "config": lambda: json.dumps({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                  "vocab_size": 100, "sliding_window": 512, "tie_word_embeddings": False}).encode(),
}


MAX_MUTANT_BYTES = 8 << 20


def _mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        if not data:
            data += bytes([rng.randrange(256)])
        elif op < 0.4:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op < 0.6:
            i = rng.randrange(len(data))
            data[i:i] = rng.choice([b"NaN", b"-1", b"0", b"1e30", b'"x"', b"[]", b"{}", b"\xff", b"9" * 30,
                                    b"\x1b[2J", b"null", b"true", bytes(rng.randrange(256) for _ in range(4))])
        elif op < 0.8:
            del data[rng.randrange(len(data)):]
        else:
            i, j = sorted(rng.randrange(len(data) + 1) for _ in range(2))
            data[i:j] = data[i:j] * rng.randint(2, 50)
        del data[MAX_MUTANT_BYTES:]  # repeated splices would otherwise grow without bound
    return bytes(data)


def stage_mutate(run: Run, tmp: Path, share_s: float) -> None:
    from models_helpers import gguf_bytes, llama_gguf_metadata, llama_gguf_tensors, llama_tensors, safetensors_bytes

    seeds = {"config.json": SEEDS["config"](), "model.safetensors": safetensors_bytes(llama_tensors()),
             "m.gguf": gguf_bytes(llama_gguf_metadata(), llama_gguf_tensors()),
             "box.json": (ROOT / "tests/fixtures/snapshots/h100-torch2.11-deep.json").read_bytes()}
    for p in (CORPUS / "cases").rglob("*"):
        if p.is_file() and p.stat().st_size < 2_000_000:
            seeds.setdefault(f"corpus:{p.relative_to(CORPUS / 'cases')}", p.read_bytes())
    names = sorted(seeds)
    end = min(run.deadline, time.monotonic() + share_s)
    n = 0
    while time.monotonic() < end:
        name = run.rng.choice(names)
        data = _mutate(run.rng, seeds[name])
        case_dir = tmp / f"m{n}"
        case_dir.mkdir()
        kind = name.rsplit(".", 1)[-1]
        if name.endswith(".gguf"):
            path = case_dir / "m.gguf"
            path.write_bytes(data)
            argv, inputs = ["estimate", str(path), "--gpu", "h100"], [path]
        elif name == "box.json" or "snap-" in name:
            path = case_dir / "box.json"
            path.write_bytes(data)
            argv, inputs = ["doctor", "--from", str(path)], [path]
        elif name.endswith(".safetensors"):
            (case_dir / "config.json").write_bytes(SEEDS["config"]())
            (case_dir / "model.safetensors").write_bytes(data)
            argv, inputs = ["estimate", str(case_dir), "--gpu", "h100"], [case_dir]
        else:
            (case_dir / "config.json").write_bytes(data)
            argv, inputs = ["estimate", str(case_dir), "--gpu", "h100"], [case_dir]
        run.check(f"mutate-{kind}", f"{name} #{n}", argv, "either", inputs=inputs,
                  not_in_output=["\x1b[2J"])
        shutil.rmtree(case_dir, ignore_errors=True)
        n += 1


def stage_watch(run: Run, tmp: Path) -> None:
    stats = run.results.setdefault("watch", {"runs": 0, "failures": 0})
    py = sys.executable
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))

    def fail(label: str, why: str) -> None:
        stats["failures"] += 1
        run.failures.append({"stage": "watch", "label": label, "problems": [why]})
        print(f"FAIL watch {label}: {why}", flush=True)

    folder = tmp / "parallel"
    folder.mkdir()
    cmd = [py, "-m", "gpu_preflight", "watch", "--quiet", "--", py, "-c", "pass"]
    procs = [subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(20)]
    codes = [p.wait(timeout=120) for p in procs]
    records = list(folder.glob("preflight-watch-*/watch.json"))
    stats["runs"] += 20
    if codes != [0] * 20 or len(records) != 20:
        fail("20 parallel runs", f"exit codes {codes}, {len(records)} records")
    for sig, expect in ((signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGKILL, None)):
        out = tmp / f"sig-{sig.name}"
        p = subprocess.Popen([py, "-m", "gpu_preflight", "watch", "--quiet", "--out", str(out), "--", py, "-c",
                              "import time; print('up', flush=True); time.sleep(30)"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        p.stdout.readline()
        time.sleep(0.3)
        p.send_signal(sig)
        rc = p.wait(timeout=60)
        stats["runs"] += 1
        if expect is not None and (rc != expect or not (out / "watch.json").exists()):
            fail(f"watch {sig.name}", f"exit {rc}, record {'kept' if (out / 'watch.json').exists() else 'missing'}")
        if expect is None and not (out / "watch.jsonl").exists():
            fail("watch SIGKILL", "no stream left to recover")
        leftovers = [x.name for x in out.glob("*.tmp")] + [x.name for x in out.glob(".*.tmp")]
        if leftovers:
            fail(f"watch {sig.name}", f"temp files left: {leftovers}")
    out = tmp / "chatty"
    t0 = time.monotonic()
    rc = subprocess.call([py, "-m", "gpu_preflight", "watch", "--quiet", "--out", str(out), "--", py, "-c",
                          "import sys\nb=(b'step 1 loss 0.5 ' * 5 + b'\\n') * 12000\n"
                          "[sys.stdout.buffer.write(b) for _ in range(200)]\n"
                          "print('CUDA out of memory. Tried to allocate 2.00 GiB')"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.monotonic() - t0
    stats["runs"] += 1
    rec = json.loads((out / "watch.json").read_text()) if (out / "watch.json").exists() else {}
    run.results["watch"]["chatty_200mb"] = {"seconds": round(took, 2), "rc": rc,
                                            "unscanned_bytes": (rec.get("output") or {}).get("unscanned_bytes"),
                                            "oom_found": any(d.get("kind") == "oom" for d in rec.get("diagnosis") or [])}
    if rc != 0 or not rec or not run.results["watch"]["chatty_200mb"]["oom_found"]:
        fail("chatty 200 MB", f"exit {rc}, record {'kept' if rec else 'missing'}, OOM line not found")


def stage_hypothesis(run: Run) -> None:
    left = max(60, int(run.left()))
    env = dict(os.environ, PREFLIGHT_FUZZ_PROFILE="long", PYTHONPATH=str(ROOT / "src"))
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests/test_fuzz.py")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=left)
        tail, rc = r.stdout[-3000:], r.returncode
    except subprocess.TimeoutExpired as exc:
        tail, rc = (exc.stdout or b"")[-3000:].decode() if isinstance(exc.stdout, bytes) else str(exc.stdout)[-3000:], None
    run.results["hypothesis"] = {"rc": rc, "seconds": round(time.monotonic() - t0, 1), "tail": tail.splitlines()[-3:]}
    if rc not in (0, None):
        run.failures.append({"stage": "hypothesis", "label": "tests/test_fuzz.py", "problems": [tail[-1500:]]})


def environment() -> dict:
    import importlib.metadata as md

    def ver(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    cpu = None
    if Path("/proc/cpuinfo").exists():
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), None)
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "gpu_preflight": ver("gpu-preflight"), "hypothesis": ver("hypothesis"),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--budget-s", type=float, default=1800)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--skip-hypothesis", action="store_true")
    args = ap.parse_args()
    out = Path(args.out_dir)
    keep_spawner()
    run = Run(out, args.budget_s, args.seed)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="preflight-fuzz-") as tmp_s:
        tmp = Path(tmp_s)
        stage_corpus(run, tmp)
        stage_watch(run, tmp)
        share = run.left() * (0.6 if not args.skip_hypothesis else 1.0)
        stage_mutate(run, tmp, share)
        if not args.skip_hypothesis and run.left() > 30:
            stage_hypothesis(run)
    summary = {"seed": args.seed, "budget_s": args.budget_s, "seconds": round(time.monotonic() - t0, 1),
               "environment": environment(), "stages": run.results, "failures": len(run.failures),
               "slowest": run.slowest, "largest_rss_mib": run.largest}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "failures.json").write_text(json.dumps(run.failures, indent=1) + "\n")
    runs = sum(s.get("runs", 0) for s in run.results.values())
    print(f"{runs} runs, {len(run.failures)} failures in {summary['seconds']} s; slowest {run.slowest[:3]}; "
          f"largest RSS {run.largest[:3]} MiB; details in {out}/summary.json")
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
