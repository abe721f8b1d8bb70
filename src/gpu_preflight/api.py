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
    "Estimate", "TargetFit", "Report", "Finding", "CheckDoc", "FleetReport", "Snapshot", "Measurement", "WatchResult",
    "Curve", "estimate", "curve", "compat", "doctor", "snapshot", "explain", "fleet", "measure", "watch",
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
        out: dict[str, Any] = _thawed(self.data)
        return out

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
        return str(self.data["engine"])

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
        """The CLI's exit code for this report (estimate_exit_code)."""
        return estimate_exit_code(self.data)


def estimate_exit_code(report: Mapping[str, Any]) -> int:
    """0 fits the first target; 2 does not fit, or cannot run as given (`failures`: a context past
    a fixed position table); 4 no target GPU was judged."""
    if not report["fits"]:
        return 4
    if report.get("failures"):
        return 2
    return 0 if report["fits"][0]["fits"] else 2


def _option_value(opt: Any, name: str, value: Any) -> Any:
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
    from gpu_preflight.estimators.engines import all_engines
    from gpu_preflight.estimators.engines.base import resolve_options

    engines = all_engines()
    report = run_estimate(model, engine=engine, gpu_specs=_gpu_specs(gpus), torch=torch, revision=revision,
                          offline=offline, given=given_options(options, engines), engines=engines,
                          resolve=resolve_options)
    return Estimate(_frozen(report))


def given_options(options: Mapping[str, Any], engines: Any = None) -> dict[str, Any]:
    """Keyword options (`max_model_len=8192`) as the parsed `given` dict run_estimate takes: each
    value parsed by its option's own type, an undeclared name a UsageError."""
    from gpu_preflight.estimators.engines import all_engines

    declared = {o.dest: o for e in engines or all_engines() for o in e.options}
    given: dict[str, Any] = {}
    for name, value in options.items():
        if name not in declared:
            raise UsageError(f"estimate() got an unknown option {name!r}",
                             hint="options: " + ", ".join(sorted(declared)))
        given[name] = None if value is None else _option_value(declared[name], name, value)
    return given


def run_estimate(model: str, *, engine: str | None, gpu_specs: list[str], torch: str | None, revision: str | None,
                 offline: bool | None, given: dict[str, Any], engines: Any = None,
                 resolve: Any = None) -> dict[str, Any]:
    """The one code path behind `estimate()` and `preflight estimate`: load the model, pick the
    engine, refuse options it does not declare, build the report."""
    source = load_source(model, revision=revision, offline=offline)
    plan = prepare_estimate(source, engine=engine, gpu_specs=gpu_specs, torch=torch, given=given,
                            engines=engines, resolve=resolve)
    return report_for(plan)


def load_source(model: str, *, revision: str | None, offline: bool | None) -> Any:
    """The ModelSource of what the user typed (models.load_model_source; a Hub GGUF file
    org/name/file.gguf: its header by HTTP range requests)."""
    from gpu_preflight.models import gguf_remote, load_model_source

    load = gguf_remote.load_hub_gguf if gguf_remote.is_hub_gguf(model) else load_model_source
    return load(model, revision=revision, offline=offline)


@dataclass(frozen=True)
class EstimatePlan:
    """A loaded model with its engine, resolved options and targets: what run_estimate builds a
    report from, kept so a sweep (estimators/sweep.py) or the local page can build many reports
    from one loaded model."""
    source: Any
    engine: Any
    opts: Mapping[str, Any]
    targets: tuple[Any, ...]
    torch: str | None
    kind: str


def prepare_estimate(source: Any, *, engine: str | None, gpu_specs: list[str], torch: str | None,
                     given: dict[str, Any], engines: Any = None, resolve: Any = None) -> EstimatePlan:
    """Pick the engine for a loaded ModelSource, refuse options it does not declare, resolve the
    targets (this machine's GPUs when `gpu_specs` is empty)."""
    from gpu_preflight.estimators.engines import all_engines, default_engine, find_engine, model_kind
    from gpu_preflight.estimators.engines.base import owners, resolve_options

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
    common: dict[str, Any] = {"torch": plan.torch}
    if point_only:
        common["point_only"] = True
    report = plan.engine.run(source, dict(plan.opts if opts is None else opts), targets, common)
    report["assumptions"] = list(source.warnings) + report.get("assumptions", [])
    report["source"] = {"origin": source.origin, "url": source.source_url}
    if not targets:
        report["assumptions"].append("no target GPU: this machine has none visible; pass --gpu NAME[:COUNT]")
    from gpu_preflight.estimators.annotate import annotate

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
    from gpu_preflight.estimators.engines import all_engines

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
    from gpu_preflight.estimators.sweep import sweep as run_sweep
    from gpu_preflight.measurement.calibration_points import find_root, measured_points

    out = run_sweep(plan, lambda opts: report_for(plan, opts, point_only=True), given=given, spec=spec, base=base)
    root, how = find_root(calibration)
    if root is None:
        out["measured"] = {"points": [], "env": None, "note": how}
    else:
        catalog_id = plan.source.name if plan.source.origin == "catalog" else None
        out["measured"] = {**measured_points(root, out, catalog_id, dict(plan.opts)), "found_by": how}
    return out


