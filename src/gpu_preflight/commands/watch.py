"""`preflight watch [options] -- CMD ARGS...`: run a command and record its GPU memory over time."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Run CMD as a child and record, through NVML, the GPU memory of its whole process tree on every
GPU, GPU utilization, temperature, power and clocks, and the host RSS of the tree. CMD's stdout
and stderr pass through live; its exit code is returned. Afterwards: peak per GPU, when it
happened and the headroom left, memory per phase, and a diagnosis of GPU errors in its output
(out of memory, no kernel image, driver too old, NCCL), written to a JSON record, an HTML
report with an interactive timeline, and a PNG."""

EPILOG = """\
files (with --out DIR, or ./preflight-watch-YYYYmmdd-HHMMSS/ by default):
  watch.json    the record (schema in docs/watch.md)
  watch.jsonl   the same, streamed while CMD runs: survives a crash or kill -9
  watch.html    report with the timeline (plotly if installed, else inline SVG; offline)
  watch.png     the timeline as an image (needs matplotlib; when it is missing, the summary
                prints the install command for this environment)
  --json/--html/--png FILE pick single files; given without --out, only those are written.

phases: without changes to CMD, phases are found from big memory steps that then hold steady.
Scripts can mark their own (a no-op when not watched):
  import gpu_preflight
  with gpu_preflight.phase("load model"): ...

signals: Ctrl-C and SIGTERM/SIGHUP/SIGQUIT go to CMD (once); the watcher waits for CMD to end
and writes the record. A third interrupt kills CMD (SIGKILL).

exit status: CMD's own exit code; 127 if CMD is not found, 126 if it cannot be executed,
128+N if CMD was killed by signal N; 3 if the watcher's own options are wrong or a report path
is not writable (then CMD is not started).

examples:
  preflight watch -- python generate.py --prompt "a cat"
  preflight watch --interval-ms 10 --out runs/flux --model black-forest-labs/FLUX.1-dev -- python run.py
  preflight watch --gpu-index 0,1 --json rec.json -- torchrun --nproc-per-node 2 train.py
"""


def _gpu_indices(values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    out: list[int] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit():
                from gpu_preflight.errors import UsageError

                raise UsageError(f"--gpu-index {value!r}: expected GPU numbers like 0 or 0,1")
            out.append(int(part))
    return sorted(set(out))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("watch", help="run a command and record its GPU memory, peaks and errors",
                              usage="%(prog)s [--interval-ms MS] [--out DIR | --json FILE --html FILE --png FILE]\n"
                                    "       [--model NAME] [--gpu-index N[,N]] [--quiet] -- CMD ARGS...",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interval-ms", type=float, default=100.0, metavar="MS",
                   help="sampling interval for GPU memory (default 100, minimum 10); utilization, power, "
                        "temperature, clocks and host RSS every max(MS, 100) ms, in whole ticks")
    p.add_argument("--out", metavar="DIR", help="folder for watch.json, watch.jsonl, watch.html, watch.png")
    p.add_argument("--json", metavar="FILE", help="write the JSON record here (the stream goes to FILE's stem + .jsonl)")
    p.add_argument("--html", metavar="FILE", help="write the HTML report here")
    p.add_argument("--png", metavar="FILE", help="write the PNG timeline here")
    p.add_argument("--model", metavar="NAME", help="the model the command runs (used in the out-of-memory hint "
                   "`preflight estimate NAME --gpu ...`)")
    p.add_argument("--gpu-index", action="append", metavar="N[,N]",
                   help="sample only these GPUs (NVML numbering, as nvidia-smi; repeatable); default all")
    p.add_argument("--quiet", action="store_true", help="no summary at the end (CMD's own output still passes)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...",
                   help="the command to run; put it after --")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpu_preflight.errors import UsageError
    from gpu_preflight.watcher.outputs import resolve
    from gpu_preflight.watcher.runner import WatchEnv, WatchOptions, run_watch

    command = list(args.command or [])
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("no command to watch", hint="preflight watch [options] -- CMD ARGS...")
    if not 10 <= args.interval_ms <= 3_600_000:  # also refuses nan and inf
        raise UsageError(f"--interval-ms {args.interval_ms:g}: the minimum is 10 ms (and the maximum an hour)")
    paths = resolve(args.out, args.json, args.html, args.png)
    opts = WatchOptions(command=command, outputs=paths, interval_ms=float(args.interval_ms), model=args.model,
                        gpu_indices=_gpu_indices(args.gpu_index), quiet=bool(args.quiet))
    return run_watch(opts, WatchEnv(subreaper=True)).exit_code
