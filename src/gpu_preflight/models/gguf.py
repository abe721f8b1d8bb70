"""Read the header of a GGUF file (v2, v3): metadata key/values and tensor infos.

Layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), all little-endian:
magic "GGUF", u32 version, u64 tensor_count, u64 kv_count, then kv_count entries
(string key, u32 value type, value), then tensor_count infos (string name, u32 n_dims,
n_dims x u64 dims, u32 ggml type, u64 offset), padding to `general.alignment` (default 32),
then the tensor data. A string is a u64 byte length and UTF-8 bytes. Version 1 used u32
lengths and counts and is not supported; big-endian files are refused.

Only the header is read: the tensor data is never touched, only checked against the file size.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from gpu_preflight.errors import ModelSourceError
from gpu_preflight.fileio import open_regular
from gpu_preflight.models.safetensors_header import TensorInfo

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS

# ggml tensor types: id -> (name, elements per block, bytes per block).
# Source: the `type_traits` table (blck_size, type_size) in
# https://github.com/ggml-org/ggml/blob/master/src/ggml.c and the same numbers in
# GGML_QUANT_SIZES, https://github.com/ggml-org/llama.cpp/blob/master/gguf-py/gguf/constants.py
# (ids from `enum ggml_type` in ggml.h; 4, 5 and 31-33, 36-38 were removed from ggml).
# QK_K super-blocks are 256 elements.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# GGUF metadata value types (gguf_type in gguf.h): id -> (name, struct format, size)
_SCALARS: dict[int, tuple[str, str, int]] = {
    0: ("uint8", "B", 1),
    1: ("int8", "b", 1),
    2: ("uint16", "H", 2),
    3: ("int16", "h", 2),
    4: ("uint32", "I", 4),
    5: ("int32", "i", 4),
    6: ("float32", "f", 4),
    7: ("bool", "?", 1),
    10: ("uint64", "Q", 8),
    11: ("int64", "q", 8),
    12: ("float64", "d", 8),
}
_STRING, _ARRAY = 8, 9

MAX_KEY_BYTES = 65_536
# Bounds that keep a hostile header from costing minutes (real files are far below them:
# ~60 metadata keys, a few thousand tensors, vocabularies up to ~260k tokens).
MAX_KV_COUNT = 65_536
MAX_TENSOR_COUNT = 200_000
MAX_STRING_ARRAY_ITEMS = 10_000_000
MAX_NESTED_ARRAY_ITEMS = 65_536
KEEP_STRING_BYTES = 1 << 20  # longer strings (an embedded tokenizer.json) are skipped, not kept
KEEP_ARRAY_ITEMS = 4096  # longer arrays (token lists, merges) keep only their length
_MAX_NESTING = 3
_CHUNK_BYTES = 1 << 20
_U64 = struct.Struct("<Q")

# general.architecture values whose Hugging Face model_type is spelled differently.
_HF_MODEL_TYPE = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "gptneox": "gpt_neox",
    "command-r": "cohere",
    "gemma3": "gemma3_text",
}

# HF config.json key -> GGUF key suffix after "<arch>."
_HF_FROM_GGUF: tuple[tuple[str, str], ...] = (
    ("hidden_size", "embedding_length"),
    ("num_hidden_layers", "block_count"),
    ("intermediate_size", "feed_forward_length"),
    ("num_attention_heads", "attention.head_count"),
    ("num_key_value_heads", "attention.head_count_kv"),
    ("max_position_embeddings", "context_length"),
    ("num_local_experts", "expert_count"),
    ("num_experts_per_tok", "expert_used_count"),
    ("moe_intermediate_size", "expert_feed_forward_length"),
    ("n_shared_experts", "expert_shared_count"),
    ("first_k_dense_replace", "leading_dense_block_count"),
    ("head_dim", "attention.key_length"),
    ("v_head_dim", "attention.value_length"),
    ("kv_lora_rank", "attention.kv_lora_rank"),
    ("q_lora_rank", "attention.q_lora_rank"),
    ("sliding_window", "attention.sliding_window"),
    ("rope_theta", "rope.freq_base"),
    ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
    ("layer_norm_eps", "attention.layer_norm_epsilon"),
    ("vocab_size", "vocab_size"),
)

_SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class GGUFSkipped:
    """A metadata value too long to keep: its kind ("string", "array[string]"...) and length."""

    kind: str
    length: int


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor info: dims in ggml order (fastest-varying first), offset from the data start."""

    name: str
    ggml_type: int
    type_name: str
    dims: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass
