"""A node's answer: its snapshot, or why there is none."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    name: str
    snapshot: dict | None = None          # None when the node did not answer
    error: str | None = None              # why there is no snapshot (timeout, dead node, unreadable file)
    origin: str = "file"                  # "file" | "ray"
    elapsed_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the --deep results

    @property
    def answered(self) -> bool:
        return self.snapshot is not None