def _targets(specs: list[str]) -> list[Any]:
    from gpu_preflight.estimators.plan import targets_from_machine, targets_from_specs

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


def build_report(kind: str, snap: dict[str, Any], only: list[str] | None = None) -> dict[str, Any]:
    """Checks + recommendation + the `gpu-preflight.report` dict: what doctor and compat print."""
    from gpu_preflight.checks import run_checks
    from gpu_preflight.checks.context import driver_version, gpu_views
    from gpu_preflight.compatibility.described import summary
    from gpu_preflight.compatibility.recommend import recommend
    from gpu_preflight.render.findings import report_json
    from gpu_preflight.snapshots.schema import fact

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
    import gpu_preflight.snapshots as snap_mod

    return Snapshot(_frozen(snap_mod.to_json(snap_mod.collect(deep=deep))))


def doctor(deep: bool = False, snapshot_file: str | None = None) -> Report:
    """Judge this machine (or a snapshot file written by `preflight snapshot`)."""
    import gpu_preflight.snapshots as snap_mod

    snap = snap_mod.load(snapshot_file) if snapshot_file else snap_mod.collect(deep=deep)
    return Report(_frozen(build_report("doctor", snap)))


COMPAT_CHECKS = ["PF101", "PF103", "PF104", "PF105", "PF106", "PF115", "PF118", "PF119"]


def compat(*, driver: str | None = None, gpu: str | Sequence[str] | None = None, torch: str | None = None,
           python: str | None = None, ram_gb: float | None = None, **more: Any) -> Report:
    """Judge a described machine; without `torch`, `recommended_install` says what to install.
    Extra keywords (e.g. `platform=`) are passed to the description where this release knows them."""
    from gpu_preflight.compatibility.described import describe

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
    from gpu_preflight.cluster.judge import judge

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
        from gpu_preflight.cluster import ray as fleet_ray

        address = None if ray is True or ray == "auto" else str(ray)
        nodes = fleet_ray.collect(address, deep=deep, timeout_s=timeout_s, deep_backend=backend)
        if deep:
            cross = fleet_ray.collective_across(nodes, backend=backend, timeout_s=max(timeout_s, 30))
    else:
        from gpu_preflight.cluster.files import load_paths

        nodes = load_paths(paths)
    return FleetReport(_frozen(copy.deepcopy(judge(nodes, cross))))


# --------------------------------------------------------------------------- measure

@dataclass(frozen=True)
class Measurement(_Result):
    """A measurement on the local GPU (`preflight measure --json`)."""

    @property
    def ok(self) -> bool:
        return bool(self.data["status"] == "ok" and self.data["exit_code"] == 0)

    @property
    def exit_code(self) -> int:
        return int(self.data["exit_code"])


def measure(model: str, *, dtype: str = "bfloat16", batch: int = 1, input_len: int | None = None,
            output_len: int | None = None, attn: str | None = None, weights: str | None = None,
            height: int | None = None, width: int | None = None, gpu_index: int = 0, timeout_s: float = 600,
            python: str | None = None, keep: str | None = None) -> Measurement:
    """Run `model` on this machine's GPU in a child process (random weights from the config, or
    `weights`) and return the measured phases next to the estimate. Needs an NVIDIA GPU and
    torch + transformers in `python` (default: this interpreter)."""
    return Measurement(_frozen(run_measure(model, dtype=dtype, batch=batch, input_len=input_len, output_len=output_len,
                                           attn=attn, weights=weights, height=height, width=width,
                                           gpu_index=gpu_index, timeout_s=timeout_s, python=python, keep=keep)))


