"""Hugging Face Hub repos: the local HF cache first, then huggingface_hub (an optional extra).

From the Hub only small files are downloaded (config.json, model_index.json, component configs,
shard indexes, into the usual HF cache); tensor shapes and dtypes come from the safetensors
headers through HTTP range requests (HfApi.parse_safetensors_file_metadata, the call that
get_safetensors_metadata makes per file), so no weights are fetched.

Calls used, all present from huggingface_hub 0.23 (the `[hub]` floor) to 2.x: HfApi(endpoint,
token), HfApi.model_info (commit and file list), HfApi.file_exists, hf_hub_download(endpoint=,
cache_dir=, token=, etag_timeout=), HfApi.parse_safetensors_file_metadata. Errors are told
apart by class name, as their modules moved between releases (huggingface_hub.utils ->
huggingface_hub.errors; EntryNotFoundError -> RemoteEntryNotFoundError in 1.0).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_preflight.errors import DependencyMissing, ModelSourceError, PreflightError
from gpu_preflight.models.base import ModelSource, config_warnings, read_json_object
from gpu_preflight.models.local import STANDARD_LIBRARIES, custom_component_warning, pipeline_components
from gpu_preflight.models.safetensors_header import TensorInfo, parse_safetensors_header
from gpu_preflight.models.weights import (
    PICKLE_SUFFIXES,
    WEIGHT_STEMS,
    merge_headers,
    missing_shards_warning,
    parse_index,
    plan_weights,
    shard_files,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_S = 10.0
MAX_PARALLEL_HEADERS = 8
OFFLINE_HINT = "pass a local folder or catalog name"

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "ON", "YES", "TRUE"}


class HubUnreachable(ModelSourceError):
    """The Hub could not be reached (network, proxy, 5xx, offline); a cached copy may still do."""


@dataclass(frozen=True)
class HubSettings:
    endpoint: str
    token: str | None
    offline: bool
    cache_dir: Path


def hub_settings(env: Mapping[str, str], offline: bool | None = None) -> HubSettings:
    """Settings from HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE and the HF cache variables."""
    token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or None
    return HubSettings(
        endpoint=(env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
        token=token.strip() if token else None,
        offline=(env.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE) if offline is None else offline,
        cache_dir=hf_cache_dir(env),
    )


def hf_cache_dir(env: Mapping[str, str]) -> Path:
    """HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub or ~/.cache/huggingface/hub."""
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = env.get("HF_HOME") or str(Path(env.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    return Path(home).expanduser() / "hub"


def find_cached_snapshot(cache_dir: Path, repo_id: str, revision: str | None) -> tuple[Path, str] | None:
    """(snapshot folder, commit) of `repo_id` at `revision` in the HF cache, if it is there."""
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    revision = revision or "main"
    if _COMMIT.fullmatch(revision):
        commit = revision
    else:
        if revision.startswith("/") or ".." in revision.split("/"):
            return None
        try:
            commit = (repo_dir / "refs" / revision).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        if not _COMMIT.fullmatch(commit):
            return None
    snapshot = repo_dir / "snapshots" / commit
    return (snapshot, commit) if snapshot.is_dir() else None


def repo_url(endpoint: str, repo_id: str, commit: str | None) -> str:
    return f"{endpoint}/{repo_id}/tree/{commit}" if commit else f"{endpoint}/{repo_id}"


def load_from_hub(repo_id: str, revision: str | None, settings: HubSettings) -> ModelSource:
    """Config and tensor headers of `repo_id` from the Hub; raises ModelSourceError subclasses."""
    remote = _Remote.open(repo_id, revision, settings)
    if remote.has("config.json"):
        config = remote.json("config.json")
        tensors, metadata, warnings = remote.weights("")
        return remote.source(repo_id, config, tensors, config_warnings(config) + warnings, metadata)
    if remote.has("model_index.json"):
        return _load_pipeline(remote)
    ggufs = sorted(f for f in remote.files or () if f.endswith(".gguf"))
    hint = (
        f"download one .gguf file (e.g. {ggufs[0]}) and pass its path"
        if ggufs
        else "check the repo id; gpu-preflight needs a config.json (or model_index.json) in the repo"
    )
    raise ModelSourceError(f"{repo_id} has no config.json or model_index.json", hint=hint)


def _load_pipeline(remote: _Remote) -> ModelSource:
    index = remote.json("model_index.json")
    components: dict[str, ModelSource] = {}
    warnings: list[str] = []
    for key, library, class_name in pipeline_components(index):
        if not remote.has(f"{key}/config.json"):
            continue  # tokenizer, scheduler: no weights
        config = remote.json(f"{key}/config.json")
        tensors, metadata, comp_warnings = remote.weights(f"{key}/")
        comp_warnings = config_warnings(config, f"{key}/config.json") + comp_warnings
        if library not in STANDARD_LIBRARIES:
            comp_warnings.insert(0, custom_component_warning(library, class_name))
        component = remote.source(key, config, tensors, comp_warnings, metadata)
        component.metadata["class"] = [library, class_name]
        components[key] = component
        warnings.extend(f"{key}: {w}" for w in comp_warnings)
    if not components:
        warnings.append("model_index.json lists no component with a config.json")
    source = remote.source(remote.repo_id, index, None, warnings, {})
    source.components, source.pipeline_index, source.kind = components, index, "diffusion"
    return source


class _Remote:
    """One repo at one revision, seen through huggingface_hub."""

    def __init__(self, hub: Any, api: Any, repo_id: str, revision: str | None, settings: HubSettings, info: Any):
        self.hub, self.api, self.repo_id, self.revision, self.settings = hub, api, repo_id, revision, settings
        self.commit = getattr(info, "sha", None)
        siblings = getattr(info, "siblings", None)
        self.files: set[str] | None = {s.rfilename for s in siblings} if siblings is not None else None

    @classmethod
    def open(cls, repo_id: str, revision: str | None, settings: HubSettings) -> _Remote:
        hub = import_hub()
        with hub_errors(repo_id, revision, settings.endpoint):
            api = hub.HfApi(endpoint=settings.endpoint, token=settings.token)
            info = api.model_info(repo_id, revision=revision, timeout=TIMEOUT_S)
        return cls(hub, api, repo_id, revision, settings, info)

    @property
    def pinned(self) -> str | None:
        return self.commit or self.revision

    def has(self, filename: str) -> bool:
        if self.files is not None:
            return filename in self.files
        with hub_errors(self.repo_id, self.revision, self.settings.endpoint, filename):
            return bool(self.api.file_exists(self.repo_id, filename, revision=self.pinned))

    def json(self, filename: str) -> dict[str, Any]:
        """Download a small JSON file into the HF cache (recording the revision's ref) and read it."""
        kwargs: dict[str, Any] = {
            "revision": self.revision,
            "cache_dir": str(self.settings.cache_dir),
            "token": self.settings.token,
            "endpoint": self.settings.endpoint,
            "etag_timeout": TIMEOUT_S,
        }
        kwargs.update(_quiet_progress(self.hub.hf_hub_download))
        with hub_errors(self.repo_id, self.revision, self.settings.endpoint, filename):
            local = self.hub.hf_hub_download(self.repo_id, filename, **kwargs)
        return read_json_object(local, label=f"{self.repo_id}/{filename}")

    def weights(self, prefix: str) -> tuple[list[TensorInfo] | None, dict[str, Any], list[str]]:
        names = self._names_in(prefix)
        plan = plan_weights(names)
        if plan is None:
            pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
            what = f"only PyTorch pickle weights ({pickles[0]}...)" if pickles else "no .safetensors weights"
            return None, {}, [f"the repo has {what}; the estimate comes from config.json only"]
        weight_map, index_metadata = None, None
        files = plan.files
        if plan.index_file is not None:
            label = f"{self.repo_id}/{prefix}{plan.index_file}"
            weight_map, index_metadata = parse_index(self.json(prefix + plan.index_file), label)
            files = shard_files(weight_map)
        missing = [f for f in files if f not in names] if self.files is not None else []
        if missing:
            return None, index_metadata or {}, plan.warnings + [missing_shards_warning(missing, len(files))]
        headers = self._headers(prefix, files)
        tensors, metadata, warnings = merge_headers(headers, weight_map, index_metadata)
        return tensors, metadata, plan.warnings + warnings

    def source(
        self, name: str, config: dict, tensors: list[TensorInfo] | None, warnings: list[str], metadata: dict
    ) -> ModelSource:
        return ModelSource(
            name=name,
            origin="hub",
            config=config,
            tensors=tensors,
            warnings=warnings,
            source_url=repo_url(self.settings.endpoint, self.repo_id, self.commit),
            revision=self.commit,
            metadata=metadata,
        )

    def _names_in(self, prefix: str) -> set[str]:
        if self.files is not None:
            return {f[len(prefix) :] for f in self.files if f.startswith(prefix) and "/" not in f[len(prefix) :]}
        suffixes = (".safetensors", ".safetensors.index.json")
        candidates = [f"{stem}{suffix}" for stem in WEIGHT_STEMS for suffix in suffixes]
        return {name for name in candidates if self.has(prefix + name)}

    def _headers(self, prefix: str, files: list[str]) -> list[tuple[str, Any]]:
        if len(files) == 1:
            return [(files[0], self._header(prefix, files[0]))]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_HEADERS, len(files))) as pool:
            results = list(pool.map(lambda f: self._header(prefix, f), files))
        return list(zip(files, results, strict=True))

    def _header(self, prefix: str, file: str) -> Any:
        """One shard's header through range requests, validated like a local one."""
        parse = self.api.parse_safetensors_file_metadata
        kwargs: dict[str, Any] = {"revision": self.pinned}
        if "timeout" in _parameters(parse):
            kwargs["timeout"] = TIMEOUT_S
        with hub_errors(self.repo_id, self.revision, self.settings.endpoint, prefix + file):
            remote = parse(self.repo_id, prefix + file, **kwargs)
        header: dict[str, Any] = {
            name: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": list(t.data_offsets)}
            for name, t in remote.tensors.items()
        }
        if remote.metadata:
            header["__metadata__"] = dict(remote.metadata)
        return parse_safetensors_header(header, source=f"{self.repo_id}/{prefix}{file}", file=file)


