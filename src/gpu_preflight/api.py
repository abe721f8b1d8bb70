"""The public Python API: the same answers as the CLI, as typed, frozen results.

Everything here is re-exported lazily by `gpu_preflight/__init__.py`, so `import gpu_preflight`
stays instant; heavy modules are imported inside each function. The CLI's commands call these
functions and only parse flags and render, so both give the same results (one code path); each
result's `.to_json()` is exactly what the command prints with `--json`.

Errors are the typed exceptions of `gpu_preflight.errors` (UsageError, ModelSourceError,
SnapshotError, DependencyMissing, DeviceUnavailable: all PreflightError with `.message` and
`.hint`), the ones the CLI turns into its one-line errors.
"""

from __future__ import annotations

import argparse
import copy
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpu_preflight.errors import UsageError

__all__ = [
    "Estimate", "TargetFit", "Report", "Finding", "CheckDoc", "FleetReport",
    "estimate", "compat", "doctor", "snapshot", "explain", "fleet", "Curve", "curve",
]


def _frozen(obj: Any) -> Any:
    """A read-only deep view: mappings become MappingProxyType, lists tuples."""
    if isinstance(obj, Mapping):
        return types.MappingProxyType({k: _frozen(v) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return tuple(_frozen(v) for v in obj)
    return obj


def _thawed(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _thawed(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_thawed(v) for v in obj]
    return obj


@dataclass(frozen=True)
class _Result:
    data: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The command's `--json` output, as a fresh dict."""
        return _thawed(self.data)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


# --------------------------------------------------------------------------- estimate

@dataclass(frozen=True)
class TargetFit:
    gpu: str
    count: int
    memory_bytes: int            # per GPU
    fits: bool
    headroom_bytes: int          # per GPU; negative = short by
    peak_process_bytes_per_gpu: int


@dataclass(frozen=True)
class Estimate(_Result):
    """The estimate report (`preflight estimate --json`)."""

    @property
    def engine(self) -> str:
        return self.data["engine"]

    @property
    def peak_process_bytes(self) -> int:
        return int(self.data["peak_process_bytes"])

    @property
    def targets(self) -> tuple[TargetFit, ...]:
        return tuple(TargetFit(f["gpu"], f["count"], f["memory_bytes"], f["fits"], f["headroom_bytes"],
                               f["peak_process_bytes_per_gpu"]) for f in self.data["fits"])

    @property
    def fits(self) -> bool | None:
        """Whether it fits the first target GPU; None when there was no target to judge."""
        return self.targets[0].fits if self.data["fits"] else None

    @property
    def exit_code(self) -> int:
        """The CLI's exit code for this report: 0 fits, 2 does not fit, 4 no target."""
        return 4 if self.fits is None else 0 if self.fits else 2


def _option_value(opt, name: str, value: Any) -> Any:
    if opt.action == "store_true":
        if not isinstance(value, bool):
            raise UsageError(f"{name} must be True or False, not {value!r}")
        return value
    if opt.type is None:
        return str(value)
    try:
        return opt.type(str(value))
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{name}={value!r}: {exc}") from None


def _gpu_specs(gpus: str | Sequence[str] | None) -> list[str]:
    if gpus is None:
        return []
    return [gpus] if isinstance(gpus, str) else [str(g) for g in gpus]


def estimate(model: str, *, engine: str | None = None, gpus: str | Sequence[str] | None = None,
             torch: str | None = None, revision: str | None = None, offline: bool | None = None,
             **options: Any) -> Estimate:
    """Peak GPU memory of running `model` (catalog name, folder, config.json, .gguf or org/name).

    `gpus`: target GPUs like "rtx-4090" or ["h100:2"]; None = this machine's GPUs. `engine`: None
    picks the default for the model's kind. `options`: the chosen engine's options by their
    keyword names (the CLI flag with dashes as underscores: `max_model_len=8192`, `batch=4`,
    `quantize="4bit"`); an option the engine does not declare raises UsageError.
    """
    from gpu_preflight.estimate.engines import all_engines
    from gpu_preflight.estimate.engines.base import resolve_options

    engines = all_engines()
    report = run_estimate(model, engine=engine, gpu_specs=_gpu_specs(gpus), torch=torch, revision=revision,
                          offline=offline, given=given_options(options, engines), engines=engines,
                          resolve=resolve_options)
    return Estimate(_frozen(report))


def given_options(options: Mapping[str, Any], engines=None) -> dict[str, Any]:
    """Keyword options (`max_model_len=8192`) as the parsed `given` dict run_estimate takes: each
    value parsed by its option's own type, an undeclared name a UsageError."""
    from gpu_preflight.estimate.engines import all_engines

    declared = {o.dest: o for e in engines or all_engines() for o in e.options}
    given: dict[str, Any] = {}
    for name, value in options.items():
        if name not in declared:
            raise UsageError(f"estimate() got an unknown option {name!r}",
                             hint="options: " + ", ".join(sorted(declared)))
        given[name] = None if value is None else _option_value(declared[name], name, value)
    return given


def run_estimate(model: str, *, engine: str | None, gpu_specs: list[str], torch: str | None, revision: str | None,
                 offline: bool | None, given: dict[str, Any], engines=None, resolve=None) -> dict[str, Any]:
    """The one code path behind `estimate()` and `preflight estimate`: load the model, pick the
    engine, refuse options it does not declare, build the report."""
    source = load_source(model, revision=revision, offline=offline)
    plan = prepare_estimate(source, engine=engine, gpu_specs=gpu_specs, torch=torch, given=given,
                            engines=engines, resolve=resolve)
    return report_for(plan)


def load_source(model: str, *, revision: str | None, offline: bool | None):
    """The ModelSource of what the user typed (models.load_model_source; a Hub GGUF file
    org/name/file.gguf: its header by HTTP range requests)."""
    from gpu_preflight.models import gguf_remote, load_model_source

    load = gguf_remote.load_hub_gguf if gguf_remote.is_hub_gguf(model) else load_model_source
    return load(model, revision=revision, offline=offline)


@dataclass(frozen=True)
class EstimatePlan:
    """A loaded model with its engine, resolved options and targets: what run_estimate builds a
    report from, kept so a sweep (estimate/sweep.py) or the local page can build many reports
    from one loaded model."""
    source: Any
    engine: Any
    opts: Mapping[str, Any]
    targets: tuple
    torch: str | None
    kind: str


def prepare_estimate(source, *, engine: str | None, gpu_specs: list[str], torch: str | None,
                     given: dict[str, Any], engines=None, resolve=None) -> EstimatePlan:
    """Pick the engine for a loaded ModelSource, refuse options it does not declare, resolve the
    targets (this machine's GPUs when `gpu_specs` is empty)."""
    from gpu_preflight.estimate.engines import all_engines, default_engine, find_engine, model_kind
    from gpu_preflight.estimate.engines.base import owners, resolve_options

    engines = engines or all_engines()
    resolve = resolve or resolve_options
    kind = model_kind(source)
    label = {"pipeline": "an image/video pipeline", "llm": "an LLM"}.get(kind, f"a {kind} model")
    chosen = find_engine(engine, engines) if engine else default_engine(kind, engines, given)
    if chosen is None:
        raise UsageError(f"unknown engine {engine!r}", hint="engines: " + ", ".join(e.name for e in engines))
    if kind not in chosen.kinds:
        fitting = [e.name for e in engines if kind in e.kinds]
        raise UsageError(f"--engine {chosen.name} does not run {label}",
                         hint=f"for {label} use --engine {' or '.join(fitting)}")
    opts = resolve(chosen, given, owners(engines), label)
    return EstimatePlan(source, chosen, types.MappingProxyType(opts), tuple(_targets(gpu_specs)), torch, kind)


def report_for(plan: EstimatePlan, opts: Mapping[str, Any] | None = None, *, point_only: bool = False) -> dict[str, Any]:
    """The estimate report of `plan` (with `opts` in place of its resolved options, e.g. one point
    of a sweep). `point_only`: the caller needs the peak, breakdown and verdicts at this workload
    only; an engine may then skip its searches (largest context / batch) and suggestions."""
    source, targets = plan.source, list(plan.targets)
    common = {"torch": plan.torch}
    if point_only:
        common["point_only"] = True
    report = plan.engine.run(source, dict(plan.opts if opts is None else opts), targets, common)
    report["assumptions"] = list(source.warnings) + report.get("assumptions", [])
    report["source"] = {"origin": source.origin, "url": source.source_url}
    if not targets:
        report["assumptions"].append("no target GPU: this machine has none visible; pass --gpu NAME[:COUNT]")
    from gpu_preflight.estimate.annotate import annotate

    return annotate(report)  # tight fits, what limits the context, the pipeline peak's parts


# --------------------------------------------------------------------------- memory curves

@dataclass(frozen=True)
class Curve(_Result):
    """The peak as one workload quantity grows (`gpu-preflight.curve`, docs/plots.md)."""


def curve(model: str, *, engine: str | None = None, gpus: str | Sequence[str] | None = None,
          torch: str | None = None, revision: str | None = None, offline: bool | None = None,
          sweep: str | None = None, calibration: str | None = None, **options: Any) -> Curve:
    """The memory curve behind `preflight estimate ... --plot`: the same estimate at each point of
    `sweep` ("context", "side=512:2048", "batch=1,2,4,8"; None = the engine's usual quantity and
    range), with the measured runs of calibration/raw overlaid where found (`calibration`: a
    repository root; None = the source tree this package runs from, if any)."""
    from gpu_preflight.estimate.engines import all_engines

    engines = all_engines()
    given = given_options(options, engines)
    source = load_source(model, revision=revision, offline=offline)
    plan = prepare_estimate(source, engine=engine, gpu_specs=_gpu_specs(gpus), torch=torch, given=given,
                            engines=engines)
    return Curve(_frozen(curve_for(plan, given=given, spec=sweep, calibration=calibration)))


def curve_for(plan: EstimatePlan, *, given: dict[str, Any], spec: str | None = None,
              base: dict[str, Any] | None = None, calibration: str | None = None) -> dict[str, Any]:
    """The curve of a prepared estimate (`base`: its report at the user's workload, when known),
    with the measured runs overlaid."""
    from gpu_preflight.estimate.sweep import sweep as run_sweep
    from gpu_preflight.measure.calibration_points import find_root, measured_points

    out = run_sweep(plan, lambda opts: report_for(plan, opts, point_only=True), given=given, spec=spec, base=base)
    root, how = find_root(calibration)
    if root is None:
        out["measured"] = {"points": [], "env": None, "note": how}
    else:
        catalog_id = plan.source.name if plan.source.origin == "catalog" else None
        out["measured"] = {**measured_points(root, out, catalog_id, dict(plan.opts)), "found_by": how}
    return out


def _targets(specs: list[str]):
    from gpu_preflight.estimate.plan import targets_from_machine, targets_from_specs

    if specs:
        return targets_from_specs(specs)
    from gpu_preflight.probes.context import ProbeContext
    from gpu_preflight.probes.nvml import probe_nvml

    return targets_from_machine({"nvml": probe_nvml(ProbeContext())})


# --------------------------------------------------------------------------- doctor / compat

@dataclass(frozen=True)
class Finding:
    code: str
    status: str          # ok | skip | warn | fail | error
    title: str
    message: str
    fix: str | None
    area: str


@dataclass(frozen=True)
class Report(_Result):
    """A doctor / compat report (`gpu-preflight.report`)."""

    @property
    def ok(self) -> bool:
        return bool(self.data["ok"])

    @property
    def exit_code(self) -> int:
        return int(self.data["exit_code"])

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(Finding(f["code"], f["status"], f["title"], f["message"], f["fix"], f["area"])
                     for f in self.data["findings"])

    @property
    def recommended_install(self) -> Mapping[str, Any] | None:
        return self.data.get("recommended_install")


def build_report(kind: str, snap: dict, only: list[str] | None = None) -> dict[str, Any]:
    """Checks + recommendation + the `gpu-preflight.report` dict: what doctor and compat print."""
    from gpu_preflight.checks import run_checks
    from gpu_preflight.checks.context import driver_version, gpu_views
    from gpu_preflight.compat.described import summary
    from gpu_preflight.compat.recommend import recommend
    from gpu_preflight.render.findings import report_json
    from gpu_preflight.snapshot.schema import fact

    findings = run_checks(snap, only)
    ccs = [g.cc for g in gpu_views(snap) if g.cc]
    rec = None
    if ccs or driver_version(snap):
        rec = recommend(driver_version(snap), ccs, fact(snap, "host.python_version").get())
    return report_json(kind, findings, rec, summary(snap))


@dataclass(frozen=True)
class Snapshot(_Result):
    """A machine's facts (`gpu-preflight.snapshot`); `.to_json()` is what `preflight snapshot` writes."""


def snapshot(deep: bool = False) -> Snapshot:
    """Probe this machine (never creates a CUDA context unless `deep`)."""
    import gpu_preflight.snapshot as snap_mod

    return Snapshot(_frozen(snap_mod.to_json(snap_mod.collect(deep=deep))))


def doctor(deep: bool = False, snapshot_file: str | None = None) -> Report:
    """Judge this machine (or a snapshot file written by `preflight snapshot`)."""
    import gpu_preflight.snapshot as snap_mod

    snap = snap_mod.load(snapshot_file) if snapshot_file else snap_mod.collect(deep=deep)
    return Report(_frozen(build_report("doctor", snap)))


COMPAT_CHECKS = ["PF101", "PF103", "PF104", "PF105", "PF106", "PF115", "PF118", "PF119"]


def compat(*, driver: str | None = None, gpu: str | Sequence[str] | None = None, torch: str | None = None,
           python: str | None = None, ram_gb: float | None = None, **more: Any) -> Report:
    """Judge a described machine; without `torch`, `recommended_install` says what to install.
    Extra keywords (e.g. `platform=`) are passed to the description where this release knows them."""
    from gpu_preflight.compat.described import describe

    if not (driver or gpu or torch):
        raise UsageError("describe the machine with at least one of driver, gpu, torch")
    snap = describe(driver, _gpu_specs(gpu), torch, python, ram_gb, **more)
    return Report(_frozen(build_report("compat", snap, only=COMPAT_CHECKS)))


# --------------------------------------------------------------------------- explain / fleet

@dataclass(frozen=True)
class CheckDoc:
    code: str
    name: str
    title: str
    area: str
    sections: Mapping[str, str]   # What it checks, Why it matters, Example, Fix, Sources
    text: str


def explain(code: str | None = None) -> CheckDoc | tuple[CheckDoc, ...]:
    """One check's documentation, or every check's when `code` is None."""
    from gpu_preflight.checks import all_checks

    docs = {c.code: CheckDoc(c.code, c.name, c.title, c.area, types.MappingProxyType(c.sections()), c.doc)
            for c in all_checks()}
    if code is None:
        return tuple(docs.values())
    key = str(code).strip().upper()
    if key not in docs:
        import difflib

        near = difflib.get_close_matches(key, list(docs), n=3)
        raise UsageError(f"unknown check code {code!r}",
                         hint=(f"did you mean {', '.join(near)}? " if near else "") + "`preflight explain` lists them")
    return docs[key]


@dataclass(frozen=True)
class FleetReport(_Result):
    """A fleet report (`gpu-preflight.fleet`)."""

    @property
    def ok(self) -> bool:
        return bool(self.data["ok"])

    @property
    def exit_code(self) -> int:
        return int(self.data["exit_code"])


def fleet(paths: Iterable[str] | None = None, *, ray: str | bool | None = None, deep: bool = False,
          backend: str = "nccl", timeout_s: float = 60.0) -> FleetReport:
    """Judge snapshot files (`paths`) or, with `ray` (True or an address), every node of a Ray cluster."""
    from gpu_preflight.fleet.judge import judge

    paths = list(paths or [])
    if bool(ray) == bool(paths):
        raise UsageError("give snapshot PATHS or --ray (ray=), not both and not neither",
                         hint="preflight fleet snaps/  or  preflight fleet --ray")
    if not (0 < timeout_s <= 3600):
        raise UsageError("--timeout-s (timeout_s=) must be between 0 and 3600 seconds")
    if deep and not ray:
        raise UsageError("--deep (deep=True) runs on the nodes themselves: it needs --ray (ray=)",
                         hint="or run `preflight snapshot --deep -o NODE.json` on each node")
    cross = None
    if ray:
        from gpu_preflight.fleet import ray as fleet_ray

        address = None if ray is True or ray == "auto" else str(ray)
        nodes = fleet_ray.collect(address, deep=deep, timeout_s=timeout_s, deep_backend=backend)
        if deep:
            cross = fleet_ray.collective_across(nodes, backend=backend, timeout_s=max(timeout_s, 30))
    else:
        from gpu_preflight.fleet.files import load_paths

        nodes = load_paths(paths)
    return FleetReport(_frozen(copy.deepcopy(judge(nodes, cross))))