def run_measure(model: str, *, dtype: str = "bfloat16", batch: int = 1, input_len: int | None = None,
                output_len: int | None = None, attn: str | None = None, weights: str | None = None,
                height: int | None = None, width: int | None = None, gpu_index: int = 0, timeout_s: float = 600,
                python: str | None = None, keep: str | None = None) -> dict[str, Any]:
    """The one code path behind `measure()` and `preflight measure`: the report dict, with
    `kind` ("llm" | "diffusion") and `exit_code` (0 measured, 2 the child failed or ran out of memory)."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys
    import tempfile

    from gpu_preflight.errors import DependencyMissing, DeviceUnavailable
    from gpu_preflight.estimators.plan import parse_dtype
    from gpu_preflight.hints import install_hint
    from gpu_preflight.models import load_model_source
    from gpu_preflight.probes.context import ProbeContext
    from gpu_preflight.probes.nvml import probe_nvml

    # The GPU first: without one, installing torch would not help.
    nv = probe_nvml(ProbeContext())
    if not nv["available"].get(False) or not nv["gpus"].get():
        error = nv.get("error")
        raise DeviceUnavailable(f"no NVIDIA GPU to measure on: {error.get() if error is not None else 'none found'}",
                                hint="run `preflight doctor`; to estimate without a GPU use `preflight estimate`")
    if not python and (importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None):
        raise DependencyMissing("measuring needs torch and transformers in this Python environment",
                                hint=install_hint("measure") + "; or pass --python with an interpreter that has them")
    source = load_model_source(model)
    dtype = parse_dtype(dtype)
    pipeline = source.kind == "diffusion" or bool(source.components)
    _refuse_other_kind(model, pipeline, {"--input-len": input_len, "--output-len": output_len, "--attn": attn,
                                         "--weights": weights}, {"--height": height, "--width": width})
    input_len, output_len, attn = input_len or 512, output_len or 128, attn or "sdpa"
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        attn = "sdpa"
    if pipeline:
        from gpu_preflight.estimators.engines.diffusers import pipeline_entry

        entry = pipeline_entry(source)
        d = entry["defaults"]
        size = {"height": height or int(d.get("height", 1024)), "width": width or int(d.get("width", 1024))}
        spec = {"model": {"id": source.name, "catalog_id": source.name, "kind": "diffusion", **entry}, "dtype": dtype,
                "attn": attn, "device_index": gpu_index, "workloads": [{"name": "run", "batch": batch, **size}]}
    else:
        spec = {"model": {"id": source.name, "kind": "llm", "config": source.config}, "dtype": dtype, "attn": attn,
                "device_index": gpu_index, "weights_path": weights,
                "workloads": [{"name": "run", "batch": batch, "input_len": input_len, "output_len": output_len}]}
    with tempfile.TemporaryDirectory(prefix="preflight-measure-") as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), keep or os.path.join(tmp, "out.jsonl")
        with open(spec_path, "w", encoding="utf-8") as fh:
            json.dump(spec, fh)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
        try:
            proc = subprocess.run([python or sys.executable, "-m", "gpu_preflight.measurement.child", spec_path, out_path],
                                  env=env, timeout=timeout_s, capture_output=True, text=True)  # noqa: S603
            status = None if proc.returncode == 0 else f"child exited {proc.returncode}: " + \
                (proc.stderr.strip().splitlines() or [""])[-1][:300]
        except subprocess.TimeoutExpired:
            status = f"child killed after {timeout_s:g} s"
        records = []
        if os.path.exists(out_path):
            with open(out_path, encoding="utf-8") as fh:
                records = [json.loads(line) for line in fh if line.strip().startswith("{")]
    if pipeline:
        return _pipeline_measurement(source.name, entry, spec, records, status, dtype)
    from gpu_preflight.estimators.engines.transformers import Workload
    from gpu_preflight.estimators.plan import estimate_llm, targets_from_machine

    targets = targets_from_machine({"nvml": nv})
    est = estimate_llm(source.config, tensors=source.tensors, workload=Workload(
        batch=batch, input_len=input_len, output_len=output_len, dtype=dtype,
        attn="sdpa" if attn == "flash_attention_2" else attn), targets=targets[:1], model_name=source.name)
    failed = status is not None or any(r.get("oom") for r in records)
    return {"schema": "gpu-preflight.measure", "schema_version": 1, "kind": "llm", "model": source.name,
            "status": status or "ok", "exit_code": 2 if failed else 0, "records": records,
            "estimate": {k: est[k] for k in ("peak_process_bytes", "peak_allocated_bytes", "breakdown", "phases")}}


def _refuse_other_kind(model: str, pipeline: bool, llm_only: dict[str, Any], pipeline_only: dict[str, Any]) -> None:
    """A flag of the other model kind is refused, never silently ignored."""
    given = [flag for flag, value in (llm_only if pipeline else pipeline_only).items() if value is not None]
    if given:
        label, other = ("an image/video pipeline", "LLMs") if pipeline else ("an LLM", "image/video pipelines")
        one = len(given) == 1
        raise UsageError(f"{', '.join(given)} {'does' if one else 'do'} not apply to {label} ({model})",
                         hint=f"{' and '.join(given)} {'is a flag' if one else 'are flags'} for {other}; "
                              f"drop {'it' if one else 'them'}")


def _pipeline_measurement(name: str, entry: dict[str, Any], spec: dict[str, Any], records: list[dict[str, Any]],
                          status: str | None, dtype: str) -> dict[str, Any]:
    from gpu_preflight.estimators.engines.diffusers import ImageWorkload, estimate_pipeline

    w = spec["workloads"][0]
    est = estimate_pipeline(entry, ImageWorkload(height=w["height"], width=w["width"], batch=w["batch"], dtype=dtype))
    phases = {p.name: p for p in est.phases}
    rows = []
    for r in records:
        if r.get("type") == "phase" and r.get("phase") in phases:
            p = phases[r["phase"]]
            rows.append({"phase": r["phase"],
                         "measured_transient_bytes": r["peak_allocated_bytes"] - r["before"]["allocated_bytes"],
                         "estimated_transient_bytes": p.transient_bytes, "measured_process_bytes": r["peak_process_bytes"],
                         "oom": r.get("oom", False), "error": r.get("error")})
    failed = status is not None or any(r["oom"] for r in rows)
    return {"schema": "gpu-preflight.measure", "schema_version": 1, "kind": "diffusion", "model": name,
            "status": status or "ok", "exit_code": 2 if failed else 0, "workload": w, "phases": rows,
            "records": records}


# --------------------------------------------------------------------------- watch

@dataclass(frozen=True)
class WatchResult(_Result):
    """A watched command's record (docs/watch.md) and its exit code."""

    @property
    def exit_code(self) -> int:
        """The command's exit code (128+N when killed by signal N), as `preflight watch` returns it."""
        exit_info = self.data.get("exit") or {}
        if exit_info.get("code") is not None:
            return int(exit_info["code"])
        return 128 + int(exit_info["signal"]) if exit_info.get("signal") else 1

    @property
    def peaks(self) -> tuple[Mapping[str, Any], ...]:
        """Per GPU: gpu, name, total_bytes, peak_bytes, at_s, phase, headroom_bytes, ... (docs/watch.md)."""
        analysis = self.data.get("analysis") or {}
        return tuple(analysis.get("peaks") or ())