class GGUFHeader:
    path: str
    version: int
    metadata: dict[str, Any]
    tensors: list[GGUFTensor]
    alignment: int
    data_offset: int
    file_bytes: int
    warnings: list[str] = field(default_factory=list)

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def tensor_infos(self, file: str | None = None) -> list[TensorInfo]:
        """Tensors as TensorInfo, shape outermost first (the reverse of ggml's dims)."""
        return [
            TensorInfo(name=t.name, dtype=t.type_name, shape=tuple(reversed(t.dims)), nbytes=t.nbytes, file=file)
            for t in self.tensors
        ]

    def hf_config(self) -> dict[str, Any]:
        return gguf_to_hf_config(self.metadata, self.tensors)


def read_gguf_header(
    path: str | os.PathLike[str], *, label: str | None = None, root: str | os.PathLike[str] | None = None
) -> GGUFHeader:
    """Parse the header of the GGUF file at `path`, reading nothing past the tensor infos.

    Raises ModelSourceError (hint names the file) for a bad magic, an unsupported version,
    lengths or counts larger than the file, unknown value or ggml types, or tensors that
    extend past the end of the file (a truncated download); also for a path that is not a
    regular file or (with `root`) resolves outside the folder `root`, and for counts over the
    MAX_* bounds above.
    """
    path = os.fspath(path)
    label = label or path
    try:
        with open_regular(path, label, root=root) as raw:
            size = os.fstat(raw.fileno()).st_size
            with io.BufferedReader(raw, buffer_size=1 << 20) as f:  # type: ignore[arg-type]
                return _parse(_Reader(f, size, label), path)
    except OSError as exc:
        raise ModelSourceError(
            f"cannot read {label}: {exc.strerror or exc}",
            hint=f"check that {label} exists and is readable",
        ) from None


def read_gguf_header_from(f: BinaryIO, size: int, *, label: str, path: str | None = None) -> GGUFHeader:
    """Parse a GGUF header from an open binary file-like object of `size` bytes (read and seek are
    all it needs), e.g. a remote file fetched by byte ranges (models/gguf_remote.py)."""
    return _parse(_Reader(f, size, label), path or label)


