"""Single-file diffusion checkpoints (one .safetensors, as ComfyUI / Forge / A1111 users download them).

The family is recognised from tensor names in the header alone (never the weights). The marker
names are the ones diffusers 0.42.1 uses to tell checkpoints apart
(src/diffusers/loaders/single_file_utils.py, CHECKPOINT_KEY_NAMES); the component prefixes are the
original repositories' layouts (Stability's `model.diffusion_model.` / `first_stage_model.` /
`cond_stage_model.` / `conditioner.embedders.`, BFL's and ComfyUI's `vae.` and `text_encoders.`).

`inspect_single_file(header)` says what the file holds: the family, each component's tensors,
parameters, bytes and stored dtypes (float8 included). `pipeline_source(path, header, inspection)`
turns it into a diffusion ModelSource: components found in the file keep their tensors; the
configs, and the components the file lacks (a FLUX transformer-only file has no T5, CLIP or VAE),
come from the catalog entry of the family, and the warnings say so.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from gpu_preflight.errors import ModelSourceError
from gpu_preflight.models.safetensors_header import TensorInfo

FP8 = ("F8_E4M3", "F8_E5M2")
DTYPE_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F8_E4M3": "float8_e4m3fn",
               "F8_E5M2": "float8_e5m2", "U8": "uint8 (packed / quantized)", "I8": "int8"}

# (family, human name, catalog id or None, marker regexes: every one must match some tensor name,
#  optional exclusion regexes). Checked in order: the first family whose markers all match wins.
_P = r"^(?:model\.diffusion_model\.)?"
FAMILIES: tuple[tuple[str, str, str | None, tuple[str, ...], tuple[str, ...]], ...] = (
    ("flux-dev", "FLUX.1 [dev]", "flux.1-dev",
     (_P + r"double_blocks\.0\.img_attn\.norm\.key_norm\.scale$", _P + r"guidance_in\."), ()),
    ("flux-schnell", "FLUX.1 [schnell]", "flux.1-schnell",
     (_P + r"double_blocks\.0\.img_attn\.norm\.key_norm\.scale$",), ()),
    ("sd3.5-large", "Stable Diffusion 3.5 Large", None, (_P + r"joint_blocks\.37\.x_block\.mlp\.fc1\.weight$",), ()),
    ("sd3.5-medium", "Stable Diffusion 3.5 Medium", "sd3.5-medium",
     (_P + r"joint_blocks\.0\.context_block\.adaLN_modulation\.1\.bias$", _P + r"joint_blocks\.\d+\.x_block\.attn2\."),
     ()),
    ("sd3", "Stable Diffusion 3", None, (_P + r"joint_blocks\.0\.context_block\.adaLN_modulation\.1\.bias$",), ()),
    ("newbie", "NewBie-image (Next-DiT with Jina CLIP pooling)", "newbie-image-exp0.1",
     (_P + r"cap_embedder\.", _P + r"clip_text_pooled_proj\."), ()),
    ("lumina2", "Lumina-Image 2.0", "lumina-image-2.0", (_P + r"cap_embedder\.0\.weight$",), ()),
    ("sdxl-refiner", "SDXL refiner", None, (r"^conditioner\.embedders\.0\.model\.transformer\.resblocks\.",), ()),
    ("sdxl", "Stable Diffusion XL", "sdxl-base-1.0",
     (r"^model\.diffusion_model\.input_blocks\.", r"^conditioner\.embedders\.1\.model\."), ()),
    ("sdxl-unet", "Stable Diffusion XL (UNet only)", "sdxl-base-1.0",
     (r"^model\.diffusion_model\.input_blocks\.", r"^model\.diffusion_model\.label_emb\."), ()),
    ("sd2", "Stable Diffusion 2.x", None, (r"^model\.diffusion_model\.input_blocks\.", r"^cond_stage_model\.model\."), ()),
    ("sd1", "Stable Diffusion 1.x", None, (r"^model\.diffusion_model\.input_blocks\.",), ()),
    ("wan", "Wan 2.x video", None, (_P + r"head\.modulation$",), ()),
    ("hunyuan-video", "HunyuanVideo", None, (r"txt_in\.individual_token_refiner\.blocks\.0\.adaLN_modulation\.1\.bias$",), ()),
    ("ltx-video", "LTX-Video", None, (_P + r"patchify_proj\.weight$",), ()),
    ("auraflow", "AuraFlow", None, (r"double_layers\.0\.attn\.w2q\.weight$",), ()),
    ("hidream", "HiDream-I1", None, (r"double_stream_blocks\.0\.block\.adaLN_modulation\.1\.bias$",), ()),
    ("sana", "Sana", None, (r"^blocks\.0\.cross_attn\.q_linear\.weight$",), ()),
)

# component -> prefixes that hold it in single-file layouts (first match wins, longest first)
COMPONENT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("conditioner.embedders.0.", "text_encoder"),       # SDXL: CLIP ViT-L
    ("conditioner.embedders.1.", "text_encoder_2"),     # SDXL: OpenCLIP bigG
    ("cond_stage_model.", "text_encoder"),              # SD 1.x / 2.x
    ("text_encoders.clip_l.", "text_encoder"),          # SD3 / ComfyUI all-in-one
    ("text_encoders.clip_g.", "text_encoder_2"),
    ("text_encoders.t5xxl.", "t5"),
    ("text_encoders.", "text_encoders"),
    ("first_stage_model.", "vae"),
    ("vae.", "vae"),
    ("model.diffusion_model.", "denoiser"),
)


@dataclass
class Part:
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def dtypes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            name = DTYPE_NAMES.get(t.dtype, t.dtype)
            out[name] = out.get(name, 0) + t.nbytes
        return out


@dataclass
class Inspection:
    family: str
    name: str
    catalog_id: str | None
    parts: dict[str, Part]

    def summary(self) -> str:
        bits = []
        for comp, part in self.parts.items():
            dts = ", ".join(f"{d} {b / 1e9:.2f} GB" for d, b in sorted(part.dtypes().items(), key=lambda x: -x[1]))
            bits.append(f"{comp} {part.parameters / 1e9:.2f}B params ({dts})")
        return f"{self.name} single-file checkpoint: " + "; ".join(bits)

    @property
    def has_fp8(self) -> bool:
        return any(t.dtype in FP8 for p in self.parts.values() for t in p.tensors)


def recognize(names: list[str]) -> tuple[str, str, str | None] | None:
    for family, human, catalog_id, markers, excludes in FAMILIES:
        if all(any(re.search(m, n) for n in names) for m in markers) and \
                not any(re.search(x, n) for x in excludes for n in names):
            return family, human, catalog_id
    return None


def component_of(name: str) -> str:
    for prefix, comp in COMPONENT_PREFIXES:
        if name.startswith(prefix):
            return comp
    return "denoiser"  # bare denoiser keys (BFL FLUX, ComfyUI diffusion_models/ files)


def inspect_single_file(tensors: list[TensorInfo]) -> Inspection | None:
    """What a single-file checkpoint holds, or None if its tensor names match no known family."""
    names = [t.name for t in tensors]
    hit = recognize(names)
    if hit is None:
        return None
    family, human, catalog_id = hit
    parts: dict[str, Part] = {}
    for t in tensors:
        parts.setdefault(component_of(t.name), Part()).tensors.append(t)
    return Inspection(family, human, catalog_id, parts)


def _catalog_component_name(family: str, comp: str) -> str:
    """The file's component label -> the catalog pipeline's component name."""
    if comp == "denoiser":
        return "unet" if family.startswith(("sdxl", "sd1", "sd2")) else "transformer"
    if comp == "t5":
        return "text_encoder_3" if family.startswith("sd3") else "text_encoder_2"
    return comp


def pipeline_source(path, tensors: list[TensorInfo], metadata: dict, inspection: Inspection):
    """A diffusion ModelSource: the file's components with their tensors, the rest from the catalog."""
    from gpu_preflight.models.base import ModelSource
    from gpu_preflight.models.catalog import default_catalog
    from gpu_preflight.models.source import source_from_catalog

    if inspection.catalog_id is None:
        raise ModelSourceError(
            f"{path.name}: {inspection.summary()}; gpu-preflight has no pipeline config for {inspection.name}",
            hint="pass the model's diffusers folder (model_index.json and the components' config.json) instead")
    entry = default_catalog().find(inspection.catalog_id)
    base = source_from_catalog(entry)
    components = dict(base.components or {})
    warnings = [f"{path.name}: {inspection.summary()}"]
    found = []
    for comp, part in inspection.parts.items():
        name = _catalog_component_name(inspection.family, comp)
        if name not in components:
            warnings.append(f"tensors under {comp!r} ({part.parameters:,} parameters) match no component of "
                            f"{inspection.catalog_id}: not counted")
            continue
        c = components[name]
        meta = copy.deepcopy(c.metadata)
        meta["weights"] = None  # sizes come from the file's tensors
        stored = max(part.dtypes().items(), key=lambda x: x[1])[0]
        components[name] = ModelSource(name=name, origin="folder", config=c.config,
                                       tensors=[TensorInfo(t.name, t.dtype, t.shape, t.nbytes, path.name)
                                                for t in part.tensors],
                                       path=str(path), metadata={**meta, "stored_dtype": stored})
        found.append(name)
    missing = [n for n, c in components.items() if n not in found and (c.metadata.get("weights") or {})]
    if missing:
        warnings.append(f"not in the file, taken from the catalog's {inspection.catalog_id}: {', '.join(missing)}")
    if inspection.has_fp8:
        warnings.append("the file stores float8 weights: diffusers' from_single_file loads them in --dtype "
                        "(16-bit) unless --layerwise-fp8 keeps the denoiser in float8 (ComfyUI keeps fp8 storage)")
    return ModelSource(name=path.stem, origin="folder", config=base.config, components=components,
                       warnings=warnings, pipeline_index=base.pipeline_index, kind="diffusion", path=str(path),
                       metadata={**base.metadata, "single_file": {
                           "family": inspection.family, "catalog_id": inspection.catalog_id,
                           "components": {n: {"parameters": p.parameters, "bytes": p.bytes, "dtypes": p.dtypes()}
                                          for n, p in inspection.parts.items()}},
                                 "safetensors_metadata": metadata})


def describe(inspection: Inspection) -> dict[str, Any]:
    return {"family": inspection.family, "name": inspection.name, "catalog_id": inspection.catalog_id,
            "components": {n: {"parameters": p.parameters, "bytes": p.bytes, "dtypes": p.dtypes()}
                           for n, p in inspection.parts.items()}}
