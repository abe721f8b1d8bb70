"""ModelSource: what a model is (config, tensor shapes and dtypes), read without its weights."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.errors import ModelSourceError
from gpu_preflight.fileio import read_bounded
from gpu_preflight.models.safetensors_header import TensorInfo

ORIGINS = ("folder", "config", "gguf", "catalog", "hub", "hub-cache")


@dataclass
class ModelSource:
    """A model as read from a folder, a config.json, a GGUF, the catalog or the Hugging Face Hub.

    `config` is config.json (for a pipeline: its model_index.json, also in `pipeline_index`;
    for a GGUF: a config.json-shaped dict rebuilt from its metadata). `tensors` is None when
    the weights' headers could not be read (config-only sources, missing shards, .bin weights):
    `warnings` then says why, and estimates must come from `config`. A diffusers pipeline has
    `components` (unet, vae, text_encoder, transformer...), each a ModelSource of its own;
    their warnings are repeated in the pipeline's `warnings`, prefixed with the component name.
    """

    name: str
    origin: str  # one of ORIGINS
    config: dict[str, Any]
    tensors: list[TensorInfo] | None = None
    components: dict[str, ModelSource] | None = None
    warnings: list[str] = field(default_factory=list)
    source_url: str | None = None
    pipeline_index: dict[str, Any] | None = None
    kind: str | None = None  # catalog kind ("llm", "diffusion"...); "diffusion" for pipelines
    revision: str | None = None  # commit of a Hub or Hub-cache source
    path: str | None = None  # local folder or file it was read from
    metadata: dict[str, Any] = field(default_factory=dict)  # safetensors __metadata__, GGUF scalars, catalog extras

    @property
    def weights_bytes(self) -> int | None:
        """Bytes of all tensors (components included), or None when any are unknown."""
        total = 0
        if self.tensors is not None:
            total += sum(t.nbytes for t in self.tensors)
        elif not self.components:
            return None
        for component in (self.components or {}).values():
            part = component.weights_bytes
            if part is None:
                return None
            total += part
        return total


MAX_JSON_BYTES = 64 * 1024 * 1024  # config.json, model_index.json, shard indexes


def read_json_object(
    path: str | os.PathLike[str], label: str | None = None, *, root: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """A JSON object from a small regular file (inside the folder `root` when given, symlinks
    resolved); ModelSourceError (naming the file) for anything else."""
    label = label or os.fspath(path)
    raw = read_bounded(path, MAX_JSON_BYTES, label, root=root, what="config file")
    return parse_json_object(raw, label)


def parse_json_object(raw: bytes, label: str) -> dict[str, Any]:
    """Decode a JSON object; errors say where the JSON breaks but never quote the file."""
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ModelSourceError(
            f"{label} is not valid JSON (not UTF-8 text at byte {exc.start})",
            hint=f"re-download {label} or fix it; it must be a JSON object",
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelSourceError(
            f"{label} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            hint=f"re-download {label} or fix it; it must be a JSON object",
        ) from None
    except (ValueError, RecursionError) as exc:  # nesting deeper than the parser allows, a huge number
        raise ModelSourceError(
            f"{label} is not usable JSON ({'nested too deeply' if isinstance(exc, RecursionError) else 'bad value'})",
            hint=f"re-download {label} or fix it; it must be a JSON object",
        ) from None
    if not isinstance(data, dict):
        raise ModelSourceError(
            f"{label} holds a JSON {type(data).__name__}, not an object",
            hint=f"check that {label} is the model's config file",
        )
    return data


def config_warnings(config: dict[str, Any], label: str = "config.json") -> list[str]:
    """Warnings about a config that needs custom code. Nothing from it is imported or run."""
    if "auto_map" in config:
        return [
            f"{label} has auto_map (custom code, trust_remote_code): gpu-preflight never imports or runs it;"
            " the estimate comes from config.json only"
        ]
    return []
