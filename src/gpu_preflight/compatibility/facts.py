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
    if m and m.group(5) and JETSON_LOCAL.search(m.group(5)):
        base = ".".join(g for g in m.group(1, 2, 3) if g is not None)
        return base, "nv" + JETSON_LOCAL.search(m.group(5)).group(1)
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


JETSON_LOCAL = re.compile(r"(?:^|\.)nv(\d{2}\.\d{2})$")


def is_jetson_local(local: str | None) -> bool:
    """'nv24.08': NVIDIA's Jetson wheels ('2.5.0a0+872d972e41.nv24.08', '2.0.0+nv23.05')."""
    return bool(local) and bool(re.fullmatch(r"nv\d{2}\.\d{2}", local))


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
    amb = ambiguous(name)
    if amb is not None:
        return gpu_by_id(amb["pick"])
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


# ---------------------------------------------------------------- drivers given as a branch

def resolve_driver(text: str) -> str:
    """'580.95.05' stays; a bare branch '580' becomes the newest 580.x driver in Table 3 (a branch
    is enough for the floors); anything else is a UsageError naming the releases that exist."""
    s = str(text).strip()
    if re.fullmatch(r"\d{3}", s):
        branch = int(s)
        known_drivers = sorted({d for r in table("cuda")["toolkits"] for d in (r.get("linux_driver"),)
                                if d and parse_driver(d)[0] == branch}, key=parse_driver)
        if known_drivers:
            return known_drivers[-1]
        branches = sorted({parse_driver(r["linux_driver"])[0] for r in table("cuda")["toolkits"] if r.get("linux_driver")})
        if branch >= 580 and branch % 5 == 0 and branch <= max(branches) + 40:
            return f"{branch}.00"  # 13.x branches are all the floor needs (">= 580")
        raise UsageError(f"no driver of branch {branch} is in the tables",
                         hint="give the full version nvidia-smi prints (e.g. 570.124.06); branches in the tables: "
                              + ", ".join(str(b) for b in branches))
    parse_driver(s)
    return s


# ---------------------------------------------------------------- GPU names, variants, floors

@lru_cache(maxsize=1)
def _ambiguous_index() -> dict[str, dict[str, Any]]:
    return {_norm(row["name"]): row for row in table("gpus").get("ambiguous", [])}


@lru_cache(maxsize=4096)
def _ambiguous_key(key: str) -> str | None:
    index = _ambiguous_index()
    for k in (key, key.removeprefix("tesla"), key.removeprefix("rtx"), "rtx" + key):
        if k in index:
            return k
    return None


def ambiguous(name: str) -> dict[str, Any] | None:
    """The ambiguity row for a name like 'A100' / 'V100' / 'Orin' (several boards), else None."""
    k = _ambiguous_key(_norm(name))
    return _ambiguous_index()[k] if k else None


def gpu_by_id(gpu_id: str) -> dict[str, Any] | None:
    return next((g for g in gpus() if g["id"] == gpu_id), None)


def resolve_gpu(name: str) -> tuple[dict[str, Any] | None, str | None]:
    """(row, note): an ambiguous name resolves to its smaller variant and the note says so."""
    amb = ambiguous(name)
    if amb is not None:
        row = gpu_by_id(amb["pick"])
        others = [gpu_by_id(v)["name"] for v in amb["variants"] if v != amb["pick"] and gpu_by_id(v)]
        note = (f"{name!r} names several boards ({row['name']}; {'; '.join(others)}): assuming the smaller, "
                f"{row['name']}; name the board (e.g. --gpu {amb['variants'][-1]}) for another")
        return row, note
    return match_gpu(name), None


def gpu_min_driver(row: dict[str, Any]) -> tuple[str | None, str | None]:
    """(floor, source): a stated per-GPU minimum driver, else its architecture's first branch."""
    if row.get("min_driver_linux"):
        return row["min_driver_linux"], row.get("source")
    branch = row.get("min_driver_branch")
    if branch:
        for a in table("gpus").get("architectures", []):
            if row["compute_capability"] in a["compute_capabilities"]:
                return f"{branch}.00", a["source"]
        return f"{branch}.00", None
    return None, None


def shares_memory_with_cpu(row: dict[str, Any]) -> bool:
    return bool(row.get("memory_shared_with_cpu"))


