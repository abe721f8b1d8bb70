"""Read the header of a .safetensors file: tensor names, dtypes, shapes and byte sizes.

Format (https://huggingface.co/docs/safetensors/index#format; reference parser
https://github.com/huggingface/safetensors/blob/main/safetensors/src/tensor.rs):
an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
``{name: {"dtype": str, "shape": [int], "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
then the data buffer. Offsets are relative to the start of the data buffer, tensors are packed
back to back from offset 0, and the last one ends at the end of the file.

Only the header is read: never the tensor data.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.errors import ModelSourceError
from gpu_preflight.fileio import open_regular

# The reference parser refuses headers over 100,000,000 bytes (MAX_HEADER_SIZE in tensor.rs).
MAX_HEADER_BYTES = 100_000_000

# Bits per element of each safetensors dtype (the `Dtype` enum of the reference parser;
# F4 / F6_* / F8_E8M0 / C64 were added in safetensors 0.6).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "I64": 64,
    "U64": 64,
    "F64": 64,
}

_LFS_POINTER_PREFIX = b"version https://git-lfs"


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor as declared by a weights header; `nbytes` is its size on disk.

    `dtype` is the file's own dtype string: safetensors names ("BF16", "F8_E4M3", "U8", "I32")
    or, for GGUF files, ggml type names ("Q4_K", "F16"). `shape` is outermost dimension first.
    `file` names the file (shard) that holds it, relative to the model folder or repo.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: str | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed header of one .safetensors file."""

    source: str  # the path (or `repo/file` for a remote header), for messages
    tensors: list[TensorInfo]
    metadata: dict[str, Any] = field(default_factory=dict)  # the `__metadata__` block
    header_bytes: int = 0  # N, the JSON length
    data_bytes: int | None = None  # size of the data buffer, when the file size is known

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def read_safetensors_header(
    path: str | os.PathLike[str],
    *,
    label: str | None = None,
    max_header_bytes: int = MAX_HEADER_BYTES,
    root: str | os.PathLike[str] | None = None,
) -> SafetensorsHeader:
    """Read and validate the header of the .safetensors file at `path`.

    Raises ModelSourceError (hint names the file) for a file that is too short, a Git LFS
    pointer instead of weights, a header length over `max_header_bytes` or past the end of
    the file (never allocated), invalid JSON, unknown dtypes, or offsets that disagree with
    shape x dtype or with the file size (a truncated download); also for a path that is not a
    regular file, or (with `root`) that resolves outside the folder `root`. No byte of the file
    is quoted in an error before it is known to be a safetensors header.
    """
    path = os.fspath(path)
    label = label or path
    try:
        with open_regular(path, label, root=root) as f:
            file_bytes = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if prefix == _LFS_POINTER_PREFIX[:8]:
                if f.read(len(_LFS_POINTER_PREFIX) - 8) == _LFS_POINTER_PREFIX[8:]:
                    raise _error(
                        label,
                        "this is a Git LFS pointer, not the weights",
                        f"run `git lfs pull` in {os.path.dirname(label) or '.'} to fetch"
                        f" {os.path.basename(label)}, or download the real file",
                    )
                f.seek(8)
            if len(prefix) < 8:
                raise _error(label, f"only {file_bytes} bytes, too short for a safetensors header")
            header_len = int.from_bytes(prefix, "little")
            _check_header_length(label, header_len, file_bytes, max_header_bytes)
            raw = f.read(header_len)
    except OSError as exc:
        raise ModelSourceError(
            f"cannot read {label}: {exc.strerror or exc}",
            hint=f"check that {label} exists and is readable",
        ) from None
    if len(raw) != header_len:  # the file shrank while we read it
        raise _error(label, "the file ended inside its header")
    header = _decode_json(label, raw)
    return parse_safetensors_header(
        header, source=label, header_bytes=header_len, data_bytes=file_bytes - 8 - header_len
    )


