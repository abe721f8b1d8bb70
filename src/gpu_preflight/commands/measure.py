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
                                   "and the process memory NVML sees, and print them next to the estimate. Needs "
                                   "torch and transformers: pip install 'gpu-preflight[measure]'.")
    p.add_argument("model", help="model folder, config.json, catalog name or org/name")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch", type=_positive, default=1)
    p.add_argument("--input-len", type=_positive, default=512)
    p.add_argument("--output-len", type=_positive, default=128)
    p.add_argument("--attn", choices=("sdpa", "eager", "flash_attention_2"), default="sdpa")
    p.add_argument("--weights", metavar="PATH", help="load real weights from this local folder instead (LLMs)")
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

    from gpu_preflight.errors import DependencyMissing, DeviceUnavailable, UsageError
    from gpu_preflight.estimate.engines.transformers import Workload
    from gpu_preflight.estimate.plan import estimate_llm, parse_dtype, targets_from_machine
    from gpu_preflight.models import load_model_source
    from gpu_preflight.probes.context import ProbeContext
    from gpu_preflight.probes.nvml import probe_nvml

    python = args.python or sys.executable
    if not args.python and (importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None):
        raise DependencyMissing("measuring needs torch and transformers in this Python environment",
                                hint="pip install 'gpu-preflight[measure]' (or pass --python with one that has them)")
    nv = probe_nvml(ProbeContext())
    if not nv["available"].get(False) or not nv["gpus"].get():
        raise DeviceUnavailable(f"no NVIDIA GPU to measure on: {nv.get('error').get() if nv.get('error') else 'none found'}",
                                hint="run `preflight doctor`; to estimate without a GPU use `preflight estimate`")
    source = load_model_source(args.model)
    dtype = parse_dtype(args.dtype)
    pipeline = source.kind == "diffusion" or bool(source.components)
    attn = "sdpa" if args.attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None else args.attn
    if pipeline:
        from gpu_preflight.commands.estimate import pipeline_entry

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
        sys.stdout.write(_render(report) + "\n")
    return 0 if status is None and not any(r.get("oom") for r in records) else 2


def _render(report: dict) -> str:
    g = 1 << 30
    lines = [f"{report['model']}: measured on this GPU vs estimated"]
    env = next((r for r in report["records"] if r.get("type") == "env"), None)
    if env:
        lines.append(f"  {env['gpu']} · driver {env['driver']} · torch {env['torch']} · transformers {env['transformers']}")
    est = report["estimate"]
    for r in report["records"]:
        if r.get("type") == "phase" and r["phase"] in ("prefill", "generate"):
            e_alloc = est["phases"].get("prefill" if r["phase"] == "prefill" else "decode", {}).get(
                "peak_allocated_bytes", est["peak_allocated_bytes"])
            line = (f"  {r['phase']:<9} process {r['peak_process_bytes'] / g:7.2f} GiB   allocated "
                    f"{r['peak_allocated_bytes'] / g:7.2f} GiB (estimated {e_alloc / g:.2f})")
            if r.get("oom"):
                line += f"   OOM: {r.get('error', '')[:120]}"
            lines.append(line)
        elif r.get("type") == "phase" and r["phase"] in ("context", "load"):
            lines.append(f"  {r['phase']:<9} process {r.get('process_bytes', 0) / g:7.2f} GiB   allocated "
                         f"{r.get('allocated_bytes', 0) / g:7.2f} GiB")
        elif r.get("type") == "error":
            lines.append(f"  error: {r.get('error')}")
    gen = [r for r in report["records"] if r.get("phase") == "generate" and not r.get("oom")]
    if gen:
        m = gen[-1]["peak_process_bytes"]
        e = est["peak_process_bytes"]
        lines.append(f"  peak process: measured {m / g:.2f} GiB, estimated {e / g:.2f} GiB, error {(e - m) / m * 100:+.1f}%")
    if report["status"] != "ok":
        lines.append(f"  {report['status']} (phases finished before that are shown above)")
    return "\n".join(lines)


def _report_pipeline(args, name: str, entry: dict, spec: dict, records: list, status, dtype: str) -> int:
    import json

    from gpu_preflight.estimate.engines.diffusers import ImageWorkload, estimate_pipeline

    w = spec["workloads"][0]
    est = estimate_pipeline(entry, ImageWorkload(height=w["height"], width=w["width"], batch=w["batch"], dtype=dtype))
    phases = {p.name: p for p in est.phases}
    g = 1 << 30
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
        lines = [f"{name} {w['height']}x{w['width']} x{w['batch']}: measured on this GPU vs estimated (transient per phase)"]
        for row in rows:
            lines.append(f"  {row['phase']:<24} measured {row['measured_transient_bytes'] / g:7.3f} GiB  estimated "
                         f"{row['estimated_transient_bytes'] / g:7.3f} GiB  process {row['measured_process_bytes'] / g:6.2f} GiB"
                         + ("  OOM" if row["oom"] else ""))
        for r in records:
            if r.get("type") == "error":
                lines.append(f"  error: {r.get('error', '')[:200]}")
        if status:
            lines.append(f"  {status} (phases finished before that are shown above)")
        sys.stdout.write("\n".join(lines) + "\n")
    return 0 if status is None and not any(r["oom"] for r in rows) else 2
