"""The snapshot's data format: sections of Facts, their JSON form, and reading a field.

A snapshot is a nested dict of sections whose leaves are Facts. It round-trips through JSON
(`preflight snapshot > box.json`, `preflight doctor --from box.json`) and carries a schema
version; a file from a newer schema or a truncated file is refused with a clear error.
"""

from __future__ import annotations

import json
from typing import Any

from gpu_preflight.errors import SnapshotError
from gpu_preflight.snapshots.field import Fact

MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024  # a real snapshot is about 10 KB

SCHEMA = "gpu-preflight.snapshot"
SCHEMA_VERSION = 1

Snapshot = dict  # sections -> Facts; see collector.collect()


def to_json(obj: Any) -> Any:
    if isinstance(obj, Fact):
        return {**obj.to_json(), "value": to_json(obj.value)} if obj.ok else obj.to_json()
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj


def _is_fact(obj: Any) -> bool:
    return isinstance(obj, dict) and "source" in obj and "value" in obj and set(obj) <= {"value", "source",
                                                                                          "unavailable"}


def from_json(obj: Any) -> Any:
    if _is_fact(obj):
        if obj.get("unavailable") is not None:
            return Fact(None, str(obj["source"]), str(obj["unavailable"]))
        return Fact(from_json(obj["value"]), str(obj["source"]))
    if isinstance(obj, dict):
        return {k: from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    return obj


def dumps(snap: Snapshot) -> str:
    return json.dumps(to_json(snap), indent=2, sort_keys=False)


def loads(text: str, where: str = "snapshot") -> Snapshot:
    """Parse and validate a snapshot (snapshots/validate.py); SnapshotError for anything else."""
    from gpu_preflight.snapshots import validate

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnapshotError(
            f"{where} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            hint="the file may be truncated; write it again with `preflight snapshot > box.json`",
        ) from None
    except RecursionError:
        raise SnapshotError(f"{where} nests deeper than JSON can be read here; a snapshot is a few levels deep",
                            hint="create one with `preflight snapshot > box.json`") from None
    except ValueError:  # an integer of more than 4,300 digits
        raise SnapshotError(f"{where} holds a number too long to read",
                            hint="create one with `preflight snapshot > box.json`") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SnapshotError(f"{where} is not a gpu-preflight snapshot (no \"schema\": \"{SCHEMA}\")",
                            hint="create one with `preflight snapshot > box.json`")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise SnapshotError(f"{where} has no integer schema_version",
                            hint="create the file again with `preflight snapshot > box.json`")
    if version > SCHEMA_VERSION:
        from gpu_preflight.hints import upgrade_hint

        raise SnapshotError(
            f"{where} uses snapshot schema {version}, newer than this gpu-preflight understands ({SCHEMA_VERSION})",
            hint=upgrade_hint(),
        )
    validate.check_depth(data, where)
    try:
        snap = from_json(data)
    except (TypeError, ValueError) as exc:
        raise SnapshotError(f"{where} is malformed: {exc}",
                            hint="create the file again with `preflight snapshot > box.json`") from None
    return validate.validate(snap, where)


def load(path: str) -> Snapshot:
    """Read a snapshot file: a regular file of at most MAX_SNAPSHOT_BYTES, UTF-8 JSON."""
    from gpu_preflight.fileio import read_bounded

    raw = read_bounded(path, MAX_SNAPSHOT_BYTES, f"snapshot {path}", error=SnapshotError, what="snapshot")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"{path} is not UTF-8 text (a bad byte at offset {exc.start})",
                            hint="create one with `preflight snapshot > box.json`") from None
    return loads(text, where=path)


def fact(snap: Snapshot, path: str) -> Fact:
    """`fact(snap, "nvml.driver_version")`; a missing section or field is an unavailable Fact."""
    node: Any = snap
    for part in path.split("."):
        if isinstance(node, Fact):
            if not node.ok:
                return node
            node = node.value
        if not isinstance(node, dict) or part not in node:
            return Fact(None, "snapshot", f"{path} is not in this snapshot")
        node = node[part]
    return node if isinstance(node, Fact) else Fact(node, "snapshot")


def gpus(snap: Snapshot) -> list[dict[str, Fact]]:
    """The GPUs NVML saw (described GPUs for `compat`); [] when unknown."""
    f = fact(snap, "nvml.gpus")
    return [g for g in (f.value or []) if isinstance(g, dict)] if f.ok else []
