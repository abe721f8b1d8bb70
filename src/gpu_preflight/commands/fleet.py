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
    from gpu_preflight.fleet.judge import judge

    if args.ray and args.paths:
        raise UsageError("give snapshot PATHS or --ray, not both", hint="preflight fleet snaps/  or  "
                                                                        "preflight fleet --ray")
    if not args.ray and not args.paths:
        raise UsageError("nothing to judge", hint="preflight fleet snaps/*.json, or preflight fleet --ray "
                                                  "on a Ray cluster")
    if not (0 < args.timeout_s <= 3600):
        raise UsageError("--timeout-s must be between 0 and 3600 seconds")
    if args.deep and not args.ray:
        raise UsageError("--deep runs on the nodes themselves: it needs --ray",
                         hint="or run `preflight snapshot --deep -o NODE.json` on each node")
    cross = None
    if args.ray:
        from gpu_preflight.fleet import ray as fleet_ray

        sys.stderr.write("preflight: collecting snapshots from the Ray cluster...\n")
        nodes = fleet_ray.collect(None if args.ray == "auto" else args.ray, deep=args.deep,
                                  timeout_s=args.timeout_s, deep_backend=args.backend)
        if args.deep:
            cross = fleet_ray.collective_across(nodes, backend=args.backend, timeout_s=max(args.timeout_s, 30))
    else:
        from gpu_preflight.fleet.files import load_paths

        nodes = load_paths(args.paths)
    report = judge(nodes, cross)
    if args.json:
        import json

        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
    else:
        from gpu_preflight.render.fleet import render_fleet
        from gpu_preflight.render.style import Style

        sys.stdout.write(render_fleet(report, Style(sys.stdout), verbose=args.verbose) + "\n")
    return report["exit_code"]
