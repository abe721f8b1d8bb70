"""Describe a machine without probing it (`preflight compat`): a snapshot with origin "described".

Only what the user stated (and what the fact tables derive from it) is known; every other field
is unavailable with the reason "not described", so checks that need it skip.
"""

from __future__ import annotations

from typing import Any

from gpu_preflight import __version__
from gpu_preflight.compat import facts
from gpu_preflight.errors import UsageError
from gpu_preflight.snapshot.field import Fact, known
from gpu_preflight.snapshot.schema import SCHEMA, SCHEMA_VERSION, fact, gpus

USER = "described"


def describe(driver: str | None, gpu_specs: list[str], torch: str | None, python: str | None = None,
             ram_gb: float | None = None) -> dict[str, Any]:
    snap: dict[str, Any] = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "tool_version": __version__,
                            "origin": "described"}
    nvml: dict[str, Fact] = {"available": known(bool(driver), USER)}
    if driver:
        facts.parse_driver(driver)  # validates, raises UsageError
        nvml["driver_version"] = known(driver.strip(), USER)
        max_cuda = facts.driver_max_cuda(driver)
        if max_cuda:
            major, minor = facts.parse_cuda(max_cuda)
            nvml["cuda_driver_version"] = known(major * 1000 + minor * 10, "fact tables (Table 3)")
    gpu_list = []
    for spec in gpu_specs:
        row, count = facts.parse_gpu_spec(spec)
        for _ in range(count):
            i = len(gpu_list)
            nv_name = (row.get("nvml_names") or [row["name"]])[0]
            gpu_list.append({
                "index": known(i, USER),
                "name": known(nv_name, USER),
                "compute_capability": known(row["compute_capability"], f"gpus.json: {row.get('source')}"),
                "memory_total_bytes": known(facts.gpu_memory_bytes(row), f"gpus.json: {row.get('source')}"),
            })
    nvml["gpus"] = known(gpu_list, USER)
    snap["nvml"] = nvml
    if torch:
        base, local = facts.parse_torch(torch)
        rel, var = facts.torch_variant(base, local)
        if rel is None:
            known_list = ", ".join(r["torch"] for r in facts.torch_releases()[:6])
            raise UsageError(f"torch {base} is not in the release table", hint=f"known releases: {known_list}, ...")
        if local and var is None and local != "cpu":
            names = ", ".join(v["variant"] for v in rel.get("variants", []))
            raise UsageError(f"torch {rel['torch']} has no {local} build", hint=f"its builds: {names}")
        variant = local or rel.get("pypi_default")
        cuda = None if variant == "cpu" else (var or {}).get("cuda")
        snap["torch"] = {"installed": known(True, USER), "version": known(f"{base}+{variant}", USER),
                         "local": known(variant, USER), "cuda": known(cuda, f"torch.json: {(var or rel).get('source')}")}
    else:
        snap["torch"] = {"installed": known(False, USER)}
    host: dict[str, Fact] = {}
    if python:
        host["python_version"] = known(python, USER)
    if ram_gb:
        host["ram_total_bytes"] = known(int(ram_gb * (1 << 30)), USER)
    snap["host"] = host
    return snap


def summary(snap: dict[str, Any]) -> dict[str, Any]:
    """A short machine summary for report headers and JSON."""
    names: dict[str, int] = {}
    for g in gpus(snap):
        n = g.get("name").get("?") if g.get("name") else "?"
        names[n] = names.get(n, 0) + 1
    gpu_text = ", ".join(f"{c}x {n}" if c > 1 else n for n, c in names.items()) or "no GPU"
    drv = fact(snap, "nvml.driver_version").get()
    tv = fact(snap, "torch.version").get()
    parts = [gpu_text, f"driver {drv}" if drv else "no driver", f"torch {tv}" if tv else "no torch"]
    return {"summary": " · ".join(parts), "origin": snap.get("origin"), "driver": drv, "torch": tv,
            "gpus": [{"name": n, "count": c} for n, c in names.items()]}
