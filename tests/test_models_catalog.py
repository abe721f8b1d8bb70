"""The catalog loader, on fixture files written here (not the shipped data/models files)."""

from __future__ import annotations

import json

import pytest
from models_helpers import llama_config

from gpu_preflight.models.catalog import load_catalog
from gpu_preflight.models.source import load_model_source, source_from_catalog

UNET = {"_class_name": "UNet2DConditionModel", "in_channels": 4, "block_out_channels": [320, 640, 1280, 1280]}


def _write(folder, name, data):
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture
def catalog_dir(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    _write(folder, "tiny-llama.json", {
        "id": "tiny-llama",
        "kind": "llm",
        "hf_repo": "example/Tiny-Llama-1B",
        "aliases": ["TinyLlama", "tiny_llama_1b"],
        "source": "https://huggingface.co/example/Tiny-Llama-1B/blob/main/config.json",
        "config": llama_config(),
        "params": 1_100_000_000,
    })
    _write(folder, "tiny-sd.json", {
        "id": "tiny-sd",
        "kind": "diffusion",
        "hf_repo": "example/tiny-sd",
        "aliases": "sd-tiny",  # a single string, not a list
        "source": {"model_index": "https://huggingface.co/example/tiny-sd/blob/main/model_index.json"},
        "model_index": {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                        "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "PNDMScheduler"]},
        "components": {
            "unet": {"class": ["diffusers", "UNet2DConditionModel"], "config": UNET,
                     "weights": {"params": 860_000_000, "dtype": "F16"}},
            "vae": {"class": "AutoencoderKL", "config": {"latent_channels": 4}},
            "text_encoder": {"class": ["custom_lib", "Encoder"], "config": {"auto_map": {"AutoModel": "x.Y"}}},
        },
    })
    _write(folder, "no-id.json", {"config": llama_config(hidden_size=32), "aliases": ["stemmy"]})
    _write(folder, "broken.json", "{not json")
    _write(folder, "empty.json", {"id": "nothing-here"})
    _write(folder, "bad-config.json", {"id": "bad", "config": [1, 2]})
    _write(folder, "list.json", [{"id": "first", "config": {"model_type": "a"}}, {"id": "second", "config": {}}, 7])
    _write(folder, "dupe.json", {"id": "dupe", "aliases": ["tiny-llama"], "config": {}})
    _write(folder, "zz-dupe.json", {"id": "zz-dupe", "aliases": ["tinyllama"], "config": {}})
    _write(folder, "README.md", "# not a catalog file")
    return folder


def test_tolerates_odd_files_and_reports_them(catalog_dir):
    catalog = load_catalog(catalog_dir)
    assert catalog.names() == ["dupe", "first", "no-id", "second", "tiny-llama", "tiny-sd", "zz-dupe"]
    problems = "\n".join(catalog.problems)
    assert "broken.json: not readable JSON" in problems
    assert "empty.json: entry has neither config nor model_index/components" in problems
    assert "bad-config.json: config is not an object" in problems
    assert "list.json[2]: an entry is not a JSON object" in problems
    assert "dupe.json: name 'tiny-llama' is already used by tiny-llama.json" in problems
    assert "zz-dupe.json: name 'tinyllama' is already used by tiny-llama.json" in problems
    assert "README" not in problems


def test_finds_ids_and_aliases_loosely(catalog_dir):
    catalog = load_catalog(catalog_dir)
    assert catalog.find("tiny-llama").id == "tiny-llama"
    assert catalog.find("TINYLLAMA").id == "tiny-llama"
    assert catalog.find("tiny llama 1b").id == "tiny-llama"
    assert catalog.find("Tiny_Llama_1B").id == "tiny-llama"
    assert catalog.find("sd-tiny").id == "tiny-sd"
    assert catalog.find("stemmy").id == "no-id"  # id taken from the file name
    assert catalog.find("tinyllama").file == "tiny-llama.json"  # the first file wins a shared alias
    assert catalog.find("nope") is None
    assert catalog.find_by_repo("EXAMPLE/tiny-llama-1b").id == "tiny-llama"
    assert "tiny-llama" in catalog.suggest("tiny-lama")


def test_missing_folder_is_a_problem_not_an_exception(tmp_path):
    catalog = load_catalog(tmp_path / "nowhere")
    assert catalog.entries == [] and "not found" in catalog.problems[0]


def test_llm_entry_becomes_a_catalog_source(catalog_dir):
    source = source_from_catalog(load_catalog(catalog_dir).find("tinyllama"))
    assert source.origin == "catalog" and source.name == "tiny-llama" and source.kind == "llm"
    assert source.config["hidden_size"] == 64
    assert source.tensors is None and source.components is None
    assert source.source_url == "https://huggingface.co/example/Tiny-Llama-1B/blob/main/config.json"
    assert source.metadata == {"params": 1_100_000_000, "hf_repo": "example/Tiny-Llama-1B"}


def test_diffusion_entry_becomes_a_pipeline_source(catalog_dir):
    source = source_from_catalog(load_catalog(catalog_dir).find("tiny-sd"))
    assert source.kind == "diffusion"
    assert source.pipeline_index["_class_name"] == "StableDiffusionPipeline"
    assert source.config == source.pipeline_index
    assert set(source.components) == {"unet", "vae", "text_encoder"}
    unet = source.components["unet"]
    assert unet.origin == "catalog" and unet.config["in_channels"] == 4
    assert unet.metadata["weights"] == {"params": 860_000_000, "dtype": "F16"}
    assert unet.metadata["class"] == ["diffusers", "UNet2DConditionModel"]
    assert source.source_url.endswith("model_index.json")
    warnings = "\n".join(source.warnings)
    assert "text_encoder: class custom_lib.Encoder is custom code" in warnings
    assert "text_encoder: text_encoder config has auto_map" in warnings


def test_catalog_entries_do_not_leak_mutations(catalog_dir):
    catalog = load_catalog(catalog_dir)
    first = source_from_catalog(catalog.find("tiny-llama"))
    first.config["hidden_size"] = 1
    assert source_from_catalog(catalog.find("tiny-llama")).config["hidden_size"] == 64


def test_load_model_source_resolves_catalog_names(catalog_dir, tmp_path):
    catalog = load_catalog(catalog_dir)
    source = load_model_source("TinyLlama", catalog=catalog, env={"HF_HUB_CACHE": str(tmp_path / "c")})
    assert source.origin == "catalog" and source.name == "tiny-llama"
    with_rev = load_model_source("tiny-llama", revision="v2", catalog=catalog, env={})
    assert any("revision 'v2' ignored" in w for w in with_rev.warnings)
