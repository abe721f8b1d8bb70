"""The GGUF header reader: value types, ggml type sizes, config rebuilding, and bad files."""

from __future__ import annotations

import contextlib
import random
import struct
import time
import tracemalloc

import pytest
from models_helpers import (
    ARRAY,
    BOOL,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    STRING,
    U8,
    U16,
    U32,
    U64,
    gguf_bytes,
    gguf_str,
    llama_gguf_metadata,
    llama_gguf_tensors,
)

from gpu_preflight.errors import ModelSourceError
from gpu_preflight.models.gguf import GGML_TYPES, GGUFSkipped, read_gguf_header

ONE_KEY = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_str("k")  # then the value type and value


def _write(tmp_path, content: bytes, name: str = "model.gguf"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_reads_every_metadata_value_type(tmp_path):
    metadata = [
        ("general.architecture", STRING, "llama"),
        ("u8", U8, 255),
        ("i8", I8, -128),
        ("u16", U16, 65535),
        ("i16", I16, -32768),
        ("u32", U32, 4_000_000_000),
        ("i32", I32, -2_000_000_000),
        ("f32", F32, 0.5),
        ("bool", BOOL, True),
        ("u64", U64, 2**63),
        ("i64", I64, -(2**62)),
        ("f64", F64, 1e-6),
        ("utf8", STRING, "héllo"),
        ("ints", ARRAY, (I32, [1, -2, 3])),
        ("strings", ARRAY, (STRING, ["a", "bc"])),
        ("nested", ARRAY, (ARRAY, [(U8, [1, 2]), (U8, [])])),
        ("empty", ARRAY, (F32, [])),
    ]
    header = read_gguf_header(_write(tmp_path, gguf_bytes(metadata, [("w", (32,), 0)])))
    m = header.metadata
    assert (m["u8"], m["i8"], m["u16"], m["i16"]) == (255, -128, 65535, -32768)
    assert (m["u32"], m["i32"], m["u64"], m["i64"]) == (4_000_000_000, -2_000_000_000, 2**63, -(2**62))
    assert m["f32"] == 0.5 and m["f64"] == 1e-6 and m["bool"] is True
    assert m["utf8"] == "héllo"
    assert m["ints"] == [1, -2, 3] and m["strings"] == ["a", "bc"]
    assert m["nested"] == [[1, 2], []] and m["empty"] == []
    assert header.version == 3 and header.architecture == "llama"


def test_tensor_sizes_follow_the_ggml_block_table(tmp_path):
    header = read_gguf_header(_write(tmp_path, gguf_bytes(llama_gguf_metadata(), llama_gguf_tensors())))
    sizes = {t.name: (t.type_name, t.nbytes) for t in header.tensors}
    assert sizes == {
        "token_embd.weight": ("Q4_K", 256 * 8 // 256 * 144),
        "blk.0.attn_q.weight": ("Q8_0", 256 * 256 // 32 * 34),
        "blk.0.attn_norm.weight": ("F32", 256 * 4),
        "blk.1.ffn_up.weight": ("MXFP4", 256 * 512 // 32 * 17),
        "output.weight": ("Q6_K", 256 * 8 // 256 * 210),
    }
    infos = {t.name: t for t in header.tensor_infos("model.gguf")}
    assert infos["token_embd.weight"].shape == (8, 256)  # outermost first, like safetensors
    assert infos["token_embd.weight"].file == "model.gguf"


def test_ggml_table_bits_per_weight():
    # bits per weight as published for each quant type (QK_K = 256)
    expected = {"Q4_0": 4.5, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_1": 6.0, "Q8_0": 8.5, "Q2_K": 2.625,
                "Q3_K": 3.4375, "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625, "IQ2_XXS": 2.0625,
                "IQ2_XS": 2.3125, "IQ3_XXS": 3.0625, "IQ1_S": 1.5625, "IQ4_NL": 4.5, "IQ3_S": 3.4375,
                "IQ2_S": 2.5625, "IQ4_XS": 4.25, "IQ1_M": 1.75, "MXFP4": 4.25, "BF16": 16, "F16": 16,
                "TQ1_0": 1.6875, "TQ2_0": 2.0625}
    by_name = {name: (block, size) for name, block, size in GGML_TYPES.values()}
    for name, bpw in expected.items():
        block, size = by_name[name]
        assert size * 8 / block == bpw, name


def test_rebuilds_an_hf_shaped_config(tmp_path):
    extra = [
        ("llama.expert_count", U32, 8),
        ("llama.expert_used_count", U32, 2),
        ("llama.attention.head_count_kv", ARRAY, (I32, [2, 0, 4])),
    ]
    metadata = [kv for kv in llama_gguf_metadata() if kv[0] != "llama.attention.head_count_kv"] + extra
    header = read_gguf_header(_write(tmp_path, gguf_bytes(metadata, llama_gguf_tensors())))
    config = header.hf_config()
    assert config["model_type"] == "llama"
    assert config["hidden_size"] == 256
    assert config["num_hidden_layers"] == 2
    assert config["intermediate_size"] == 512
    assert config["num_attention_heads"] == 4
    assert config["num_key_value_heads"] == 4  # the largest per-layer value
    assert config["_gguf"]["per_layer"]["num_key_value_heads"] == [2, 0, 4]
    assert config["max_position_embeddings"] == 4096
    assert config["num_local_experts"] == 8 and config["num_experts_per_tok"] == 2
    assert config["vocab_size"] == 8
    assert config["rope_theta"] == 10000.0
    assert config["tie_word_embeddings"] is False
    assert config["_gguf"]["architecture"] == "llama" and config["_gguf"]["file_type"] == 15


def test_model_type_spelling_and_tied_embeddings(tmp_path):
    tensors = [t for t in llama_gguf_tensors() if t[0] != "output.weight"]
    header = read_gguf_header(_write(tmp_path, gguf_bytes(llama_gguf_metadata("qwen3moe"), tensors)))
    config = header.hf_config()
    assert config["model_type"] == "qwen3_moe"
    assert config["tie_word_embeddings"] is True


def test_a_long_token_list_keeps_only_its_length(tmp_path):
    header = read_gguf_header(_write(tmp_path, gguf_bytes(llama_gguf_metadata(vocab=5000), llama_gguf_tensors())))
    assert header.metadata["tokenizer.ggml.tokens"] == GGUFSkipped("array[string]", 5000)
    assert header.hf_config()["vocab_size"] == 5000


def test_vocab_falls_back_to_the_embedding_shape(tmp_path):
    metadata = [kv for kv in llama_gguf_metadata() if kv[0] != "tokenizer.ggml.tokens"]
    header = read_gguf_header(_write(tmp_path, gguf_bytes(metadata, llama_gguf_tensors())))
    assert header.hf_config()["vocab_size"] == 8


def test_version_2_is_read(tmp_path):
    header = read_gguf_header(_write(tmp_path, gguf_bytes(llama_gguf_metadata(), llama_gguf_tensors(), version=2)))
    assert header.version == 2 and len(header.tensors) == 5


def test_custom_alignment_is_honoured(tmp_path):
    metadata = llama_gguf_metadata(extra=[("general.alignment", U32, 64)])
    header = read_gguf_header(_write(tmp_path, gguf_bytes(metadata, llama_gguf_tensors(), alignment=64)))
    assert header.alignment == 64 and header.data_offset % 64 == 0


def test_only_the_header_is_read_from_a_huge_sparse_file(tmp_path):
    size = 2 * 1024**3
    tensors = [("big.weight", (4096, 4096 * 8), 1)]  # 256 MiB of F16 ...
    tensors += [(f"blk.{i}.w", (4096, 4096), 1) for i in range(50)]  # ... plus 50 x 32 MiB
    content = gguf_bytes(llama_gguf_metadata(), tensors, data=False)
    path = tmp_path / "huge.gguf"
    with open(path, "wb") as f:
        f.write(content)
        try:
            f.truncate(size)  # sparse: nothing written past the header
        except OSError:
            pytest.skip("no sparse files here")
    start = time.perf_counter()
    header = read_gguf_header(path)
    elapsed = time.perf_counter() - start
    assert sum(t.nbytes for t in header.tensors) == 4096 * 4096 * 8 * 2 + 50 * 4096 * 4096 * 2
    assert elapsed < 1.0


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "bad magic"),
        (b"GGML" + bytes(20), "bad magic"),
        (b"GGUF" + struct.pack("<I", 1) + bytes(16), "version 1"),
        (b"GGUF" + struct.pack(">I", 3) + bytes(16), "big-endian"),
        (b"GGUF" + struct.pack("<I", 3), "truncated"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 10**12), "more than the file holds"),
        (b"GGUF" + struct.pack("<IQQ", 3, 10**12, 0), "more than the file holds"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**40) + b"k", "limit"),
        (ONE_KEY + struct.pack("<I", 99) + bytes(16), "unknown value type"),
        (ONE_KEY + struct.pack("<IQ", 8, 2**50), "truncated"),
        (ONE_KEY + struct.pack("<IIQ", 9, 8, 2**50), "more than the file holds"),
        (ONE_KEY + struct.pack("<IIQ", 9, 6, 2**50), "truncated"),
        (ONE_KEY + struct.pack("<IIQ", 9, 77, 1) + bytes(16), "unknown type"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_str(b"\xff\xfe") + struct.pack("<I", 0) + b"x", "UTF-8"),
    ],
)
def test_bad_headers_are_refused_without_allocating(tmp_path, content, needle):
    path = _write(tmp_path, content + bytes(64) if content.startswith(b"GGUF") and needle != "truncated" else content)
    tracemalloc.start()
    try:
        with pytest.raises(ModelSourceError, match=needle) as info:
            read_gguf_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024  # the 1 MiB read buffer, never the claimed length
    assert "model.gguf" in info.value.hint


