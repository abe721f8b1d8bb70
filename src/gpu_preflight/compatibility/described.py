"""Describe a machine without probing it (`preflight compat`): a snapshot with origin "described".

Only what the user stated (and what the fact tables derive from it) is known; every other field
is unavailable with the reason "not described", so checks that need it skip.
"""

from __future__ import annotations

import re
from typing import Any

from gpu_preflight import __version__
from gpu_preflight.compatibility import facts
from gpu_preflight.errors import UsageError
from gpu_preflight.snapshots.field import Fact, known
from gpu_preflight.snapshots.schema import SCHEMA, SCHEMA_VERSION, fact, gpus

USER = "described"


def describe(driver: str | None, gpu_specs: list[str], torch: str | None, python: str | None = None,
             ram_gb: float | None = None, platform: str | None = None, jetpack: str | None = None,
             glibc: str | None = None, image: str | None = None) -> dict[str, Any]:
    snap: dict[str, Any] = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "tool_version": __version__,
                            "origin": "described", "notes": []}
    nvml: dict[str, Fact] = {"available": known(bool(driver), USER)}
    snap["platform"] = _platform(platform, jetpack, glibc)
    if image:
        snap["image"] = {"cuda_version": known(image_cuda(image), f"image tag {image}"), "compat_libcuda": Fact(None, USER, "not described")}
    if driver:
        resolved = facts.resolve_driver(driver)  # validates, raises UsageError
        if resolved != driver.strip():
            snap["notes"].append(f"driver {driver.strip()} read as {resolved}, the newest {driver.strip()}.x in the tables")
        driver = resolved
        nvml["driver_version"] = known(driver.strip(), USER)
        max_cuda = facts.driver_max_cuda(driver)
        if max_cuda:
            major, minor = facts.parse_cuda(max_cuda)
            nvml["cuda_driver_version"] = known(major * 1000 + minor * 10, "fact tables (Table 3)")
    gpu_list = []
    for spec in gpu_specs:
        row, count = facts.parse_gpu_spec(spec)
        note = facts.resolve_gpu(str(spec).rpartition(":")[0] if ":" in str(spec) else spec)[1]
        if note:
            snap["notes"].append(note)
        if facts.shares_memory_with_cpu(row):
            snap["notes"].append(f"{row['name']}: GPU memory is shared with the CPU ({row['memory_gb']} GB in all)")
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
        jetson_wheel = facts.is_jetson_local(local)
        if local and var is None and local != "cpu" and not jetson_wheel:
            names = ", ".join(v["variant"] for v in rel.get("variants", []))
            raise UsageError(f"torch {rel['torch']} has no {local} build", hint=f"its builds: {names}")
        whl = facts.release_wheels(rel, platform) or {}
        variant = local or whl.get("pypi") or rel.get("pypi_default")
        if not local and variant != rel.get("pypi_default"):
            var = next((v for v in rel.get("variants", []) if v["variant"] == variant), None)
        if jetson_wheel:
            jp = facts.jetpack(jetpack) if jetpack else None
            cuda = jp["cuda"] if jp else None
        else:
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


def image_cuda(image: str) -> str:
    """'nvidia/cuda:12.8.0-runtime-ubuntu22.04' -> '12.8.0' (the CUDA of an nvidia/cuda image tag)."""
    m = re.search(r":(\d+\.\d+(?:\.\d+)?)", str(image))
    if not m:
        raise UsageError(f"cannot read a CUDA version from image {image!r}",
                         hint="use an nvidia/cuda tag, e.g. nvidia/cuda:12.8.0-runtime-ubuntu22.04")
    return m.group(1)


def _platform(platform: str | None, jetpack: str | None, glibc: str | None) -> dict[str, Fact]:
    if platform and platform not in facts.PLATFORMS:
        raise UsageError(f"unknown platform {platform!r}", hint="use one of: " + ", ".join(facts.PLATFORMS))
    if jetpack and facts.jetpack(jetpack) is None:
        raise UsageError(f"JetPack {jetpack} is not in the tables",
                         hint="known: " + ", ".join(j["jetpack"] for j in facts.jetpacks()))
    if jetpack and not platform:
        platform = "jetson"
    out = {"kind": known(platform or "linux-x86_64", USER if platform else "default (not described)")}
    if jetpack:
        out["jetpack"] = known(jetpack, USER)
    if glibc:
        if facts.parse_glibc(glibc) is None:
            raise UsageError(f"{glibc!r} is not a glibc version", hint="use X.Y, e.g. 2.28 (ldd --version)")
        out["glibc"] = known(glibc, USER)
    return out


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
    if snap.get("replayed_from"):
        parts.append(f"replayed from {snap['replayed_from']}")
    return {"summary": " · ".join(parts), "origin": snap.get("origin"), "replayed_from": snap.get("replayed_from"),
            "driver": drv, "torch": tv,
            "gpus": [{"name": n, "count": c} for n, c in names.items()]}
