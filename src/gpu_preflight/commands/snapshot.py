"""`preflight snapshot`: write this machine's facts as JSON (replay with `doctor --from`)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("snapshot", help="print this machine's GPU/CUDA/PyTorch facts as JSON",
                       description="Collect this machine's facts (NVML, CUDA driver, PyTorch metadata, toolkit, "
                                   "environment) as versioned JSON. `preflight doctor --from FILE` judges it anywhere.")
    p.add_argument("--deep", action="store_true", help="also import torch in a child process (see doctor --deep)")
    p.add_argument("--python", metavar="PATH", help="with --deep: the Python interpreter whose torch to test")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    import gpu_preflight.snapshots as snapshots
    from gpu_preflight.commands._common import refuse_python_without_deep
    from gpu_preflight.errors import PreflightError

    refuse_python_without_deep(args)

    text = snapshots.dumps(snapshots.collect(deep=args.deep, python=args.python)) + "\n"
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise PreflightError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        sys.stderr.write(f"preflight: wrote {args.output} ({len(text.encode())} bytes); judge it anywhere with "
                         f"`preflight doctor --from {args.output}`\n")
    else:
        sys.stdout.write(text)
    return 0
