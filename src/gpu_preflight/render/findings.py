"""Doctor / compat reports: text grouped by area like `flutter doctor`, or versioned JSON."""

from __future__ import annotations

import json
from typing import Any

from gpu_preflight import __version__
from gpu_preflight.checks import AREAS, Finding, exit_code, is_ok, worst
from gpu_preflight.render.style import Style, sanitize_tree

REPORT_SCHEMA = "gpu-preflight.report"
REPORT_SCHEMA_VERSION = 1
AREA_TITLES = {"driver": "NVIDIA driver", "gpu": "GPUs", "torch": "PyTorch", "libraries": "CUDA libraries",
               "environment": "Environment", "host": "Host", "interconnect": "Multi-GPU and network",
               "fleet": "Fleet"}
ORDER = ["ok", "skip", "warn", "fail", "error"]


def report_json(kind: str, findings: list[Finding], recommended: dict[str, Any] | None,
                machine: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_SCHEMA_VERSION,
        "tool_version": __version__,
        "command": kind,
        "ok": is_ok(findings),  # false on a fail or an error: never "ok" with exit code 2 or 3
        "worst": worst(findings),
        "exit_code": exit_code(findings),
        "machine": machine,
        "findings": [f.to_json() for f in findings],
        "recommended_install": recommended,
    }


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)


def render_text(report: dict[str, Any], style: Style, verbose: bool = False) -> str:
    report = sanitize_tree(report)  # GPU names, versions and paths come from a snapshot file
    lines: list[str] = []
    m = report["machine"]
    head = f"gpu-preflight {report['command']}"
    if m.get("summary"):
        head += f" · {m['summary']}"
    lines.append(style.paint(head, "bold"))
    by_area: dict[str, list[dict[str, Any]]] = {}
    for f in report["findings"]:
        by_area.setdefault(f["area"], []).append(f)
    for area in AREAS:
        items = by_area.get(area)
        if not items or (not verbose and all(f["status"] == "skip" for f in items)):
            continue
        w = max((f["status"] for f in items), key=["skip", "ok", "warn", "fail", "error"].index)
        lines.append(f"[{style.glyph(w)}] {style.paint(AREA_TITLES[area], 'bold')}")
        for f in items:
            if f["status"] == "skip" and not verbose:
                continue
            text = f"{f['code']} {f['title']}: {f['message']}"
            lines.append(style.wrap(f"{style.glyphs[f['status']]} {text}", 4).replace(
                style.glyphs[f["status"]], style.glyph(f["status"]), 1))
            if f.get("fix") and f["status"] in ("warn", "fail", "error"):
                lines.append(style.wrap(f"fix: {f['fix']}", 6))
    rec = report.get("recommended_install")
    if rec:
        lines.append("")
        lines.append(style.paint("Recommended PyTorch install", "bold") +
                     f" (torch {rec['torch']}, {rec['variant']}, CUDA {rec['cuda']}):")
        lines.append(f"    {rec['command']}")
        for lim in rec.get("limitations") or []:
            lines.append(style.wrap(f"note: {lim}", 6))
    counts = {s: sum(1 for f in report["findings"] if f["status"] == s) for s in ORDER}
    parts = [f"{counts['fail'] + counts['error']} failure(s)", f"{counts['warn']} warning(s)", f"{counts['ok']} ok"]
    if counts["skip"]:
        parts.append(f"{counts['skip']} skipped" + ("" if verbose else " (-v shows them)"))
    lines.append("")
    verdict = {"ok": "No issues found", "skip": "No issues found", "warn": "Works, with warnings",
               "fail": "Problems found", "error": "Problems found"}[report["worst"]]
    lines.append(f"{style.paint(verdict, report['worst'])}: {', '.join(parts)}. Exit code {report['exit_code']}.")
    return "\n".join(lines)