def parse_safetensors_header(
    header: Any,
    *,
    source: str,
    header_bytes: int = 0,
    data_bytes: int | None = None,
    file: str | None = None,
) -> SafetensorsHeader:
    """Validate a decoded header dict (from a file or a remote range request).

    `data_bytes` is the size of the data buffer when known; then the tensors must cover it
    exactly, as the reference parser requires.
    """
    if not isinstance(header, dict):
        raise _error(source, f"the header is a JSON {type(header).__name__}, not an object")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise _error(source, "`__metadata__` is not an object")
    spans: list[tuple[int, int, str]] = []
    tensors: list[TensorInfo] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        info, begin, end = _parse_entry(source, name, entry, file)
        tensors.append(info)
        spans.append((begin, end, name))
    _check_packing(source, spans, data_bytes)
    return SafetensorsHeader(
        source=source,
        tensors=tensors,
        metadata=dict(metadata),
        header_bytes=header_bytes,
        data_bytes=data_bytes,
    )


def _check_header_length(label: str, header_len: int, file_bytes: int, limit: int) -> None:
    # The prefix is the file's first 8 bytes: never quote it (a link could point anywhere).
    if header_len < 2:  # the smallest JSON object, "{}"
        raise _error(label, "the length prefix declares a header too short for a JSON object")
    if header_len > limit:
        raise _error(
            label,
            f"the length prefix declares a header over the {limit:,}-byte limit (not a safetensors file, or corrupt)",
        )
    if header_len > file_bytes - 8:
        raise _error(
            label,
            f"the length prefix declares a header longer than the {max(file_bytes - 8, 0):,} bytes"
            " that follow it (truncated download?)",
        )


def _decode_json(label: str, raw: bytes) -> Any:
    if not raw.lstrip(b" \t\r\n").startswith(b"{"):
        raise _error(label, "the header does not start with '{' (not a safetensors file?)")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _error(label, "the header is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise _error(label, f"the header is not valid JSON ({_short(exc)})") from None


def _parse_entry(source: str, name: str, entry: Any, file: str | None) -> tuple[TensorInfo, int, int]:
    if not isinstance(entry, dict):
        raise _error(source, f"tensor {name!r}: entry is not an object")
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise _error(
            source,
            f"tensor {name!r}: unknown dtype {dtype!r}",
            f"{source} uses a dtype this gpu-preflight does not know; upgrade gpu-preflight,"
            " or check the file is not corrupt",
        )
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _error(source, f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise _error(source, f"tensor {name!r}: data_offsets {offsets!r} are not [begin, end] with 0 <= begin <= end")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8:
        raise _error(source, f"tensor {name!r}: {dtype} x {tuple(shape)} is not a whole number of bytes")
    nbytes = bits // 8
    begin, end = offsets
    if end - begin != nbytes:
        raise _error(
            source,
            f"tensor {name!r}: data_offsets span {end - begin:,} bytes but {dtype} x {tuple(shape)}"
            f" needs {nbytes:,}",
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), nbytes=nbytes, file=file), begin, end


def _check_packing(source: str, spans: list[tuple[int, int, str]], data_bytes: int | None) -> None:
    """Tensors must tile the data buffer from 0 with no gap or overlap (as tensor.rs checks)."""
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else f"leaves a gap at byte {position:,}"
            raise _error(source, f"tensor {name!r} at offset {begin:,} {what}")
        position = end
    if data_bytes is None or position == data_bytes:
        return
    if position > data_bytes:
        raise _error(
            source,
            f"header declares {position:,} bytes of tensor data but the file holds {data_bytes:,}"
            " (truncated download?)",
        )
    raise _error(source, f"{data_bytes - position:,} unexpected bytes after the last tensor")


def _error(source: str, problem: str, hint: str | None = None) -> ModelSourceError:
    return ModelSourceError(
        f"{source}: {problem}",
        hint=hint or f"re-download {source}; it looks truncated or corrupt",
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(exc: BaseException, limit: int = 120) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
