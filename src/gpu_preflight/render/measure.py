"""Text form of a `preflight measure` report (the JSON report is the data; this only formats it)."""

from __future__ import annotations

from typing import Any

from gpu_preflight.safetext import sanitize_tree


def render_measure(report: dict[str, Any]) -> str:
    """An LLM measurement: per phase, measured process and allocated memory next to the estimate."""
    report = sanitize_tree(report)  # the model's name and the child's messages come from files
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


def render_pipeline_measure(report: dict[str, Any], w: dict[str, Any]) -> str:
    """A pipeline measurement: per phase, measured transient next to the estimated one."""
    report = sanitize_tree(report)  # component names come from model_index.json
    g = 1 << 30
    lines = [f"{report['model']} {w['height']}x{w['width']} x{w['batch']}: measured on this GPU vs estimated "
             f"(transient per phase)"]
    for row in report["phases"]:
        lines.append(f"  {row['phase']:<24} measured {row['measured_transient_bytes'] / g:7.3f} GiB  estimated "
                     f"{row['estimated_transient_bytes'] / g:7.3f} GiB  process {row['measured_process_bytes'] / g:6.2f} GiB"
                     + ("  OOM" if row["oom"] else ""))
    for r in report["records"]:
        if r.get("type") == "error":
            lines.append(f"  error: {r.get('error', '')[:200]}")
    if report["status"] != "ok":
        lines.append(f"  {report['status']} (phases finished before that are shown above)")
    return "\n".join(lines)
