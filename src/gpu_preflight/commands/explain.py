"""`preflight explain PF1xx`: what a check checks, why, an example, the fix, its sources."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("explain", help="explain a check code (PF101...) or list them all")
    p.add_argument("code", nargs="?", help="check code, e.g. PF104; omit to list every check")
    p.set_defaults(func=run)


def run(args) -> int:
    from gpu_preflight.checks import all_checks
    from gpu_preflight.errors import UsageError

    checks = {c.code: c for c in all_checks()}
    if not args.code:
        for c in checks.values():
            sys.stdout.write(f"{c.code}  {c.name:<28} {c.title}\n")
        return 0
    code = args.code.strip().upper()
    if code not in checks:
        import difflib

        near = difflib.get_close_matches(code, list(checks), n=3)
        raise UsageError(f"unknown check code {args.code!r}",
                         hint=(f"did you mean {', '.join(near)}? " if near else "") + "`preflight explain` lists them")
    c = checks[code]
    sys.stdout.write(f"{c.code} {c.name}: {c.title}\n\n{c.doc}\n")
    return 0
