"""Helpers shared by the doctor-style commands (stdlib-only at import time)."""

from __future__ import annotations

import shlex
import sys


def add_output_flags(p) -> None:
    p.add_argument("--json", action="store_true", help="print the versioned JSON report on stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="also list skipped checks")


def refuse_python_without_deep(args) -> None:
    """--python names the interpreter whose torch --deep imports; without --deep nothing uses it."""
    if getattr(args, "python", None) and not getattr(args, "deep", False):
        from gpu_preflight.errors import UsageError

        raise UsageError("--python applies only with --deep (it names the interpreter whose torch --deep imports)",
                         hint=f"add --deep: preflight {args.command} --deep --python {shlex.quote(args.python)}")


def emit_report(kind: str, snap: dict, args, only: list[str] | None = None) -> int:
    from gpu_preflight.checks import run_checks
    from gpu_preflight.checks.context import driver_version, gpu_views
    from gpu_preflight.compat.described import summary
    from gpu_preflight.checks.stack import recommendation
    from gpu_preflight.render.findings import render_json, render_text, report_json
    from gpu_preflight.render.style import Style
    from gpu_preflight.snapshot.schema import fact

    findings = run_checks(snap, only)
    ccs = [g.cc for g in gpu_views(snap) if g.cc]
    rec = None
    if ccs or driver_version(snap):
        rec = recommendation(snap)
    report = report_json(kind, findings, rec, summary(snap))
    if snap.get("notes"):
        report["notes"] = list(snap["notes"])
    if args.json:
        sys.stdout.write(render_json(report) + "\n")
    else:
        sys.stdout.write(render_text(report, Style(sys.stdout), verbose=args.verbose) + "\n")
    return report["exit_code"]
