"""The built-in model catalog: configs of well-known models, shipped as JSON, never weights.

One model per file in `gpu_preflight/data/models/*.json` (see that folder's README.md):

    {"id": "qwen2.5-7b-instruct", "kind": "llm", "hf_repo": "Qwen/Qwen2.5-7B-Instruct",
     "aliases": ["qwen2.5-7b"], "source": URL, "config": {...config.json...}}

or, for a diffusion pipeline, "model_index" (the pipeline's model_index.json) and
"components": {name: {"class": ..., "config": {...}, "weights": ...}} instead of "config".

The loader is tolerant: a file that cannot be used is skipped and reported in
`Catalog.problems`, never raised, so one bad file does not break the others. A file may also
hold a list of entries, or {"models": [entries]}.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_CATALOG_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    kind: str | None
    hf_repo: str | None
    aliases: tuple[str, ...]
    source: Any  # usually a URL string; kept as written
    config: dict[str, Any] | None  # config.json of a single model
    model_index: dict[str, Any] | None  # model_index.json of a pipeline
    components: dict[str, dict[str, Any]]  # pipeline component -> {"class", "config", "weights"}
    file: str  # the catalog file it came from
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def source_url(self) -> str | None:
        url = _first_url(self.source)
        if url is None and self.hf_repo:
            url = f"https://huggingface.co/{self.hf_repo}"
        return url

    @property
    def is_pipeline(self) -> bool:
        return self.config is None


@dataclass
class Catalog:
    entries: list[CatalogEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "file: why it was skipped"

    def __post_init__(self) -> None:
        self._by_name: dict[str, CatalogEntry] = {}
        # ids first, so that an alias never hides another model's id; then the first file wins
        names = [(e.id, e) for e in self.entries] + [(a, e) for e in self.entries for a in e.aliases]
        for name, entry in names:
            other = self._by_name.setdefault(normalize_name(name), entry)
            if other is not entry:
                self.problems.append(f"{entry.file}: name {name!r} is already used by {other.file}; ignored")

    def find(self, name: str) -> CatalogEntry | None:
        """The entry whose id or alias is `name` (case, '_' and ' ' vs '-' ignored)."""
        return self._by_name.get(normalize_name(name))

    def find_by_repo(self, repo_id: str) -> CatalogEntry | None:
        wanted = repo_id.casefold()
        return next((e for e in self.entries if e.hf_repo and e.hf_repo.casefold() == wanted), None)

    def names(self) -> list[str]:
        return sorted(e.id for e in self.entries)

    def suggest(self, name: str, limit: int = 3) -> list[str]:
        """Catalog ids close to a mistyped `name`."""
        keys = {normalize_name(n): e.id for e in self.entries for n in (e.id, *e.aliases)}
        close = difflib.get_close_matches(normalize_name(name), list(keys), n=limit * 2, cutoff=0.6)
        return list(dict.fromkeys(keys[k] for k in close))[:limit]


def normalize_name(name: str) -> str:
    return name.strip().casefold().replace("_", "-").replace(" ", "-")


def load_catalog(directory: str | Path | None = None) -> Catalog:
    """Read every *.json catalog file in `directory` (default: the packaged data/models)."""
    if directory is None:
        return default_catalog()
    folder = Path(directory)
    if not folder.is_dir():
        return Catalog(problems=[f"{folder}: catalog folder not found"])
    return _build(sorted(folder.glob("*.json")))


@functools.lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """The catalog shipped in the package, read once per process."""
    from importlib import resources

    try:
        folder = resources.files("gpu_preflight").joinpath("data", "models")
        files = sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    except (OSError, ModuleNotFoundError) as exc:
        return Catalog(problems=[f"built-in catalog: {exc}"])
    return _build(files)


def _build(files: Iterable[Any]) -> Catalog:
    entries: list[CatalogEntry] = []
    problems: list[str] = []
    for file in files:
        name = getattr(file, "name", str(file))
        try:
            raw = file.read_bytes()
            if len(raw) > MAX_CATALOG_FILE_BYTES:
                raise ValueError(f"file is over {MAX_CATALOG_FILE_BYTES} bytes")
            data = json.loads(raw.decode("utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            problems.append(f"{name}: not readable JSON ({str(exc)[:120]})")
            continue
        items = data.get("models") if isinstance(data, dict) and isinstance(data.get("models"), list) else data
        items = items if isinstance(items, list) else [items]
        stem = name[:-5] if name.endswith(".json") else name
        for i, item in enumerate(items):
            label = name if len(items) == 1 else f"{name}[{i}]"
            entry, problem = _entry(item, label, stem if len(items) == 1 else None)
            if entry is None:
                problems.append(f"{label}: {problem}")
            else:
                entries.append(entry)
    return Catalog(entries=entries, problems=problems)


def _entry(item: Any, label: str, default_id: str | None) -> tuple[CatalogEntry | None, str]:
    if not isinstance(item, dict):
        return None, "an entry is not a JSON object"
    entry_id = item.get("id") or default_id
    if not isinstance(entry_id, str) or not entry_id.strip():
        return None, "entry has no id"
    config = item.get("config")
    model_index = item.get("model_index")
    components = item.get("components")
    if config is not None and not isinstance(config, dict):
        return None, "config is not an object"
    if model_index is not None and not isinstance(model_index, dict):
        return None, "model_index is not an object"
    if components is not None and not isinstance(components, dict):
        return None, "components is not an object"
    if config is None and model_index is None and not components:
        return None, "entry has neither config nor model_index/components"
    aliases = item.get("aliases") or []
    aliases = [aliases] if isinstance(aliases, str) else aliases
    hf_repo = item.get("hf_repo")
    kind = item.get("kind")
    return (
        CatalogEntry(
            id=entry_id.strip(),
            kind=kind if isinstance(kind, str) else None,
            hf_repo=hf_repo if isinstance(hf_repo, str) and hf_repo else None,
            aliases=tuple(a for a in aliases if isinstance(a, str) and a.strip()) if isinstance(aliases, list) else (),
            source=item.get("source"),
            config=copy.deepcopy(config) if config is not None else None,
            model_index=copy.deepcopy(model_index) if model_index is not None else None,
            components={
                str(k): copy.deepcopy(v) if isinstance(v, dict) else {"config": None, "value": v}
                for k, v in (components or {}).items()
            },
            file=label,
            raw=item,
        ),
        "",
    )


def _first_url(source: Any) -> str | None:
    if isinstance(source, str):
        return source if source.startswith(("http://", "https://")) else None
    if isinstance(source, dict):
        for key in ("url", "config", "hf", "source"):
            if isinstance(source.get(key), str) and source[key].startswith(("http://", "https://")):
                return source[key]
        values: Iterable[Any] = source.values()
    elif isinstance(source, list):
        values = source
    else:
        return None
    return next((url for url in (_first_url(v) for v in values) if url), None)
