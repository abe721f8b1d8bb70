"""Model sources: what a model is (config, tensor shapes and dtypes), read without its weights.

Entry point: `load_model_source(spec)` for a folder, config.json, .gguf, catalog name or
Hugging Face repo id. Lower layers: `read_safetensors_header`, `read_gguf_header`,
`load_catalog`. huggingface_hub is imported only when a repo must be read from the Hub.
"""

from __future__ import annotations

from gpu_preflight.models.base import ORIGINS, ModelSource
from gpu_preflight.models.catalog import Catalog, CatalogEntry, load_catalog
from gpu_preflight.models.gguf import GGUFHeader, GGUFTensor, gguf_to_hf_config, read_gguf_header
from gpu_preflight.models.safetensors_header import SafetensorsHeader, TensorInfo, read_safetensors_header
from gpu_preflight.models.source import load_model_source, source_from_catalog

__all__ = [
    "ORIGINS",
    "Catalog",
    "CatalogEntry",
    "GGUFHeader",
    "GGUFTensor",
    "ModelSource",
    "SafetensorsHeader",
    "TensorInfo",
    "gguf_to_hf_config",
    "load_catalog",
    "load_model_source",
    "read_gguf_header",
    "read_safetensors_header",
    "source_from_catalog",
]
