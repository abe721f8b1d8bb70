"""load_model_source on local paths, the HF cache, offline mode and bad specs (no network)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time

import pytest
from models_helpers import (
    gguf_bytes,
    llama_config,
    llama_gguf_metadata,
    llama_gguf_tensors,
    llama_tensors,
    safetensors_bytes,
    tensors_bytes,
    write_hf_cache,
    write_model_folder,
    write_safetensors,
)

from gpu_preflight.errors import DependencyMissing, ModelSourceError, PreflightError, UsageError
from gpu_preflight.models import ModelSource, load_catalog, load_model_source

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def env(tmp_path):
    """An environment with an empty HF cache and an endpoint nobody listens on."""
    return {"HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_ENDPOINT": "http://127.0.0.1:9"}


@pytest.fixture
def catalog(tmp_path):
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "tiny.json").write_text(json.dumps(
        {"id": "tiny", "hf_repo": "example/tiny", "aliases": ["tiny-alias"], "config": llama_config()}
    ))
    return load_catalog(folder)


def _load(spec, env, catalog=None, **kwargs) -> ModelSource:
    catalog = catalog or load_catalog(env["HF_HUB_CACHE"] + "-none")  # an empty catalog
    return load_model_source(str(spec), env=env, catalog=catalog, **kwargs)


# --- folders ------------------------------------------------------------------------------------

def test_folder_with_single_safetensors(tmp_path, env):
    folder = write_model_folder(tmp_path / "tiny")
    source = _load(folder, env)
    assert source.origin == "folder" and source.name == "tiny"
    assert source.config["hidden_size"] == 64
    assert len(source.tensors) == len(llama_tensors())
    assert source.weights_bytes == tensors_bytes(llama_tensors())
    assert {t.file for t in source.tensors} == {"model.safetensors"}
    assert source.metadata == {"format": "pt"}
    assert source.warnings == [] and source.path == str(folder)


def test_sharded_folder_with_index(tmp_path, env):
    folder = write_model_folder(tmp_path / "sharded", shards=3)
    source = _load(folder, env)
    assert source.weights_bytes == tensors_bytes(llama_tensors())
    assert len({t.file for t in source.tensors}) == 3
    assert source.metadata["total_size"] == tensors_bytes(llama_tensors())
    assert source.warnings == []


def test_hundred_shards_load_fast(tmp_path, env):
    tensors = {f"model.layers.{i}.w{j}": ("BF16", (64, 64)) for i in range(100) for j in range(8)}
    folder = write_model_folder(tmp_path / "big", tensors, shards=100)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        source = _load(folder, env)
        timings.append(time.perf_counter() - start)
    assert len(source.tensors) == 800 and len({t.file for t in source.tensors}) == 100
    best = min(timings)
    print(f"\n100-shard folder: best of 3 loads {best * 1000:.1f} ms (all: {[round(t * 1000, 1) for t in timings]})")
    assert best < 0.5  # the target is 100 ms; generous for slow CI machines


def test_index_tensor_missing_from_its_shard_is_a_warning(tmp_path, env):
    folder = write_model_folder(tmp_path / "stale", shards=2)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.ghost.weight"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    source = _load(folder, env)
    assert source.weights_bytes == tensors_bytes(llama_tensors())
    assert any("lists 1 tensors that their shard does not hold (model.ghost.weight)" in w for w in source.warnings)


def test_shard_tensor_missing_from_the_index_is_left_out_with_a_warning(tmp_path, env):
    folder = write_model_folder(tmp_path / "extra", shards=2)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    dropped = sorted(index["weight_map"])[0]
    del index["weight_map"][dropped]
    index_path.write_text(json.dumps(index))
    source = _load(folder, env)
    assert dropped not in {t.name for t in source.tensors}
    assert any("not in the index and were left out" in w for w in source.warnings)
    assert any("total_size" in w for w in source.warnings)


def test_missing_shard_on_disk_falls_back_to_config_with_a_warning(tmp_path, env):
    folder = write_model_folder(tmp_path / "partial", shards=3)
    (folder / "model-00002-of-00003.safetensors").unlink()
    source = _load(folder, env)
    assert source.tensors is None and source.weights_bytes is None
    assert source.config["num_hidden_layers"] == 2
    assert any("1 of 3 weight files are missing (model-00002-of-00003.safetensors)" in w for w in source.warnings)


def test_index_pointing_outside_the_folder_is_refused(tmp_path, env):
    folder = write_model_folder(tmp_path / "evil", shards=2)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["x"] = "../../etc/passwd.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelSourceError, match="outside the model folder"):
        _load(folder, env)


def test_broken_index_is_a_model_source_error(tmp_path, env):
    folder = write_model_folder(tmp_path / "bad-index", shards=2)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": [1]}')
    with pytest.raises(ModelSourceError, match="weight_map"):
        _load(folder, env)


def test_corrupt_shard_is_a_model_source_error_naming_it(tmp_path, env):
    folder = write_model_folder(tmp_path / "corrupt", shards=2)
    shard = folder / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ModelSourceError, match="truncated") as info:
        _load(folder, env)
    assert "model-00002-of-00002.safetensors" in info.value.hint


def test_folder_with_only_config(tmp_path, env):
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(llama_config()))
    source = _load(folder, env)
    assert source.origin == "folder" and source.tensors is None
    assert any("no .safetensors weights" in w for w in source.warnings)


def test_pickle_weights_are_never_opened(tmp_path, env):
    folder = tmp_path / "pickles"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(llama_config()))
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    source = _load(folder, env)
    assert source.tensors is None
    assert any("PyTorch pickle" in w for w in source.warnings)


def test_variant_only_weights_are_read_with_a_warning(tmp_path, env):
    folder = tmp_path / "variants"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(llama_config()))
    write_safetensors(folder / "model.fp16.safetensors", llama_tensors(dtype="F16"))
    write_safetensors(folder / "model.bf16.safetensors", llama_tensors(dtype="BF16"))
    source = _load(folder, env)
    assert {t.dtype for t in source.tensors} == {"F16"}
    assert any("'fp16' variant (also present: bf16)" in w for w in source.warnings)


def test_auto_map_is_never_imported_or_run(tmp_path, env):
    marker = tmp_path / "ran.txt"
    folder = write_model_folder(tmp_path / "remote-code", config=llama_config(
        auto_map={"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    ))
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    source = _load(folder, env)
    assert not marker.exists()
    assert "modeling_evil" not in sys.modules
    assert any("auto_map" in w and "config.json only" in w for w in source.warnings)


def test_folder_without_config_suggests_what_to_pass(tmp_path, env):
    folder = tmp_path / "loose"
    folder.mkdir()
    (folder / "model-q4.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelSourceError, match="no config.json") as info:
        _load(folder, env)
    assert "model-q4.gguf" in info.value.hint


# --- single files -------------------------------------------------------------------------------

def test_config_json_path(tmp_path, env):
    folder = write_model_folder(tmp_path / "m")
    source = _load(folder / "config.json", env)
    assert source.origin == "config" and source.tensors is None and source.name == "m"


def test_bad_config_json_is_a_model_source_error(tmp_path, env):
    path = tmp_path / "config.json"
    cases = [("{oops", "not valid JSON"), ("[1, 2]", "not an object"), (b"\xff\xfe\x00", "not valid JSON")]
    for content, needle in cases:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ModelSourceError, match=needle) as info:
            _load(path, env)
        assert str(path) in info.value.hint


def test_safetensors_file_path(tmp_path, env):
    path = write_safetensors(tmp_path / "solo" / "weights.safetensors", llama_tensors())
    source = _load(path, env)
    assert source.weights_bytes == tensors_bytes(llama_tensors()) and source.config == {}
    assert any("no config.json" in w for w in source.warnings)


def test_gguf_path(tmp_path, env):
    path = tmp_path / "tiny-q4.gguf"
    path.write_bytes(gguf_bytes(llama_gguf_metadata(), llama_gguf_tensors()))
    source = _load(path, env)
    assert source.origin == "gguf" and source.name == "Tiny Llama"
    assert source.config["model_type"] == "llama" and source.config["hidden_size"] == 256
    assert {t.dtype for t in source.tensors} == {"Q4_K", "Q8_0", "F32", "MXFP4", "Q6_K"}
    assert source.metadata["general.file_type"] == 15
    assert "tokenizer.ggml.tokens" not in source.metadata


def test_split_gguf_reads_all_parts_or_warns(tmp_path, env):
    tensors = llama_gguf_tensors()
    for no, part in ((0, tensors[:2]), (1, tensors[2:])):
        extra = [("split.no", 2, no), ("split.count", 2, 2)]  # u16 values
        metadata = llama_gguf_metadata(extra=extra) if no == 0 else [("general.architecture", 8, "llama"), *extra]
        (tmp_path / f"tiny-{no + 1:05d}-of-00002.gguf").write_bytes(gguf_bytes(metadata, part))
    source = _load(tmp_path / "tiny-00001-of-00002.gguf", env)
    assert len(source.tensors) == 5 and source.warnings == []
    (tmp_path / "tiny-00002-of-00002.gguf").unlink()
    source = _load(tmp_path / "tiny-00001-of-00002.gguf", env)
    assert source.tensors is None and "missing" in source.warnings[0]


# --- diffusers ----------------------------------------------------------------------------------

def _diffusers_folder(root):
    root.mkdir()
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [None, None],
        "image_encoder": ["diffusers", "Missing"],
    }))
    unet = {"conv_in.weight": ("F16", (320, 4, 3, 3)), "conv_out.weight": ("F16", (4, 320, 3, 3))}
    (root / "unet").mkdir()
    (root / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    write_safetensors(root / "unet" / "diffusion_pytorch_model.safetensors", unet)
    (root / "vae").mkdir()
    (root / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    write_safetensors(root / "vae" / "diffusion_pytorch_model.fp16.safetensors", {"x": ("F16", (8, 8))})
    write_model_folder(root / "text_encoder", {"emb": ("F32", (10, 4)), "proj": ("F32", (4, 4))},
                       config={"model_type": "clip_text_model"}, shards=2)
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.json").write_text("{}")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text("{}")
    return root, tensors_bytes(unet) + 8 * 8 * 2 + (40 + 16) * 4


def test_diffusers_folder_has_components(tmp_path, env):
    root, total = _diffusers_folder(tmp_path / "sd")
    source = _load(root, env)
    assert source.kind == "diffusion" and source.origin == "folder"
    assert source.pipeline_index["_class_name"] == "StableDiffusionPipeline"
    assert set(source.components) == {"unet", "vae", "text_encoder"}
    assert source.components["text_encoder"].metadata["class"] == ["transformers", "CLIPTextModel"]
    assert source.weights_bytes == total
    assert source.tensors is None
    warnings = "\n".join(source.warnings)
    assert "image_encoder" in warnings and "vae: no default weights" in warnings
    # model_index.json given directly means the same pipeline
    assert set(_load(root / "model_index.json", env).components) == {"unet", "vae", "text_encoder"}


# --- HF cache, offline, specs -------------------------------------------------------------------

def _cache_repo(env, repo_id="example/tiny", with_weights=True, ref="main"):
    files = {"config.json": json.dumps(llama_config()).encode()}
    if with_weights:
        files["model.safetensors"] = safetensors_bytes(llama_tensors())
    from pathlib import Path

    return write_hf_cache(Path(env["HF_HUB_CACHE"]), repo_id, COMMIT, files, ref=ref)


def test_hf_cache_is_used_without_network(env):
    _cache_repo(env)
    source = _load("example/tiny", env)  # the endpoint is a closed port: the cache must suffice
    assert source.origin == "hub-cache" and source.name == "example/tiny"
    assert source.revision == COMMIT
    assert source.source_url == f"http://127.0.0.1:9/example/tiny/tree/{COMMIT}"
    assert source.weights_bytes == tensors_bytes(llama_tensors())


def test_hf_cache_by_revision_and_commit(env):
    _cache_repo(env, ref="v1.0")
    assert _load("example/tiny@v1.0", env).revision == COMMIT
    assert _load("example/tiny", env, revision=COMMIT).revision == COMMIT
    with pytest.raises(ModelSourceError, match="not in the local Hugging Face cache"):
        _load("example/tiny@v2.0", env, offline=True)


def test_hf_home_is_honoured(tmp_path):
    env = {"HF_HOME": str(tmp_path / "home"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    write_hf_cache(tmp_path / "home" / "hub", "example/tiny", COMMIT,
                   {"config.json": json.dumps(llama_config()).encode()})
    source = load_model_source("example/tiny", env=env, offline=True, catalog=load_catalog(tmp_path / "none"))
    assert source.origin == "hub-cache"


def test_offline_cache_without_weights_gives_config_only(env):
    _cache_repo(env, with_weights=False)
    source = _load("example/tiny", {**env, "HF_HUB_OFFLINE": "1"})
    assert source.origin == "hub-cache" and source.tensors is None
    assert any("no .safetensors weights" in w for w in source.warnings)
    assert "offline mode is on" in source.warnings[-1]


def test_offline_and_not_cached_says_what_to_do(env):
    with pytest.raises(ModelSourceError, match="offline mode is on") as info:
        _load("example/unknown", {**env, "HF_HUB_OFFLINE": "1"})
    assert "pass a local folder or catalog name" in info.value.hint


def test_offline_falls_back_to_the_catalog_entry_for_that_repo(env, catalog):
    source = _load("example/tiny", env, catalog=catalog, offline=True)
    assert source.origin == "catalog" and source.name == "tiny"
    assert "offline mode is on" in source.warnings[0]


def test_missing_huggingface_hub_is_dependency_missing(env, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(DependencyMissing) as info:
        _load("example/not-cached", env)
    from gpu_preflight.hints import install_hint

    assert info.value.hint == install_hint("hub")


def test_missing_huggingface_hub_uses_a_partial_cache_or_the_catalog(env, catalog, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    source = _load("example/tiny", env, catalog=catalog)
    from gpu_preflight.hints import install_extra

    assert source.origin == "catalog" and install_extra("hub") in source.warnings[0]
    _cache_repo(env, with_weights=False)
    source = _load("example/tiny", env, catalog=catalog)
    assert source.origin == "hub-cache" and "partial copy" in source.warnings[-1]


def test_corrupt_cached_weights_offline_are_reported(env):
    snapshot = _cache_repo(env)
    blob = (snapshot / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:100])
    with pytest.raises(ModelSourceError):
        _load("example/tiny", env, offline=True)


@pytest.mark.parametrize(
    ("spec", "error", "needle"),
    [
        ("", UsageError, "no model given"),
        ("   ", UsageError, "no model given"),
        ("not a model!", UsageError, "not a local path"),
        ("tiny-alais", UsageError, "not a local path"),
        ("./missing-folder", ModelSourceError, "no such file"),
        ("/nowhere/config.json", ModelSourceError, "no such file"),
        ("models/org/name", ModelSourceError, "no such file"),
        ("missing.gguf", ModelSourceError, "no such file"),
        ("org/name@", UsageError, "names no revision"),
        ("org/-bad", UsageError, "not a local path"),
        ("a" * 5000, UsageError, "not a local path"),
        ("nul\x00byte", UsageError, "not a local path"),
        ("~no-such-user-here/model", ModelSourceError, "no such file"),
    ],
)
def test_bad_specs_are_typed_errors(env, catalog, spec, error, needle):
    with pytest.raises(error, match=needle) as info:
        _load(spec, env, catalog=catalog)
    assert info.value.hint


def test_typo_suggests_catalog_names(env, catalog):
    with pytest.raises(UsageError) as info:
        _load("tiny-alais", env, catalog=catalog)
    assert "did you mean tiny" in info.value.hint


def test_conflicting_revisions_are_a_usage_error(env):
    with pytest.raises(UsageError, match="--revision"):
        _load("org/name@v1", env, revision="v2")


def test_local_path_wins_over_a_repo_id(tmp_path, env, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_model_folder(tmp_path / "org" / "name")
    assert _load("org/name", env).origin == "folder"


def test_unreadable_things_never_escape_as_other_exceptions(tmp_path, env):
    folder = write_model_folder(tmp_path / "m", shards=2)
    victims = [folder / n for n in ("config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors")]
    originals = {p: p.read_bytes() for p in victims}
    for victim in victims:
        for content in (b"", b"\x00" * 16, b"{}", b"null", b"[]", originals[victim][: len(originals[victim]) // 2]):
            victim.write_bytes(content)
            with contextlib.suppress(PreflightError):
                _load(folder, env)
        victim.write_bytes(originals[victim])
    shutil.rmtree(folder)
    with pytest.raises(ModelSourceError):
        _load(folder, env)
