"""`preflight compat`: judge a described machine (driver, GPU, torch) with the same checks."""

from __future__ import annotations

import sys

from gpu_preflight.commands._common import add_output_flags, emit_report, number

STACK_CHECKS = ["PF101", "PF103", "PF104", "PF105", "PF106", "PF115", "PF118", "PF119",
                "PF120", "PF122", "PF123", "PF125", "PF126"]
PLATFORMS = ("linux-x86_64", "linux-aarch64", "jetson", "windows", "wsl")


def register(sub) -> None:
    p = sub.add_parser("compat", help="judge a described machine: --driver, --gpu, --torch",
                       description="Judge a machine you describe, with the same checks as doctor. Without --torch, "
                                   "recommends the PyTorch wheel to install. Example: preflight compat --driver "
                                   "535.54.03 --gpu 'RTX 4090' --torch 2.7.1+cu128 --json")
    p.add_argument("--driver", metavar="VERSION", help="NVIDIA driver version, e.g. 535.54.03")
    p.add_argument("--gpu", action="append", default=[], metavar="NAME[:COUNT]",
                   help="GPU model, loosely spelled (4090, rtx4090, 'NVIDIA GeForce RTX 4090'); repeatable")
    p.add_argument("--torch", metavar="VERSION", help="PyTorch version, e.g. 2.7.1+cu128; without a local tag, the "
                                                      "default PyPI wheel of that release")
    p.add_argument("--python", metavar="X.Y", help="Python version, to check the release supports it")
    p.add_argument("--ram-gb", type=number(0, 1 << 20, above=True, what="size in GiB"), metavar="GB",
                   help="host RAM in GiB")
    p.add_argument("--platform", choices=PLATFORMS, help="where it runs (default linux-x86_64); windows/wsl use the "
                                                          "Windows driver's numbers")
    p.add_argument("--jetpack", metavar="X.Y", help="Jetson: the JetPack release (implies --platform jetson)")
    p.add_argument("--glibc", metavar="X.Y", help="the C library version (ldd --version), for the wheels' manylinux tag")
    p.add_argument("--image", metavar="IMAGE", help="a CUDA base image, e.g. nvidia/cuda:12.8.0-runtime-ubuntu22.04, "
                                                    "judged against --driver")
    p.add_argument("--list-gpus", action="store_true", help="list the GPUs in the catalog and exit")
    add_output_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from gpu_preflight.compatibility import facts
    from gpu_preflight.errors import UsageError
    from gpu_preflight.compatibility.described import describe

    if args.list_gpus:
        for row in sorted(facts.gpus(), key=lambda r: (r["segment"], r["name"])):
            sys.stdout.write(f"{row['id']:<28} {row['name']:<40} CC {row['compute_capability']:<5} "
                             f"{row['memory_gb']} GB  ({row['segment']})\n")
        return 0
    if not (args.driver or args.gpu or args.torch or args.image):
        raise UsageError("describe the machine with at least one of --driver, --gpu, --torch",
                         hint="e.g. preflight compat --driver 550.54.15 --gpu 'RTX 4090'")
    if args.python:
        try:
            facts.parse_cuda(args.python)
        except UsageError:
            raise UsageError(f"{args.python!r} is not a Python version", hint="use X.Y, e.g. 3.11") from None
    snap = describe(args.driver, args.gpu, args.torch, args.python, args.ram_gb, platform=args.platform,
                    jetpack=args.jetpack, glibc=args.glibc, image=args.image)
    for note in snap.get("notes") or []:
        sys.stderr.write(f"note: {note}\n")
    return emit_report("compat", snap, args, only=STACK_CHECKS)
