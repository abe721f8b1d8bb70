"""Models on disk: a folder (transformers or diffusers), a config.json, a .safetensors or a .gguf."""

from __future__ import annotations

import os
from pathlib import Path

from gpu_preflight.errors import ModelSourceError
from gpu_preflight.models import gguf
from gpu_preflight.models.base import ModelSource, config_warnings, read_json_object
from gpu_preflight.models.safetensors_header import TensorInfo, read_safetensors_header
from gpu_preflight.models.weights import (
    PICKLE_SUFFIXES,
    merge_headers,
    missing_shards_warning,
    parse_index,
    plan_weights,
    shard_files,
)

STANDARD_LIBRARIES = ("diffusers", "transformers")


def load_path(path: Path, *, origin: str = "folder", name: str | None = None) -> ModelSource:
    """A ModelSource from an existing local path (folder, config.json, .gguf or .safetensors)."""
    if path.is_dir():
        return load_folder(path, origin=origin, name=name)
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        return load_gguf(path)
    if suffix == ".safetensors":
        return load_safetensors_file(path)
    if suffix == ".json":
        return load_config_file(path)
    raise ModelSourceError(
        f"{path} is not a model folder, config.json, .gguf or .safetensors file",
        hint="pass a folder with config.json, a config.json, a .gguf file, a catalog name or an org/name repo id",
    )


def load_folder(folder: Path, *, origin: str = "folder", name: str | None = None,
                root: Path | None = None) -> ModelSource:
    """A model folder; every file read must resolve inside `root` (default: the folder itself)."""
    names = _file_names(folder)
    name = name or folder.resolve().name
    root = folder if root is None else root
    if "model_index.json" in names:
        return _load_pipeline(folder, names, origin=origin, name=name, root=root)
    if "config.json" not in names:
        raise ModelSourceError(f"{folder} has no config.json or model_index.json", hint=_no_config_hint(folder, names))
    config = read_json_object(folder / "config.json", root=root)
    tensors, metadata, warnings = read_folder_weights(folder, names, root=root)
    return ModelSource(
        name=name,
        origin=origin,
        config=config,
        tensors=tensors,
        warnings=config_warnings(config) + warnings,
        path=str(folder),
        metadata=metadata,
    )


def read_folder_weights(
    folder: Path, names: set[str], *, root: Path | None = None
) -> tuple[list[TensorInfo] | None, dict, list[str]]:
    """Tensors from the folder's safetensors headers; None (with a warning saying why) if unreadable."""
    root = folder if root is None else root
    plan = plan_weights(names)
    if plan is None:
        return None, {}, [_no_weights_warning(names)]
    weight_map, index_metadata = None, None
    files = plan.files
    if plan.index_file is not None:
        weight_map, index_metadata = parse_index(
            read_json_object(folder / plan.index_file, root=root), str(folder / plan.index_file)
        )
        files = shard_files(weight_map)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        return None, index_metadata or {}, plan.warnings + [missing_shards_warning(missing, len(files))]
    headers = [(f, read_safetensors_header(folder / f, root=root)) for f in files]
    tensors, metadata, warnings = merge_headers(headers, weight_map, index_metadata)
    return tensors, metadata, plan.warnings + warnings


def load_config_file(path: Path) -> ModelSource:
    config = read_json_object(path)  # the file the user named: any regular file
    if path.name == "model_index.json":
        return _load_pipeline(path.parent, _file_names(path.parent), origin="folder", name=path.parent.resolve().name)
    return ModelSource(
        name=path.parent.resolve().name,
        origin="config",
        config=config,
        warnings=config_warnings(config, path.name),
        path=str(path),
    )


def load_safetensors_file(path: Path) -> ModelSource:
    """One .safetensors file: its tensors, with config.json from the same folder when present."""
    header = read_safetensors_header(path)
    from gpu_preflight.models import single_file  # diffusion checkpoints in one file (issue 15)

    found = single_file.inspect_single_file(header.tensors)
    if found is not None:
        return single_file.pipeline_source(path, header.tensors, header.metadata, found)
    config_path = path.parent / "config.json"
    warnings: list[str] = []
    if config_path.is_file():
        config = read_json_object(config_path, root=path.parent)
        warnings += config_warnings(config)
    else:
        config = {}
        warnings.append(f"no config.json next to {path.name}: weights only, no estimate of the KV cache or activations")
    tensors = [TensorInfo(t.name, t.dtype, t.shape, t.nbytes, path.name) for t in header.tensors]
    return ModelSource(
        name=path.stem,
        origin="folder",
        config=config,
        tensors=tensors,
        warnings=warnings,
        path=str(path),
        metadata=header.metadata,
    )


