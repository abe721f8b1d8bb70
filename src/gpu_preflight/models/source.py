"""load_model_source: turn what the user typed into a ModelSource, without downloading weights.

Resolution order:
1. an existing path: a folder (config.json + model.safetensors or a sharded index; a
   diffusers folder with model_index.json; config.json alone), a config.json, a .gguf or
   a .safetensors file;
2. a built-in catalog id or alias (gpu_preflight/data/models/*.json);
3. a Hugging Face repo id `org/name` or `org/name@revision`: the local HF cache, then the Hub
   through huggingface_hub (config files downloaded, tensor headers read by range requests).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpu_preflight.errors import DependencyMissing, ModelSourceError, UsageError
from gpu_preflight.models import hub, limits, local
from gpu_preflight.models.base import ORIGINS, ModelSource, config_warnings
from gpu_preflight.models.catalog import Catalog, CatalogEntry, default_catalog

__all__ = ["ORIGINS", "ModelSource", "load_model_source", "source_from_catalog"]

_PATH_SUFFIXES = (".json", ".gguf", ".safetensors")
_CATALOG_KEYS = {"id", "kind", "hf_repo", "aliases", "source", "config", "model_index", "components"}


def load_model_source(
    spec: str,
    *,
    revision: str | None = None,
    offline: bool | None = None,
    env: Mapping[str, str] | None = None,
    catalog: Catalog | None = None,
) -> ModelSource:
    """Read what the model `spec` is: config and tensor shapes/dtypes, never its weights.

    `offline` None follows HF_HUB_OFFLINE. `env` (default os.environ) supplies HF_ENDPOINT,
    HF_TOKEN, HF_HUB_OFFLINE and the HF cache location; `catalog` defaults to the built-in one.
    Raises UsageError for a spec that is none of the above, ModelSourceError for a model that
    cannot be read or whose config breaks a rule of models/limits.py (a wrong type, NaN, a zero
    or absurd size), DependencyMissing when the Hub is needed and huggingface_hub is missing.
    """
    source = _load(spec, revision=revision, offline=offline, env=env, catalog=catalog)
    limits.validate_source(source)
    return source


def _load(
    spec: str,
    *,
    revision: str | None,
    offline: bool | None,
    env: Mapping[str, str] | None,
    catalog: Catalog | None,
) -> ModelSource:
    spec = spec.strip() if isinstance(spec, str) else ""
    if not spec:
        raise UsageError(
            "no model given", hint="pass a model folder, a .gguf file, a catalog name or an org/name repo id"
        )
    env = os.environ if env is None else env
    path = _existing_path(spec)
    if path is not None:
        source = local.load_path(path)
        _ignore_revision(source, revision, "a local path")
        return source
    if _looks_like_path(spec):
        raise ModelSourceError(
            f"{spec}: no such file or folder",
            hint="check the path; a Hugging Face repo id looks like org/name",
        )
    catalog = default_catalog() if catalog is None else catalog
    entry = catalog.find(spec)
    if entry is not None:
        source = source_from_catalog(entry)
        _ignore_revision(source, revision, "a catalog model")
        return source
    repo_id, revision = _split_revision(spec, revision)
    if not hub.REPO_ID.fullmatch(repo_id):
        raise UsageError(
            f"{spec!r} is not a local path, a catalog name or a Hugging Face repo id",
            hint=_spec_hint(spec, catalog),
        )
    return _load_repo(repo_id, revision, hub.hub_settings(env, offline), catalog)


def source_from_catalog(entry: CatalogEntry) -> ModelSource:
    """A catalog entry as a ModelSource (configs only: `tensors` is None)."""
    extras = {k: copy.deepcopy(v) for k, v in entry.raw.items() if k not in _CATALOG_KEYS}
    if entry.hf_repo:
        extras["hf_repo"] = entry.hf_repo
    components = None
    warnings: list[str] = []
    if entry.components:
        components = {name: _catalog_component(name, spec) for name, spec in entry.components.items()}
        for name, component in components.items():
            warnings.extend(f"{name}: {w}" for w in component.warnings)
    config = entry.config if entry.config is not None else (entry.model_index or {})
    if entry.config is not None:
        warnings = config_warnings(entry.config) + warnings
    return ModelSource(
        name=entry.id,
        origin="catalog",
        config=copy.deepcopy(config),
        components=components,
        warnings=warnings,
        source_url=entry.source_url,
        pipeline_index=copy.deepcopy(entry.model_index),
        kind=entry.kind or ("diffusion" if entry.is_pipeline else None),
        metadata=extras,
    )


def _catalog_component(name: str, spec: dict[str, Any]) -> ModelSource:
    config = spec.get("config") if isinstance(spec.get("config"), dict) else {}
    metadata = {k: copy.deepcopy(v) for k, v in spec.items() if k != "config"}
    warnings = config_warnings(config, f"{name} config")
    cls = spec.get("class")
    named = isinstance(cls, list) and len(cls) == 2 and all(isinstance(c, str) for c in cls)
    if named and cls[0] not in local.STANDARD_LIBRARIES:
        warnings.insert(0, local.custom_component_warning(cls[0], cls[1]))
    return ModelSource(name=name, origin="catalog", config=copy.deepcopy(config), warnings=warnings, metadata=metadata)


def _load_repo(repo_id: str, revision: str | None, settings: hub.HubSettings, catalog: Catalog) -> ModelSource:
    """HF cache first (whole answer when it holds the weight headers, or when offline), then the Hub."""
    cached = _from_cache(repo_id, revision, settings)
    if cached is not None and cached.weights_bytes is not None:
        return cached
    if cached is not None and settings.offline:
        cached.warnings.append("offline mode is on: weight headers missing from the local HF cache were not fetched")
        return cached
    if settings.offline:
        reason = "offline mode is on and the repo is not in the local HF cache"
        fallback = _catalog_fallback(catalog, repo_id, revision, reason)
        if fallback is not None:
            return fallback
        raise ModelSourceError(
            f"{repo_id} is not in the local Hugging Face cache ({settings.cache_dir}) and offline mode is on",
            hint=f"{hub.OFFLINE_HINT}, or unset HF_HUB_OFFLINE",
        )
    try:
        return hub.load_from_hub(repo_id, revision, settings)
    except (hub.HubUnreachable, DependencyMissing) as exc:
        reason = exc.message + (f" ({exc.hint})" if isinstance(exc, DependencyMissing) else "")
        if cached is not None:
            cached.warnings.append(f"{reason}; used the partial copy in the local HF cache")
            return cached
        fallback = _catalog_fallback(catalog, repo_id, revision, reason)
        if fallback is None:
            raise
        return fallback


def _from_cache(repo_id: str, revision: str | None, settings: hub.HubSettings) -> ModelSource | None:
    found = hub.find_cached_snapshot(settings.cache_dir, repo_id, revision)
    if found is None:
        return None
    snapshot, commit = found
    try:
        source = local.load_folder(snapshot, origin="hub-cache", name=repo_id)
    except ModelSourceError:
        if settings.offline:
            raise
        return None  # an incomplete or damaged cache entry: ask the Hub instead
    source.revision = commit
    source.source_url = hub.repo_url(settings.endpoint, repo_id, commit)
    for component in (source.components or {}).values():
        component.revision, component.source_url = commit, source.source_url
    return source


def _catalog_fallback(catalog: Catalog, repo_id: str, revision: str | None, reason: str) -> ModelSource | None:
    """The catalog's copy of `repo_id`'s config, which is its main branch only."""
    entry = catalog.find_by_repo(repo_id) if revision in (None, "main") else None
    if entry is None:
        return None
    source = source_from_catalog(entry)
    source.warnings.insert(0, f"{reason}; used the built-in catalog config of {entry.id} instead")
    return source


def _split_revision(spec: str, revision: str | None) -> tuple[str, str | None]:
    repo_id, sep, inline = spec.partition("@")
    if not sep:
        return spec, revision
    if not inline:
        raise UsageError(
            f"{spec!r} ends with '@' but names no revision", hint="write org/name@revision, e.g. org/name@main"
        )
    if revision is not None and revision != inline:
        raise UsageError(
            f"{spec!r} names revision {inline!r} but --revision says {revision!r}",
            hint="give the revision once, either as org/name@revision or with --revision",
        )
    return repo_id, inline


def _existing_path(spec: str) -> Path | None:
    try:
        path = Path(spec).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError, RuntimeError):  # a name too long, a NUL byte, ~unknown-user
        return None


def _looks_like_path(spec: str) -> bool:
    base = spec.partition("@")[0]
    return (
        base.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or base.lower().endswith(_PATH_SUFFIXES)
        or base.count("/") >= 2
        or "\\" in base
    )


def _ignore_revision(source: ModelSource, revision: str | None, what: str) -> None:
    if revision:
        source.warnings.append(f"revision {revision!r} ignored for {what}")


def _spec_hint(spec: str, catalog: Catalog) -> str:
    close = catalog.suggest(spec)
    if close:
        return f"did you mean {' or '.join(close)}? Otherwise pass a model folder, a .gguf file or an org/name repo id"
    return "pass a model folder, a config.json, a .gguf file, a catalog name or a Hugging Face repo id (org/name)"