def watch(command: Sequence[str] | None = None, *, out: str | None = None, json_path: str | None = None,
          html: str | None = None, png: str | None = None, interval_ms: float = 100.0, model: str | None = None,
          gpu_indices: Sequence[int] | None = None, quiet: bool = True) -> Any:
    """Two forms.

    `watch(["python", "train.py"], ...)` runs the command (an argument list, never a shell string),
    samples its GPU memory through NVML and returns its `WatchResult`; report files are written
    where asked (`out` folder, or single files), as `preflight watch` does.

    `with watch() as w: ...` watches this Python process itself while the block runs; afterwards
    `w.result` is a `WatchResult` with the peak per GPU (and the phase named by
    `gpu_preflight.phase("name")` at that moment)."""
    if command is None:
        if out or json_path or html or png or model:
            raise UsageError("report files and model belong to the command form: watch([...], out=...)")
        return _Session(interval_ms, list(gpu_indices) if gpu_indices is not None else None)
    from gpu_preflight.watcher.outputs import resolve
    from gpu_preflight.watcher.runner import WatchEnv, WatchOptions, run_watch

    if isinstance(command, str) or not command:
        raise UsageError("watch() takes the command as a non-empty list of arguments",
                         hint='e.g. watch(["python", "train.py"])')
    paths = resolve(out, json_path, html, png)
    opts = WatchOptions(command=[str(c) for c in command], outputs=paths, interval_ms=float(interval_ms),
                        model=model, gpu_indices=list(gpu_indices) if gpu_indices is not None else None, quiet=quiet)
    result = run_watch(opts, WatchEnv(handle_signals=False))
    return WatchResult(_frozen(result.record))


class _Session:
    """The context-manager form of `watch()`: `result` is set when the block ends."""

    def __init__(self, interval_ms: float, gpu_indices: list[int] | None) -> None:
        from gpu_preflight.watcher.session import WatchSession

        self._session = WatchSession(interval_ms, gpu_indices)
        self.result: WatchResult | None = None

    def __enter__(self) -> _Session:
        self._session.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._session.__exit__(*exc)
        self.result = WatchResult(_frozen(self._session.record or {}))
