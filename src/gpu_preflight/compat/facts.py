"""Queries over the fact tables in data/ (CUDA, PyTorch, GPUs). Each row cites its source.

All lookups are pure functions of the tables; tables load lazily, once.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from functools import lru_cache
from typing import Any

from gpu_preflight.errors import UsageError

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
TORCH_INDEX = "https://download.pytorch.org/whl"


@lru_cache(maxsize=None)
def table(name: str) -> dict[str, Any]:
    with open(os.path.join(DATA_DIR, f"{name}.json"), encoding="utf-8") as fh:
        return json.load(fh)


# ---------------------------------------------------------------- versions

_DRIVER_RE = re.compile(r"^(\d{3,4})\.(\d{1,3})(?:\.(\d{1,3}))?$")


def parse_driver(text: str) -> tuple[int, ...]:
    """'570.124.06' -> (570, 124, 6). Raises UsageError for anything else."""
    m = _DRIVER_RE.match(str(text).strip())
    if not m:
        raise UsageError(
            f"{text!r} is not an NVIDIA driver version",
            hint="use the form nvidia-smi prints, e.g. 535.54.03 or 570.86 (branch.build[.patch])",
        )
    return tuple(int(p) for p in m.groups() if p is not None)


def driver_ge(driver: str, floor: str) -> bool:
    return parse_driver(driver) >= parse_driver(floor)


def parse_cuda(text: str) -> tuple[int, int]:
    m = re.match(r"^(\d+)\.(\d+)", str(text).strip())
    if not m:
        raise UsageError(f"{text!r} is not a CUDA version", hint="use MAJOR.MINOR, e.g. 12.8")
    return int(m.group(1)), int(m.group(2))


def cuda_int_to_str(value: int) -> str:
    """cuDriverGetVersion / NVML style 12080 -> '12.8'."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def parse_cc(text: str) -> tuple[int, int]:
    m = re.match(r"^(\d+)\.(\d+)", str(text))
    if not m:
        raise ValueError(f"not a compute capability: {text!r}")
    return int(m.group(1)), int(m.group(2))


# ---------------------------------------------------------------- CUDA

def cuda_family(major: int) -> dict[str, Any] | None:
    for row in table("cuda")["families"]:
        if int(row["major"]) == major:
            return row
    return None


def toolkit_rows(cuda: str) -> list[dict[str, Any]]:
    want = parse_cuda(cuda)
    return [r for r in table("cuda")["toolkits"] if parse_cuda(r["cuda"]) == want]


def toolkit_driver(cuda: str, os_name: str = "linux") -> tuple[str | None, dict[str, Any] | None]:
    """The driver of the GA release of a CUDA minor version ("Table 3"), or (None, row) if only a
    branch is known, or (None, None) when the table has no such release."""
    rows = toolkit_rows(cuda)
    if not rows:
        return None, None
    ga = next((r for r in rows if str(r.get("release", "")).upper().startswith("GA")), rows[0])
    return ga.get(f"{os_name}_driver"), ga


def _branch_of(row: dict[str, Any]) -> int | None:
    b = row.get("linux_branch")
    if b:
        m = re.search(r"\d+", str(b))
        return int(m.group()) if m else None
    d = row.get("linux_driver")
    return parse_driver(d)[0] if d else None


def driver_max_cuda(driver: str) -> str | None:
    """The newest CUDA toolkit whose full-feature driver this driver meets (what nvidia-smi's
    "CUDA Version" shows), from Table 3."""
    drv = parse_driver(driver)
    best: tuple[int, int] | None = None
    for row in table("cuda")["toolkits"]:
        need = row.get("linux_driver")
        if need:
            ok = drv >= parse_driver(need)
        else:
            branch = _branch_of(row)
            ok = branch is not None and drv[0] >= branch
        if ok:
            v = parse_cuda(row["cuda"])
            best = v if best is None or v > best else best
    return f"{best[0]}.{best[1]}" if best else None


def sm_targets(cuda: str) -> dict[str, Any] | None:
    want = parse_cuda(cuda)
    for row in table("cuda").get("sm_targets", []):
        if parse_cuda(row["cuda"]) == want:
            return row
    return None


# ---------------------------------------------------------------- PyTorch

def torch_releases() -> list[dict[str, Any]]:
    return sorted(table("torch")["releases"], key=lambda r: parse_cuda(r["torch"]), reverse=True)


