"""Which .safetensors files hold a model's weights, and merging their headers into one list.

Shared by local folders and Hub repos: both give a set of file names. The names follow
transformers and diffusers: `model.safetensors` or `model.safetensors.index.json` (sharded),
`diffusion_pytorch_model.*` for diffusers components, `model.fp16.safetensors` and
`model.safetensors.index.fp16.json` for variants.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.errors import ModelSourceError
from gpu_preflight.models.safetensors_header import SafetensorsHeader, TensorInfo

WEIGHT_STEMS = ("model", "diffusion_pytorch_model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_PREFERRED_VARIANTS = ("fp16", "bf16")
_SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")
_MAX_LISTED = 3


@dataclass
class WeightPlan:
    """Either an index file to read (then shards come from its weight_map) or the files themselves."""

    index_file: str | None = None
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def plan_weights(names: Iterable[str]) -> WeightPlan | None:
    """Choose the weight files among `names` (file names in one folder); None if no safetensors."""
    names = set(names)
    for stem in WEIGHT_STEMS:  # transformers tries the single file before the index
        if f"{stem}.safetensors" in names:
            return WeightPlan(files=[f"{stem}.safetensors"])
        if f"{stem}.safetensors.index.json" in names:
            return WeightPlan(index_file=f"{stem}.safetensors.index.json")
    plan = _plan_variant(names)
    if plan is not None:
        return plan
    loose = sorted(n for n in names if n.endswith(".safetensors"))
    if not loose:
        return None
    warning = (
        f"no model.safetensors or index; read all {len(loose)} .safetensors files ({_listed(loose)})"
        if len(loose) > 1
        else f"no model.safetensors; read {loose[0]}"
    )
    return WeightPlan(files=loose, warnings=[warning])


def _plan_variant(names: set[str]) -> WeightPlan | None:
    variants: dict[str, WeightPlan] = {}
    for name in sorted(names):
        for stem in WEIGHT_STEMS:
            if name.startswith(f"{stem}.safetensors.index.") and name.endswith(".json"):
                variant = name[len(f"{stem}.safetensors.index.") : -len(".json")]
                variants.setdefault(variant, WeightPlan(index_file=name))
            elif name.startswith(f"{stem}.") and name.endswith(".safetensors"):
                variant = name[len(stem) + 1 : -len(".safetensors")]
                if variant and not _SHARD_SUFFIX.search(variant) and "." not in variant:
                    variants.setdefault(variant, WeightPlan(files=[name]))
    if not variants:
        return None
    order = [v for v in _PREFERRED_VARIANTS if v in variants]
    order += sorted(v for v in variants if v not in _PREFERRED_VARIANTS)
    chosen = variants[order[0]]
    others = f" (also present: {', '.join(order[1:])})" if len(order) > 1 else ""
    chosen.warnings.append(f"no default weights; read the {order[0]!r} variant{others}")
    return chosen


def parse_index(data: dict[str, Any], label: str) -> tuple[dict[str, str], dict[str, Any]]:
    """weight_map (tensor -> shard file) and metadata of a model.safetensors.index.json."""
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise ModelSourceError(
            f"{label} has no valid weight_map (tensor name -> shard file)",
            hint=f"re-download {label}",
        )
    for shard in set(weight_map.values()):
        normal = posixpath.normpath(shard)
        outside = shard.startswith(("/", "\\")) or normal.startswith("..") or ":" in shard
        if outside or not normal.endswith(".safetensors"):
            raise ModelSourceError(
                f"{label} names a shard outside the model folder or not .safetensors: {shard!r}",
                hint=f"re-download {label}; an index only names .safetensors files next to it",
            )
    metadata = data.get("metadata")
    return weight_map, metadata if isinstance(metadata, dict) else {}


def shard_files(weight_map: dict[str, str]) -> list[str]:
    return sorted(set(weight_map.values()))


def missing_shards_warning(missing: list[str], total: int) -> str:
    return (
        f"{len(missing)} of {total} weight files are missing ({_listed(missing)});"
        " tensor sizes not read, the estimate comes from config.json only"
    )


def merge_headers(
    headers: list[tuple[str, SafetensorsHeader]],
    weight_map: dict[str, str] | None,
    index_metadata: dict[str, Any] | None = None,
) -> tuple[list[TensorInfo], dict[str, Any], list[str]]:
    """One tensor list from (file, header) pairs, checked against the index's weight_map.

    Tensors the index maps to another file, or does not list, are dropped (the loader would not
    load them from there); tensors the index lists but no shard holds are reported.
    """
    warnings: list[str] = []
    tensors: list[TensorInfo] = []
    metadata: dict[str, Any] = {}
    seen: dict[str, str] = {}
    unlisted: list[str] = []
    duplicates: list[str] = []
    for file, header in headers:
        for key, value in header.metadata.items():
            metadata.setdefault(key, value)
        for t in header.tensors:
            if weight_map is not None and weight_map.get(t.name) != file:
                unlisted.append(t.name)
                continue
            if t.name in seen:
                duplicates.append(t.name)
                continue
            seen[t.name] = file
            tensors.append(TensorInfo(t.name, t.dtype, t.shape, t.nbytes, file))
    if weight_map is not None:
        absent = [name for name in weight_map if name not in seen]
        if absent:
            warnings.append(
                f"the index lists {len(absent)} tensors that their shard does not hold ({_listed(absent)});"
                " the index is stale or a shard is from another version"
            )
    if unlisted:
        warnings.append(
            f"{len(unlisted)} tensors in the shards are not in the index and were left out ({_listed(unlisted)})"
        )
    if duplicates:
        warnings.append(
            f"{len(duplicates)} tensors appear in more than one file; counted once ({_listed(duplicates)})"
        )
    if index_metadata:
        metadata.update(index_metadata)
        total = index_metadata.get("total_size")
        found = sum(t.nbytes for t in tensors)
        if isinstance(total, int) and not isinstance(total, bool) and tensors and total != found:
            warnings.append(
                f"the index says total_size {total:,} bytes but the headers add up to {found:,}; using the headers"
            )
    return tensors, metadata, warnings


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")
