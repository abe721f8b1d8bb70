"""`preflight fleet`: judge every node of a cluster together.

From snapshot files gathered by any means (Slurm, Kubernetes, scp), or live through Ray (one task
per alive node). The report groups nodes with identical stacks, runs every node check on every
node and the fleet checks (version skew, GPU mismatch, unreachable nodes) across them.
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "fleet", help="judge every node of a cluster together (snapshot files, or live through Ray)",
        description="Judge a fleet of GPU nodes: PATHS are snapshot files (preflight snapshot -o NODE.json), "
                    "folders of them, or logs with one snapshot JSON per line; --ray collects one snapshot per "
                    "alive node of a running Ray cluster. Exit code as doctor: 0 ok, 1 warnings, 2 failures "
                    "(a node that did not answer is a failure), 3 error.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="snapshot files or folders")
    p.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="collect from a running Ray cluster (ADDRESS, RAY_ADDRESS or the local one)")
    p.add_argument("--deep", action="store_true",
                   help="also run each node's deep probe, its GPUs' P2P matrix and an NCCL all-reduce (and, with "
                        "--ray, one all-reduce across all nodes)")
    p.add_argument("--backend", choices=("nccl", "gloo"), default="nccl",
                   help="--deep collective backend (gloo: CPU processes, for nodes without GPUs)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="per-node answer deadline (default 60)")
    p.add_argument("--json", action="store_true", help="print the JSON report (docs/json-schema.md)")
    p.add_argument("-v", "--verbose", action="store_true", help="list every node")
    p.set_defaults(func=run)


def run(args) -> int:
    from gpu_preflight.errors import UsageError

    from gpu_preflight.api import fleet

    if not args.ray and not args.paths:
        raise UsageError("nothing to judge", hint="preflight fleet snaps/*.json, or preflight fleet --ray "
                                                  "on a Ray cluster")
    if args.ray:
        sys.stderr.write("preflight: collecting snapshots from the Ray cluster...\n")
    report = fleet(args.paths, ray=args.ray, deep=args.deep, backend=args.backend, timeout_s=args.timeout_s).to_json()
    if args.json:
        import json

        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
    else:
        from gpu_preflight.render.fleet import render_fleet
        from gpu_preflight.render.style import Style

        sys.stdout.write(render_fleet(report, Style(sys.stdout), verbose=args.verbose) + "\n")
    return report["exit_code"]
