"""`preflight measure MODEL`: run the workload on this machine's GPU and compare with the estimate.

The model is built from its config with random weights directly on the GPU (memory does not
depend on weight values, so nothing is downloaded), or loaded from local weights with
--weights PATH, in a fresh child process that records every phase as it finishes.
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    from gpu_preflight.commands._common import number, whole
    from gpu_preflight.commands.estimate import _positive

    p = sub.add_parser("measure", help="measure a model's real GPU memory on this machine, vs the estimate",
                       description="Run MODEL on the local GPU in a child process (random weights built from the "
                                   "config, or --weights PATH), record per phase torch's peak allocated/reserved "
                                   "and the process memory NVML sees, and print them next to the estimate. Needs an "
                                   "NVIDIA GPU, and torch and transformers in the Python that runs the child (this "
                                   "one, or --python PATH); when they are missing, the error prints the install "
                                   "command for this environment.")
    p.add_argument("model", help="model folder, config.json, catalog name or org/name")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch", type=_positive, default=1)
    # Flags of one model kind default to None (= not given), so a flag of the other kind is refused.
    p.add_argument("--input-len", type=_positive, help="LLMs: prompt tokens (default 512)")
    p.add_argument("--output-len", type=_positive, help="LLMs: generated tokens (default 128)")
    p.add_argument("--attn", choices=("sdpa", "eager", "flash_attention_2"), help="LLMs: attention (default sdpa)")
    p.add_argument("--weights", metavar="PATH", help="LLMs: load real weights from this local folder instead")
    p.add_argument("--height", type=_positive, help="pipelines: image height (default: the pipeline's)")
    p.add_argument("--width", type=_positive, help="pipelines: image width (default: the pipeline's)")
    p.add_argument("--gpu-index", type=whole(0, 1023), default=0)
    p.add_argument("--timeout-s", type=number(0, 7 * 86400, above=True, what="duration"), default=600, help="kill the child after this long (default 600)")
    p.add_argument("--python", metavar="PATH", help="interpreter that has torch (default: this one)")
    p.add_argument("--keep", metavar="FILE", help="also keep the raw JSONL records in FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from gpu_preflight.api import run_measure

    report = run_measure(args.model, dtype=args.dtype, batch=args.batch, input_len=args.input_len,
                         output_len=args.output_len, attn=args.attn, weights=args.weights, height=args.height,
                         width=args.width, gpu_index=args.gpu_index, timeout_s=args.timeout_s, python=args.python,
                         keep=args.keep)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif report["kind"] == "diffusion":
        from gpu_preflight.render.measure import render_pipeline_measure

        sys.stdout.write(render_pipeline_measure(report, report["workload"]) + "\n")
    else:
        from gpu_preflight.render.measure import render_measure

        sys.stdout.write(render_measure(report) + "\n")
    return report["exit_code"]
