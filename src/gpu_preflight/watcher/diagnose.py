"""Recognise GPU failures in the command's output and tie them to doctor checks.

Pure functions. `TRIGGER_LOWER` is the one cheap regex the output pump runs on every (lowercased) chunk; a line
that matches is kept as a raw match `{"stream", "t_s", "line"}`. `diagnose()` turns those
matches plus the analysed timeline into findings, each with the doctor check codes it relates
to (PF101 no driver, PF102 driver/library mismatch, PF103 driver older than torch's CUDA,
PF104 GPU arch not in the wheel, PF105 CPU-only torch, PF114 memory held by other processes)
and a fix the user can paste.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SIZE = r"([\d.]+)\s*([KMGTP]i?B|bytes)"


@dataclass(frozen=True)
class Pattern:
    kind: str
    codes: tuple[str, ...]
    title: str
    regex: re.Pattern[str]


def _p(kind: str, codes: tuple[str, ...], title: str, *alternatives: str) -> Pattern:
    return Pattern(kind, codes, title, re.compile("|".join(alternatives), re.IGNORECASE))


PATTERNS: tuple[Pattern, ...] = (
    _p("oom", (), "CUDA out of memory",
       r"CUDA out of memory", r"OutOfMemoryError", r"CUDA error: out of memory",
       r"cudaErrorMemoryAllocation", r"CUBLAS_STATUS_ALLOC_FAILED",
       r"RESOURCE_EXHAUSTED: Out of memory", r"OOM when allocating tensor"),
    _p("no_kernel_image", ("PF104",), "GPU architecture not in this build (no kernel image)",
       r"no kernel image is available for execution", r"cudaErrorNoKernelImageForDevice",
       r"with CUDA capability sm_\d+ is not compatible with the current PyTorch installation"),
    _p("driver_too_old", ("PF103",), "NVIDIA driver older than the CUDA runtime",
       r"driver version is insufficient for CUDA runtime version", r"cudaErrorInsufficientDriver",
       r"The NVIDIA driver on your system is too old"),
    _p("driver_library_mismatch", ("PF102",), "NVIDIA driver and library versions differ",
       r"Driver/library version mismatch"),
    _p("cpu_only_torch", ("PF105",), "torch without CUDA support",
       r"Torch not compiled with CUDA enabled"),
    _p("no_driver", ("PF101",), "no usable NVIDIA driver",
       r"Found no NVIDIA driver on your system", r"couldn't communicate with the NVIDIA driver",
       r"libcuda\.so(?:\.1)?: cannot open shared object file", r"CUDA driver initialization failed",
       r"no CUDA-capable device is detected", r"cudaErrorNoDevice"),
    _p("nccl", (), "NCCL (multi-GPU communication) error",
       r"NCCL error", r"nccl(?:UnhandledCudaError|SystemError|InternalError|InvalidUsage|RemoteError)",
       r"NCCL WARN", r"Watchdog caught collective operation timeout"),
)

# The words the output pump looks for, lower case: it lowercases each chunk (bytes.lower, GB/s)
# and runs TRIGGER_LOWER, a case-sensitive trie of literals, which is 15-30x faster than the same
# words with re.IGNORECASE (bench/watch_throughput.py). Every PATTERNS regex must contain one of these words.
TRIGGER_WORDS: tuple[bytes, ...] = (
    b"out of memory", b"outofmemory", b"memoryallocation", b"alloc_failed", b"resource_exhausted", b"oom when",
    b"kernel image", b"nokernelimage", b"not compatible with the current pytorch",
    b"driver version is insufficient", b"insufficientdriver", b"driver on your system is too old",
    b"library version mismatch", b"not compiled with cuda", b"nvidia driver", b"libcuda.so",
    b"driver initialization", b"cuda-capable device", b"nodevice", b"nccl", b"collective operation timeout",
)


def trie_pattern(words: tuple[bytes, ...] | list[bytes]) -> bytes:
    """One regex for a set of literal words, as a trie (`c(?:uda-capable|ollective)...`): at each
    position the regex engine follows one branch instead of trying every word (1.5x faster)."""
    if b"" in words:
        rest = [w for w in words if w]
        return b"(?:" + trie_pattern(rest) + b")?" if rest else b""
    groups: dict[bytes, list[bytes]] = {}
    for w in words:
        groups.setdefault(w[:1], []).append(w[1:])
    alts = [re.escape(c) + trie_pattern(tails) for c, tails in sorted(groups.items())]
    return alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"


TRIGGER_LOWER = re.compile(trie_pattern(TRIGGER_WORDS))
TRIGGER = re.compile(b"|".join(re.escape(w) for w in TRIGGER_WORDS), re.IGNORECASE)  # the same, any case

# The pump's prefilter: a slice goes to TRIGGER_LOWER (100-200 MB/s) only if it may hold a trigger word.
# Each stage is one bytes.translate (ASCII letters to lower case, every other byte deleted) and a few `in`
# tests on what is left, all C loops at GB/s:
#   1. keep only the ASCII letters outside the eight most frequent in English text (COMMON_LETTERS): about a
#      tenth of a log line is left; it must hold one trigger word reduced the same way;
#   2. keep every ASCII letter: it must hold one trigger word's letters (this weeds out slices that only share
#      a word such as "device" or "driver" with a trigger).
# Both reductions map byte by byte and only delete, so a trigger word present in the slice in any ASCII case
# (what TRIGGER_LOWER finds after bytes.lower()) is still a contiguous substring of the reduced slice: a slice
# that fails a stage cannot hold a trigger. The regex decides on the rest.
COMMON_LETTERS = b"etaoinsr"
_LOWER_TABLE = bytes.maketrans(bytes(range(65, 91)), bytes(range(97, 123)))


def _deleted_bytes(keep_lower: bytes) -> bytes:
    """Every byte except the given lower-case ASCII letters and their upper-case forms."""
    keep = set(keep_lower) | {c - 32 for c in keep_lower}
    return bytes(c for c in range(256) if c not in keep)


def _reduced_words(delete: bytes) -> tuple[bytes, ...]:
    """TRIGGER_WORDS reduced by one stage, without those that contain another (it suffices to look for that one)."""
    red = {w.translate(_LOWER_TABLE, delete) for w in TRIGGER_WORDS}
    return tuple(sorted(w for w in red if not any(o != w and o in w for o in red)))


_RARE = _deleted_bytes(bytes(c for c in range(97, 123) if c not in COMMON_LETTERS))
_LETTERS = _deleted_bytes(bytes(range(97, 123)))
PREFILTER_STAGES: tuple[tuple[bytes, tuple[bytes, ...]], ...] = (
    (_RARE, _reduced_words(_RARE)), (_LETTERS, _reduced_words(_LETTERS)))


def may_hold_trigger(data: bytes) -> bool:
    """False only when `data` holds none of TRIGGER_WORDS in any ASCII case (see PREFILTER_STAGES)."""
    for delete, words in PREFILTER_STAGES:
        reduced = data.translate(_LOWER_TABLE, delete)
        for w in words:
            if w in reduced:
                break
        else:
            return False
    return True

_UNITS = {"b": 1, "bytes": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4, "pb": 1000**5,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "pib": 1024**5}


def parse_size(number: str, unit: str) -> int | None:
    try:
        return int(float(number) * _UNITS[unit.lower()])
    except (KeyError, ValueError):
        return None


def classify(line: str) -> Pattern | None:
    for pattern in PATTERNS:
        if pattern.regex.search(line):
            return pattern
    return None


def oom_details(line: str) -> dict[str, Any]:
    """Numbers PyTorch puts in its OOM message (old and new wording)."""
    d: dict[str, Any] = {}

    def size(rx: str) -> int | None:
        m = re.search(rx, line, re.IGNORECASE)
        return parse_size(m.group(1), m.group(2)) if m else None

    d["tried_bytes"] = size(r"Tried to allocate " + _SIZE)
    d["total_bytes"] = size(r"total capacity of " + _SIZE) or size(_SIZE + r" total capacity")
    d["free_bytes"] = size(r"of which " + _SIZE + r" is free") or size(_SIZE + r" free;")
    d["reserved_unallocated_bytes"] = size(_SIZE + r" is reserved by PyTorch but unallocated")
    d["this_process_bytes"] = size(r"this process has " + _SIZE + r" memory in use")
    m = re.search(r"\bGPU (\d+)", line)
    d["gpu"] = int(m.group(1)) if m else None
    d["processes"] = [
        {"pid": int(pid), "bytes": parse_size(n, u)}
        for pid, n, u in re.findall(r"Process (\d+) has " + _SIZE + r" memory in use", line, re.IGNORECASE)
    ]
    m = re.search(r"trying to allocate (\d+) bytes", line, re.IGNORECASE)  # XLA wording
    if m and d["tried_bytes"] is None:
        d["tried_bytes"] = int(m.group(1))
    return {k: v for k, v in d.items() if v not in (None, [])}


def arch_details(line: str) -> dict[str, Any]:
    m = re.search(r"CUDA capability (sm_\d+)", line)
    supported = re.findall(r"sm_\d+", line.split("supports", 1)[1]) if "supports" in line else []
    return {k: v for k, v in {"gpu_arch": m.group(1) if m else None, "wheel_archs": supported}.items() if v}


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GiB"


def _estimate_hint(model: str | None, gpu_name: str | None) -> str:
    gpu = f'"{gpu_name}"' if gpu_name else "GPU_NAME"
    return f"preflight estimate {model or 'MODEL'} --gpu {gpu}"


def _hint(kind: str, details: dict[str, Any], ctx: dict[str, Any]) -> str:
    gpu_name = ctx.get("gpu_name")
    if kind == "oom":
        parts = []
        if details.get("tried_bytes") is not None:
            where = f" on GPU {details['gpu']}" if "gpu" in details else ""
            parts.append(f"it asked for {_gib(details['tried_bytes'])} more{where} with "
                         f"{_gib(details.get('free_bytes'))} free")
        if ctx.get("peak_bytes") is not None:
            parts.append(f"its own peak was {_gib(ctx['peak_bytes'])} of {_gib(ctx.get('total_bytes'))}")
        text = ("The command ran out of GPU memory" + (": " + "; ".join(parts) if parts else "") + ". "
                f"See which settings fit (precision, quantization, offload, batch): "
                f"`{_estimate_hint(ctx.get('model'), gpu_name)}`.")
        reserved = details.get("reserved_unallocated_bytes") or 0
        if reserved >= 512 * 1024**2:
            text += (f" {_gib(reserved)} was reserved by PyTorch but unallocated (fragmentation): "
                     "try PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True.")
        return text
    if kind == "no_kernel_image":
        arch = details.get("gpu_arch", "this GPU's architecture")
        return (f"This build (torch or another CUDA library) has no kernels for {arch}. "
                "`preflight doctor` (check PF104) prints the wheel that has them.")
    if kind == "driver_too_old":
        return ("The NVIDIA driver is older than the CUDA runtime the program was built for. "
                "`preflight doctor` (check PF103) prints a torch wheel matching this driver, "
                "or the minimum driver to install.")
    if kind == "driver_library_mismatch":
        return ("The loaded NVIDIA kernel module and the user-space libraries are different versions "
                "(a driver update without a reboot): reboot, or reload the nvidia modules. "
                "`preflight doctor` (check PF102).")
    if kind == "cpu_only_torch":
        return "This torch is the CPU-only build. `preflight doctor` (check PF105) prints the CUDA wheel command."
    if kind == "no_driver":
        return ("The command could not reach an NVIDIA driver. `preflight doctor` (check PF101); "
                "in a container, start it with GPU access (docker run --gpus all).")
    if kind == "nccl":
        return ("Rerun with NCCL_DEBUG=INFO to see the failing transport. In containers a small "
                "/dev/shm (docker --ipc=host or --shm-size=16g) and blocked GPU peer-to-peer "
                "(NCCL_P2P_DISABLE=1 to confirm) are the usual causes.")
    if kind == "other_processes":
        pids = ", ".join(str(p) for p in details.get("pids", [])) or "not visible from here"
        return (f"{_gib(details.get('other_bytes'))} of GPU {details.get('gpu')} was held by other processes "
                f"(PIDs: {pids}). Stop them or choose a free GPU (CUDA_VISIBLE_DEVICES); "
                "`preflight doctor` lists them (check PF114).")
    return "`preflight doctor` checks this machine."


def diagnose(matches: list[dict[str, Any]], context: dict[str, Any]) -> list[dict[str, Any]]:
    """Findings from raw output matches, deduplicated by kind (first occurrence + count).

    `context`: model (str|None), gpus (list of {index, name, memory_total_bytes}), tree_pids
    (set), and `at(t_s)` -> {"phase", "child_bytes", "per_gpu": [{index, child_bytes,
    used_bytes, total_bytes}]} giving the timeline at a moment.
    """
    findings: dict[str, dict[str, Any]] = {}
    for match in matches:
        pattern = classify(match["line"])
        if pattern is None:
            continue
        existing = findings.get(pattern.kind)
        if existing is not None:
            existing["count"] += 1
            if pattern.kind == "oom" and "tried_bytes" not in existing["details"]:
                details = oom_details(match["line"])  # the traceback's last line has the numbers
                if "tried_bytes" in details:
                    existing.update(line=match["line"], details=details)
            continue
        details: dict[str, Any] = {}
        if pattern.kind == "oom":
            details = oom_details(match["line"])
        elif pattern.kind == "no_kernel_image":
            details = arch_details(match["line"])
        findings[pattern.kind] = {"kind": pattern.kind, "codes": list(pattern.codes), "title": pattern.title,
                                  "t_s": match.get("t_s"), "stream": match.get("stream"),
                                  "line": match["line"], "count": 1, "details": details}
    out = list(findings.values())
    for finding in out:
        _attach_timeline(finding, context)
    other = _other_processes(findings.get("oom"), context)
    if other:
        out.append(other)
    for finding in out:
        finding["hint"] = _hint(finding["kind"], finding["details"], _hint_context(finding, context))
    out.sort(key=lambda f: (f.get("t_s") is None, f.get("t_s") or 0.0))
    return out


def _attach_timeline(finding: dict[str, Any], context: dict[str, Any]) -> None:
    at = context.get("at")
    if at is None or finding.get("t_s") is None:
        return
    finding["timeline"] = at(finding["t_s"])


def _gpu_for(finding: dict[str, Any], context: dict[str, Any]) -> dict[str, Any] | None:
    gpus = context.get("gpus") or []
    want = finding["details"].get("gpu")
    if want is not None:
        for g in gpus:  # PyTorch numbers GPUs in CUDA order; equal to NVML order in the common case
            if g.get("index") == want:
                return g
    if finding.get("timeline") and finding["timeline"].get("per_gpu"):
        busiest = max(finding["timeline"]["per_gpu"], key=lambda g: g.get("child_bytes") or 0)
        for g in gpus:
            if g.get("index") == busiest.get("index"):
                return g
    return gpus[0] if gpus else None


def _hint_context(finding: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    gpu = _gpu_for(finding, context) or {}
    peaks = {p["gpu"]: p for p in context.get("peaks", [])}
    peak = peaks.get(gpu.get("index"), {})
    return {"model": context.get("model"), "gpu_name": gpu.get("name"),
            "peak_bytes": peak.get("peak_bytes"),
            "total_bytes": gpu.get("memory_total_bytes") or finding["details"].get("total_bytes")}


def _other_processes(oom: dict[str, Any] | None, context: dict[str, Any]) -> dict[str, Any] | None:
    """PF114: at the OOM, was a big share of the GPU held by processes outside the command?"""
    if oom is None:
        return None
    tree = set(context.get("tree_pids") or ())
    details = oom["details"]
    listed = details.get("processes", [])
    named = [p for p in listed if p["pid"] not in tree]
    gpu = _gpu_for(oom, context) or {}
    total = gpu.get("memory_total_bytes") or details.get("total_bytes") or 0
    threshold = max(1024**3, int(0.05 * total))
    other_bytes = None
    # Trust PyTorch's PID list only when one of its PIDs is ours: in a container the driver may
    # report host PIDs, and then "not ours" proves nothing.
    if named and any(p["pid"] in tree for p in listed):
        other_bytes = sum(p["bytes"] or 0 for p in named)
    elif oom.get("timeline"):
        for g in oom["timeline"].get("per_gpu", []):
            if g.get("index") == gpu.get("index") and g.get("used_bytes") is not None:
                other_bytes = max(0, g["used_bytes"] - (g.get("child_bytes") or 0))
    if other_bytes is None or other_bytes < threshold:
        return None
    return {"kind": "other_processes", "codes": ["PF114"], "title": "GPU memory held by other processes",
            "t_s": oom.get("t_s"), "stream": None, "line": None, "count": 1,
            "details": {"gpu": gpu.get("index"), "other_bytes": other_bytes,
                        "pids": [p["pid"] for p in named]},
            "timeline": oom.get("timeline")}
