"""`preflight estimate MODEL`: peak GPU memory before download, what fits, and what to change.

The flags of each engine come from its declaration (`estimate/engines/*.py`, `ENGINES`); this
module adds the common ones, picks the engine (from --engine, or the default for the model's
kind), and refuses any engine flag the chosen engine does not declare.
"""

from __future__ import annotations

import sys

COMMON_DESTS = {"model", "engine", "gpu", "torch", "revision", "offline", "list_models", "json", "debug",
                "command", "func"}
EXIT_NO_TARGET = 4  # no target GPU: nothing was judged (documented in README "Exit codes")


def _positive(text: str) -> int:  # kept for other verbs' parsers
    from gpu_preflight.estimate.engines.base import positive_int

    return positive_int(text)


def register(sub) -> None:
    from gpu_preflight.estimate.engines import all_engines

    engines = all_engines()
    p = sub.add_parser(
        "estimate", help="peak GPU memory of a model before you download it, and what fits",
        description="Estimate the peak GPU memory (what nvidia-smi shows, and torch.cuda.max_memory_allocated) "
                    "of running MODEL, per target GPU, with the largest context and batch that fit and the "
                    "changes that make it fit. MODEL: a folder with config.json (+ safetensors headers), a "
                    "config.json, a .gguf file, a built-in catalog name (see --list-models) or a Hugging Face "
                    "repo id org/name[@revision]. Each engine has its own flags (below); a flag of another "
                    "engine is refused. Exit code: 0 fits, 2 does not fit on the first target, 3 error, "
                    "4 no target GPU to judge (pass --gpu).", allow_abbrev=False)
    p.add_argument("model", nargs="?", help="model folder, config.json, .gguf, catalog name or org/name[@rev]")
    p.add_argument("--engine", choices=[e.name for e in engines],
                   help="default: " + ", ".join(f"{e.name} for {'/'.join(e.default_for)}" for e in engines
                                                if e.default_for))
    p.add_argument("--gpu", action="append", default=[], metavar="NAME[:COUNT]",
                   help="target GPU(s), e.g. rtx-4090 or h100:2; repeatable (default: this machine's GPUs)")
    p.add_argument("--torch", metavar="VER", help="torch release (selects the measured process overhead)")
    p.add_argument("--revision", help="hub revision (also accepted as org/name@revision)")
    p.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    p.add_argument("--list-models", action="store_true", help="list the built-in catalog and exit")
    p.add_argument("--json", action="store_true", help="print the JSON report (docs/json-schema.md)")
    add_engine_options(p, engines)
    p.set_defaults(func=run)


def add_engine_options(p, engines) -> None:
    """One argparse option per distinct flag, shown in the group of the first engine declaring it.
    Defaults are None (= not given): the chosen engine applies its own default after parsing."""
    owners = _owners(engines)
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


def _owners(engines):
    out: dict = {}
    for e in engines:
        for o in e.options:
            first, names = out.get(o.dest, (o, []))
            out[o.dest] = (first, names + [e.name])
    return out


def run(args) -> int:
    from gpu_preflight.errors import UsageError
    from gpu_preflight.estimate.engines import all_engines, default_engine, find_engine
    from gpu_preflight.estimate.engines.base import resolve_options
    from gpu_preflight.models import load_model_source

    if args.list_models:
        return _list_models()
    if not args.model:
        raise UsageError("no model given", hint="e.g. preflight estimate qwen2.5-7b-instruct --gpu rtx-4090 "
                                                "(--list-models shows the built-in names)")
    engines = all_engines()
    from gpu_preflight.models import gguf_remote  # a GGUF on the Hub (org/name/file.gguf): its header by range requests

    load = gguf_remote.load_hub_gguf if gguf_remote.is_hub_gguf(args.model) else load_model_source
    source = load(args.model, revision=args.revision, offline=True if args.offline else None)
    kind = "pipeline" if source.kind == "diffusion" or source.components else "llm"
    label = "an image/video pipeline" if kind == "pipeline" else "an LLM"
    fmt = "gguf" if source.origin == "gguf" and any("gguf" in e.default_for for e in engines) else kind
    engine = find_engine(args.engine, engines) if args.engine else default_engine(fmt, engines)  # .gguf: llama.cpp
    if kind not in engine.kinds:
        fitting = [e.name for e in engines if kind in e.kinds]
        raise UsageError(f"--engine {engine.name} does not run {label}",
                         hint=f"for {label} use --engine {' or '.join(fitting)}")
    given = {k: v for k, v in vars(args).items() if k not in COMMON_DESTS}
    opts = resolve_options(engine, given, _owners(engines), label)
    targets = _targets(args.gpu)
    report = engine.run(source, opts, targets, {"torch": args.torch})
    report["assumptions"] = list(source.warnings) + report.get("assumptions", [])
    report["source"] = {"origin": source.origin, "url": source.source_url}
    if not targets:
        report["assumptions"].append("no target GPU: this machine has none visible; pass --gpu NAME[:COUNT]")
    _emit(report, args.json)
    if not report["fits"]:
        return EXIT_NO_TARGET
    return 0 if report["fits"][0]["fits"] else 2


def _emit(report: dict, as_json: bool) -> None:
    if as_json:
        import json

        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    from gpu_preflight.render.estimate import render_report
    from gpu_preflight.render.style import Style

    sys.stdout.write(render_report(report, Style(sys.stdout)) + "\n")


def _targets(specs: list[str]):
    from gpu_preflight.estimate.plan import targets_from_machine, targets_from_specs

    if specs:
        return targets_from_specs(specs)
    from gpu_preflight.probes.context import ProbeContext
    from gpu_preflight.probes.nvml import probe_nvml

    return targets_from_machine({"nvml": probe_nvml(ProbeContext())})


def _list_models() -> int:
    from gpu_preflight.models.catalog import default_catalog

    cat = default_catalog()
    for e in sorted(cat.entries, key=lambda e: (e.kind, e.id)):
        sys.stdout.write(f"{e.id:<34} {e.kind:<10} {e.hf_repo or ''}\n")
    return 0
