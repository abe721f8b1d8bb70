"""Command-line entry point: `preflight VERB ...`.

Each verb lives in `gpu_preflight.commands.<verb>` and exposes `register(subparsers)`, which
adds its parser and sets `func=run` (a function taking the parsed args and returning the exit
code). Command modules import only the standard library at module level, so `--help` stays fast;
heavy work is imported inside `run`.

Exit codes (documented in README.md):
  0  all findings ok (or the command succeeded)
  1  warnings only
  2  at least one failure (doctor/compat), or the model does not fit (estimate)
  3  usage or internal error
  4  estimate only: no target GPU to judge
"""

from __future__ import annotations

import argparse
import codecs
import importlib
import os
import sys

from gpu_preflight import __version__
from gpu_preflight.errors import PreflightError

COMMANDS = ("doctor", "snapshot", "compat", "explain", "estimate", "measure", "watch", "fleet", "serve")

EXIT_OK, EXIT_WARN, EXIT_FAIL, EXIT_ERROR = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one line + hint, exit 3
        self.print_usage(sys.stderr)
        sys.stderr.write(f"preflight: error: {message}\n")
        sys.exit(EXIT_ERROR)


class _Stub:
    """Stands for a verb's parser when another verb was asked for: it takes the verb's name and
    one-line help (shown by `preflight --help`) and ignores the rest, so running one verb never
    pays for building the others' flags (estimate's come from every engine module)."""

    is_stub = True

    def __init__(self, sub=None):
        self._sub = sub

    def add_parser(self, name, **kwargs):
        self._sub.add_parser(name, help=kwargs.get("help"))
        return _Stub()

    def __getattr__(self, name):
        return lambda *a, **k: _Stub()


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `argv`, only the verb it names gets its full flags (the others are listed)."""
    parser = _Parser(
        prog="preflight",
        description="Will this AI model run on this GPU machine, will it fit, and what do I change?",
    )
    parser.add_argument("--version", action="version", version=f"gpu-preflight {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    wanted = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"gpu_preflight.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gpu_preflight.commands.{name}":
                raise
            continue  # verb not built yet
        module.register(sub if argv is None or name == wanted else _Stub(sub))
    return parser


# What a terminal that cannot show a character gets instead (the rest become "?"), so output never
# crashes on a non-UTF-8 stream (PYTHONIOENCODING=ascii, LANG=C on old Pythons, a latin-1 pipe).
ASCII_FALLBACK = {"\u00b7": "-", "\u2713": "+", "\u2717": "x", "\u00d7": "x", "\u2192": "->", "\u2190": "<-",
                  "\u2026": "...", "\u2248": "~", "\u2264": "<=", "\u2265": ">=", "\u2013": "-", "\u2014": "-",
                  "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00b0": " deg", "\u00a0": " ",
                  "\u2212": "-", "\u00b1": "+/-"}
ENCODE_ERRORS = "gpu-preflight-fallback"


def _fallback(exc: UnicodeError):
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    text = "".join(ASCII_FALLBACK.get(ch, "?") for ch in exc.object[exc.start:exc.end])
    return text, exc.end


codecs.register_error(ENCODE_ERRORS, _fallback)


def safe_streams(streams=None) -> None:
    """Make stdout/stderr replace what their encoding cannot show instead of raising."""
    for stream in streams or (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None or (getattr(stream, "errors", "") or "") != "strict":
            continue
        try:
            reconfigure(errors=ENCODE_ERRORS)
        except (ValueError, OSError):  # a stream that cannot be reconfigured is left as it is
            pass


def main(argv: list[str] | None = None) -> int:
    safe_streams()
    parser = build_parser(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return int(args.func(args) or 0)
    except PreflightError as exc:
        if args.debug:
            raise
        from gpu_preflight.render.style import sanitize  # messages may hold names read from files

        sys.stderr.write(f"preflight: error: {sanitize(exc.message)}\n")
        if exc.hint:
            sys.stderr.write(f"  hint: {sanitize(exc.hint)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("preflight: interrupted\n")
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error worth a traceback
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - last resort: never a bare traceback
        if args.debug:
            raise
        from gpu_preflight.render.style import sanitize

        sys.stderr.write(f"preflight: internal error: {type(exc).__name__}: {sanitize(exc)}\n")
        sys.stderr.write("  hint: run again with --debug for the traceback, and report it\n")
        return EXIT_ERROR