# ---------------------------------------------------------------- platforms

PLATFORMS = ("linux-x86_64", "linux-aarch64", "jetson", "windows", "wsl")
TEGRA_CCS = ("5.3", "6.2", "7.2", "8.7")


def driver_os(platform: str | None) -> str:
    """Which driver numbering applies: Windows and WSL use the Windows driver's numbers."""
    return "windows" if platform in ("windows", "wsl") else "linux"


def wheel_platform(platform: str | None) -> str:
    """The wheel family a platform installs: WSL runs Linux x86_64 wheels; Jetson JetPack 7 is aarch64."""
    if platform in (None, "wsl", "linux-x86_64"):
        return "linux-x86_64"
    return platform


def release_wheels(release: dict[str, Any], platform: str | None) -> dict[str, Any] | None:
    return (release.get("wheels") or {}).get(wheel_platform(platform))


def variant_arch(variant: dict[str, Any], platform: str | None) -> tuple[list[str] | None, list[str] | None, str | None]:
    """(sass, ptx, source) of a variant's build for a platform; (None, None, note) when unknown."""
    wp = wheel_platform(platform)
    if wp in ("linux-aarch64", "jetson"):
        a = variant.get("aarch64")
        return (a["sass"], a.get("ptx"), a["source"]) if a else (None, None, None)
    if wp == "windows":
        w = variant.get("windows")
        return (w.get("sass"), w.get("ptx"), w["source"]) if w else (None, None, None)
    return variant.get("sass"), variant.get("ptx"), variant.get("source")


def variant_available(release: dict[str, Any], variant: dict[str, Any], platform: str | None) -> bool:
    wp = wheel_platform(platform)
    if wp in ("linux-aarch64", "jetson"):
        whl = release_wheels(release, wp) or {}
        return "aarch64" in variant or whl.get("pypi") == variant["variant"]
    if wp == "windows":
        return bool((variant.get("windows") or {}).get("available"))
    return True


def platform_install_command(version: str, variant: str, release: dict[str, Any], platform: str | None) -> str:
    whl = release_wheels(release, platform) or {}
    if whl.get("pypi") == variant and variant != "cpu":
        return f"pip install torch=={version}"
    if wheel_platform(platform) == "linux-x86_64":
        return install_command(version, variant, release)
    return f"pip install torch=={version} --index-url {TORCH_INDEX}/{variant}"


def parse_glibc(text: str | None) -> tuple[int, int] | None:
    m = re.search(r"(\d+)\.(\d+)", str(text or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def jetpacks() -> list[dict[str, Any]]:
    return table("jetson")["jetpacks"]


def jetpack(version: str) -> dict[str, Any] | None:
    want = parse_cuda(version)
    return next((j for j in jetpacks() if parse_cuda(j["jetpack"]) == want), None)


def jetpack_for_l4t(l4t: str | None) -> dict[str, Any] | None:
    """L4T 'R36.4.3' / '36.4.3' -> its JetPack row (longest matching L4T prefix)."""
    if not l4t:
        return None
    s = str(l4t).lstrip("Rr")
    best = None
    for j in jetpacks():
        for pre in j["l4t"]:
            if (s == pre or s.startswith(pre + ".")) and (best is None or len(pre) > best[0]):
                best = (len(pre), j)
    return best[1] if best else None


def index_install_command(variant: str | None, requirement: str = "torch") -> str:
    """`pip install torch --index-url .../cu128` (variant None: from PyPI)."""
    req = f"'{requirement}'" if any(c in requirement for c in "<>") else requirement
    return f"pip install {req}" + (f" --index-url {TORCH_INDEX}/{variant}" if variant else "")


def jetson_install_command(wheel: dict[str, Any], jp: dict[str, Any]) -> str:
    """NVIDIA's Jetson wheel for a JetPack: an index (jetson-ai-lab) or a download folder."""
    if "jetson-ai-lab" in wheel["url"]:
        return f"pip install torch=={wheel['torch'].split('+')[0]} --index-url {wheel['url']}"
    return f"pip install torch=={wheel['torch']} --find-links {wheel['url']}   (NVIDIA's wheel for JetPack {jp['jetpack']})"
