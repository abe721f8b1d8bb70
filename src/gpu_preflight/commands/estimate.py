"""`preflight estimate MODEL`: peak GPU memory before download, what fits, and what to change.

The flags of each engine come from its declaration (`estimators/engines/*.py`, `ENGINES`); this
module adds the common ones, picks the engine (from --engine, or the default for the model's
kind), and refuses any engine flag the chosen engine does not declare.
"""

from __future__ import annotations

import sys

COMMON_DESTS = {"model", "engine", "gpu", "torch", "revision", "offline", "list_models", "json", "debug",
                "command", "func", "plot", "plot_sweep", "plot_calibration"}
EXIT_NO_TARGET = 4  # no target GPU: nothing was judged (documented in README "Exit codes")


def _positive(text: str) -> int:  # kept for other verbs' parsers
    from gpu_preflight.estimators.engines.base import positive_int

    return positive_int(text)


def register(sub) -> None:
    p = sub.add_parser(
        "estimate", help="peak GPU memory of a model before you download it, and what fits",
        description="Estimate the peak GPU memory (what nvidia-smi shows, and torch.cuda.max_memory_allocated) "
                    "of running MODEL, per target GPU, with the largest context and batch that fit and the "
                    "changes that make it fit. MODEL: a folder with config.json (+ safetensors headers), a "
                    "config.json, a .gguf file, a built-in catalog name (see --list-models) or a Hugging Face "
                    "repo id org/name[@revision]. Each engine has its own flags (below); a flag of another "
                    "engine is refused. Exit code: 0 fits, 2 does not fit on the first target, 3 error, "
                    "4 no target GPU to judge (pass --gpu).", allow_abbrev=False)
    if getattr(p, "is_stub", False):  # another verb runs: skip importing every engine
        return
    from gpu_preflight.commands._common import version  # shared flag validator (stdlib only)
    from gpu_preflight.estimators.engines import all_engines

    engines = all_engines()
    p.add_argument("model", nargs="?", help="model folder, config.json, .gguf, catalog name or org/name[@rev]")
    p.add_argument("--engine", choices=[e.name for e in engines],
                   help="default: " + ", ".join(f"{e.name} for {'/'.join(e.default_for)}" for e in engines
                                                if e.default_for))
    p.add_argument("--gpu", action="append", default=[], metavar="NAME[:COUNT]",
                   help="target GPU(s), e.g. rtx-4090 or h100:2; repeatable (default: this machine's GPUs)")
    p.add_argument("--torch", metavar="VER", type=version("2.11.0"),
                   help="torch release (selects the measured process overhead)")
    p.add_argument("--revision", help="hub revision (also accepted as org/name@revision)")
    p.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    p.add_argument("--list-models", action="store_true", help="list the built-in catalog and exit")
    p.add_argument("--json", action="store_true", help="print the JSON report (docs/json-schema.md)")
    add_plot_options(p)
    add_engine_options(p, engines)
    p.set_defaults(func=run)


def add_engine_options(p, engines) -> None:
    """One argparse option per distinct flag, shown in the group of the first engine declaring it.
    Defaults are None (= not given): the chosen engine applies its own default after parsing."""
    from gpu_preflight.estimators.engines.base import owners as engine_owners

    owners = engine_owners(engines)
    seen: set[str] = set()
    for e in engines:
        group = p.add_argument_group(f"--engine {e.name}", e.summary)
        for o in e.options:
            if o.dest in seen:
                continue
            seen.add(o.dest)
            names = owners[o.dest][1]
            suffix = f" [engines: {', '.join(names)}]" if len(names) > 1 else ""
            kwargs = {"dest": o.dest, "default": None, "help": o.help + suffix}
            if o.action:
                kwargs["action"] = o.action
            else:
                if o.type:
                    kwargs["type"] = o.type
                kwargs["metavar"] = o.metavar or _metavar(o)
            group.add_argument(o.flag, **kwargs)


def _metavar(o) -> str:
    if o.choices:
        return "|".join(o.choices)
    name = getattr(o.type, "__name__", "")
    return "N" if name.endswith("_int") else "X" if name == "number" else o.dest.upper()


def run(args) -> int:
    from gpu_preflight.api import estimate_exit_code, run_estimate
    from gpu_preflight.errors import UsageError

    if args.list_models:
        return _list_models()
    if not args.model:
        raise UsageError("no model given", hint="e.g. preflight estimate qwen2.5-7b-instruct --gpu rtx-4090 "
                                                "(--list-models shows the built-in names)")
    given = {k: v for k, v in vars(args).items() if k not in COMMON_DESTS}
    if args.plot or args.plot_sweep or args.plot_calibration:
        report = _estimate_and_plot(args, given)
    else:
        report = run_estimate(args.model, engine=args.engine, gpu_specs=args.gpu, torch=args.torch,
                              revision=args.revision, offline=True if args.offline else None, given=given)
    _emit(report, args.json)
    return estimate_exit_code(report)


# ---- --plot: the memory curve (estimators/sweep.py, render/plot.py, docs/plots.md) ----

def add_plot_options(p) -> None:
    g = p.add_argument_group("memory curve (any engine)")
    g.add_argument("--plot", metavar="FILE", help="also draw the peak as the workload grows: FILE.html (interactive, "
                   "works offline), FILE.svg, or FILE.png (needs matplotlib)")
    g.add_argument("--plot-sweep", metavar="[Q=]FROM:TO[:N]", help="what to sweep and over which values: Q is "
                   "context, side, frames or batch (default: context for LLMs, the image side or frames for "
                   "pipelines, micro-batch for training); e.g. 1024:65536, side=512:2048:13, batch=1,2,4,8")
    g.add_argument("--plot-calibration", metavar="DIR", help="repository (or calibration folder) whose measured "
                   "runs to overlay (default: the source tree's, when this runs from one)")


def _estimate_and_plot(args, given: dict) -> dict:
    """One loaded model: the report at the user's workload, then the curve around it."""
    from gpu_preflight.api import curve_for, load_source, prepare_estimate, report_for
    from gpu_preflight.errors import UsageError
    from gpu_preflight.render.plot import plot_format, write_plot

    if not args.plot:
        raise UsageError("--plot-sweep and --plot-calibration apply only with --plot FILE",
                         hint="add --plot memory.html")
    plot_format(args.plot)  # a bad file name fails before any work
    source = load_source(args.model, revision=args.revision, offline=True if args.offline else None)
    plan = prepare_estimate(source, engine=args.engine, gpu_specs=args.gpu, torch=args.torch, given=given)
    report = report_for(plan)
    curve = curve_for(plan, given=given, spec=args.plot_sweep, base=report, calibration=args.plot_calibration)
    write_plot(curve, args.plot)
    measured = len(curve["measured"]["points"])
    sys.stderr.write(f"plot: {args.plot} ({curve['quantity']['name']}, {len(curve['points'])} points"
                     f"{f', {measured} measured' if measured else ''}; {curve['measured']['note']})\n")
    return report


def _emit(report: dict, as_json: bool) -> None:
    if as_json:
        import json

        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    from gpu_preflight.render.estimate import render_report
    from gpu_preflight.render.style import Style

    sys.stdout.write(render_report(report, Style(sys.stdout)) + "\n")


def _list_models() -> int:
    from gpu_preflight.models.catalog import default_catalog

    cat = default_catalog()
    for e in sorted(cat.entries, key=lambda e: (e.kind, e.id)):
        sys.stdout.write(f"{e.id:<34} {e.kind:<10} {e.hf_repo or ''}\n")
    return 0
