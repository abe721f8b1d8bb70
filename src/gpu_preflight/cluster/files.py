"""Snapshots gathered by any means: files, folders of files, and logs that carry one snapshot each.

Accepted: a snapshot JSON file (`preflight snapshot -o node.json`), a folder of them (searched one
level deep, `*.json`), and text files where each snapshot is one JSON document on its own line
(e.g. `kubectl logs` of a DaemonSet that runs `preflight snapshot`, one line per pod). A file that
is not a snapshot becomes a node with its error, never a crash: a fleet report must show what
could not be read.
"""

from __future__ import annotations

import os

from gpu_preflight.errors import SnapshotError, UsageError
from gpu_preflight.cluster.nodes import Node
from gpu_preflight.snapshots import schema

MAX_FILE_BYTES = 64 << 20  # a snapshot is tens of KiB; a 64 MiB file is not one
MAX_NODES = 100_000


def _node_name(snap: dict, fallback: str) -> str:
    return str(schema.fact(snap, "interconnect.hostname").get() or fallback)


def _read(path: str) -> str:
    if not os.path.isfile(path):
        raise OSError(f"{path} is not a regular file")
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise OSError(f"{path} is larger than {MAX_FILE_BYTES >> 20} MiB: not a snapshot")
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read(MAX_FILE_BYTES + 1)


def _from_text(text: str, path: str) -> list[Node]:
    base = os.path.splitext(os.path.basename(path))[0]
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            snap = schema.loads(stripped, where=path)
            return [Node(_node_name(snap, base), snap, origin="file")]
        except SnapshotError as exc:
            if "not valid JSON" not in exc.message:  # one JSON document, but not a snapshot
                raise
    nodes = []
    for i, line in enumerate(text.splitlines(), 1):
        start = line.find("{")
        if start < 0 or '"gpu-preflight.snapshot"' not in line:
            continue
        where = f"{path} line {i}"
        try:
            snap = schema.loads(line[start:], where=where)
        except Exception as exc:  # noqa: BLE001 - one bad line is one bad node
            nodes.append(Node(f"{base}:{i}", None, f"{where}: {exc}", origin="file"))
            continue
        nodes.append(Node(_node_name(snap, f"{base}:{i}"), snap, origin="file"))
    if not nodes:
        raise ValueError(f"{path} holds no gpu-preflight snapshot")
    return nodes


def load_paths(paths: list[str]) -> list[Node]:
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p)
                            if f.endswith((".json", ".jsonl", ".log", ".txt")))
        elif os.path.exists(p):
            files.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder", hint="pass snapshot files or folders of them")
    if not files:
        raise UsageError("no snapshot files found", hint="write one per node with "
                                                         "`preflight snapshot -o $(hostname).json`")
    nodes: list[Node] = []
    for f in files:
        try:
            nodes += _from_text(_read(f), f)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is reported as a node
            msg = getattr(exc, "message", None) or str(exc)
            nodes.append(Node(os.path.basename(f), None, msg, origin="file"))
        if len(nodes) > MAX_NODES:
            raise UsageError(f"more than {MAX_NODES:,} snapshots", hint="judge the fleet in parts")
    _dedupe_names(nodes)
    return nodes


def _dedupe_names(nodes: list[Node]) -> None:
    seen: dict[str, int] = {}
    for n in nodes:
        k = seen.get(n.name, 0)
        seen[n.name] = k + 1
        if k:
            n.name = f"{n.name}#{k + 1}"
