"""Typed errors raised by the library; the CLI maps them to one-line messages with a hint."""

from __future__ import annotations


class PreflightError(Exception):
    """Base class: a problem the user can fix. `hint` says how."""

    exit_code = 3

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(PreflightError):
    """Bad command-line input (a driver string that is not a version, an unknown GPU...)."""


class SnapshotError(PreflightError):
    """A snapshot file that cannot be read: missing, truncated, not JSON, newer schema."""


class ModelSourceError(PreflightError):
    """A model folder, config, safetensors or GGUF header that cannot be read."""


class DependencyMissing(PreflightError):
    """An optional dependency (torch, transformers, huggingface_hub...) is not installed."""


class DeviceUnavailable(PreflightError):
    """A live measurement needs a GPU that is not there."""
