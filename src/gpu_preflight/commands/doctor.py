"""`preflight doctor`: judge this machine's GPU software stack (or a saved snapshot)."""

from __future__ import annotations

from gpu_preflight.commands._common import add_output_flags, emit_report


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check this machine's NVIDIA driver / CUDA / PyTorch stack",
                       description="Check this machine's NVIDIA driver, GPUs, CUDA libraries and PyTorch, "
                                   "each finding with its fix. Exit code: 0 ok, 1 warnings, 2 failures, 3 error.")
    p.add_argument("--from", dest="from_file", metavar="SNAPSHOT.json",
                   help="judge a snapshot saved with `preflight snapshot` instead of this machine")
    p.add_argument("--deep", action="store_true",
                   help="also import torch in a child process: arch list, cuDNN, a smoke test per dtype, SDPA backends "
                        "(creates a CUDA context, takes seconds)")
    p.add_argument("--python", metavar="PATH", help="with --deep: the Python interpreter whose torch to test")
    add_output_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    import gpu_preflight.snapshots as snapshots
    from gpu_preflight.commands._common import refuse_python_without_deep

    refuse_python_without_deep(args)
    if args.from_file and (args.deep or args.python):
        from gpu_preflight.errors import UsageError

        flag = "--deep" if args.deep else "--python"
        raise UsageError(f"{flag} does not apply with --from: a saved snapshot is judged as it was collected",
                         hint=f"drop {flag}, or collect a new one with `preflight snapshot --deep -o FILE`")

    if args.from_file:
        snap = snapshots.load(args.from_file)
        recorded = snap.get("created_utc") or "an unknown time"
        sys.stderr.write(f"preflight: replaying {args.from_file} (recorded {recorded}), not probing this machine\n")
        snap["recorded_origin"] = snap.get("origin")
        snap["origin"] = "file"
        snap["replayed_from"] = args.from_file
    else:
        if args.deep:
            sys.stderr.write("preflight: --deep: importing torch in a child process and running a test matmul on each "
                             "GPU (takes seconds)...\n")
            sys.stderr.flush()
        snap = snapshots.collect(deep=args.deep, python=args.python)
    return emit_report("doctor", snap, args)
