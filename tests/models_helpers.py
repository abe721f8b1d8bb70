"""Tiny writers for .safetensors, GGUF, model folders and the HF cache, for the models tests.

Written from the format specs, independently of gpu_preflight.models, so the tests check the
readers against a second implementation. Tensor data is zeros.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

# bytes per element, from the safetensors dtype list
ST_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "F16": 2, "BF16": 2,
            "I32": 4, "F32": 4, "I64": 8, "F64": 8}

# ggml type id -> (name, block elements, block bytes); see ggml.c type_traits
GGML = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 8: ("Q8_0", 32, 34),
        10: ("Q2_K", 256, 84), 12: ("Q4_K", 256, 144), 14: ("Q6_K", 256, 210), 16: ("IQ2_XXS", 256, 66),
        23: ("IQ4_XS", 256, 136), 30: ("BF16", 1, 2), 39: ("MXFP4", 32, 17)}

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q", F64: "d"}


def safetensors_bytes(
    tensors: dict[str, tuple[str, tuple[int, ...]]],
    metadata: dict[str, str] | None = None,
) -> bytes:
    """A complete .safetensors file: {name: (dtype, shape)} packed in name order."""
    header: dict[str, Any] = {}
    offset = 0
    for name in sorted(tensors):
        dtype, shape = tensors[name]
        n = math.prod(shape) * ST_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata is not None:
        header["__metadata__"] = metadata
    return raw_safetensors(header, offset)


def raw_safetensors(header: Any, data_bytes: int, *, length: int | None = None) -> bytes:
    """A file from any header object (or raw bytes) with `data_bytes` zero bytes after it."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    prefix = struct.pack("<Q", len(body) if length is None else length)
    return prefix + body + bytes(data_bytes)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]], metadata=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(safetensors_bytes(tensors, metadata))
    return path


def llama_config(**overrides: Any) -> dict[str, Any]:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "torch_dtype": "bfloat16",
    }
    config.update(overrides)
    return config


def llama_tensors(layers: int = 2, dtype: str = "BF16") -> dict[str, tuple[str, tuple[int, ...]]]:
    tensors = {"model.embed_tokens.weight": (dtype, (100, 64)), "lm_head.weight": (dtype, (100, 64))}
    for i in range(layers):
        tensors[f"model.layers.{i}.self_attn.q_proj.weight"] = (dtype, (64, 64))
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = (dtype, (128, 64))
        tensors[f"model.layers.{i}.input_layernorm.weight"] = (dtype, (64,))
    return tensors


def tensors_bytes(tensors: dict[str, tuple[str, tuple[int, ...]]]) -> int:
    return sum(math.prod(shape) * ST_BYTES[dtype] for dtype, shape in tensors.values())


def write_model_folder(
    folder: Path,
    tensors: dict[str, tuple[str, tuple[int, ...]]] | None = None,
    *,
    config: dict[str, Any] | None = None,
    shards: int = 1,
    stem: str = "model",
) -> Path:
    """config.json plus weights: one `{stem}.safetensors`, or `shards` files with an index."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config if config is not None else llama_config()))
    tensors = llama_tensors() if tensors is None else tensors
    if shards == 1:
        write_safetensors(folder / f"{stem}.safetensors", tensors, {"format": "pt"})
        return folder
    names = sorted(tensors)
    weight_map: dict[str, str] = {}
    for i in range(shards):
        part = {n: tensors[n] for n in names[i::shards]}
        file = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(folder / file, part, {"format": "pt"})
        weight_map.update({n: file for n in part})
    index = {"metadata": {"total_size": tensors_bytes(tensors)}, "weight_map": weight_map}
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index))
    return folder


# --- GGUF -----------------------------------------------------------------------------------

def gguf_str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def gguf_value(vtype: int, value: Any) -> bytes:
    if vtype == STRING:
        return gguf_str(value)
    if vtype == ARRAY:
        item_type, items = value
        out = struct.pack("<IQ", item_type, len(items))
        return out + b"".join(gguf_value(item_type, v) for v in items)
    return struct.pack("<" + _FMT[vtype], value)


def gguf_bytes(
    metadata: list[tuple[str, int, Any]],
    tensors: list[tuple[str, tuple[int, ...], int]],
    *,
    version: int = 3,
    alignment: int = 32,
    data: bool = True,
    magic: bytes = b"GGUF",
) -> bytes:
    """A GGUF file; tensor dims in ggml order (fastest first); data zero-filled and aligned."""
    out = bytearray(magic + struct.pack("<IQQ", version, len(tensors), len(metadata)))
    for key, vtype, value in metadata:
        out += gguf_str(key) + struct.pack("<I", vtype) + gguf_value(vtype, value)
    offset = 0
    sizes = []
    for name, dims, ggml_type in tensors:
        _, block, size = GGML[ggml_type]
        nbytes = math.prod(dims) // block * size
        out += gguf_str(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        out += struct.pack("<IQ", ggml_type, offset)
        sizes.append(nbytes)
        offset += nbytes + (-nbytes % alignment)
    if data:
        out += bytes(-len(out) % alignment)
        out += bytes(offset)
    return bytes(out)


def llama_gguf_metadata(arch: str = "llama", *, vocab: int = 8, extra=()) -> list[tuple[str, int, Any]]:
    return [
        ("general.architecture", STRING, arch),
        ("general.name", STRING, "Tiny Llama"),
        ("general.file_type", U32, 15),
        (f"{arch}.block_count", U32, 2),
        (f"{arch}.embedding_length", U32, 256),
        (f"{arch}.feed_forward_length", U32, 512),
        (f"{arch}.attention.head_count", U32, 4),
        (f"{arch}.attention.head_count_kv", U32, 2),
        (f"{arch}.context_length", U32, 4096),
        (f"{arch}.rope.freq_base", F32, 10000.0),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, [f"t{i}" for i in range(vocab)])),
        *extra,
    ]


def llama_gguf_tensors() -> list[tuple[str, tuple[int, ...], int]]:
    return [
        ("token_embd.weight", (256, 8), 12),  # Q4_K
        ("blk.0.attn_q.weight", (256, 256), 8),  # Q8_0
        ("blk.0.attn_norm.weight", (256,), 0),  # F32
        ("blk.1.ffn_up.weight", (256, 512), 39),  # MXFP4
        ("output.weight", (256, 8), 14),  # Q6_K
    ]


# --- HF cache -------------------------------------------------------------------------------

def write_hf_cache(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], ref: str = "main") -> Path:
    """A hub cache entry laid out like huggingface_hub's: blobs, refs/<ref>, snapshots/<commit>."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    for i, (name, content) in enumerate(sorted(files.items())):
        blob = repo_dir / "blobs" / f"blob{i:04d}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    return snapshot