@pytest.mark.parametrize(
    ("tensors", "metadata_extra", "needle"),
    [
        ([("w", (32,), 2), ("w", (32,), 2)], [], "appears twice"),
        ([("w", (33,), 2)], [], "not a multiple"),
        ([("w", (1, 1, 1, 1, 1), 0)], [], "dimensions"),
        ([("w", (32,), 0)], [("general.alignment", U32, 24)], "power of two"),
    ],
)
def test_bad_tensor_infos_are_refused(tmp_path, tensors, metadata_extra, needle):
    metadata = llama_gguf_metadata(extra=metadata_extra)
    content = gguf_bytes(metadata, [], data=False)
    # hand-write the tensor infos so that invalid ones can be expressed
    content = content[:4] + struct.pack("<IQ", 3, len(tensors)) + content[16:]
    for name, dims, ggml_type in tensors:
        content += gguf_str(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        content += struct.pack("<IQ", ggml_type, 0)
    with pytest.raises(ModelSourceError, match=needle):
        read_gguf_header(_write(tmp_path, content + bytes(4096)))


def test_unknown_ggml_type_asks_for_an_upgrade(tmp_path):
    content = gguf_bytes(llama_gguf_metadata(), [], data=False)
    content = content[:4] + struct.pack("<IQ", 3, 1) + content[16:]
    content += gguf_str("w") + struct.pack("<IQ", 1, 32) + struct.pack("<IQ", 250, 0) + bytes(4096)
    with pytest.raises(ModelSourceError, match="ggml type 250") as info:
        read_gguf_header(_write(tmp_path, content))
    assert "upgrade" in info.value.hint


def test_duplicate_keys_are_refused(tmp_path):
    metadata = llama_gguf_metadata(extra=[("general.name", STRING, "again")])
    with pytest.raises(ModelSourceError, match="appears twice"):
        read_gguf_header(_write(tmp_path, gguf_bytes(metadata, llama_gguf_tensors())))


def test_truncated_tensor_data_is_reported(tmp_path):
    content = gguf_bytes(llama_gguf_metadata(), llama_gguf_tensors())
    with pytest.raises(ModelSourceError, match="truncated download"):
        read_gguf_header(_write(tmp_path, content[:-100]))


def test_missing_architecture_is_a_clear_error(tmp_path):
    metadata = [kv for kv in llama_gguf_metadata() if kv[0] != "general.architecture"]
    header = read_gguf_header(_write(tmp_path, gguf_bytes(metadata, llama_gguf_tensors())))
    with pytest.raises(ModelSourceError, match="general.architecture"):
        header.hf_config()


def test_every_truncation_and_random_corruption_raises_only_model_source_error(tmp_path):
    good = gguf_bytes(llama_gguf_metadata(), llama_gguf_tensors()[:3])
    header_end = read_gguf_header(_write(tmp_path, good)).data_offset
    path = tmp_path / "fuzz.gguf"
    candidates = [good[:n] for n in range(0, header_end + 8)]
    rng = random.Random(99)
    for _ in range(600):
        corrupt = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            corrupt[rng.randrange(header_end)] = rng.randrange(256)
        candidates.append(bytes(corrupt))
    for content in candidates:
        path.write_bytes(content)
        with contextlib.suppress(ModelSourceError):
            read_gguf_header(path).hf_config()


def test_long_token_lists_with_strings_longer_than_a_read_chunk(tmp_path):
    tokens = [f"t{i}" for i in range(5000)]
    tokens[10] = "x" * (1536 * 1024)  # longer than the 1 MiB chunk the walker reads
    tokens[4000] = "y" * (2048 * 1024 + 3)
    metadata = [kv for kv in llama_gguf_metadata() if kv[0] != "tokenizer.ggml.tokens"]
    metadata += [("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)), ("after", STRING, "still in step")]
    header = read_gguf_header(_write(tmp_path, gguf_bytes(metadata, llama_gguf_tensors())))
    assert header.metadata["after"] == "still in step"
    assert header.hf_config()["vocab_size"] == 5000
    assert len(header.tensors) == 5
