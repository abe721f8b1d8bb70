"""What an engine declares: the model kinds it serves, its own flags, and the function that
builds its estimate report.

`commands/estimate.py` builds one flag group per engine from these declarations and refuses a
flag the chosen engine does not declare, so a flag is never silently ignored. A flag declared by
several engines (say `--dtype`) is one argparse option; each engine applies its own default and
choices after parsing. Engine modules import only the standard library and light estimator
modules at module level, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from gpu_preflight.errors import UsageError


@dataclass(frozen=True)
class Option:
    flag: str                                  # "--max-model-len"
    dest: str                                  # "max_model_len"
    help: str
    type: Callable[[str], Any] | None = None   # parses the text; raises argparse.ArgumentTypeError
    default: Any = None                        # the engine's default when the flag is not given
    choices: tuple[str, ...] | None = None
    action: str | None = None                  # "store_true" | "append"
    metavar: str | None = None


@dataclass(frozen=True)
class Engine:
    name: str                                  # the value of --engine
    kinds: tuple[str, ...]                     # model kinds it estimates: "llm", "pipeline"
    summary: str
    options: tuple[Option, ...]
    run: Callable[..., dict[str, Any]]         # run(source, opts, targets, common) -> report
    default_for: tuple[str, ...] = ()          # model kinds for which it is the default engine
    aliases: tuple[str, ...] = field(default=())
    selected_by: tuple[str, ...] = ()          # option dests that choose this engine when given (--train)

    def option(self, dest: str) -> Option | None:
        return next((o for o in self.options if o.dest == dest), None)


# Parsers for option types: bounded, finite, with the allowed range in the message.

def positive_int(text: str, upper: int = 10_000_000) -> int:
    try:
        n = int(str(text).replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1 or n > upper:
        raise argparse.ArgumentTypeError(f"{n} is out of range (1 to {upper:,})")
    return n


def non_negative_int(text: str, upper: int = 10_000_000) -> int:
    try:
        n = int(str(text).replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0 or n > upper:
        raise argparse.ArgumentTypeError(f"{n} is out of range (0 to {upper:,})")
    return n


def bounded_float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v) or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be a number from {lo:g} to {hi:g}")
        return v

    parse.__name__ = "number"
    return parse


def owners(engines) -> dict[str, tuple[Option, list[str]]]:
    """dest -> (the first declaration, names of every engine declaring it)."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for e in engines:
        for o in e.options:
            first, names = out.get(o.dest, (o, []))
            out[o.dest] = (first, names + [e.name])
    return out


def resolve_options(engine: Engine, given: dict[str, Any], all_options: dict[str, tuple[Option, list[str]]],
                    kind_label: str) -> dict[str, Any]:
    """The chosen engine's option values: the user's where given, the engine's defaults elsewhere.

    `given` maps dest -> parsed value (None = not given); `all_options` maps dest -> (option, names of
    the engines that declare it). A given flag the engine does not declare is a UsageError naming the
    engines it applies to; a value outside the engine's choices is a UsageError listing them."""
    out: dict[str, Any] = {}
    for dest, value in given.items():
        if dest not in all_options or value is None:
            continue
        opt, owners = all_options[dest]
        mine = engine.option(dest)
        if mine is None:
            where = ", ".join(owners)
            raise UsageError(f"{opt.flag} does not apply to {kind_label} with --engine {engine.name}",
                             hint=f"{opt.flag} is a flag of --engine {where}; drop it, or choose that engine")
        if mine.choices and value not in mine.choices and not (isinstance(value, list)):
            raise UsageError(f"{opt.flag} {value} is not one of {', '.join(mine.choices)} for --engine {engine.name}",
                             hint=f"use {opt.flag} " + "|".join(mine.choices))
    for opt in engine.options:
        value = given.get(opt.dest)
        out[opt.dest] = opt.default if value is None else value
    return out
