"""Check a loaded snapshot before any check reads it: types, formats and sizes of known fields.

A snapshot file can come from anywhere (an older or newer tool, a hand edit, a fuzzer). The
checks read fields with `fact(...)` and `.get()`; a field of the wrong type there would crash a
check or the report header. So every field the checks, the recommender and the report read is
checked here, and the first wrong one is refused with a `SnapshotError` naming its path, what it
is and what is allowed. Unknown fields are left alone (a newer tool may add them); unavailable
facts and null values are always allowed ("unknown" and "none" are valid answers).

Bounds: at most MAX_GPUS GPUs, MAX_ITEMS entries in any other list, MAX_TEXT characters in a
string and MAX_DEPTH levels of nesting (checked on the raw JSON, before anything recurses).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from gpu_preflight.errors import SnapshotError
from gpu_preflight.snapshots.field import Fact

MAX_GPUS = 1024
MAX_ITEMS = 10_000
MAX_TEXT = 131_072  # the kernel's limit for one environment variable (MAX_ARG_STRLEN)
MAX_DEPTH = 64
HINT = "create the file again with `preflight snapshot > box.json`"


@dataclass(frozen=True)
class Leaf:
    what: str  # "a whole number >= 0", for the message
    ok: Callable[[Any], bool]
    nullable: bool = True  # a known null ("none") is a valid answer


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= MAX_TEXT


def _pattern(regex: str, what: str) -> Leaf:
    compiled = re.compile(regex)
    return Leaf(what, lambda v: isinstance(v, str) and len(v) <= 256 and compiled.fullmatch(v) is not None)


STR = Leaf(f"a string of at most {MAX_TEXT:,} characters", _text)
INT = Leaf("a whole number >= 0", lambda v: _is_int(v) and 0 <= v < 2**63)
BOOL = Leaf("true or false", lambda v: isinstance(v, bool))
NUM = Leaf("a finite number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
OBJ = Leaf("an object", lambda v: isinstance(v, dict))
STR_NN = Leaf("a string", lambda v: _text(v), nullable=False)
INDEX = Leaf("a whole number >= 0", lambda v: _is_int(v) and 0 <= v < 2**31, nullable=False)
NAME = Leaf("a string", lambda v: _text(v), nullable=False)
RESULT = Leaf("an object (or an unavailable fact)", lambda v: isinstance(v, dict), nullable=False)
STR_LIST = Leaf(f"a list of at most {MAX_ITEMS:,} strings",
                lambda v: isinstance(v, list) and len(v) <= MAX_ITEMS and all(_text(x) for x in v))
LIST = Leaf(f"a list of at most {MAX_ITEMS:,} entries", lambda v: isinstance(v, list) and len(v) <= MAX_ITEMS)


def _square(v: Any, item: Callable[[Any], bool]) -> bool:
    return isinstance(v, list) and len(v) <= MAX_GPUS and all(
        isinstance(row, list) and len(row) == len(v) and all(x is None or item(x) for x in row) for row in v)


SQUARE_BOOL = Leaf("a square list of lists of true, false or null (one row per GPU)",
                   lambda v: _square(v, lambda x: isinstance(x, bool)))
SQUARE_STR = Leaf("a square list of lists of strings or null (one row per GPU)", lambda v: _square(v, _text))
STR_MAP = Leaf("an object of strings", lambda v: isinstance(v, dict) and len(v) <= MAX_ITEMS
               and all(_text(x) for x in v.values()))
VERSION = _pattern(r"\d{1,6}(\.\d{1,6}){0,3}", "a version like 570.86.10")
TORCH_VERSION = _pattern(r"\d{1,4}\.\d{1,4}(\.\d{1,4})?[0-9A-Za-z.+_-]{0,64}", "a version like 2.7.1+cu128")
CUDA_VERSION = _pattern(r"\d{1,3}\.\d{1,3}(\.\d{1,4})?", "a CUDA version like 12.8")
PY_VERSION = _pattern(r"\d{1,2}\.\d{1,3}(\.\d{1,4})?[0-9A-Za-z.+-]{0,32}", "a Python version like 3.11.9")
CC = _pattern(r"\d{1,2}\.\d{1,2}[af]?", "a compute capability like 9.0")

# path -> (leaf, required). "[]" is every item of a list, "*" every value of an object; a part
# ending in "!" must be a Fact (the checks read those fields as `entry[name].get()`). A path
# below a list or object needs each node on the way to be a list or an object.
SPEC: tuple[tuple[str, Leaf, bool], ...] = (
    ("origin", STR, False),
    ("host.os", STR, False), ("host.platform", STR, False), ("host.kernel", STR, False),
    ("host.machine", STR, False), ("host.cpu_model", STR, False), ("host.cpu_count", INT, False),
    ("host.ram_total_bytes", INT, False), ("host.ram_available_bytes", INT, False),
    ("host.python_version", PY_VERSION, False), ("host.python_executable", STR, False),
    ("env.*", STR, False),
    ("container.runtime", STR, False), ("container.nvidia_device_nodes", STR_LIST, False),
    ("kernel_module.version", VERSION, False),
    ("user_space.libcuda_files.[].dir", STR_NN, False), ("user_space.libcuda_files.[].version", STR_NN, True),
    ("toolkit.cuda_home_target", STR, False), ("toolkit.cuda_home_version", CUDA_VERSION, False),
    ("toolkit.nvcc_path", STR, False), ("toolkit.nvcc_version", CUDA_VERSION, False),
    ("ld_library_path.entries.[].path", STR_NN, True), ("ld_library_path.entries.[].exists", BOOL, False),
    ("ld_library_path.entries.[].libs", STR_LIST, False),
    ("ld_library_path.entries.[].libcuda_version", VERSION, False),
    ("ld_library_path.entries.[].compat", BOOL, False),
    ("torch.installed", BOOL, False), ("torch.version", TORCH_VERSION, False), ("torch.local", STR, False),
    ("torch.cuda", CUDA_VERSION, False), ("torch.hip", STR, False), ("torch.requires", STR_LIST, False),
    ("torch.nvidia_packages", STR_MAP, False),
    ("packages.*", STR, False),
    ("nvml.available", BOOL, False), ("nvml.driver_version", VERSION, False),
    ("nvml.cuda_driver_version", INT, False), ("nvml.nvml_version", STR, False), ("nvml.error", STR, False),
    ("nvml.gpus.[].index!", INDEX, True), ("nvml.gpus.[].name!", NAME, False), ("nvml.gpus.[].uuid!", STR, False),
    ("nvml.gpus.[].pci_bus_id!", STR, False), ("nvml.gpus.[].compute_capability!", CC, False),
    ("nvml.gpus.[].memory_total_bytes!", INT, False), ("nvml.gpus.[].memory_used_bytes!", INT, False),
    ("nvml.gpus.[].memory_free_bytes!", INT, False),
    ("nvml.gpus.[].mig_mode!.current", BOOL, False), ("nvml.gpus.[].mig_mode!.pending", BOOL, False),
    ("nvml.gpus.[].ecc_enabled!", BOOL, False), ("nvml.gpus.[].ecc_uncorrected_volatile!", INT, False),
    ("nvml.gpus.[].retired_pages_pending!", BOOL, False),
    ("nvml.gpus.[].remapped_rows!.correctable", INT, False), ("nvml.gpus.[].remapped_rows!.uncorrectable", INT, False),
    ("nvml.gpus.[].remapped_rows!.pending", BOOL, False), ("nvml.gpus.[].remapped_rows!.failure", BOOL, False),
    ("nvml.gpus.[].processes!.[].pid", INT, True), ("nvml.gpus.[].processes!.[].used_bytes", INT, False),
    ("nvml.gpus.[].error!", STR, False),
    ("cuda_driver.path", STR, False), ("cuda_driver.driver_version", INT, False),
    ("cuda_driver.cu_init.code", INT, False), ("cuda_driver.cu_init.name", STR, False),
    ("cuda_driver.device_count", INT, False),
    ("interconnect.hostname", STR, False), ("interconnect.pci_nvidia.gpus", LIST, False),
    ("interconnect.pci_nvidia.nvswitches", LIST, False), ("interconnect.infiniband", STR_LIST, False),
    ("interconnect.nvidia_peermem_loaded", BOOL, False), ("interconnect.nccl_env", OBJ, False),
    ("interconnect.gpus.[].index!", INT, False), ("interconnect.gpus.[].fabric_state!", STR, False),
    ("interconnect.gpus.[].persistence_mode!", BOOL, False),
    ("interconnect.gpus.[].pcie_link!.generation", INT, False), ("interconnect.gpus.[].pcie_link!.width", INT, False),
    ("interconnect.gpus.[].nvlink!.links", INT, True), ("interconnect.gpus.[].nvlink!.active", INT, True),
    ("interconnect.p2p_read", SQUARE_BOOL, False), ("interconnect.topology", SQUARE_STR, False),
    ("torch_deep.result", RESULT, False), ("torch_deep.result.version", STR, False), ("torch_deep.result.cuda", STR, False),
    ("torch_deep.result.warnings", STR_LIST, False),
    ("torch_deep.result.is_available.value", BOOL, False), ("torch_deep.result.cudnn_version.value", INT, False),
    ("torch_deep.result.device_count.value", INT, False), ("torch_deep.result.arch_list.value", STR_LIST, False),
    ("torch_deep.result.sdpa_backends.value.*.ok", BOOL, False),
    ("torch_deep.result.devices.[].index", INT, True),
    ("torch_deep.result.devices.[].name.value", STR, False),
    ("torch_deep.result.devices.[].capability.value", CC, False),
    ("torch_deep.result.devices.[].smoke.value.*.ok", BOOL, False),
    ("torch_deep.result.devices.[].smoke.value.*.error", STR, False),
    ("torch_deep.result.devices.[].smoke.value.*.rel_error", NUM, False),
)

_SKIP = object()


def check_depth(data: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than `limit` (iteratively: no recursion to overflow)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise SnapshotError(f"{where} nests deeper than {limit} levels; a snapshot is at most a few levels deep",
                                hint=HINT)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def validate(snap: dict, where: str = "snapshot") -> dict:
    """Raise SnapshotError for the first field of a known path with a wrong type; return `snap`."""
    for path, leaf, required in SPEC:
        _walk(snap, path.split("."), "", leaf, required, where)
    _check_consistency(snap, where)
    return snap


def _check_consistency(snap: dict, where: str) -> None:
    """Facts that only make sense together (the checks rely on them)."""
    if _get(snap, "torch.installed") is True:
        version = _get(snap, "torch.version")
        if not (isinstance(version, str) and TORCH_VERSION.ok(version)):
            shown = "unknown" if version is _SKIP else _describe(version)
            raise SnapshotError(f"{where}: torch.installed is true but torch.version is {shown}; expected "
                                f"{TORCH_VERSION.what}", hint=HINT)


def _get(snap: dict, path: str) -> Any:
    """The value at a dotted path through sections and Facts; _SKIP when absent or unavailable."""
    node: Any = snap
    for part in path.split("."):
        node = _unwrap(node)
        if not isinstance(node, dict) or part not in node:
            return _SKIP
        node = node[part]
    return _unwrap(node)


def _walk(node: Any, parts: list[str], at: str, leaf: Leaf, required: bool, where: str,
          inside: bool = False) -> None:
    """`inside`: below a Fact's value, where a bare null in place of an object is an error (the
    checks index into it); a Fact whose own value is null stays a valid "none"."""
    if not parts:
        _leaf(node, at, leaf, where)
        return
    if node is None and inside:
        raise _wrong(where, at, node, "an object")
    if isinstance(node, Fact):
        inside = True
    node = _unwrap(node)
    if node is _SKIP or node is None:
        return
    part, rest = parts[0], parts[1:]
    if part == "[]":
        limit = MAX_GPUS if at == "nvml.gpus" else MAX_ITEMS
        if not isinstance(node, list):
            raise _wrong(where, at, node, "a list")
        if len(node) > limit:
            raise SnapshotError(f"{where}: {at} has {len(node):,} entries; at most {limit:,} are allowed"
                                + (" (one host has at most a few dozen GPUs)" if at == "nvml.gpus" else ""),
                                hint=HINT)
        for i, item in enumerate(node):
            _item(item, rest, f"{at}[{i}]", where, inside)
            _walk(item, rest, f"{at}[{i}]", leaf, required, where, inside)
        return
    if not isinstance(node, dict):
        raise _wrong(where, at, node, "an object")
    if part == "*":
        if len(node) > MAX_ITEMS:
            raise SnapshotError(f"{where}: {at} has {len(node):,} keys; at most {MAX_ITEMS:,} are allowed", hint=HINT)
        for key, value in node.items():
            _item(value, rest, _join(at, str(key)), where, inside)
            _walk(value, rest, _join(at, str(key)), leaf, required, where, inside)
        return
    must_be_fact = part.endswith("!")
    part = part.rstrip("!")
    if part not in node:
        if required and not rest:
            raise SnapshotError(f"{where}: {_join(at, part)} is missing; every entry of {at.rsplit('[', 1)[0]} has one",
                                hint=HINT)
        return
    if must_be_fact and not isinstance(node[part], Fact):
        raise SnapshotError(f"{where}: {_join(at, part)} is {_describe(node[part])}; expected a fact "
                            '({"value": ..., "source": ...})', hint=HINT)
    if inside and not must_be_fact and isinstance(node[part], Fact):
        raise SnapshotError(f"{where}: {_join(at, part)} is a fact inside a fact; expected a plain value", hint=HINT)
    _walk(node[part], rest, _join(at, part), leaf, required, where, inside)


def _item(item: Any, rest: list[str], at: str, where: str, inside: bool) -> None:
    """An entry of a list or object that the checks read keys from must be an object, not null,
    and below a Fact's value, plain data (not another Fact)."""
    if rest and rest[0] not in ("[]", "*") and item is None:
        raise _wrong(where, at, item, "an object")
    if inside and isinstance(item, Fact):
        raise SnapshotError(f"{where}: {at} is a fact inside a fact; expected a plain value", hint=HINT)


def _leaf(node: Any, at: str, leaf: Leaf, where: str) -> None:
    value = _unwrap(node)
    if value is _SKIP or (value is None and leaf.nullable):
        return
    if not leaf.ok(value):
        raise _wrong(where, at, value, leaf.what)


def _unwrap(node: Any) -> Any:
    if isinstance(node, Fact):
        return node.value if node.ok else _SKIP
    return node


def _join(at: str, part: str) -> str:
    return f"{at}.{part}" if at else part


def _wrong(where: str, at: str, value: Any, what: str) -> SnapshotError:
    return SnapshotError(f"{where}: {at} is {_describe(value)}; expected {what}", hint=HINT)


def _describe(value: Any) -> str:
    """What a value is, without quoting more than a short, printable piece of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a negative number" if value < 0 else "a number too large" if value >= 2**63 else "a number"
    if isinstance(value, float):
        return "not finite" if not math.isfinite(value) else "a number with a fraction" if value % 1 else "a number"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" + ("..." if len(value) > 40 else "")
    if isinstance(value, list):
        return f"a list of {len(value):,}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, Fact):
        return "a fact"
    return type(value).__name__
