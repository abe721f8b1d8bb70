"""`preflight serve`: a local page with the catalog, engines, GPUs and workload controls, the
breakdown, the memory curve, the verdict and the command lines (docs/serve.md)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("serve", help="a local web page to try models, engines, GPUs and workloads",
                       description="Serve a local page (standard library HTTP server) that calls the same estimator "
                                   "as `preflight estimate`: pick a model (catalog, local path, or the Hub when "
                                   "online), engine, GPUs and workload, and watch the breakdown, the memory curve "
                                   "and the verdict change. Binds to 127.0.0.1 only, unless --allow-remote. "
                                   "JSON API: docs/serve.md.", allow_abbrev=False)
    p.add_argument("--port", type=_port, default=8765, help="TCP port (default 8765; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host: anyone who reaches it can run estimates and read model "
                        "configs from local paths")
    p.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    p.add_argument("--calibration", metavar="DIR",
                   help="repository whose calibration/raw runs the curves overlay (default: the source tree's)")
    p.add_argument("--verbose", action="store_true", help="log each request on stderr")
    p.set_defaults(func=run)


def _port(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{n} is not a port number (0 to 65535)")
    return n


def run(args) -> int:
    from gpu_preflight.serve.app import App
    from gpu_preflight.serve.server import PreflightServer

    server = PreflightServer(args.host, args.port, App(offline=args.offline, calibration=args.calibration),
                             allow_remote=args.allow_remote, verbose=args.verbose)
    sys.stderr.write(f"preflight serve: {server.url}  (Ctrl-C stops)\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
