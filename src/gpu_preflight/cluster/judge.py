"""Judge a fleet: every node check on every snapshot, the fleet checks across them, and nodes
grouped by identical stack so that 64 healthy nodes are one line and the odd node stands out.

Identical snapshots (same facts, other hostname and time) are judged once: checks are pure
functions of the snapshot, so their findings are shared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight import __version__
from gpu_preflight.checks import Finding, exit_code, run_checks, run_fleet_checks, worst
from gpu_preflight.checks.fleet import stack
from gpu_preflight.cluster.nodes import Node

SCHEMA = "gpu-preflight.fleet"
SCHEMA_VERSION = 1
_VOLATILE = ("memory_used_bytes", "memory_free_bytes", "processes")  # per GPU


@dataclass
class FleetView:
    """What fleet checks see: the nodes, and each answered node's stack signature."""
    nodes: list[Node]
    stacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    cross_node: dict[str, Any] | None = None  # --deep with --ray: one all-reduce spanning every node

    @property
    def answered(self) -> list[Node]:
        return [n for n in self.nodes if n.answered]


def _judge_key(snap: dict) -> str:
    """The snapshot without what differs between identical nodes (time, hostname, memory in use,
    processes): nodes with equal keys get the same findings."""
    s = {k: v for k, v in snap.items() if k != "created_utc"}
    for section, drop in (("host", ("ram_available_bytes",)), ("interconnect", ("hostname",))):
        if isinstance(s.get(section), dict):
            s[section] = {k: v for k, v in s[section].items() if k not in drop}
    nv = s.get("nvml")
    gpus = nv.get("gpus") if isinstance(nv, dict) else None
    if gpus is not None and isinstance(getattr(gpus, "value", None), list):
        s["nvml"] = {**nv, "gpus": [{k: v for k, v in g.items() if k not in _VOLATILE} if isinstance(g, dict) else g
                                    for g in gpus.value]}
    return repr(s)


def judge(nodes: list[Node], cross_node: dict[str, Any] | None = None) -> dict[str, Any]:
    view = FleetView(nodes, {n.name: stack(n.snapshot) for n in nodes if n.answered}, cross_node)
    cache: dict[str, list[Finding]] = {}
    per_node: dict[str, list[Finding]] = {}
    for n in view.answered:
        key = _judge_key(n.snapshot)
        if key not in cache:
            cache[key] = run_checks(n.snapshot)
        per_node[n.name] = cache[key]
    fleet_findings = run_fleet_checks(view)
    grouped = _group_findings(per_node)
    all_findings = fleet_findings + [f for f, _ in grouped]
    groups = _group_stacks(view)
    node_rows = []
    for n in nodes:
        fs = per_node.get(n.name, [])
        node_rows.append({"name": n.name, "origin": n.origin, "answered": n.answered, "error": n.error,
                          "elapsed_s": n.elapsed_s, "group": next((i for i, g in enumerate(groups)
                                                                   if n.name in g["nodes"]), None),
                          "worst": worst(fs) if n.answered else "error",
                          "problems": sorted({f.code for f in fs if f.status in ("warn", "fail", "error")}),
                          **({"deep": n.extra["deep"]} if "deep" in n.extra else {})})
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "tool_version": __version__,
        "nodes_total": len(nodes), "nodes_answered": len(view.answered),
        "ok": not any(f.status in ("fail", "error") for f in all_findings),
        "worst": worst(all_findings), "exit_code": exit_code(all_findings),
        "groups": groups,
        "findings": [f.to_json() for f in fleet_findings] + [{**f.to_json(), "nodes": names} for f, names in grouped],
        "nodes": node_rows,
        "cross_node_allreduce": cross_node,
    }


def _group_findings(per_node: dict[str, list[Finding]]) -> list[tuple[Finding, list[str]]]:
    """Non-ok node findings merged across nodes by (code, status, message)."""
    merged: dict[tuple[str, str, str], tuple[Finding, list[str]]] = {}
    for name, fs in per_node.items():
        for f in fs:
            if f.status in ("ok", "skip"):
                continue
            key = (f.code, f.status, f.message)
            if key not in merged:
                merged[key] = (f, [])
            merged[key][1].append(name)
    order = ["error", "fail", "warn"]
    return sorted(merged.values(), key=lambda x: (order.index(x[0].status), x[0].code, -len(x[1])))


def _group_stacks(view: FleetView) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for name, st in view.stacks.items():
        key = json.dumps(st, sort_keys=True, default=str)
        groups.setdefault(key, {"stack": st, "nodes": []})["nodes"].append(name)
    out = sorted(groups.values(), key=lambda g: -len(g["nodes"]))
    for g in out:
        g["count"] = len(g["nodes"])
    return out