def load_gguf(path: Path) -> ModelSource:
    """A .gguf file, with the other parts of a split model (name-0000N-of-0000M.gguf) beside it."""
    header = gguf.read_gguf_header(path)
    tensors: list[TensorInfo] | None = header.tensor_infos(path.name)
    warnings: list[str] = []
    split_count = header.metadata.get("split.count")
    if isinstance(split_count, int) and split_count > 1:
        tensors, warnings = _gguf_splits(path, header, split_count)
    config = gguf.gguf_to_hf_config(header.metadata, header.tensors)
    name = header.metadata.get("general.name")
    return ModelSource(
        name=name if isinstance(name, str) and name else path.stem,
        origin="gguf",
        config=config,
        tensors=tensors,
        warnings=warnings,
        path=str(path),
        metadata=gguf.scalar_metadata(header.metadata),
    )


def _gguf_splits(path: Path, first: gguf.GGUFHeader, count: int) -> tuple[list[TensorInfo] | None, list[str]]:
    parts = gguf.split_siblings(path, count)
    if parts is None:
        return first.tensor_infos(path.name), [
            f"{path.name} is part of a {count}-file split GGUF but its name does not follow"
            " name-0000N-of-0000M.gguf; only its own tensors were read"
        ]
    missing = [os.path.basename(p) for p in parts if not os.path.isfile(p)]
    if missing:
        return None, [missing_shards_warning(missing, count)]
    tensors: list[TensorInfo] = []
    for part in parts:
        header = first if os.path.samefile(part, path) else gguf.read_gguf_header(part, root=path.parent)
        tensors += header.tensor_infos(os.path.basename(part))
    return tensors, []


def _load_pipeline(folder: Path, names: set[str], *, origin: str, name: str, root: Path | None = None) -> ModelSource:
    """A diffusers folder: model_index.json plus one subfolder per component."""
    root = folder if root is None else root
    index = read_json_object(folder / "model_index.json", root=root)
    components: dict[str, ModelSource] = {}
    warnings: list[str] = []
    for key, library, class_name in pipeline_components(index):
        sub = folder / key
        if not sub.is_dir():
            warnings.append(f"component {key} ({library}.{class_name}) is in model_index.json but has no folder")
            continue
        if "config.json" not in _file_names(sub):
            continue  # tokenizer, scheduler, feature extractor: no weights to count
        component = load_folder(sub, origin=origin, name=key, root=root)
        component.metadata["class"] = [library, class_name]
        if library not in STANDARD_LIBRARIES:
            component.warnings.insert(0, custom_component_warning(library, class_name))
        components[key] = component
    for key, component in components.items():
        warnings.extend(f"{key}: {w}" for w in component.warnings)
    if not components:
        warnings.append("model_index.json lists no component folder with a config.json")
    return ModelSource(
        name=name,
        origin=origin,
        config=index,
        components=components,
        warnings=warnings,
        pipeline_index=index,
        kind="diffusion",
        path=str(folder),
    )


def pipeline_components(index: dict) -> list[tuple[str, str, str]]:
    """(name, library, class) of each model_index.json entry that names a component."""
    out = []
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        library, class_name = value
        if isinstance(library, str) and isinstance(class_name, str) and "/" not in key and key not in ("", ".", ".."):
            out.append((key, library, class_name))
    return out


def custom_component_warning(library: str, class_name: str) -> str:
    return (
        f"class {library}.{class_name} is custom code: gpu-preflight never imports or runs it;"
        " the estimate comes from the config and weight headers only"
    )


def _file_names(folder: Path) -> set[str]:
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it if e.is_file()}
    except OSError as exc:
        raise ModelSourceError(
            f"cannot list {folder}: {exc.strerror or exc}", hint=f"check that {folder} is readable"
        ) from None


def _no_weights_warning(names: set[str]) -> str:
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        return (
            f"weights are PyTorch pickle files ({pickles[0]}...), which gpu-preflight does not open;"
            " the estimate comes from config.json only"
        )
    return "no .safetensors weights found; the estimate comes from config.json only"


def _no_config_hint(folder: Path, names: set[str]) -> str:
    ggufs = sorted(n for n in names if n.endswith(".gguf"))
    if ggufs:
        return f"pass the .gguf file itself, e.g. {folder / ggufs[0]}"
    weights = sorted(n for n in names if n.endswith(".safetensors"))
    if weights:
        return f"add the model's config.json, or pass the weights file itself, e.g. {folder / weights[0]}"
    return "pass the folder that holds the model's config.json (or model_index.json for a diffusers pipeline)"
