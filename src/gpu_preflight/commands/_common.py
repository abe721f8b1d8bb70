"""Helpers shared by the doctor-style commands (stdlib-only at import time)."""

from __future__ import annotations

import math
import re
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
    from gpu_preflight.compatibility.described import summary
    from gpu_preflight.checks.stack import recommendation
    from gpu_preflight.render.findings import render_json, render_text, report_json
    from gpu_preflight.render.style import Style
    from gpu_preflight.snapshots.schema import fact

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


# -- argparse types for numbers and versions (shared by every verb) ---------------------------
# Each returns a function for `add_argument(type=...)`; argparse turns the ArgumentTypeError into
# "preflight VERB: error: argument --ram-gb: ..." and exit 3. `nan`, `inf` and `-1` never pass.

def number(low: float | None = None, high: float | None = None, *, above: bool = False, what: str = "number"):
    """A finite float in [low, high] (or (low, high] with above=True)."""
    def parse(text: str) -> float:
        import argparse

        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite {what}")
        if low is not None and (value <= low if above else value < low):
            raise argparse.ArgumentTypeError(f"{text} is too small: {_bounds(low, high, above)}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} is too large: {_bounds(low, high, above)}")
        return value
    return parse


def whole(low: int = 0, high: int | None = None):
    """An integer in [low, high]."""
    def parse(text: str) -> int:
        import argparse

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low:,} to {high:,})" if high is not None
                                             else f"{value} is out of range (at least {low:,})")
        return value
    return parse


_VERSION = re.compile(r"\d{1,4}(\.\d{1,4}){1,3}([.+-][0-9A-Za-z.+-]{1,40})?")


def version(example: str):
    """A release number like 2.7.1 (a local tag after + is allowed); 'latest' or '' do not pass."""
    def parse(text: str) -> str:
        import argparse

        if not _VERSION.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"{text!r} is not a release number like {example}")
        return text.strip()
    return parse


def _bounds(low: float | None, high: float | None, above: bool) -> str:
    lo = "" if low is None else f"{'more than' if above else 'at least'} {_fmt(low)}"
    hi = "" if high is None else f"at most {_fmt(high)}"
    return " and ".join(x for x in (lo, hi) if x)


def _fmt(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"