def split_siblings(path: str | os.PathLike[str], count: int) -> list[str] | None:
    """For `name-00001-of-00003.gguf`, the paths of all `count` parts (existing or not)."""
    path = os.fspath(path)
    match = _SPLIT_NAME.match(os.path.basename(path))
    if not match or int(match["count"]) != count:
        return None
    folder = os.path.dirname(path)
    return [os.path.join(folder, f"{match['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def gguf_to_hf_config(metadata: dict[str, Any], tensors: list[GGUFTensor] | None = None) -> dict[str, Any]:
    """Rebuild a config.json-shaped dict (model_type, hidden_size, ...) from GGUF metadata.

    Per-layer arrays (head counts that vary by layer) become their maximum, with the full
    list under `_gguf.per_layer`. Keys the file does not carry are left out.
    """
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ModelSourceError(
            "GGUF file has no general.architecture",
            hint="the file is not a model GGUF (an adapter or a projector?); pass the model's own .gguf",
        )
    config: dict[str, Any] = {"model_type": _HF_MODEL_TYPE.get(arch, arch)}
    per_layer: dict[str, list[Any]] = {}
    for hf_key, suffix in _HF_FROM_GGUF:
        value = metadata.get(f"{arch}.{suffix}")
        if isinstance(value, list):
            numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if not numbers:
                continue
            per_layer[hf_key] = value
            value = max(numbers)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            config[hf_key] = value
    vocab = _length(metadata.get("tokenizer.ggml.tokens"))
    by_name = {t.name: t for t in tensors or []}
    if vocab is None and "token_embd.weight" in by_name and len(by_name["token_embd.weight"].dims) == 2:
        vocab = by_name["token_embd.weight"].dims[1]
    if vocab is not None:
        config["vocab_size"] = vocab
    if by_name:
        config["tie_word_embeddings"] = "output.weight" not in by_name
    gguf_info = {
        "architecture": arch,
        "name": metadata.get("general.name"),
        "file_type": metadata.get("general.file_type"),
        "quantization_version": metadata.get("general.quantization_version"),
    }
    if per_layer:
        gguf_info["per_layer"] = per_layer
    config["_gguf"] = {k: v for k, v in gguf_info.items() if v is not None}
    return config


def scalar_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata without long arrays and skipped values, for reports."""
    return {k: v for k, v in metadata.items() if not isinstance(v, (list, GGUFSkipped))}


class _Reader:
    """Sequential reads that never go past the end of the file or allocate more than it holds."""

    def __init__(self, f: BinaryIO, size: int, label: str):
        self.f, self.size, self.label, self.pos = f, size, label, 0

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise self.error(f"{what} needs {n:,} bytes but only {self.remaining:,} remain (truncated download?)")
        data = self.f.read(n)
        if len(data) != n:
            raise self.error(f"the file ended while reading {what}")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n > self.remaining:
            raise self.error(f"{what} needs {n:,} bytes but only {self.remaining:,} remain (truncated download?)")
        self.f.seek(n, os.SEEK_CUR)
        self.pos += n

    def skip_strings(self, count: int, what: str) -> None:
        """Walk `count` strings without keeping them, reading the file in large chunks."""
        unpack = _U64.unpack_from
        base, buf, off = self.pos, b"", 0  # buf holds the file from byte `base` on
        for _ in range(count):
            if len(buf) - off < 8:
                base, buf, off = base + off, buf[off:] + self.f.read(_CHUNK_BYTES), 0
                if len(buf) < 8:
                    raise self.error(f"the file ended while reading {what} (truncated download?)")
            n = unpack(buf, off)[0]
            off += 8
            if n <= len(buf) - off:
                off += n
                continue
            base, beyond = base + len(buf), n - (len(buf) - off)  # runs past the chunk: seek over the rest
            if beyond > self.size - base:
                raise self.error(f"{what} needs {beyond:,} more bytes than the file holds (truncated download?)")
            self.f.seek(beyond, os.SEEK_CUR)
            base, buf, off = base + beyond, b"", 0
        self.f.seek(off - len(buf), os.SEEK_CUR)  # give back what was read ahead
        self.pos = base + off

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack("<Q", self.take(8, what))[0]

    def text(self, what: str, limit: int) -> str:
        n = self.u64(what)
        if n > limit:
            raise self.error(f"{what} claims {n:,} bytes (limit {limit:,})")
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not valid UTF-8") from None

    def error(self, problem: str, hint: str | None = None) -> ModelSourceError:
        return ModelSourceError(
            f"{self.label}: {problem}",
            hint=hint or f"re-download {self.label}; it looks truncated or corrupt",
        )


def _parse(r: _Reader, path: str) -> GGUFHeader:
    magic = r.take(4, "the magic number") if r.size >= 4 else b""
    if magic != GGUF_MAGIC:
        raise r.error("not a GGUF file (bad magic number)", hint=f"pass a .gguf model file, not {r.label}")
    version = r.u32("the version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and version >> 16:
            problem = "a big-endian GGUF, which gpu-preflight does not read"
        else:
            problem = f"GGUF version {version}; gpu-preflight reads versions 2 and 3"
        raise r.error(problem, hint=f"convert {r.label} again with a current llama.cpp")
    tensor_count = r.u64("the tensor count")
    kv_count = r.u64("the metadata count")
    if kv_count * 13 > r.remaining or tensor_count * 32 > r.remaining:
        raise r.error(f"claims {kv_count:,} metadata entries and {tensor_count:,} tensors, more than the file holds")
    if kv_count > MAX_KV_COUNT or tensor_count > MAX_TENSOR_COUNT:
        raise r.error(f"claims {kv_count:,} metadata entries and {tensor_count:,} tensors; gpu-preflight reads at most"
                      f" {MAX_KV_COUNT:,} and {MAX_TENSOR_COUNT:,} (no real model has more)")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = r.text("a metadata key", MAX_KEY_BYTES)
        if key in metadata:
            raise r.error(f"metadata key {key!r} appears twice")
        metadata[key] = _read_value(r, r.u32(f"the type of {key}"), key, 0)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise r.error(f"general.alignment {alignment!r} is not a power of two")
    tensors = [_read_tensor_info(r) for _ in range(tensor_count)]
    data_offset = -(-r.pos // alignment) * alignment
    _check_tensors(r, tensors, data_offset, alignment)
    return GGUFHeader(
        path=path,
        version=version,
        metadata=metadata,
        tensors=tensors,
        alignment=alignment,
        data_offset=data_offset,
        file_bytes=r.size,
    )


def _read_value(r: _Reader, vtype: int, key: str, depth: int) -> Any:
    if vtype in _SCALARS:
        _, fmt, size = _SCALARS[vtype]
        return struct.unpack("<" + fmt, r.take(size, key))[0]
    if vtype == _STRING:
        n = r.u64(key)
        if n > KEEP_STRING_BYTES:
            r.skip(n, key)
            return GGUFSkipped("string", n)
        try:
            return r.take(n, key).decode("utf-8")
        except UnicodeDecodeError:
            raise r.error(f"metadata {key!r} is not valid UTF-8") from None
    if vtype == _ARRAY:
        if depth >= _MAX_NESTING:
            raise r.error(f"metadata {key!r} nests arrays deeper than {_MAX_NESTING}")
        return _read_array(r, key, depth)
    raise r.error(f"metadata {key!r} has unknown value type {vtype}")


def _read_array(r: _Reader, key: str, depth: int) -> Any:
    item_type = r.u32(key)
    count = r.u64(key)
    if item_type in _SCALARS:
        name, fmt, size = _SCALARS[item_type]
        if count > KEEP_ARRAY_ITEMS:
            r.skip(count * size, key)
            return GGUFSkipped(f"array[{name}]", count)
        return list(struct.unpack(f"<{count}{fmt}", r.take(count * size, key)))
    if item_type == _STRING:
        if count * 8 > r.remaining:
            raise r.error(f"metadata {key!r} claims {count:,} strings, more than the file holds")
        if count > MAX_STRING_ARRAY_ITEMS:
            raise r.error(f"metadata {key!r} claims {count:,} strings; the limit is {MAX_STRING_ARRAY_ITEMS:,}")
        if count <= KEEP_ARRAY_ITEMS:
            return [_read_value(r, _STRING, key, depth + 1) for _ in range(count)]
        r.skip_strings(count, key)  # a token list: walk it for its length, keep nothing
        return GGUFSkipped("array[string]", count)
    if item_type == _ARRAY:
        if count * 12 > r.remaining:
            raise r.error(f"metadata {key!r} claims {count:,} arrays, more than the file holds")
        if count > MAX_NESTED_ARRAY_ITEMS:
            raise r.error(f"metadata {key!r} claims {count:,} arrays; the limit is {MAX_NESTED_ARRAY_ITEMS:,}")
        values = [_read_value(r, _ARRAY, key, depth + 1) for _ in range(count)]
        return values if count <= KEEP_ARRAY_ITEMS else GGUFSkipped("array[array]", count)
    raise r.error(f"metadata {key!r} is an array of unknown type {item_type}")


def _read_tensor_info(r: _Reader) -> GGUFTensor:
    name = r.text("a tensor name", MAX_KEY_BYTES)
    n_dims = r.u32(f"tensor {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise r.error(f"tensor {name!r} has {n_dims} dimensions (ggml allows 1 to {MAX_DIMS})")
    dims = struct.unpack(f"<{n_dims}Q", r.take(8 * n_dims, f"tensor {name!r}"))
    ggml_type = r.u32(f"tensor {name!r}")
    offset = r.u64(f"tensor {name!r}")
    if ggml_type not in GGML_TYPES:
        raise r.error(
            f"tensor {name!r} has ggml type {ggml_type}, unknown to gpu-preflight",
            hint="the file uses a newer quantization type; upgrade gpu-preflight",
        )
    type_name, block, type_size = GGML_TYPES[ggml_type]
    if dims[0] % block:
        raise r.error(
            f"tensor {name!r}: first dimension {dims[0]} is not a multiple of the {type_name} block ({block})"
        )
    nbytes = math.prod(dims) // block * type_size
    return GGUFTensor(name, ggml_type, type_name, tuple(dims), offset, nbytes)


def _check_tensors(r: _Reader, tensors: list[GGUFTensor], data_offset: int, alignment: int) -> None:
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise r.error(f"tensor {t.name!r} appears twice")
        seen.add(t.name)
        if t.offset % alignment:
            raise r.error(f"tensor {t.name!r} at offset {t.offset} is not aligned to {alignment} bytes")
        end = data_offset + t.offset + t.nbytes
        if end > r.size:
            raise r.error(
                f"tensor {t.name!r} ends at byte {end:,} but the file has {r.size:,} (truncated download?)"
            )


def _length(value: Any) -> int | None:
    if isinstance(value, list):
        return len(value)
    if isinstance(value, GGUFSkipped) and value.kind.startswith("array"):
        return value.length
    return None
