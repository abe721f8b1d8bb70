"""Measure the GPU memory of vLLM's dummy-sampler run, step by step, with nothing but torch.

vLLM sizes its KV cache after a profile run whose peak includes a dummy sampler pass over
`max_num_seqs` rows of logits (vllm/v1/worker/gpu_model_runner.py _dummy_sampler_run: temperature
0.5, top_k = vocab - 1, top_p = 0.9, no generators, no logprobs). The vLLM engine model
(src/gpu_preflight/estimate/engines/vllm.py, data/vllm.json sampler_bytes_per_logit) charges that
pass a number of bytes per logit; this script measures it on a CUDA GPU for the paths vLLM takes:

- "v1_sort" (V1 runner, PyTorch top-k/top-p; the default up to 0.16, and whenever FlashInfer and the
  Triton kernel are not used), the steps of vllm/v1/sample/sampler.py Sampler.forward and
  vllm/v1/sample/ops/topk_topp_sampler.py forward_native / apply_top_k_top_p / random_sample @ v0.16.0:
  logits.to(float32); greedy argmax; in-place temperature; logits.sort; top-k gather + mask + masked_fill_;
  softmax; cumsum (out=probs_sort); top-p mask; masked_fill_; scatter; softmax(float32); q =
  empty_like.exponential_(); probs.div_(q).argmax; torch.where;
- "v1_no_sort" (what the Triton top-k/top-p kernel of 0.18+ leaves, the kernel itself not run: it
  works in place): float32 copy, greedy argmax, temperature, softmax, exponential noise, argmax;
- "v2" (V2 runner, 0.22+): the bf16 logits only (its dummy requests skip logits processing);
- "sort_only", "topk_only", "softmax_only": the single operations, for reference.

For each path and (rows, vocab, logits dtype) it reports the peak of
torch.cuda.max_memory_allocated above the memory in use before the logits were made, per step and
overall, and that peak divided by rows x vocab (bytes per logit).

Usage (GPU):  python bench/vllm_sampler_probe.py --out "$OUT/vllm_sampler.jsonl"        (~10-20 s on an H200)
       (CPU):  python bench/vllm_sampler_probe.py --dry-run   (tiny shapes, sizes from tensor bytes, no peaks)
Prints one JSON line per case, then a summary line; --budget-s stops early (finished cases are kept).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

# 1 and 2-127 rows take PyTorch's other CUDA sort algorithms (SortStable.cu segmented_sort_large_segments /
# segmented_sort_pairs_by_full_sort; data/vllm.json sort bytes_2_to_127_rows), 128 rows or more segmented_sort_pairs
ROWS = (1, 64, 256, 1024)
VOCABS = (32000, 128256, 151936, 201088, 262144)
DTYPES = ("bfloat16", "float16")
PATHS = ("v1_sort", "v1_no_sort", "v2", "sort_only", "topk_only", "softmax_only")


class Meter:
    """Peak allocated memory above a baseline, per named step."""

    def __init__(self, torch, device, dry: bool):
        self.torch, self.device, self.dry = torch, device, dry
        self.steps: list[tuple[str, int]] = []
        self.base = 0
        self.live: dict[int, int] = {}

    def start(self) -> None:
        t = self.torch
        if not self.dry:
            t.cuda.synchronize()
            t.cuda.empty_cache()
            t.cuda.reset_peak_memory_stats(self.device)
            self.base = t.cuda.memory_allocated(self.device)

    def step(self, name: str, *tensors) -> None:
        t = self.torch
        if self.dry:  # CPU: no allocator peaks; record the sizes of the tensors alive at this step
            self.steps.append((name, sum(x.element_size() * x.nelement() for x in tensors if x is not None)))
            return
        t.cuda.synchronize()
        self.steps.append((name, t.cuda.max_memory_allocated(self.device) - self.base))

    def peak(self) -> int:
        return max((b for _, b in self.steps), default=0)


def _logits(torch, rows, vocab, dtype, device):
    return torch.rand(rows, vocab, dtype=getattr(torch, dtype), device=device)


def run_path(torch, path: str, rows: int, vocab: int, dtype: str, device, dry: bool) -> dict:
    m = Meter(torch, device, dry)
    m.start()
    logits = _logits(torch, rows, vocab, dtype, device)  # compute_logits output (model dtype)
    m.step("logits", logits)
    full = lambda v: torch.full((rows,), v, device=device)  # noqa: E731
    temperature, top_p = full(0.5), full(0.9)
    top_k = torch.full((rows,), vocab - 1, device=device, dtype=torch.long)
    if path == "v2":
        pass
    elif path == "sort_only":
        x = logits.float()
        m.step("float32", logits, x)
        vals, idx = x.sort(dim=-1, descending=False)
        m.step("sort", logits, x, vals, idx)
    elif path == "topk_only":
        x = logits.float()
        vals, idx = x.topk(50, dim=-1)
        m.step("topk50", logits, x, vals, idx)
    elif path == "softmax_only":
        x = logits.float()
        p = x.softmax(dim=-1)
        m.step("softmax", logits, x, p)
    else:
        x = logits.to(torch.float32)                                   # Sampler.forward
        m.step("float32", logits, x)
        greedy = x.argmax(dim=-1).view(-1)                             # Sampler.greedy_sample
        m.step("greedy_argmax", logits, x, greedy)
        x.div_(temperature.unsqueeze(dim=1))                           # apply_temperature (in place)
        if path == "v1_sort":
            s, i = x.sort(dim=-1, descending=False)                    # apply_top_k_top_p
            m.step("sort", logits, x, s, i)
            kmask = s.gather(1, (s.size(1) - top_k).unsqueeze(dim=1))
            kmask = s < kmask
            s.masked_fill_(kmask, -float("inf"))
            m.step("top_k", logits, x, s, i, kmask)
            del kmask
            ps = s.softmax(dim=-1)
            psum = torch.cumsum(ps, dim=-1, out=ps)
            pmask = psum <= 1 - top_p.unsqueeze(dim=1)
            pmask[:, -1] = False
            s.masked_fill_(pmask, -float("inf"))
            m.step("top_p", logits, x, s, i, ps, pmask)
            del ps, psum, pmask
            x2 = s.scatter(dim=-1, index=i, src=s)
            m.step("scatter", logits, x, s, i, x2)
            del s, i
            x = x2
        probs = x.softmax(dim=-1, dtype=torch.float32)                 # forward_native
        m.step("softmax", logits, x, probs)
        q = torch.empty_like(probs)
        q.exponential_()
        sampled = probs.div_(q).argmax(dim=-1).view(-1)                # random_sample
        m.step("random_sample", logits, x, probs, q, sampled)
        torch.where(temperature < 1e-5, greedy, sampled, out=greedy)
        m.step("where", logits, x, probs, q, greedy)
    n = rows * vocab
    return {"path": path, "rows": rows, "vocab": vocab, "logits_dtype": dtype,
            "peak_bytes": m.peak(), "bytes_per_logit": round(m.peak() / n, 3),
            "steps": {k: round(v / n, 3) for k, v in m.steps}, "measured": not dry}


def environment(torch, device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, total_memory_bytes=p.total_memory, capability=f"{p.major}.{p.minor}")
        try:
            import subprocess

            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="also write the JSON lines to this file")
    ap.add_argument("--budget-s", type=float, default=50.0, help="stop starting new cases after this many seconds")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, tensor sizes instead of peaks")
    args = ap.parse_args(argv)
    import torch

    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA GPU; use --dry-run on the CPU"}), file=sys.stderr)
        return 2
    device = torch.device("cpu" if dry else "cuda")
    rows, vocabs, dtypes = ((4, 8), (64, 100), ("bfloat16",)) if dry else (ROWS, VOCABS, DTYPES)
    out = open(args.out, "w", encoding="utf-8") if args.out else None
    t0 = time.monotonic()

    def emit(obj):
        line = json.dumps(obj)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    emit({"environment": environment(torch, device), "dry_run": dry})
    done = 0
    with torch.inference_mode():
        for dtype in dtypes:
            for vocab in vocabs:
                for r in rows:
                    for path in PATHS:
                        if time.monotonic() - t0 > args.budget_s:
                            emit({"stopped": "budget", "cases_done": done})
                            return 0
                        emit(run_path(torch, path, r, vocab, dtype, device, dry))
                        done += 1
    emit({"summary": f"{done} cases in {time.monotonic() - t0:.1f} s"})
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
