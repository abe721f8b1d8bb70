"""The safetensors header reader: good files, and every kind of bad one, without tracebacks."""

from __future__ import annotations

import contextlib
import json
import random
import struct
import tracemalloc

import pytest
from models_helpers import raw_safetensors, safetensors_bytes

from gpu_preflight.errors import ModelSourceError
from gpu_preflight.models.safetensors_header import (
    MAX_HEADER_BYTES,
    TensorInfo,
    parse_safetensors_header,
    read_safetensors_header,
)


def _write(tmp_path, content: bytes, name: str = "model.safetensors"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_reads_names_dtypes_shapes_sizes_and_metadata(tmp_path):
    path = _write(
        tmp_path,
        safetensors_bytes(
            {"a": ("BF16", (3, 4)), "b": ("F8_E4M3", (16,)), "c": ("I32", (2, 2)), "d": ("U8", (5,))},
            {"format": "pt"},
        ),
    )
    header = read_safetensors_header(path)
    by_name = {t.name: t for t in header.tensors}
    assert by_name["a"] == TensorInfo("a", "BF16", (3, 4), 24)
    assert by_name["b"].nbytes == 16 and by_name["b"].dtype == "F8_E4M3"
    assert by_name["c"].nbytes == 16 and by_name["c"].numel == 4
    assert by_name["d"].shape == (5,)
    assert header.metadata == {"format": "pt"}
    assert header.total_bytes == 24 + 16 + 16 + 5


def test_scalar_and_zero_size_tensors_are_valid(tmp_path):
    header = {"s": _entry("F32", [], 0, 4), "empty": _entry("F16", [0, 8], 4, 4)}
    path = _write(tmp_path, raw_safetensors(header, 4))
    tensors = {t.name: t for t in read_safetensors_header(path).tensors}
    assert tensors["s"].nbytes == 4 and tensors["s"].shape == ()
    assert tensors["empty"].nbytes == 0


def test_empty_header_has_no_tensors(tmp_path):
    assert read_safetensors_header(_write(tmp_path, raw_safetensors({}, 0))).tensors == []


def test_sub_byte_dtypes_count_bits():
    header = {"w": _entry("F4", [4, 8], 0, 16), "scales": _entry("F8_E8M0", [4], 16, 20)}
    parsed = parse_safetensors_header(header, source="x", data_bytes=20)
    assert [t.nbytes for t in sorted(parsed.tensors, key=lambda t: t.name)] == [4, 16]
    with pytest.raises(ModelSourceError, match="whole number of bytes"):
        parse_safetensors_header({"w": _entry("F4", [3], 0, 2)}, source="x")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "too short"),
        (b"\x01\x02\x03", "too short"),
        (struct.pack("<Q", 0), "too short for a JSON object"),
        (struct.pack("<Q", 5 * 1024**3) + b"{}", "over the"),
        (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", "over the"),
        (struct.pack("<Q", 4096) + b'{"a": 1}', "truncated"),
        (struct.pack("<Q", 8) + b"garbage!", "does not start with"),
        (struct.pack("<Q", 8) + b'{"a": 1 ', "not valid JSON"),
        (struct.pack("<Q", 4) + b"{\xff\xfe}", "UTF-8"),
        (struct.pack("<Q", 2) + b"[]", "does not start with"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "Git LFS pointer"),
    ],
)
def test_garbage_headers_are_refused_with_a_hint_naming_the_file(tmp_path, content, needle):
    path = _write(tmp_path, content, "shard.safetensors")
    with pytest.raises(ModelSourceError, match=needle) as info:
        read_safetensors_header(path)
    assert "shard.safetensors" in info.value.message
    assert "shard.safetensors" in info.value.hint


def test_a_header_claiming_gigabytes_is_never_allocated(tmp_path):
    path = _write(tmp_path, struct.pack("<Q", 3 * 1024**3) + b"{" + bytes(64))
    tracemalloc.start()
    try:
        with pytest.raises(ModelSourceError):
            read_safetensors_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_a_header_longer_than_the_file_is_never_allocated(tmp_path):
    path = _write(tmp_path, struct.pack("<Q", 90_000_000) + b'{"a": 1}')
    tracemalloc.start()
    try:
        with pytest.raises(ModelSourceError, match="truncated"):
            read_safetensors_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


@pytest.mark.parametrize(
    ("header", "data", "needle"),
    [
        ({"a": _entry("F17", [2], 0, 4)}, 4, "unknown dtype"),
        ({"a": _entry(None, [2], 0, 4)}, 4, "unknown dtype"),
        ({"a": _entry("F32", [-2], 0, 8)}, 8, "non-negative"),
        ({"a": _entry("F32", [2.5], 0, 8)}, 8, "non-negative"),
        ({"a": _entry("F32", [True], 0, 4)}, 4, "non-negative"),
        ({"a": _entry("F32", "2", 0, 8)}, 8, "non-negative"),
        ({"a": _entry("F32", [2], 8, 0)}, 8, "begin <= end"),
        ({"a": _entry("F32", [2], -8, 0)}, 8, "begin <= end"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, 8, "begin <= end"),
        ({"a": _entry("F32", [2], 0, 12)}, 12, "needs 8"),
        ({"a": _entry("BF16", [1024, 1024], 0, 8)}, 8, "needs"),
        ({"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [2], 4, 12)}, 12, "overlaps"),
        ({"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [2], 16, 24)}, 24, "gap"),
        ({"a": _entry("F32", [2], 0, 8)}, 4, "truncated"),
        ({"a": _entry("F32", [2], 0, 8)}, 12, "unexpected bytes"),
        ({"a": "F32"}, 0, "not an object"),
        ({"__metadata__": ["x"]}, 0, "__metadata__"),
    ],
)
def test_inconsistent_headers_are_refused(tmp_path, header, data, needle):
    path = _write(tmp_path, raw_safetensors(header, data))
    with pytest.raises(ModelSourceError, match=needle) as info:
        read_safetensors_header(path)
    assert str(path) in info.value.hint


def test_a_header_that_is_not_an_object_is_refused():
    with pytest.raises(ModelSourceError, match="not an object"):
        parse_safetensors_header([1, 2], source="remote.safetensors")


def test_an_unreadable_path_is_a_model_source_error(tmp_path):
    with pytest.raises(ModelSourceError, match="cannot read"):
        read_safetensors_header(tmp_path / "missing.safetensors")
    with pytest.raises(ModelSourceError, match="cannot read"):
        read_safetensors_header(tmp_path)  # a folder


def test_deeply_nested_json_is_a_model_source_error(tmp_path):
    body = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = _write(tmp_path, struct.pack("<Q", len(body)) + body)
    with pytest.raises(ModelSourceError):
        read_safetensors_header(path)


def test_every_truncation_and_random_corruption_raises_only_model_source_error(tmp_path):
    good = safetensors_bytes({"a": ("F16", (4, 4)), "b": ("I8", (3,)), "c": ("F32", (2,))}, {"k": "v"})
    path = tmp_path / "fuzz.safetensors"
    candidates = [good[:n] for n in range(len(good))]
    rng = random.Random(1234)
    for _ in range(400):
        corrupt = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        candidates.append(bytes(corrupt))
    for content in candidates:
        path.write_bytes(content)
        with contextlib.suppress(ModelSourceError):
            read_safetensors_header(path)


def test_header_padding_with_spaces_is_accepted(tmp_path):
    body = json.dumps({"a": _entry("U8", [3], 0, 3)}).encode() + b"       "
    path = _write(tmp_path, struct.pack("<Q", len(body)) + body + bytes(3))
    assert read_safetensors_header(path).tensors[0].nbytes == 3
