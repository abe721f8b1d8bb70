"""Benchmark: how fast estimates come back (no GPU needed).

- `preflight estimate --help` and `preflight --help` process start (wall clock, fresh process);
- one estimate from the built-in catalog, in process (model lookup + architecture + replay);
- one estimate from a local folder of 100 safetensors shards (headers only), in process;
- the whole CLI call, which also searches the largest context and batch that fit.
Usage: python bench/estimate_speed.py [--runs 9]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))


def fresh(argv: list[str], runs: int) -> float:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    subprocess.run(argv, env=env, capture_output=True)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def sharded_folder(path: str, config: dict, shards: int = 100) -> None:
    from gpu_preflight.estimators.arch import parse_llm
    from gpu_preflight.estimators.weights import weight_tensors

    tensors = weight_tensors(parse_llm(config))
    per = -(-len(tensors) // shards)
    index = {"metadata": {}, "weight_map": {}}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        header, offset = {}, 0
        for t in tensors[s * per:(s + 1) * per]:
            header[t.name] = {"dtype": "BF16", "shape": [t.numel], "data_offsets": [offset, offset + t.bytes]}
            index["weight_map"][t.name] = name
            offset += t.bytes
        blob = json.dumps(header).encode()
        with open(os.path.join(path, name), "wb") as fh:
            fh.write(struct.pack("<Q", len(blob)) + blob)
            fh.truncate(8 + len(blob) + offset)  # sparse: the tensor bytes are never written
    json.dump(index, open(os.path.join(path, "model.safetensors.index.json"), "w"))
    json.dump(config, open(os.path.join(path, "config.json"), "w"))


def in_process(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    from gpu_preflight.estimators.engines.transformers import Workload
    from gpu_preflight.estimators.plan import estimate_llm, targets_from_specs
    from gpu_preflight.models import load_model_source

    targets = targets_from_specs(["rtx-4090"])

    def catalog():
        src = load_model_source("qwen2.5-7b-instruct")
        return estimate_llm(src.config, tensors=src.tensors, workload=Workload(), targets=[], model_name=src.name)

    results = {
        "preflight --help (fresh process)": fresh([sys.executable, "-m", "gpu_preflight", "--help"], args.runs),
        "preflight estimate --help (fresh process)": fresh([sys.executable, "-m", "gpu_preflight", "estimate", "--help"], args.runs),
        "estimate from the catalog, qwen2.5-7b (in process)": in_process(catalog, args.runs),
    }
    with tempfile.TemporaryDirectory() as d:
        src0 = load_model_source("qwen2.5-7b-instruct")
        sharded_folder(d, src0.config)

        def folder():
            src = load_model_source(d)
            assert src.tensors and len(src.tensors) > 300
            return estimate_llm(src.config, tensors=src.tensors, workload=Workload(), targets=[], model_name="x")

        results["estimate from a 100-shard safetensors folder (in process)"] = in_process(folder, args.runs)
        results["  of which: reading the 100 headers"] = in_process(lambda: load_model_source(d), args.runs)
    results["whole CLI call with --gpu rtx-4090 (fresh process, incl. largest context/batch search)"] = fresh(
        [sys.executable, "-m", "gpu_preflight", "estimate", "qwen2.5-7b-instruct", "--gpu", "rtx-4090", "--json"], 5)
    for k, v in results.items():
        print(f"{k:<90} {v * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