def parse_torch(text: str) -> tuple[str, str | None]:
    """'2.7.1+cu128' -> ('2.7.1', 'cu128'). Raises UsageError for things we cannot judge."""
    s = str(text).strip()
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?((?:a|b|rc|\.dev|\.post)\d*)?(?:\+([A-Za-z0-9.]+))?", s)
    if not m:
        raise UsageError(f"{text!r} is not a PyTorch version", hint="use e.g. 2.7.1, 2.7.1+cu128 or 2.5.1+cpu")
    local = m.group(5)
    if local and local.startswith("rocm"):
        raise UsageError(f"{text!r} is a ROCm (AMD) build; gpu-preflight judges NVIDIA CUDA stacks",
                         hint="for NVIDIA GPUs use a CUDA build, e.g. --torch 2.5.1+cu124")
    if local and local.startswith("git"):
        local = None  # source build with an unknown CUDA: judged as the release, flagged by the caller
    base = ".".join(g for g in m.group(1, 2, 3) if g is not None)
    return base, local


def torch_release(version: str) -> dict[str, Any] | None:
    mm = parse_cuda(version)
    for r in table("torch")["releases"]:
        if parse_cuda(r["torch"]) == mm:
            return r
    return None


def torch_variant(version: str, variant: str | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(release row, variant row); variant None means the default PyPI wheel of that release."""
    rel = torch_release(version)
    if rel is None:
        return None, None
    name = variant or rel.get("pypi_default")
    for v in rel.get("variants", []):
        if v["variant"] == name:
            return rel, v
    return rel, None


def install_command(torch_version: str, variant: str, release: dict[str, Any]) -> str:
    if variant == release.get("pypi_default"):
        return f"pip install torch=={torch_version}"
    return f"pip install torch=={torch_version} --index-url {TORCH_INDEX}/{variant}"


# ---------------------------------------------------------------- GPUs

def _norm(text: str) -> str:
    s = str(text).lower()
    s = re.sub(r"\b(nvidia|geforce)\b", " ", s)
    return re.sub(r"[^a-z0-9]", "", s)


@lru_cache(maxsize=1)
def _gpu_index() -> dict[str, dict[str, Any]]:
    index: dict[str, dict[str, Any]] = {}
    for row in table("gpus")["gpus"]:
        keys = [row["id"], row["name"], *row.get("aliases", []), *row.get("nvml_names", [])]
        for k in keys:
            index.setdefault(_norm(k), row)
    return index


def gpus() -> list[dict[str, Any]]:
    return table("gpus")["gpus"]


def match_gpu(name: str) -> dict[str, Any] | None:
    """Loose lookup: '4090', 'rtx4090', 'NVIDIA GeForce RTX 4090' all find the RTX 4090."""
    key = _norm(name)
    if not key:
        return None
    index = _gpu_index()
    if key in index:
        return index[key]
    for prefix in ("rtx", "gtx", "tesla", "quadro"):
        if key.startswith(prefix) and key[len(prefix):] in index:
            return index[key[len(prefix):]]
        if prefix + key in index:
            return index[prefix + key]
    return None


def find_gpu(name: str) -> dict[str, Any]:
    row = match_gpu(name)
    if row is not None:
        return row
    index = _gpu_index()
    close = difflib.get_close_matches(_norm(name), list(index), n=4, cutoff=0.6)
    names = []
    for k in close:
        if index[k]["name"] not in names:
            names.append(index[k]["name"])
    hint = f"did you mean: {', '.join(names)}?" if names else "run `preflight compat --list-gpus` for the known names"
    raise UsageError(f"unknown GPU {name!r}", hint=hint)


def parse_gpu_spec(spec: str) -> tuple[dict[str, Any], int]:
    """'h100:2' -> (H100 row, 2)."""
    name, _, count = str(spec).rpartition(":") if ":" in str(spec) else (spec, "", "1")
    try:
        n = int(count)
    except ValueError:
        raise UsageError(f"bad GPU count in {spec!r}", hint="use NAME[:COUNT], e.g. h100:2") from None
    if n < 1 or n > 1024:
        raise UsageError(f"GPU count must be between 1 and 1024 in {spec!r}", hint="use NAME[:COUNT], e.g. h100:2")
    return find_gpu(name), n


def gpu_memory_bytes(row: dict[str, Any]) -> int:
    """Total memory as the driver reports it when known (memory_mib), else marketed GB read as GiB
    (NVIDIA's "GB" for GPU memory is binary: a 24 GB RTX 4090 reports 24564 MiB)."""
    if row.get("memory_mib"):
        return int(row["memory_mib"]) * 1024 * 1024
    return int(float(row["memory_gb"]) * (1 << 30))
