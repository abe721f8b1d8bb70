"""`preflight measure MODEL`: run the workload on this machine's GPU and compare with the estimate.

The model is built from its config with random weights directly on the GPU (memory does not
depend on weight values, so nothing is downloaded), or loaded from local weights with
--weights PATH, in a fresh child process that records every phase as it finishes.
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    from gpu_preflight.commands._common import number, whole
    from gpu_preflight.commands.estimate import _positive

    p = sub.add_parser("measure", help="measure a model's real GPU memory on this machine, vs the estimate",
                       description="Run MODEL on the local GPU in a child process (random weights built from the "
                                   "config, or --weights PATH), record per phase torch's peak allocated/reserved "
                                   "and the process memory NVML sees, and print them next to the estimate. Needs an "
                                   "NVIDIA GPU, and torch and transformers in the Python that runs the child (this "
                                   "one, or --python PATH); when they are missing, the error prints the install "
                                   "command for this environment.")
    p.add_argument("model", help="model folder, config.json, catalog name or org/name")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch", type=_positive, default=1)
    # Flags of one model kind default to None (= not given), so a flag of the other kind is refused.
    p.add_argument("--input-len", type=_positive, help="LLMs: prompt tokens (default 512)")
    p.add_argument("--output-len", type=_positive, help="LLMs: generated tokens (default 128)")
    p.add_argument("--attn", choices=("sdpa", "eager", "flash_attention_2"), help="LLMs: attention (default sdpa)")
    p.add_argument("--weights", metavar="PATH", help="LLMs: load real weights from this local folder instead")
    p.add_argument("--height", type=_positive, help="pipelines: image height (default: the pipeline's)")
    p.add_argument("--width", type=_positive, help="pipelines: image width (default: the pipeline's)")
    p.add_argument("--gpu-index", type=whole(0, 1023), default=0)
    p.add_argument("--timeout-s", type=number(0, 7 * 86400, above=True, what="duration"), default=600, help="kill the child after this long (default 600)")
    p.add_argument("--python", metavar="PATH", help="interpreter that has torch (default: this one)")
    p.add_argument("--keep", metavar="FILE", help="also keep the raw JSONL records in FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import importlib.util
    import json
    import os
    import subprocess
    import tempfile

    from gpu_preflight.errors import DependencyMissing, DeviceUnavailable
    from gpu_preflight.estimate.engines.transformers import Workload
    from gpu_preflight.estimate.plan import estimate_llm, parse_dtype, targets_from_machine
    from gpu_preflight.models import load_model_source
    from gpu_preflight.probes.context import ProbeContext
    from gpu_preflight.probes.nvml import probe_nvml

    from gpu_preflight.hints import install_hint

    python = args.python or sys.executable
    # The GPU first: without one, installing torch would not help.
    nv = probe_nvml(ProbeContext())
    if not nv["available"].get(False) or not nv["gpus"].get():
        raise DeviceUnavailable(f"no NVIDIA GPU to measure on: {nv.get('error').get() if nv.get('error') else 'none found'}",
                                hint="run `preflight doctor`; to estimate without a GPU use `preflight estimate`")
    if not args.python and (importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None):
        raise DependencyMissing("measuring needs torch and transformers in this Python environment",
                                hint=install_hint("measure") + "; or pass --python with an interpreter that has them")
    source = load_model_source(args.model)
    dtype = parse_dtype(args.dtype)
    pipeline = source.kind == "diffusion" or bool(source.components)
    _refuse_other_kind(args, pipeline)
    args.input_len, args.output_len = args.input_len or 512, args.output_len or 128
    args.attn = args.attn or "sdpa"
    attn = "sdpa" if args.attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None else args.attn
    if pipeline:
        from gpu_preflight.estimate.engines.diffusers import pipeline_entry

        entry = pipeline_entry(source)
        d = entry["defaults"]
        size = {"height": args.height or int(d.get("height", 1024)), "width": args.width or int(d.get("width", 1024))}
        spec = {"model": {"id": source.name, "catalog_id": source.name, "kind": "diffusion", **entry}, "dtype": dtype,
                "attn": attn, "device_index": args.gpu_index, "workloads": [{"name": "run", "batch": args.batch, **size}]}
    else:
        spec = {"model": {"id": source.name, "kind": "llm", "config": source.config}, "dtype": dtype, "attn": attn,
                "device_index": args.gpu_index, "weights_path": args.weights,
                "workloads": [{"name": "run", "batch": args.batch, "input_len": args.input_len,
                               "output_len": args.output_len}]}
    with tempfile.TemporaryDirectory(prefix="preflight-measure-") as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), args.keep or os.path.join(tmp, "out.jsonl")
        with open(spec_path, "w", encoding="utf-8") as fh:
            json.dump(spec, fh)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))), os.environ.get("PYTHONPATH")])))
        try:
            proc = subprocess.run([python, "-m", "gpu_preflight.measure.child", spec_path, out_path], env=env,
                                  timeout=args.timeout_s, capture_output=True, text=True)
            status = None if proc.returncode == 0 else f"child exited {proc.returncode}: " + \
                (proc.stderr.strip().splitlines() or [""])[-1][:300]
        except subprocess.TimeoutExpired:
            status = f"child killed after {args.timeout_s:g} s"
        records = []
        if os.path.exists(out_path):
            with open(out_path, encoding="utf-8") as fh:
                records = [json.loads(line) for line in fh if line.strip().startswith("{")]
    if pipeline:
        return _report_pipeline(args, source.name, entry, spec, records, status, dtype)
    targets = targets_from_machine({"nvml": nv})
    est = estimate_llm(source.config, tensors=source.tensors, workload=Workload(
        batch=args.batch, input_len=args.input_len, output_len=args.output_len, dtype=dtype,
        attn="sdpa" if attn == "flash_attention_2" else attn), targets=targets[:1], model_name=source.name)
    report = {"schema": "gpu-preflight.measure", "schema_version": 1, "model": source.name, "status": status or "ok", "records": records,
              "estimate": {k: est[k] for k in ("peak_process_bytes", "peak_allocated_bytes", "breakdown", "phases")}}
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        from gpu_preflight.render.measure import render_measure

        sys.stdout.write(render_measure(report) + "\n")
    return 0 if status is None and not any(r.get("oom") for r in records) else 2


LLM_ONLY = (("input_len", "--input-len"), ("output_len", "--output-len"), ("attn", "--attn"), ("weights", "--weights"))
PIPELINE_ONLY = (("height", "--height"), ("width", "--width"))


def _refuse_other_kind(args, pipeline: bool) -> None:
    """A flag of the other model kind is refused, never silently ignored."""
    from gpu_preflight.errors import UsageError

    given = [flag for dest, flag in (LLM_ONLY if pipeline else PIPELINE_ONLY) if getattr(args, dest) is not None]
    if given:
        label, other = ("an image/video pipeline", "LLMs") if pipeline else ("an LLM", "image/video pipelines")
        raise UsageError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to {label} "
                         f"({args.model})", hint=f"{' and '.join(given)} {'is a flag' if len(given) == 1 else 'are flags'} "
                                             f"for {other}; drop {'it' if len(given) == 1 else 'them'}")


def _report_pipeline(args, name: str, entry: dict, spec: dict, records: list, status, dtype: str) -> int:
    import json

    from gpu_preflight.estimate.engines.diffusers import ImageWorkload, estimate_pipeline

    w = spec["workloads"][0]
    est = estimate_pipeline(entry, ImageWorkload(height=w["height"], width=w["width"], batch=w["batch"], dtype=dtype))
    phases = {p.name: p for p in est.phases}
    rows = []
    for r in records:
        if r.get("type") == "phase" and r.get("phase") in phases:
            p = phases[r["phase"]]
            rows.append({"phase": r["phase"], "measured_transient_bytes": r["peak_allocated_bytes"] - r["before"]["allocated_bytes"],
                         "estimated_transient_bytes": p.transient_bytes, "measured_process_bytes": r["peak_process_bytes"],
                         "oom": r.get("oom", False), "error": r.get("error")})
    report = {"schema": "gpu-preflight.measure", "schema_version": 1, "model": name, "status": status or "ok",
              "phases": rows, "records": records}
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        from gpu_preflight.render.measure import render_pipeline_measure

        sys.stdout.write(render_pipeline_measure(report, w) + "\n")
    return 0 if status is None and not any(r["oom"] for r in rows) else 2
