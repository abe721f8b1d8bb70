"""The --deep child: a peer-to-peer matrix and an all-reduce smoke test with torch.distributed.

Run as `python -m gpu_preflight.cluster.collective OUT.json [--backend nccl|gloo] [--procs N]
[--nnodes N --node-rank R --master ADDR:PORT] [--megabytes 256] [--iters 5]`. The parent
(cluster/deep.py) bounds it with a timeout, so a hung collective ends as a verdict, not a hang.
One process per local GPU (nccl) or `--procs` CPU processes (gloo, for machines without GPUs).

Bandwidth as nccl-tests reports it: algbw = bytes / time; for all-reduce
busbw = algbw x 2 (n - 1) / n, n the number of ranks, which compares with the link's speed
whatever n is (https://github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _rank_main(local_rank: int, a: argparse.Namespace, procs: int) -> None:
    import torch
    import torch.distributed as dist

    world = procs * a.nnodes
    rank = a.node_rank * procs + local_rank
    host, port = a.master.rsplit(":", 1)
    dist.init_process_group(a.backend, init_method=f"tcp://{host}:{port}", world_size=world, rank=rank,
                            timeout=__import__("datetime").timedelta(seconds=a.timeout_s))
    if a.backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    numel = a.megabytes * (1 << 20) // 4
    x = torch.ones(numel, dtype=torch.float32, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):  # warm-up: connection set-up and first-use allocations
        dist.all_reduce(x)
    sync()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(a.iters):
        dist.all_reduce(x)
    sync()
    elapsed = (time.perf_counter() - start) / a.iters
    x.fill_(1.0)
    dist.all_reduce(x)
    sync()
    correct = bool(abs(float(x[0].item()) - world) < 1e-3)
    slowest = torch.tensor([elapsed], dtype=torch.float64, device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)  # the collective is as slow as its slowest rank
    if rank == 0:
        t = float(slowest.item())
        size = numel * 4
        algbw = size / t / 1e9
        with open(a.out, "w", encoding="utf-8") as fh:
            json.dump({"backend": a.backend, "ranks": world, "nodes": a.nnodes, "bytes": size, "time_s": t,
                       "algbw_gb_s": round(algbw, 3), "busbw_gb_s": round(algbw * 2 * (world - 1) / world, 3),
                       "correct": correct}, fh)
    dist.destroy_process_group()


def _p2p() -> list[list[bool | None]]:
    import torch

    n = torch.cuda.device_count()
    return [[None if i == j else bool(torch.cuda.can_device_access_peer(i, j)) for j in range(n)] for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_preflight.cluster.collective")
    p.add_argument("out")
    p.add_argument("--backend", default="nccl", choices=("nccl", "gloo"))
    p.add_argument("--procs", type=int, default=0, help="local ranks (default: one per GPU; gloo: 2)")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--master", default="")
    p.add_argument("--megabytes", type=int, default=256)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--timeout-s", type=float, default=60)
    a = p.parse_args(argv)
    import torch
    import torch.multiprocessing as mp

    extra: dict = {}
    if a.backend == "nccl":
        procs = a.procs or torch.cuda.device_count()
        extra["p2p"] = _p2p()
        if procs * a.nnodes < 2:
            with open(a.out, "w", encoding="utf-8") as fh:
                json.dump({**extra, "skipped": "one GPU: no collective to test"}, fh)
            return 0
    else:
        procs = a.procs or 2
    if not a.master:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            a.master = f"127.0.0.1:{s.getsockname()[1]}"
    mp.spawn(_rank_main, args=(a, procs), nprocs=procs, join=True)
    if a.node_rank == 0 and extra:
        with open(a.out, encoding="utf-8") as fh:
            data = json.load(fh)
        with open(a.out, "w", encoding="utf-8") as fh:
            json.dump({**extra, **data}, fh)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # never NVLink multicast from a smoke test
    sys.exit(main())
