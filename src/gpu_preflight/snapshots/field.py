"""A snapshot field: a value with its source, or "unavailable" with the reason.

Serialized form (stable, part of the snapshot schema):

    {"value": <json>, "source": "nvml"}
    {"value": null, "source": "nvml", "unavailable": "NVML library not found"}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Fact:
    value: Any
    source: str
    unavailable: str | None = None

    @property
    def ok(self) -> bool:
        return self.unavailable is None

    def get(self, default: Any = None) -> Any:
        return self.value if self.unavailable is None else default

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"value": self.value, "source": self.source}
        if self.unavailable is not None:
            data["unavailable"] = self.unavailable
        return data

    @classmethod
    def from_json(cls, data: Any) -> "Fact":
        if not isinstance(data, dict) or "source" not in data:
            raise ValueError(f"not a fact: {data!r:.80}")
        reason = data.get("unavailable")
        return cls(None if reason is not None else data.get("value"), str(data["source"]), reason)


def known(value: Any, source: str) -> Fact:
    return Fact(value, source)


def unknown(reason: str, source: str) -> Fact:
    return Fact(None, source, reason)


def attempt(source: str, fn: Callable[[], Any]) -> Fact:
    """Run one probe call; any exception becomes an unavailable fact with its reason."""
    try:
        return Fact(fn(), source)
    except Exception as exc:  # noqa: BLE001 - a probe must never crash the report
        return Fact(None, source, describe_exception(exc))


def describe_exception(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if type(exc).__name__ not in text:
        text = f"{type(exc).__name__}: {text}"
    return text[:300]
