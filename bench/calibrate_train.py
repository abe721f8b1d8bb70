"""Training-memory measurements: every model of a matrix in a fresh child process
(gpu_preflight.measurement.train_child), all its cases in that process, one JSON line per finished
phase appended to OUT. Resumable (models already done in OUT are skipped) and bounded by a
wall-clock budget: no model starts when less than --min-left-s remains, and each child gets the
deadline so it stops starting cases in time.

Usage: python bench/calibrate_train.py bench/matrix_train.json OUT.jsonl [--budget-s 230]
       [--only tag,tag] [--device cpu --tiny]   (CPU smoke test: every config shrunk to a toy size)

MATRIX: {"defaults": {case keys}, "grid": {key: [values]} (crossed per model),
         "models": [{"id": catalog id, "tag", "config_overrides", "seq_len": [..], "micro_batch",
                     "extra": [{case keys}], "skip_grid": bool}], "held_out": {"models": [tags]}}
Case keys: mode, micro_batch, seq_len, grad_ckpt, optimizer, mixed_precision, param_dtype,
lora_rank, lora_targets, steps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

CASE_KEYS = ("mode", "micro_batch", "seq_len", "grad_ckpt", "optimizer", "mixed_precision", "param_dtype",
             "lora_rank", "lora_targets", "steps")


def catalog_config(model_id: str) -> dict:
    with open(os.path.join(ROOT, "src", "gpu_preflight", "data", "models", f"{model_id}.json"), encoding="utf-8") as fh:
        return dict(json.load(fh)["config"])


def model_config(m: dict) -> dict:
    config = catalog_config(m["id"]) if "config" not in m else dict(m["config"])
    over = m.get("config_overrides") or {}
    if "text_config" in config and isinstance(config["text_config"], dict):
        config["text_config"] = {**config["text_config"], **over}
    else:
        config.update(over)
    return config


def case_name(c: dict) -> str:
    parts = [c["mode"], "ck" if c.get("grad_ckpt") else "nock", f"s{c['seq_len']}", f"b{c['micro_batch']}",
             c["optimizer"], c["mixed_precision"], {"bfloat16": "bf16w", "float32": "fp32w"}.get(c["param_dtype"], c["param_dtype"])]
    if c["mode"] != "full":
        parts.append(f"r{c.get('lora_rank', 16)}")
    return "-".join(parts)


def model_cases(matrix: dict, m: dict) -> list[dict]:
    defaults = {**matrix.get("defaults", {}), **{k: m[k] for k in CASE_KEYS if k in m and k != "seq_len"}}
    seqs = m.get("seq_len") or matrix.get("defaults", {}).get("seq_len") or [512]
    seqs = seqs if isinstance(seqs, list) else [seqs]
    cases = []
    if not m.get("skip_grid"):
        grid = matrix.get("grid", {})
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            for s in seqs:
                cases.append({**defaults, **dict(zip(keys, combo)), "seq_len": s})
    for extra in m.get("extra", []):
        cases.append({**defaults, "seq_len": seqs[0], **extra})
    for c in cases:
        c["name"] = case_name(c)
    return cases


def tiny(config: dict, cases: list[dict]) -> tuple[dict, list[dict]]:
    """CPU smoke test: the same architecture at toy size (same head grouping, windows, biases)."""
    tc = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    heads = 4
    kv = tc.get("num_key_value_heads") or tc.get("num_attention_heads")
    ratio = max(1, (tc.get("num_attention_heads") or 1) // max(kv or 1, 1))
    kv_t = max(1, heads // min(ratio, heads))
    small = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": heads,
             "num_key_value_heads": kv_t, "vocab_size": 512}
    if "head_dim" in tc or tc.get("model_type", "").startswith(("gemma", "qwen3")):
        small["head_dim"] = 16
    if tc.get("sliding_window"):
        small["sliding_window"] = 32
    if "layer_types" in tc:
        small["layer_types"] = list(tc["layer_types"])[:3]
    for k in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if isinstance(tc.get(k), int):
            small[k] = min(tc[k], 1)
    tc.update(small)
    out = []
    for c in cases:
        c = dict(c)
        c["seq_len"] = 96 if c["seq_len"] <= 1024 else 192  # CPU attention backward differs below ~96 tokens
        c["micro_batch"] = min(c["micro_batch"], 2)
        c["lora_rank"] = min(int(c.get("lora_rank", 16)), 4)
        out.append(c)
    return config, out


def done_models(path: str) -> set[str]:
    out = set()
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if r.get("type") == "done":
                    out.add(r.get("model"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("matrix")
    ap.add_argument("out")
    ap.add_argument("--budget-s", type=float, default=230)
    ap.add_argument("--min-left-s", type=float, default=12)
    ap.add_argument("--only", default="")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--tiny", action="store_true", help="shrink every config to a toy size (CPU smoke test)")
    ap.add_argument("--dry-run", action="store_true", help="print the cases and exit")
    args = ap.parse_args()
    with open(args.matrix, encoding="utf-8") as fh:
        matrix = json.load(fh)
    only = {s for s in args.only.split(",") if s}
    t_start = time.perf_counter()
    deadline = time.time() + args.budget_s
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    finished = done_models(args.out)
    n_cases = 0
    for m in matrix["models"]:
        tag = m.get("tag") or m["id"]
        if only and tag not in only and m["id"] not in only:
            continue
        cases = model_cases(matrix, m)
        config = model_config(m)
        if args.tiny:
            config, cases = tiny(config, cases)
        n_cases += len(cases)
        if args.dry_run:
            print(f"{tag}: {len(cases)} cases: " + ", ".join(c["name"] for c in cases))
            continue
        if tag in finished:
            print(f"{tag:<34} already measured", flush=True)
            continue
        left = deadline - time.time()
        if left < args.min_left_s:
            print(f"{tag:<34} skipped: budget spent", flush=True)
            continue
        spec = {"model": {"id": tag, "catalog_id": m["id"], "config": config}, "device": args.device,
                "deadline_unix": deadline - 3, "cases": cases}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(spec, fh)
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "gpu_preflight.measurement.train_child", fh.name, args.out],
                                  env=env, timeout=max(left, 5), capture_output=True, text=True, check=False)
            status = f"exit {proc.returncode}"
            if proc.returncode:
                status += ": " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        except subprocess.TimeoutExpired:
            status = "timeout"
            with open(args.out, "a", encoding="utf-8") as out:
                out.write(json.dumps({"type": "error", "model": tag, "error": "timeout"}) + "\n")
        finally:
            os.unlink(fh.name)
        print(f"{tag:<34} {status:<24} {time.perf_counter() - t:6.1f}s", flush=True)
    if args.dry_run:
        print(f"{n_cases} cases")
        return 0
    print(summary(args.out), flush=True)
    print(f"total {time.perf_counter() - t_start:.1f}s", flush=True)
    return 0


def summary(path: str) -> str:
    """Cases measured, OOMs, errors, and the peak of each finished case (max over its phases)."""
    if not os.path.exists(path):
        return "no records"
    peaks: dict[tuple[str, str], int] = {}
    errors, ooms = [], 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("type") == "error":
                errors.append(f"{r.get('model')}: {r.get('error', '')[:120]}")
            elif r.get("type") == "phase" and r.get("oom"):
                ooms += 1
            elif r.get("type") == "phase":
                k = (r["model"], r["case"]["name"])
                peaks[k] = max(peaks.get(k, 0), r.get("peak_process_bytes") or r["peak_allocated_bytes"])
    lines = [f"{len(peaks)} cases measured, {ooms} out of memory, {len(errors)} errors"]
    lines += [f"  error {e}" for e in errors]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