def import_hub() -> Any:
    from gpu_preflight.hints import install_hint

    try:
        import huggingface_hub
    except ImportError:
        raise DependencyMissing(
            "reading a model from the Hugging Face Hub needs huggingface_hub, which is not installed",
            hint=install_hint("hub"),
        ) from None
    return huggingface_hub


@contextmanager
def hub_errors(repo_id: str, revision: str | None, endpoint: str, filename: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub / HTTP exceptions into ModelSourceError with a hint."""
    try:
        yield
    except PreflightError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one typed error
        raise translate_hub_error(exc, repo_id, revision, endpoint, filename) from None


def translate_hub_error(
    exc: Exception, repo_id: str, revision: str | None, endpoint: str, filename: str | None = None
) -> ModelSourceError:
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = getattr(getattr(exc, "response", None), "status_code", None)
    what = f"{repo_id}/{filename}" if filename else repo_id
    unreachable_hint = (
        "check the network, the proxy or HF_ENDPOINT; set HF_HUB_OFFLINE=1 to use the local cache only;"
        f" or {OFFLINE_HINT}"
    )
    if "GatedRepoError" in names:
        return ModelSourceError(
            f"{repo_id} is a gated model and this token has no access to it",
            hint=f"accept its license at {endpoint}/{repo_id}, then set HF_TOKEN (or run `hf auth login`);"
            f" or {OFFLINE_HINT}",
        )
    if names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled"}:
        return HubUnreachable(f"cannot reach {endpoint} and {what} is not in the local cache", hint=unreachable_hint)
    if "RepositoryNotFoundError" in names:
        return ModelSourceError(
            f"{repo_id} was not found on {endpoint} (or it is private)",
            hint="check the org/name spelling; for a private repo set HF_TOKEN",
        )
    if "RevisionNotFoundError" in names:
        return ModelSourceError(
            f"revision {revision!r} was not found in {repo_id}",
            hint=f"pass a branch, tag or commit of {repo_id} that exists, e.g. {repo_id}@main",
        )
    if names & {"EntryNotFoundError", "RemoteEntryNotFoundError"}:
        return ModelSourceError(
            f"{what} was not found on {endpoint}", hint=f"check the files of {repo_id} on {endpoint}"
        )
    if "SafetensorsParsingError" in names:
        return ModelSourceError(
            f"{what}: the safetensors header cannot be parsed ({_short(exc)})",
            hint=f"the file on {endpoint} looks corrupt; try another revision of {repo_id}",
        )
    if status in (401, 403):
        return ModelSourceError(
            f"{endpoint} refused access to {what} (HTTP {status})",
            hint="check HF_TOKEN (or run `hf auth login`) and that the token can read this repo",
        )
    if status == 429:
        return HubUnreachable(f"{endpoint} is rate-limiting requests (HTTP 429)", hint="wait a minute, or set HF_TOKEN")
    if isinstance(status, int) and status >= 500:
        return HubUnreachable(f"{endpoint} answered HTTP {status} for {what}", hint=unreachable_hint)
    if isinstance(status, int):
        return ModelSourceError(f"{endpoint} answered HTTP {status} for {what}", hint=unreachable_hint)
    if isinstance(exc, OSError) or names & _NETWORK_ERRORS:
        return HubUnreachable(f"cannot reach {endpoint}: {_short(exc)}", hint=unreachable_hint)
    return ModelSourceError(
        f"reading {what} from {endpoint} failed: {type(exc).__name__}: {_short(exc)}",
        hint=f"check that {endpoint} is a Hugging Face Hub endpoint; or {OFFLINE_HINT}",
    )


# requests / httpx / httpx2 / urllib3 exception names for a network that is down or slow
_NETWORK_ERRORS = {
    "ConnectionError",
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "TimeoutException",
    "TransportError",
    "NetworkError",
    "ProxyError",
    "SSLError",
    "RemoteProtocolError",
    "MaxRetryError",
}


def _quiet_progress(download: Any) -> dict[str, Any]:
    """tqdm_class= that shows nothing, where hf_hub_download accepts one (0.26 and later)."""
    if "tqdm_class" not in _parameters(download):
        return {}
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return {}

    class _Silent(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return {"tqdm_class": _Silent}


def _parameters(fn: Any) -> Mapping[str, Any]:
    import inspect

    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
