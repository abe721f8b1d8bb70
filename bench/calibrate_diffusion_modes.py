"""Measure diffusers' memory modes (offload, fp8, torchao, VAE tiling/slicing, eager attention,
dropped text encoders) for several pipelines on the local GPU, within a wall-clock budget.

    python bench/calibrate_diffusion_modes.py bench/matrix_diffusion_modes.json OUT.jsonl --budget-s 330
    python bench/calibrate_diffusion_modes.py bench/matrix_diffusion_modes.json /tmp/t.jsonl --tiny --device cpu

Each pipeline runs in a fresh child (`python -m gpu_preflight.measurement.child`, which hands a spec
with "setups" to measurement/diffusion_modes.py); every finished phase is one JSON line in OUT, so a
crash or a timeout keeps what was measured. A pipeline gets at most its "max_s" of the budget (its
child skips the setups that would not finish and is killed 20 s after its deadline); a pipeline
whose share is under 20 s is skipped. --tiny shrinks every component to the matrix's "tiny"
overrides (one or two layers) for a dry run on the CPU; --only picks pipelines by id or tag.
At the end a summary (one line per setup and run: peaks, host RAM, seconds per step) is printed and
written next to OUT as OUT.summary.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "src"))

from calibrate import catalog_entry, deep_merge, model_spec  # noqa: E402

G = 1 << 30


def expand_setups(matrix: dict, m: dict, tiny: bool) -> list[dict]:
    sizes = matrix.get("sizes") or {}
    out = []
    for s in m["setups"]:
        base = dict(matrix.get("setup_templates", {}).get(s.get("template", ""), {}))
        setup = deep_merge(base, {k: v for k, v in s.items() if k != "template"})
        runs = []
        for r in setup.get("runs") or []:
            r = dict(r)
            if "size" in r:
                r = {**sizes[r.pop("size")], **r}
            if tiny:  # a dry run: an eighth of each side, multiples of 64
                r["steps"] = min(int(r.get("steps", setup.get("steps", 2))), 2)
                r["height"], r["width"] = (max(64, int(r[k]) // 8 // 64 * 64) for k in ("height", "width"))
            runs.append(r)
        setup["runs"] = runs
        out.append(setup)
    return out


def pipeline_spec(matrix: dict, m: dict, args, deadline_s: float) -> dict:
    entry = catalog_entry(m["id"])
    mm = dict(m)
    if args.tiny:
        mm["component_overrides"] = deep_merge(m.get("component_overrides") or {}, m.get("tiny") or {})
    key = m.get("tag") or m["id"]
    spec = {"model": model_spec(entry, mm, key), **matrix.get("defaults", {}),
            **{k: v for k, v in m.items() if k in ("dtype", "steps")},
            "setups": expand_setups(matrix, m, args.tiny), "deadline_s": deadline_s}
    if args.device:
        spec["device"] = args.device
    return spec


def summarize(path: str) -> list[str]:
    lines = []
    env = {}
    try:
        with open(path, encoding="utf-8") as fh:
            recs = [json.loads(x) for x in fh if x.strip()]
    except OSError:
        return ["no records"]
    for r in recs:
        if r.get("type") == "env" and not env:
            env = r
    if env:
        lines.append(f"env: {env.get('gpu', env.get('device'))} torch {env.get('torch')} diffusers {env.get('diffusers')} "
                     f"transformers {env.get('transformers')} accelerate {env.get('accelerate')}")
    lines.append(f"{'pipeline':<22} {'setup':<24} {'run':<16} {'reserved':>8} {'process':>8} {'host':>7} {'s/step':>7}  errors")
    for r in recs:
        if r.get("type") == "run":
            w = r.get("workload") or {}
            tag = f"{w.get('name', '')}{' eager' if r.get('attn') == 'eager' else ''}" + \
                  (" tile" if r.get("vae_tiling") else "") + (" slice" if r.get("vae_slicing") else "") + \
                  (" dropTE" if r.get("drop_text_encoders") else "")
            sps = r.get("seconds_per_step")
            lines.append(f"{r.get('pipeline', ''):<22} {r.get('setup', ''):<24} {tag:<16} "
                         f"{r['peak_reserved_bytes'] / G:8.2f} {r['peak_process_bytes'] / G:8.2f} "
                         f"{r['peak_host_rss_bytes'] / G:7.2f} {sps if sps is not None else '-':>7}  "
                         f"{','.join(r.get('errors') or [])}")
        elif r.get("type") in ("skipped", "error") and r.get("setup"):
            lines.append(f"{r.get('pipeline', r.get('model', '')):<22} {r.get('setup', ''):<24} "
                         f"{r.get('type')}: {(r.get('reason') or r.get('error') or '')[:90]}")
        elif r.get("type") == "phase" and r.get("phase", "").startswith("setup:") and r.get("error"):
            lines.append(f"{r.get('pipeline', ''):<22} {r.get('setup', ''):<24} setup error: {r['error'][:90]}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("matrix")
    ap.add_argument("out")
    ap.add_argument("--budget-s", type=float, default=330, help="wall-clock budget for the whole matrix")
    ap.add_argument("--only", default="", help="comma-separated pipeline ids or tags")
    ap.add_argument("--device", default="", help="cpu: run on the CPU (with --tiny for a dry run)")
    ap.add_argument("--tiny", action="store_true", help="shrink every component to the matrix's tiny overrides")
    args = ap.parse_args()
    with open(args.matrix, encoding="utf-8") as fh:
        matrix = json.load(fh)
    only = {s for s in args.only.split(",") if s}
    t_start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for m in matrix["pipelines"]:
        key = m.get("tag") or m["id"]
        if only and key not in only and m["id"] not in only:
            continue
        left = args.budget_s - (time.perf_counter() - t_start)
        share = left if args.tiny else min(float(m.get("max_s", left)), left)
        if share < 20:
            print(f"budget spent: skipping {key}", flush=True)
            with open(args.out, "a", encoding="utf-8") as out:
                out.write(json.dumps({"type": "skipped", "model": key, "reason": "budget"}) + "\n")
            continue
        spec = pipeline_spec(matrix, m, args, deadline_s=share)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(spec, fh)
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "gpu_preflight.measurement.child", fh.name, args.out],
                                  env=env, timeout=share + 20, capture_output=True, text=True)
            status = f"exit {proc.returncode}"
            if proc.returncode:
                status += ": " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        except subprocess.TimeoutExpired:
            status = "timeout"
            with open(args.out, "a", encoding="utf-8") as out:
                out.write(json.dumps({"type": "error", "model": key, "error": "timeout"}) + "\n")
        finally:
            os.unlink(fh.name)
        print(f"{key:<28} {status:<30} {time.perf_counter() - t:6.1f}s", flush=True)
    lines = summarize(args.out)
    text = "\n".join(lines)
    print(text)
    with open(args.out + ".summary.txt", "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    print(f"total {time.perf_counter() - t_start:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
