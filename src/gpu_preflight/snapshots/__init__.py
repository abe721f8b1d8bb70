"""The snapshot: everything the checks need to know about a machine, as plain data.

`field.py` is one value ("Fact": a value, or unavailable with a reason, and its source);
`schema.py` is the JSON format and field access; `collector.py` runs the probes. The format's
functions are re-exported here; `collect` is imported lazily (it pulls in the probes).
"""

from typing import Any

from gpu_preflight.snapshots.schema import (
    SCHEMA, SCHEMA_VERSION, Snapshot, dumps, fact, from_json, gpus, load, loads, to_json,
)

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Snapshot", "dumps", "fact", "from_json", "gpus", "load", "loads", "to_json",
           "collect"]


def __getattr__(name: str) -> Any:
    if name == "collect":
        from gpu_preflight.snapshots.collector import collect

        return collect
    raise AttributeError(f"module 'gpu_preflight.snapshots' has no attribute {name!r}")
