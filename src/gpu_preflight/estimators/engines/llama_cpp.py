"""llama.cpp (llama-server) and Ollama: the buffers llama.cpp allocates per device, from a GGUF header.

llama.cpp keeps the weights quantized as the GGUF stores them and allocates three kinds of buffers
per device at start-up, each logged by name (docs/llama-cpp.md has the line-by-line sources):

- model buffers ("CUDA0 model buffer size"): the tensors of the layers placed on that device.
  token_embd stays on the CPU; -ngl N puts the last N layers on the GPUs (newer builds count the
  output layer as one of the N, so it goes first; builds from 2025 placed the repeating layers
  first); layers are spread over GPUs by --tensor-split (default: free memory). Each tensor is
  padded to the buffer's alignment (128 B on CUDA) and quantized rows to 512 elements
  (src/llama-model.cpp load_tensors, ggml-cuda.cu get_alloc_size);
- the KV cache ("CUDA0 KV buffer size"): per layer, K and V of n_embd_head x n_head_kv x cells in
  --cache-type-k/-v; cells = n_ctx padded to 256 (to 32, or 256 with flash attention, in 2025),
  split into --parallel streams unless the cache is unified, sliding-window layers sized to the
  window + one micro-batch (src/llama-kv-cache.cpp, llama-kv-cache-iswa.cpp, llama-context.cpp);
- compute buffers ("CUDA0 compute buffer size", "CUDA_Host compute buffer size"): replayed from
  the reservation graph (llama_cpp_graph.py).

The process also holds what llama.cpp does not log: the CUDA context, the kernels and the cuBLAS
handle the first prompt loads (measured constants, MEASURED_OVERHEAD, with their provenance), each
buffer's rounding to 2 MiB pages, and ggml-cuda's memory pool (computed from the ops that use it,
cuda_pool).

Ollama runs the same engine with its own defaults (context, parallel slots, flash attention, KV
type), which changed across releases: OLLAMA_DEFAULTS cites them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from gpu_preflight.errors import ModelSourceError, UsageError
from gpu_preflight.estimators.engines.llama_cpp_graph import (
    MIN_OFFLOAD_BATCH, CParams, HParams, Placement, Weight, compute_buffers, row_bytes, type_sizes)

GIB = 1 << 30
MIB = 1 << 20
CUDA_ALIGN = 128
MATRIX_ROW_PADDING = 512   # ggml-cuda/common.cuh: quantized rows padded to this many elements
FIT_MARGIN_BYTES = GIB     # llama_params_fit's default free-memory target per device (--fit-target 1024)
FIT_MIN_CTX = 4096         # --fit-ctx default

# llama.cpp releases the model knows (from the llama-cpp-python sdists that vendor them).
VERSIONS: dict[str, dict[str, Any]] = {
    "b6150": {  # llama-cpp-python 0.3.16 (2025-08-15), vendor/llama.cpp 4227c9be
        "label": "b6150 (2025-08, 4227c9be)",
        "default_ctx": 4096, "default_parallel": 1, "default_unified": False, "default_fa": "off",
        "default_ngl": 0, "ctx_pad": None, "output_layer_first": False, "fit": False,
    },
    "b10800": {  # llama-cpp-python 0.3.36 (2026-10-01), vendor/llama.cpp 0c1e57098
        "label": "b10800+ (2026-09, 0c1e57098)",
        "default_ctx": 0, "default_parallel": 4, "default_unified": True, "default_fa": "auto",
        "default_ngl": "auto", "ctx_pad": 256, "output_layer_first": True, "fit": True,
    },
}
NEWEST = "b10800"
PROFILE_SPLIT_BUILD = 7000  # builds from ~2025-11 on (fit, 256-cell padding, -fa auto) use the newer profile
# The reservation graph changed twice in ways that move the compute buffers by a few MiB: ggml_set_rows
# with index inputs replaced ggml_cpy into the cache and out_ids became unconditional (mid-2025, PRs
# #14285 / #14275), then an embeddings input joined the token path and the mask became F16 at the
# source (early 2026, PR #18550). Build numbers below are the approximate first builds of each.
GRAPH_ERAS = ((7600, 2026), (6000, 2025), (0, 2024))

# Ollama defaults per release; each row cites where it comes from.
OLLAMA_DEFAULTS: list[dict[str, Any]] = [
    {"from": (0, 2, 0), "num_ctx": 2048, "num_parallel": "auto: 4 when memory allows, else 1", "parallel_value": 1,
     "flash_attention": False, "kv_cache_type": "f16", "num_batch": 512,
     "source": "https://github.com/ollama/ollama/blob/4bf0d41c38c7b669bbbd44bf43c08bc4e231432f/envconfig/config.go; "
               "https://github.com/ollama/ollama/issues/9246 (num_ctx x OLLAMA_NUM_PARALLEL slots)"},
    {"from": (0, 6, 7), "num_ctx": 4096, "num_parallel": "auto: 4 when memory allows, else 1", "parallel_value": 1,
     "flash_attention": False, "kv_cache_type": "f16", "num_batch": 512,
     "source": "https://github.com/ollama/ollama/releases/tag/v0.6.7 (default context 4096; "
               "https://github.com/zed-industries/zed/pull/31682)"},
    {"from": (0, 10, 0), "num_ctx": 4096, "num_parallel": 1, "parallel_value": 1,
     "flash_attention": "on for gpt-oss, qwen3, gemma3 (per-model), off otherwise", "kv_cache_type": "f16",
     "num_batch": 512,
     "source": "https://github.com/ollama/ollama/pull/11330 (default parallelism 1, 2025-07); "
               "https://github.com/ollama/ollama/pull/11996, /pull/12482, /pull/12639 (per-model flash attention)"},
    {"from": (0, 15, 5), "num_ctx": "by VRAM: 4096 under 24 GiB, 32768 under 48 GiB, 262144 above",
     "num_parallel": 1, "parallel_value": 1,
     "flash_attention": "on for gpt-oss, qwen3, gemma3 (per-model), off otherwise", "kv_cache_type": "f16",
     "num_batch": 512,
     "source": "https://github.com/ollama/ollama/blob/948f69330acf96a2310f1b53fdfc211731a386d8/docs/context-length.mdx; "
               "https://github.com/open-webui/docs/pull/1393 (v0.15.5, 2026-02-03)"},
]
OLLAMA_NEWEST = "0.15.5"

# Process memory outside the logged buffers, per GPU: the CUDA context, the kernels and library
# handles the first prompt brings in, and the CUDA pool (cuda_pool below, computed). Measured with NVML
# (per-process used memory, sampled every 10 ms) on bench/llamacpp_device.py's GPU run; the
# derivation is measurement/calibration_llamacpp.py derive_overhead, from the cases NOT held out only
# (held out before the run: the mistral-7b, gemma-3-4b and qwen2.5-3b cases); docs/llama-cpp.md has the
# table. Each logged buffer is also rounded up to cudaMalloc's 2 MiB pages (computed, not in these).
MEASURED_OVERHEAD: dict[str, Any] = {
    "measured_on": "NVIDIA H200 (sm_90), driver 580.159.04, CUDA 13.0, llama.cpp 0c1e57098 built for sm_90 "
                   "(calibration/llamacpp/gpu_h200.jsonl, 2026-12-02)",
    # CUDA context + ggml-cuda's device set-up, at start-up: the one training case that ran no prompt
    # (llama-3.2-1b-nodecode: NVML 1668 MiB - 1148 MiB of rounded buffers). The device-wide probes of
    # all 32 cases agree: 526.81 MiB above the rounded model buffer after loading in every case,
    # + 2.00 MiB at context creation, NVML counting 8.8 MiB less than cudaMemGetInfo.
    "context_bytes": 520 * MIB,
    # + what the first prompt adds without cuBLAS (kernels loaded on first use, MMQ / flash-attention
    # fix-up scratch): median of the 17 training cases that decoded a prompt without a cuBLAS op,
    # NVML peak - rounded buffers - computed pool = 594 MiB (spread 586 .. 612 MiB) - 520.
    "first_prompt_bytes": 74 * MIB,
    # + cuBLAS (handle, workspace, its kernels), held once any op runs in cuBLAS (no flash attention,
    # or F16/BF16/F32 weights): median of the 7 training cases with a cuBLAS op = 686 MiB
    # (spread 682 .. 686 MiB) - 594.
    "cublas_bytes": 92 * MIB,
}
MEASURED_ARCH = 9  # sm_90: other GPUs use these numbers, said so in the assumptions

_QUANT_KV = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")
KV_TYPES = ("f16", "bf16", "f32") + _QUANT_KV
FA_HEAD_DIMS = (40, 64, 72, 80, 96, 112, 128, 256, 512, 576)  # fattn.cu kernels with CUDA support


# ---- the model as llama.cpp sees it ----

@dataclass
class LlamaModel:
    name: str
    hp: HParams
    weights: dict[str, Weight]
    n_ctx_train: int
    file_type: str | None
    graph_exact: bool = True           # False: the graph of an architecture not replayed node by node
    notes: list[str] = field(default_factory=list)

    def layer_weight_bytes(self, il: int) -> int:
        p = f"blk.{il}."
        return sum(_alloc_bytes(w) for n, w in self.weights.items() if n.startswith(p))


_GRAPH_ARCHS = {"llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gemma2", "gemma3", "phi3", "mistral3",
                "granite", "olmo2", "smollm3", "qwen3vl"}


def model_from_gguf(source) -> LlamaModel:
    md = source.metadata or {}
    cfg = source.config or {}
    arch = (cfg.get("_gguf") or {}).get("architecture") or md.get("general.architecture")
    if not arch:
        raise ModelSourceError("the GGUF has no general.architecture", hint="pass a model GGUF, not an adapter")
    if source.tensors is None:
        raise ModelSourceError("the GGUF's tensor list could not be read", hint="; ".join(source.warnings) or
                               "check that all parts of a split GGUF are present")
    weights = {t.name: Weight(_ggml_type(t.dtype), tuple(reversed(t.shape))) for t in source.tensors}
    per_layer = (cfg.get("_gguf") or {}).get("per_layer") or {}

    def key(suffix: str, default: Any = None) -> Any:
        return md.get(f"{arch}.{suffix}", default)

    n_layer = int(key("block_count", cfg.get("num_hidden_layers", 0)))
    n_embd = int(key("embedding_length", cfg.get("hidden_size", 0)))
    n_head = int(cfg.get("num_attention_heads") or key("attention.head_count", 0))
    if not n_layer or not n_embd or not n_head:
        raise ModelSourceError(f"GGUF metadata lacks {arch}.block_count / embedding_length / attention.head_count",
                               hint="the file is not a decoder LLM llama.cpp can run")
    kv = per_layer.get("num_key_value_heads") or [int(cfg.get("num_key_value_heads") or n_head)] * n_layer
    ff = per_layer.get("intermediate_size") or [int(cfg.get("intermediate_size") or 0)] * n_layer
    head_k = int(key("attention.key_length", n_embd // n_head))
    head_v = int(key("attention.value_length", head_k))
    vocab = weights["token_embd.weight"].ne[1] if "token_embd.weight" in weights else int(cfg.get("vocab_size", 0))
    hp = HParams(arch=arch, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=[int(x) for x in kv],
                 head_k=head_k, head_v=head_v, n_ff=[int(x) for x in ff], n_vocab=vocab)
    _arch_features(hp, arch, weights, key)
    _check_tensors(weights, n_layer, arch)
    model = LlamaModel(name=source.name, hp=hp, weights=weights, n_ctx_train=int(key("context_length", 4096)),
                       file_type=_file_type_name(md.get("general.file_type")), graph_exact=arch in _GRAPH_ARCHS)
    if not model.graph_exact:
        model.notes.append(f"architecture {arch!r}: its compute graph is approximated by the llama graph "
                           f"(weights and KV cache are exact)")
    return model


# ---- a config.json as the GGUF llama.cpp's converter and llama-quantize would write ----

_ARCH_FROM_HF = {"llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
                 "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "gemma2": "gemma2", "gemma3": "gemma3",
                 "gemma3_text": "gemma3", "phi3": "phi3"}


def shape_from_config(config: dict):
    """A config.json (or a catalog config) as the GGUF llama.cpp's converter would write."""
    from gpu_preflight.estimators.arch import parse_llm
    from gpu_preflight.models.gguf_quant import ModelShape

    a = parse_llm(config)
    arch = _ARCH_FROM_HF.get(a.model_type)
    if arch is None:
        raise UsageError(f"--quant: no GGUF layout known for model_type {a.model_type!r}",
                         hint="pass a published .gguf file of this model instead (local, or org/name/file.gguf)")
    if a.mla:
        raise UsageError("--quant: multi-head latent attention models are not predicted",
                         hint="pass a published .gguf file of this model instead")
    rope = (config.get("rope_scaling") or {}) if isinstance(config.get("rope_scaling"), dict) else {}
    return ModelShape(
        arch=arch, n_layer=a.layers, n_embd=a.hidden, n_head=a.heads, n_head_kv=a.kv_heads, head_dim=a.head_dim,
        n_ff=a.intermediate, n_vocab=a.vocab, tied=a.tied, n_expert=a.experts, n_expert_used=a.experts_per_token,
        n_ff_exp=a.moe_intermediate if a.experts else 0, n_ff_shexp=a.shared_intermediate,
        qkv_bias=a.qkv_bias, qk_norm=arch in ("qwen3", "qwen3moe", "gemma3"),
        post_norms=arch in ("gemma2", "gemma3"), fused_qkv=arch == "phi3",
        rope_freqs=arch == "llama" and rope.get("rope_type") == "llama3",
    )


def predict_file_bytes(config: dict, ftype: str):
    """(predicted GGUF file bytes, tensors with their types, shape) for a config and a llama.cpp file type."""
    from gpu_preflight.models.gguf_quant import predict_file_bytes_for_shape

    s = shape_from_config(config)
    size, tensors = predict_file_bytes_for_shape(s, ftype)
    return size, tensors, s


def model_from_config(source, quant: str) -> LlamaModel:
    """A config.json (catalog, folder or Hub) turned into the GGUF llama-quantize would write."""
    from gpu_preflight.models.gguf_quant import gguf_tensors, quantize

    s = shape_from_config(source.config)
    tensors = quantize(gguf_tensors(s), quant, s)
    weights = {t.name: Weight(t.type, t.ne) for t in tensors}
    hp = HParams(arch=s.arch, n_layer=s.n_layer, n_embd=s.n_embd, n_head=s.n_head, n_head_kv=[s.n_head_kv] * s.n_layer,
                 head_k=s.head_dim, head_v=s.head_dim, n_ff=[s.n_ff] * s.n_layer, n_vocab=s.n_vocab,
                 n_expert=s.n_expert, n_expert_used=s.n_expert_used, n_ff_exp=s.n_ff_exp, n_ff_shexp=s.n_ff_shexp)
    cfg = source.config if "hidden_size" in source.config else (source.config.get("text_config") or source.config)
    sw = cfg.get("sliding_window")

    def key(suffix: str, default: Any = None) -> Any:
        return {"attention.sliding_window": sw, "attn_logit_softcapping": cfg.get("attn_logit_softcapping"),
                "final_logit_softcapping": cfg.get("final_logit_softcapping"),
                "attention.sliding_window_pattern": cfg.get("sliding_window_pattern")}.get(suffix, default)

    _arch_features(hp, s.arch, weights, key)
    ctx = int(cfg.get("max_position_embeddings") or 4096)
    return LlamaModel(name=f"{source.name} {quant}", hp=hp, weights=weights, n_ctx_train=ctx, file_type=quant,
                      notes=[f"GGUF predicted from config.json with llama-quantize's {quant} recipe "
                             f"(models/gguf_quant.py)"])


def _check_tensors(weights: dict[str, Weight], n_layer: int, arch: str) -> None:
    """The tensors the decoder graph reads; a GGUF without them is not a model llama.cpp would load."""
    need = ["token_embd.weight"]
    for il in range(n_layer):
        p = f"blk.{il}."
        attn = [p + "attn_qkv.weight"] if p + "attn_qkv.weight" in weights else \
            [p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"]
        ffn = [p + "ffn_up_exps.weight", p + "ffn_down_exps.weight"] if p + "ffn_gate_inp.weight" in weights else \
            [p + "ffn_up.weight", p + "ffn_down.weight"]
        need += attn + [p + "attn_output.weight"] + ffn
    missing = [n for n in need if n not in weights]
    if missing:
        raise ModelSourceError(f"the {arch} GGUF lacks tensors llama.cpp needs: {', '.join(missing[:4])}"
                               + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""),
                               hint="check the file (a partial download, or a split part that is not the first?)")


def _arch_features(hp: HParams, arch: str, weights: dict[str, Weight], key) -> None:
    """What the graph and the KV cache depend on, per architecture (src/models/<arch>.cpp)."""
    hp.qkv_bias = "blk.0.attn_q.bias" in weights
    hp.qk_norm = "blk.0.attn_q_norm.weight" in weights
    hp.post_norms = "blk.0.post_attention_norm.weight" in weights
    hp.fused_qkv = "blk.0.attn_qkv.weight" in weights
    hp.fused_up = hp.fused_qkv and "blk.0.ffn_gate.weight" not in weights and "blk.0.ffn_up.weight" in weights
    hp.sinks = "blk.0.attn_sinks.weight" in weights
    if "blk.0.ffn_gate_inp.weight" in weights:
        up = weights.get("blk.0.ffn_up_exps.weight")
        if up is not None and len(up.ne) == 3:
            hp.n_ff_exp, hp.n_expert = up.ne[1], up.ne[2]
        hp.n_expert_used = hp.n_expert_used or int(key("expert_used_count", 2) or 2)
        sh = weights.get("blk.0.ffn_up_shexp.weight")
        hp.n_ff_shexp = sh.ne[1] if sh is not None else 0
    if arch in ("gemma2", "gemma3"):
        hp.emb_scale = hp.gelu = True
    pattern = {"gemma2": 2, "gemma3": 6, "gpt-oss": 2, "cohere2": 4}.get(arch)
    window = key("attention.sliding_window")
    if arch == "gemma2":
        window = window or 4096
        hp.attn_softcap = bool(key("attn_logit_softcapping", 50.0))
        hp.final_softcap = bool(key("final_logit_softcapping", 30.0))
    if arch == "gemma3":
        hp.final_softcap = bool(key("final_logit_softcapping", 0.0))
    if pattern and window:
        hp.n_swa = int(window)
        # llama_hparams::set_swa_pattern(n, dense_first=false): every n-th layer is global
        hp.swa = [il % pattern < pattern - 1 for il in range(hp.n_layer)]


def _ggml_type(dtype: str) -> str:
    d = dtype.upper()
    return d if d in type_sizes() else {"BFLOAT16": "BF16", "FLOAT16": "F16", "FLOAT32": "F32"}.get(d, d)


_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
               12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
               19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
               26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
               38: "MXFP4_MOE"}


def _file_type_name(ft: Any) -> str | None:
    return _FILE_TYPES.get(ft) if isinstance(ft, int) else None


def _alloc_bytes(w: Weight) -> int:
    """ggml_backend_cuda_buffer_type_get_alloc_size, padded to the buffer alignment."""
    n = row_bytes(w.type, w.ne[0])
    for d in w.ne[1:]:
        n *= d
    if w.type not in ("F32", "F16", "BF16", "I32", "I16", "I8", "I64", "F64") and w.ne[0] % MATRIX_ROW_PADDING:
        n += row_bytes(w.type, MATRIX_ROW_PADDING - w.ne[0] % MATRIX_ROW_PADDING)
    return -(-n // CUDA_ALIGN) * CUDA_ALIGN


# ---- settings ----

@dataclass
class Settings:
    version: str = NEWEST
    n_ctx: int = 0                  # 0 = the model's training context
    n_batch: int = 2048
    n_ubatch: int = 512
    n_parallel: int = 1
    kv_unified: bool = False
    flash_attn: str = "auto"        # on | off | auto
    type_k: str = "f16"
    type_v: str = "f16"
    n_gpu_layers: int | str = "auto"
    tensor_split: list[float] | None = None
    ctx_given: bool = False
    ngl_given: bool = False
    era: int = 2026

    @property
    def profile(self) -> dict[str, Any]:
        return VERSIONS[self.version]


def resolve_version(text: str | None) -> tuple[str, int]:
    """(defaults profile, graph era) for a llama.cpp build number like b6150."""
    if not text:
        return NEWEST, 2026
    m = re.fullmatch(r"b?(\d+)", str(text).strip().lower())
    if not m:
        raise UsageError(f"--llama-cpp {text!r} is not a llama.cpp build", hint="use a build number such as b6150")
    build = int(m.group(1))
    era = next(e for first, e in GRAPH_ERAS if build >= first)
    return ("b6150" if build < PROFILE_SPLIT_BUILD else NEWEST), era


def flash_attn_enabled(model: LlamaModel, s: Settings) -> bool:
    """-fa auto (the default from ~b6250 on) turns flash attention on when every layer's device
    supports the op for this head size (llama_context::resolve_fused_ops); off before that."""
    if s.flash_attn == "on":
        return True
    if s.flash_attn == "off":
        return False
    return model.hp.head_k in FA_HEAD_DIMS and model.hp.head_v in FA_HEAD_DIMS


# ---- sizes ----

@dataclass
class Layout:
    n_ctx: int               # total cells after padding (what llama.cpp logs as n_ctx)
    cells: int               # cells per stream of the full-attention cache
    cells_swa: int
    n_stream: int
    n_ubatch: int
    flash_attn: bool


def layout(model: LlamaModel, s: Settings) -> Layout:
    """n_ctx as llama_context computes it (llama-context.cpp): padded, split into streams."""
    prof = s.profile
    fa = flash_attn_enabled(model, s)
    n_ctx = s.n_ctx or model.n_ctx_train
    seqs = max(1, s.n_parallel)
    unified = s.kv_unified or s.era < 2025  # one stream per sequence came with PR #14363 (mid-2025)
    if prof["ctx_pad"]:
        pad = prof["ctx_pad"]
        n_ctx = _pad(n_ctx, pad)
        if unified:
            cells, n_stream = n_ctx, 1
        else:
            cells, n_stream = _pad(n_ctx // seqs, pad), seqs
            n_ctx = cells * seqs
    else:  # 2025: llama_kv_cache_unified::get_padding = 256 with flash attention, else 32
        pad = 256 if fa else 32
        if unified:
            cells, n_stream = _pad(n_ctx, pad), 1
            n_ctx = cells
        else:
            cells, n_stream = _pad(-(-n_ctx // seqs), pad), seqs
            n_ctx = cells * seqs
    n_ubatch = min(n_ctx, s.n_batch, s.n_ubatch)
    cells_swa = 0
    if any(model.hp.swa):
        # llama_kv_cache_iswa: min(size, n_swa x (unified ? n_seq : 1) + n_ubatch), padded to 256
        want = model.hp.n_swa * (seqs if unified else 1) + n_ubatch
        cells_swa = _pad(min(cells, want), 256) if prof["ctx_pad"] else min(cells, _pad(want, pad))
    return Layout(n_ctx, cells, cells_swa, n_stream, n_ubatch, fa)


def _pad(n: int, p: int) -> int:
    return -(-n // p) * p


def placement(model: LlamaModel, s: Settings, n_gpu: int, ngl: int) -> Placement:
    """Which device holds each layer (llama_model::load_tensors: get_layer_buft_list)."""
    L = model.hp.n_layer
    cpu = n_gpu
    if n_gpu == 0:
        return Placement(0, [0] * L, 0, False)
    ngl = max(0, min(ngl, L + 1))
    if s.profile["output_layer_first"]:
        start = max(L + 1 - ngl, 0)
    else:
        start = max(L - ngl, 0)
    act = min(ngl, L + 1)
    split = _split_points(s.tensor_split, n_gpu)

    def dev(il: int) -> int:
        if il < start or il - start >= act:
            return cpu
        frac = (il - start) / act
        return next((i for i, p in enumerate(split) if frac < p), n_gpu - 1)

    return Placement(n_gpu, [dev(il) for il in range(L)], dev(L), ngl > L)


def _split_points(split: list[float] | None, n_gpu: int) -> list[float]:
    w = list(split or [])[:n_gpu] + [0.0] * max(0, n_gpu - len(split or []))
    if not any(w):
        w = [1.0] * n_gpu  # identical GPUs: free memory splits evenly
    total, acc, out = sum(w), 0.0, []
    for x in w:
        acc += x
        out.append(acc / total)
    return out


def model_buffers(model: LlamaModel, pl: Placement) -> dict[int, int]:
    """Bytes of weights per backend; token_embd on the CPU, a tied output duplicated on its device."""
    out: dict[int, int] = {}
    layer_re = re.compile(r"blk\.(\d+)\.")
    for name, w in model.weights.items():
        m = layer_re.match(name)
        if m:
            b = pl.dev_layer[int(m.group(1))] if int(m.group(1)) < len(pl.dev_layer) else pl.n_gpu
        elif name == "token_embd.weight" or name.startswith(("rope_", "token_")):
            b = pl.n_gpu
        else:
            b = pl.dev_output
        out[b] = out.get(b, 0) + (_alloc_bytes(w) if b != pl.n_gpu else _host_bytes(w))
    if "output.weight" not in model.weights and "token_embd.weight" in model.weights:
        w = model.weights["token_embd.weight"]
        b = pl.dev_output
        out[b] = out.get(b, 0) + (_alloc_bytes(w) if b != pl.n_gpu else 0)  # on the CPU the mmap is shared
    return out


def _host_bytes(w: Weight) -> int:
    n = row_bytes(w.type, w.ne[0])
    for d in w.ne[1:]:
        n *= d
    return n


def kv_buffers(model: LlamaModel, s: Settings, lay: Layout, pl: Placement) -> dict[int, int]:
    """llama_kv_cache: per layer K [n_embd_k_gqa, cells, n_stream] and V [n_embd_v_gqa, ...]."""
    hp, out = model.hp, {}
    tk, tv = s.type_k.upper(), s.type_v.upper()
    v_trans = not lay.flash_attn
    v_width_max = max(k * hp.head_v for k in hp.n_head_kv)
    for il in range(hp.n_layer):
        if not hp.n_head_kv[il]:
            continue
        cells = lay.cells_swa if hp.is_swa(il) else lay.cells
        dev = pl.dev_layer[il]
        k = Weight(tk, (hp.n_head_kv[il] * hp.head_k, cells, lay.n_stream))
        v = Weight(tv, (v_width_max if v_trans else hp.n_head_kv[il] * hp.head_v, cells, lay.n_stream))
        size = (_alloc_bytes(k) + _alloc_bytes(v)) if dev != pl.n_gpu else (_host_bytes(k) + _host_bytes(v))
        out[dev] = out.get(dev, 0) + size
    return out


def kv_bytes_per_cell(model: LlamaModel, s: Settings) -> tuple[int, int]:
    """(bytes per cell of the full-attention layers, of the sliding-window layers), all layers."""
    hp = model.hp
    full = swa = 0
    for il in range(hp.n_layer):
        n = row_bytes(s.type_k.upper(), hp.n_head_kv[il] * hp.head_k) + row_bytes(s.type_v.upper(),
                                                                                   hp.n_head_kv[il] * hp.head_v)
        if hp.is_swa(il):
            swa += n
        else:
            full += n
    return full, swa


def output_buffer_bytes(model: LlamaModel, s: Settings) -> int:
    """llama_context::output_reserve(n_seq_max) at start-up: logits for one row per sequence (host)."""
    return model.hp.n_vocab * max(1, s.n_parallel) * 4


def compute(model: LlamaModel, s: Settings, lay: Layout, pl: Placement) -> dict[int, int]:
    cp = CParams(n_ubatch=lay.n_ubatch, n_outputs=lay.n_ubatch, kv_cells=lay.cells, kv_cells_swa=lay.cells_swa,
                 n_stream=lay.n_stream, flash_attn=lay.flash_attn, type_k=s.type_k.upper(), type_v=s.type_v.upper(),
                 era=s.era)
    return compute_buffers(model.hp, cp, pl, model.weights)


# ---- the CUDA pool: scratch memory ggml-cuda takes while it runs a prompt ----
#
# ggml-cuda runs each op with temporary buffers from a per-device pool (ggml_cuda_pool_vmm,
# ggml/src/ggml-cuda/ggml-cuda.cu lines 528-677 in 0c1e57098): a stack of virtual memory that grows in
# steps of the allocation granularity (2 MiB on NVIDIA GPUs) and is never given back. Every op frees
# what it took before the next op runs, so the pool ends at the largest single op's scratch, rounded
# up to the granularity. The ops whose scratch scales with the model or the context:
#
# - matrix products with quantized weights use MMQ (always, on Turing and newer: ggml_cuda_should_use_mmq,
#   ggml-cuda/mmq.cu:318-373), which first quantizes the activations to q8_1: T x pad512(K) values at
#   144 bytes per 128, plus J_max x 144 bytes (ggml_cuda_mul_mat_q, mmq.cu:185-191; 257-259 for experts:
#   T x n_expert_used rows);
# - products with F16 / BF16 / F32 weights and more than 16 tokens go to cuBLAS (ggml_cuda_mul_mat,
#   ggml-cuda.cu:1818-1871): F16 converts the activations to F16 and writes an F16 result that is
#   converted back (T x (K + N) x 2 bytes); BF16 converts the activations only (T x K x 2, F32 output on
#   NVIDIA); F32 needs no copy (ggml_cuda_mul_mat_cublas_impl, ggml-cuda.cu:1403-1613);
# - without flash attention, KQ = K x Q runs in cuBLAS at F32 precision (ggml_prec_set_acc,
#   src/llama-graph.cpp:2693), converting the F16 K view to F32 (head_k x n_kv x n_head_kv x 4 bytes), and
#   KQV = V x softmax(KQ) runs in F16, converting the scores to F16 and writing an F16 result:
#   (n_kv + head_v) x T x n_head x 2 bytes. At a full context that is half the size of the F32 scores
#   the compute buffer already holds;
# - flash attention and MMQ's stream-k fix-up buffers (at most SMs x 64 KiB) are small and are part of
#   the measured constant below.
#
# T is the micro-batch (llama-server reads prompts n_ubatch tokens at a time; the logits are computed
# for the last token only, so the output matrix is not a large product); n_kv is the cells the cache
# holds when that micro-batch runs: the whole context once a prompt fills it.

CUDA_POOL_GRANULARITY = 2 * MIB   # cuMemGetAllocationGranularity(RECOMMENDED) on NVIDIA GPUs
CUDA_MALLOC_GRANULARITY = 2 * MIB  # cudaMalloc maps whole 2 MiB pages: each logged buffer is rounded up
MMF_MAX_TOKENS = 16                # ggml_cuda_should_use_mmf: src1_ncols > 16 -> cuBLAS (ggml-cuda/mmf.cu:176)
_MATMUL_SUFFIXES = ("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_qkv.weight", "attn_output.weight",
                    "ffn_up.weight", "ffn_gate.weight", "ffn_down.weight", "ffn_gate_inp.weight",
                    "ffn_up_shexp.weight", "ffn_gate_shexp.weight", "ffn_down_shexp.weight")
_EXPERT_SUFFIXES = ("ffn_up_exps.weight", "ffn_gate_exps.weight", "ffn_down_exps.weight")
_QUANT_FREE = ("F32", "F16", "BF16")
# the types MMQ handles (ggml_cuda_should_use_mmq, ggml-cuda/mmq.cu:325-351); other quantized types
# (IQ1_M, TQ1_0, TQ2_0) are dequantized to F16 for cuBLAS
MMQ_TYPES = frozenset({"Q1_0", "Q2_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                       "IQ1_S", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS", "IQ4_NL", "MXFP4", "NVFP4"})


@dataclass
class PoolUse:
    bytes: int          # the pool's size after the largest op, rounded to the granularity
    cublas: bool        # some op on this device runs in cuBLAS (its handle and workspace are then held)
    op: str             # which op sets the size


def _matmul_scratch(w: Weight, n_tokens: int, n_used: int = 1) -> tuple[int, bool]:
    """(pool bytes, runs in cuBLAS) of one product with weight w over n_tokens activations."""
    k, n = w.ne[0], w.ne[1]
    if w.type in MMQ_TYPES:
        rows = n_tokens * n_used
        return rows * _pad(k, MATRIX_ROW_PADDING) * 144 // 128 + min(n_tokens, 512) // 8 * 8 * 144, False
    if n_tokens <= MMF_MAX_TOKENS:
        return 0, False
    if w.type not in _QUANT_FREE:   # dequantized to F16, then as F16 (ggml_cuda_mul_mat_cublas)
        return n * k * 2 + n_tokens * (k + n) * 2, True
    if w.type == "F16":
        return n_tokens * (k + n) * 2, True
    if w.type == "BF16":
        return n_tokens * k * 2, True
    return 0, True


def cuda_pool(model: LlamaModel, s: Settings, lay: Layout, pl: Placement, n_kv: int | None = None,
              n_tokens: int | None = None) -> dict[int, PoolUse]:
    """The CUDA pool of each GPU after a micro-batch of n_tokens (default n_ubatch) with n_kv cells in
    use (default: the whole cache). Layers on the CPU run their large products on GPU 0 (op offload,
    batch >= 32) and their attention on the CPU."""
    hp = model.hp
    T = n_tokens if n_tokens is not None else lay.n_ubatch
    out: dict[int, PoolUse] = {}

    def add(dev: int, nbytes: int, cublas: bool, what: str) -> None:
        cur = out.get(dev) or PoolUse(0, False, "")
        if nbytes > cur.bytes:
            cur = PoolUse(nbytes, cur.cublas, what)
        cur.cublas = cur.cublas or cublas
        out[dev] = cur

    for il in range(hp.n_layer):
        dev = pl.dev_layer[il]
        on_gpu = dev < pl.n_gpu
        mm_dev = dev if on_gpu else (0 if pl.n_gpu and T >= MIN_OFFLOAD_BATCH else None)
        p = f"blk.{il}."
        if mm_dev is not None:
            for suffix in _MATMUL_SUFFIXES:
                w = model.weights.get(p + suffix)
                if w is not None:
                    add(mm_dev, *_matmul_scratch(w, T), suffix.split(".")[0])
            for suffix in _EXPERT_SUFFIXES:
                w = model.weights.get(p + suffix)
                if w is not None:
                    add(mm_dev, *_matmul_scratch(w, T, max(1, hp.n_expert_used)), suffix.split(".")[0])
        if not on_gpu or lay.flash_attn or T <= MMF_MAX_TOKENS or not hp.n_head_kv[il]:
            continue
        cells = lay.cells_swa if hp.is_swa(il) else lay.cells
        kv = min(cells, n_kv) if n_kv is not None else cells
        k_f32 = hp.head_k * kv * hp.n_head_kv[il] * lay.n_stream * 4
        kqv = (kv * T + hp.head_v * T) * hp.n_head * 2
        add(dev, k_f32, True, "KQ")
        add(dev, kqv, True, "KQV")
    for dev, use in out.items():
        use.bytes = _pad(use.bytes, CUDA_POOL_GRANULARITY) if use.bytes else 0
    return out


# ---- one configuration, every device ----

@dataclass
class DeviceUse:
    backend: int
    name: str
    model_bytes: int
    kv_bytes: int
    compute_bytes: int
    overhead_bytes: int                # everything below, summed
    memory_bytes: int | None = None
    pool_bytes: int = 0                # the CUDA pool after a full micro-batch at a full context
    cublas_bytes: int = 0
    rounding_bytes: int = 0            # the logged buffers rounded up to 2 MiB pages

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.kv_bytes + self.compute_bytes + self.overhead_bytes

    def row(self) -> dict[str, Any]:
        out = {"device": self.name, "model_buffer_bytes": self.model_bytes, "kv_cache_bytes": self.kv_bytes,
               "compute_buffer_bytes": self.compute_bytes, "overhead_bytes": self.overhead_bytes,
               "total_bytes": self.total_bytes}
        if self.backend >= 0 and self.name.startswith("CUDA") and "Host" not in self.name:
            out["cuda_pool_bytes"] = self.pool_bytes
            out["cublas_bytes"] = self.cublas_bytes
        if self.memory_bytes is not None:
            out["memory_bytes"] = self.memory_bytes
            out["fits"] = self.total_bytes <= self.memory_bytes
            out["headroom_bytes"] = self.memory_bytes - self.total_bytes
        return out


def overhead_for(cc: tuple[int, int] | None) -> tuple[int, str]:
    """(bytes every GPU holds besides the buffers and the pool, after the first prompt without cuBLAS; note)."""
    m = MEASURED_OVERHEAD
    base = m["context_bytes"] + m["first_prompt_bytes"]
    note = (f"CUDA context {m['context_bytes'] / MIB:.0f} MiB + first-prompt kernels {m['first_prompt_bytes'] / MIB:.0f} "
            f"MiB (+ cuBLAS {m['cublas_bytes'] / MIB:.0f} MiB when an op runs in cuBLAS, + the CUDA pool, computed), "
            f"measured on {m['measured_on']}")
    if cc and cc[0] != MEASURED_ARCH:
        note += f"; not measured on sm_{cc[0]}{cc[1]}, used as is"
    return base, note


def _round_up(n: int) -> int:
    return _pad(n, CUDA_MALLOC_GRANULARITY) if n else 0


def device_overhead(mb: int, kv: int, cb: int, pool: PoolUse | None) -> tuple[int, int, int, int]:
    """(overhead, pool, cuBLAS, rounding) of one GPU after prompts have filled the context."""
    base, _ = overhead_for(None)
    pool_b = pool.bytes if pool else 0
    cublas = MEASURED_OVERHEAD["cublas_bytes"] if pool and pool.cublas else 0
    rounding = sum(_round_up(x) - x for x in (mb, kv, cb))
    return base + pool_b + cublas + rounding, pool_b, cublas, rounding


def usage(model: LlamaModel, s: Settings, n_gpu: int, ngl: int, mem_per_gpu: int | None,
          cc: tuple[int, int] | None) -> tuple[list[DeviceUse], Layout]:
    lay = layout(model, s)
    pl = placement(model, s, n_gpu, ngl)
    mb, kv, cb = model_buffers(model, pl), kv_buffers(model, s, lay, pl), compute(model, s, lay, pl)
    pools = cuda_pool(model, s, lay, pl) if n_gpu else {}
    devs = []
    for b in range(n_gpu):
        ovh, pool_b, cublas, rounding = device_overhead(mb.get(b, 0), kv.get(b, 0), cb.get(b, 0), pools.get(b))
        devs.append(DeviceUse(b, f"CUDA{b}", mb.get(b, 0), kv.get(b, 0), cb.get(b, 0), ovh, mem_per_gpu,
                              pool_bytes=pool_b, cublas_bytes=cublas, rounding_bytes=rounding))
    host = n_gpu
    devs.append(DeviceUse(host, "CUDA_Host/CPU" if n_gpu else "CPU", mb.get(host, 0), kv.get(host, 0),
                          cb.get(host, 0) + output_buffer_bytes(model, s), 0))
    return devs, lay


def fits(devs: list[DeviceUse], margin: int = 0) -> bool:
    return all(d.memory_bytes is None or d.total_bytes + margin <= d.memory_bytes for d in devs)


# ---- searches: the largest -ngl and context that fit ----

def max_gpu_layers(model: LlamaModel, s: Settings, n_gpu: int, mem: int, cc, margin: int = 0) -> int:
    """Largest -ngl whose devices fit. Memory grows with each layer moved to the GPU (its weights and
    KV cells); the compute buffer changes only between partial and full offload, so it is replayed
    at two points and the layer count solved in closed form, then checked once."""
    L = model.hp.n_layer
    full, _ = usage(model, s, n_gpu, L + 1, mem, cc)
    if fits(full, margin):
        return L + 1
    none, _ = usage(model, s, n_gpu, 0, mem, cc)
    if not fits(none, margin):
        return -1
    part, _ = usage(model, s, n_gpu, L, mem, cc)
    base = max(d.compute_bytes + d.overhead_bytes for d in part[:n_gpu])
    per_layer = []
    lay = layout(model, s)
    kv_full, kv_swa = kv_bytes_per_cell(model, s)
    for il in range(L):
        cells = lay.cells_swa if model.hp.is_swa(il) else lay.cells
        per_layer.append(model.layer_weight_bytes(il) + _kv_layer_bytes(model, s, il) * cells * lay.n_stream)
    room = (mem - margin) * n_gpu - base * n_gpu
    if s.profile["output_layer_first"]:
        out_b = _alloc_bytes(model.weights.get("output.weight") or model.weights["token_embd.weight"])
        room -= out_b
    # the last layers go first
    n, used = 0, 0
    for b in reversed(per_layer):
        if used + b > room:
            break
        used += b
        n += 1
    ngl = n + (1 if s.profile["output_layer_first"] else 0)
    ngl = max(0, min(ngl, L))
    while ngl > 0 and not fits(usage(model, s, n_gpu, ngl, mem, cc)[0], margin):
        ngl -= 1
    return ngl


def _kv_layer_bytes(model: LlamaModel, s: Settings, il: int) -> int:
    hp = model.hp
    return row_bytes(s.type_k.upper(), hp.n_head_kv[il] * hp.head_k) + row_bytes(s.type_v.upper(),
                                                                                 hp.n_head_kv[il] * hp.head_v)


def max_context(model: LlamaModel, s: Settings, n_gpu: int, ngl: int, mem: int, cc, margin: int = 0,
                cap: int | None = None) -> int | None:
    """Largest n_ctx (a multiple of 256) that fits with ngl layers on the GPUs. Every buffer is linear in
    the number of cells between the points where the compute buffer's peak moves, so two replays give
    the slope; the candidate is then checked and stepped down one padding quantum at a time."""
    cap = cap or max(model.n_ctx_train, 4096)
    step = 256

    def total(n: int) -> int:
        devs, _ = usage(model, replace(s, n_ctx=n), n_gpu, ngl, mem, cc)
        return max(d.total_bytes for d in devs[:n_gpu]) if n_gpu else devs[-1].total_bytes

    lo = step * max(1, s.n_parallel)
    if total(lo) + margin > mem:
        return None
    if total(cap) + margin <= mem:
        return cap
    t_lo, t_hi = total(lo), total(cap)
    slope = (t_hi - t_lo) / (cap - lo)
    n = int(lo + (mem - margin - t_lo) / slope) if slope > 0 else cap
    n = max(lo, min(cap, n // step * step))
    for _ in range(64):
        if total(n) + margin <= mem:
            nxt = n + step
            if nxt > cap or total(nxt) + margin > mem:
                return n
            n = nxt
        else:
            n -= step
            if n < lo:
                return None
    return n


def fit_like_llama(model: LlamaModel, s: Settings, n_gpu: int, mem: int, cc) -> tuple[int, int]:
    """What `llama-server --fit on` (the default since ~b7000) settles on: it keeps 1 GiB free per
    device, first shrinks a context the user did not set down to --fit-ctx 4096, then moves layers
    to the CPU (common/fit.cpp, llama_params_fit)."""
    ctx = s.n_ctx or model.n_ctx_train
    L = model.hp.n_layer
    full_ok = fits(usage(model, replace(s, n_ctx=ctx), n_gpu, L + 1, mem, cc)[0], FIT_MARGIN_BYTES)
    if not full_ok and not s.ctx_given:
        best = max_context(model, s, n_gpu, L + 1, mem, cc, FIT_MARGIN_BYTES, cap=ctx)
        ctx = best if best and best >= FIT_MIN_CTX else min(ctx, FIT_MIN_CTX)
    ngl = max_gpu_layers(model, replace(s, n_ctx=ctx), n_gpu, mem, cc, FIT_MARGIN_BYTES)
    return max(ngl, 0), ctx


# ---- command lines ----

def server_command(model: LlamaModel, s: Settings, ngl: int, n_ctx: int, model_arg: str) -> str:
    parts = ["llama-server", "-m", _quote(model_arg), "-c", str(n_ctx), "-ngl", str(ngl)]
    if s.n_parallel != 1 or s.profile["default_parallel"] != 1:
        parts += ["-np", str(s.n_parallel)]
        if s.kv_unified and not s.profile["default_unified"]:
            parts.append("--kv-unified")
        if not s.kv_unified and s.profile["default_unified"]:
            parts.append("--no-kv-unified")
    if s.flash_attn != s.profile["default_fa"]:
        parts += ["-fa", s.flash_attn] if s.profile["default_fa"] == "auto" else (["-fa"] if s.flash_attn == "on" else [])
    if s.type_k != "f16":
        parts += ["-ctk", s.type_k]
    if s.type_v != "f16":
        parts += ["-ctv", s.type_v]
    if s.n_batch != 2048:
        parts += ["-b", str(s.n_batch)]
    if s.n_ubatch != 512:
        parts += ["-ub", str(s.n_ubatch)]
    if s.tensor_split:
        parts += ["-ts", ",".join(f"{x:g}" for x in s.tensor_split)]
    if s.profile["fit"]:
        parts += ["--fit", "off"]  # the values above already fit; keep llama.cpp from changing them
    return " ".join(parts)


def _quote(text: str) -> str:
    return text if re.fullmatch(r"[\w./:@+-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def ollama_version(text: str | None) -> tuple[tuple[int, int, int], dict[str, Any]]:
    ver = text or OLLAMA_NEWEST
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", str(ver).strip())
    if not m:
        raise UsageError(f"--ollama {text!r} is not an Ollama version", hint="use MAJOR.MINOR.PATCH, e.g. 0.9.0")
    v = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
    row = OLLAMA_DEFAULTS[0]
    for r in OLLAMA_DEFAULTS:
        if v >= r["from"]:
            row = r
    return v, row


def ollama_num_ctx(row: dict[str, Any], gpu_memory: int | None) -> int:
    if isinstance(row["num_ctx"], int):
        return row["num_ctx"]
    mem = gpu_memory or 0
    return 4096 if mem < 24 * GIB else 32768 if mem < 48 * GIB else 262144


def ollama_flash_attn(row: dict[str, Any], arch: str) -> bool:
    fa = row["flash_attention"]
    if isinstance(fa, bool):
        return fa
    return arch in ("gpt-oss", "qwen3", "qwen3moe", "gemma3", "qwen3vl")


def ollama_settings(n_ctx: int, ngl: int, s: Settings, layers: int) -> dict[str, Any]:
    env = {}
    if s.flash_attn == "on":
        env["OLLAMA_FLASH_ATTENTION"] = "1"
    if s.type_k != "f16":
        env["OLLAMA_KV_CACHE_TYPE"] = s.type_k
    if s.n_parallel != 1:
        env["OLLAMA_NUM_PARALLEL"] = str(s.n_parallel)
    params = {"num_ctx": n_ctx // max(1, s.n_parallel)}
    if ngl <= layers:
        params["num_gpu"] = ngl
    if s.n_batch != 512:
        params["num_batch"] = s.n_batch
    return {"env": env, "modelfile": [f"PARAMETER {k} {v}" for k, v in params.items()]}


# ---- the engine's flags and entry point (commands/estimate.py builds its parser from these) ----

from gpu_preflight.estimators.engines.base import Engine, Option, non_negative_int, positive_int  # noqa: E402


def _ngl(text: str) -> int | str:
    import argparse

    if str(text).strip().lower() in ("auto", "-1"):
        return "auto"
    if str(text).strip().lower() in ("all", "999", "99"):
        return 999
    try:
        return non_negative_int(text, upper=100_000)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: use a number of layers, all, or auto") from None


def _split(text: str) -> list[float]:
    import argparse

    try:
        vals = [float(x) for x in re.split(r"[,/]", str(text)) if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use proportions like 3,1") from None
    if not vals or any(not math.isfinite(v) or v < 0 for v in vals) or not any(vals):
        raise argparse.ArgumentTypeError(f"{text!r}: use non-negative proportions like 3,1")
    return vals


def _ctx(text: str) -> int:
    return non_negative_int(text, upper=16_777_216)


COMMON_OPTIONS = (
    Option("--ctx", "ctx", "context size -c (tokens, all slots together; 0 = the model's training context)",
           type=_ctx, metavar="N"),
    Option("--batch-size", "batch_size", "logical batch -b (default 2048)", type=positive_int),
    Option("--ubatch-size", "ubatch_size", "micro-batch -ub (default 512): sizes the compute buffer",
           type=positive_int),
    Option("--parallel", "parallel", "slots -np sharing the KV cache", type=positive_int),
    Option("--flash-attn", "flash_attn", "flash attention -fa (default auto in current builds)",
           choices=("on", "off", "auto")),
    Option("--cache-type-k", "cache_type_k", "K cache type -ctk (default f16)", choices=KV_TYPES),
    Option("--cache-type-v", "cache_type_v", "V cache type -ctv (default f16; quantized needs flash attention)",
           choices=KV_TYPES),
    Option("--n-gpu-layers", "n_gpu_layers", "layers on the GPU -ngl: a number, all, or auto (fit)", type=_ngl,
           metavar="N|auto"),
    Option("--tensor-split", "tensor_split", "-ts: share of layers per GPU, e.g. 3,1", type=_split, metavar="A,B"),
    Option("--quant", "quant", "for a config/catalog model: the llama.cpp file type to predict, e.g. Q4_K_M",
           metavar="TYPE"),
)
LLAMA_OPTIONS = COMMON_OPTIONS + (
    Option("--llama-cpp", "llama_cpp", "llama.cpp build whose defaults and layout to model, e.g. b6150 "
           f"(default: the newest known, {VERSIONS[NEWEST]['label']})", metavar="VER"),
)
OLLAMA_OPTIONS = COMMON_OPTIONS + (
    Option("--ollama", "ollama", f"Ollama release whose defaults to apply (default {OLLAMA_NEWEST})", metavar="VER"),
)


def _load_model(source, o: dict[str, Any]) -> LlamaModel:
    if source.origin == "gguf":
        if o.get("quant"):
            raise UsageError("--quant applies to a config or catalog model; this file is already a GGUF "
                             f"({_file_type_name(source.metadata.get('general.file_type')) or 'quantized'})", hint="drop --quant")
        return model_from_gguf(source)
    if source.kind == "diffusion" or source.components:
        raise UsageError("llama.cpp runs LLMs", hint="use --engine diffusers for a pipeline")
    if not o.get("quant"):
        raise UsageError("llama.cpp needs a GGUF: pass a .gguf file (local or org/name/file.gguf on the Hub), or add "
                         "--quant TYPE to predict the GGUF of this model", hint="e.g. --quant Q4_K_M")
    from gpu_preflight.models.gguf_quant import parse_ftype

    return model_from_config(source, parse_ftype(o["quant"]))


def _settings(model: LlamaModel, o: dict[str, Any], engine: str, targets: list) -> tuple[Settings, list[str]]:
    notes: list[str] = []
    if engine == "ollama":
        ver, row = ollama_version(o.get("ollama"))
        mem = targets[0].memory_bytes if targets else None
        s = Settings(version=NEWEST, n_ctx=0, n_batch=row["num_batch"], n_ubatch=row["num_batch"],
                     n_parallel=row["parallel_value"], kv_unified=False,
                     flash_attn="on" if ollama_flash_attn(row, model.hp.arch) else "off",
                     type_k=row["kv_cache_type"], type_v=row["kv_cache_type"], n_gpu_layers="auto")
        num_ctx = ollama_num_ctx(row, mem)
        s.n_ctx = num_ctx * s.n_parallel
        notes.append(f"Ollama {'.'.join(map(str, ver))} defaults: num_ctx {num_ctx}, num_parallel {s.n_parallel}, "
                     f"num_batch {s.n_batch}, flash attention {s.flash_attn}, KV cache {s.type_k} "
                     f"(source: {row['source']})")
        notes.append("Ollama runs llama.cpp with num_ctx x OLLAMA_NUM_PARALLEL cells, one slot each, and picks "
                     "num_gpu itself; the layer count below is the one that fits")
    else:
        vkey, era = resolve_version(o.get("llama_cpp"))
        prof = VERSIONS[vkey]
        s = Settings(version=vkey, n_ctx=prof["default_ctx"], n_parallel=prof["default_parallel"],
                     kv_unified=prof["default_unified"], flash_attn=prof["default_fa"],
                     n_gpu_layers=prof["default_ngl"], era=era)
        if not o.get("llama_cpp"):
            notes.append(f"llama.cpp {prof['label']} defaults assumed; pass --llama-cpp VER for another build")
    if o.get("ctx") is not None:
        s.n_ctx, s.ctx_given = o["ctx"], True
    if o.get("batch_size"):
        s.n_batch = o["batch_size"]
    if o.get("ubatch_size"):
        s.n_ubatch = o["ubatch_size"]
    if o.get("parallel"):
        s.n_parallel = o["parallel"]
        if engine == "ollama":
            s.n_ctx = (s.n_ctx // max(1, s.n_parallel)) * s.n_parallel if s.ctx_given else \
                ollama_num_ctx(ollama_version(o.get("ollama"))[1], targets[0].memory_bytes if targets else None) \
                * s.n_parallel
    if o.get("flash_attn"):
        s.flash_attn = o["flash_attn"]
    if o.get("cache_type_k"):
        s.type_k = o["cache_type_k"]
    if o.get("cache_type_v"):
        s.type_v = o["cache_type_v"]
    if o.get("n_gpu_layers") is not None:
        s.n_gpu_layers, s.ngl_given = o["n_gpu_layers"], True
    if o.get("tensor_split"):
        s.tensor_split = o["tensor_split"]
    if s.type_v in _QUANT_KV and not flash_attn_enabled(model, s):
        raise UsageError(f"--cache-type-v {s.type_v} needs flash attention, which is off here",
                         hint="add --flash-attn on (llama.cpp refuses a quantized V cache without it)")
    if s.n_ubatch > s.n_batch:
        s.n_ubatch = s.n_batch
    return s, notes


def run_engine(source, o: dict[str, Any], targets: list, common: dict[str, Any], engine: str = "llama.cpp") -> dict:
    from gpu_preflight import __version__
    from gpu_preflight.estimators.plan import REPORT_SCHEMA, REPORT_SCHEMA_VERSION

    model = _load_model(source, o)
    s, notes = _settings(model, o, engine, targets)
    first = targets[0] if targets else None
    n_gpu = first.count if first else 0
    mem = first.memory_bytes if first else None
    cc = first.cc if first else None
    L = model.hp.n_layer
    assumptions = list(model.notes) + notes

    ngl_auto = s.n_gpu_layers == "auto"
    if ngl_auto and first is not None:
        ngl, ctx = fit_like_llama(model, s, n_gpu, mem, cc)
        if not s.ctx_given:
            s.n_ctx = ctx
        assumptions.append(f"-ngl auto: llama.cpp's fit keeps {FIT_MARGIN_BYTES // MIB} MiB free per GPU, shrinks an "
                           f"unset context toward {FIT_MIN_CTX}, then moves layers to the CPU (common/fit.cpp)")
    elif ngl_auto:
        ngl = L + 1
    else:
        ngl = min(int(s.n_gpu_layers), L + 1)
    devs, lay = usage(model, s, n_gpu, ngl, mem, cc)
    max_ngl = max_gpu_layers(model, s, n_gpu, mem, cc) if first else None
    max_ctx = max_context(model, s, n_gpu, min(ngl, L + 1), mem, cc) if first and ngl > 0 else None
    max_ctx_full = max_context(model, s, n_gpu, L + 1, mem, cc) if first else None
    gpu_devs = devs[:n_gpu]
    peak_dev = max(gpu_devs, key=lambda d: d.total_bytes, default=devs[-1])
    peak = peak_dev.total_bytes
    ovh, ovh_note = overhead_for(cc)
    assumptions.append(f"process overhead per GPU {ovh / GIB:.2f} GiB: {ovh_note}")
    pool_dev = max(gpu_devs, key=lambda d: d.pool_bytes, default=None)
    if pool_dev is not None and pool_dev.pool_bytes:
        assumptions.append(f"CUDA pool {pool_dev.pool_bytes / MIB:.0f} MiB on {pool_dev.name}: ggml-cuda's scratch for "
                           f"the largest op of a {lay.n_ubatch}-token micro-batch once the context is full "
                           f"(never given back){'; cuBLAS runs (no flash attention or unquantized weights)' if pool_dev.cublas_bytes else ''}")
    assumptions.append(f"n_ctx {lay.n_ctx} cells ({lay.n_stream} stream{'s' if lay.n_stream > 1 else ''} of "
                       f"{lay.cells}), micro-batch {lay.n_ubatch}, flash attention "
                       f"{'on' if lay.flash_attn else 'off'}")
    fa_note = _fa_note(model, s, lay)
    if fa_note:
        assumptions.append(fa_note)
    if source.origin == "gguf":
        model_arg = source.path or (source.source_url or source.name).replace("/blob/", "/resolve/")
    else:
        model_arg = f"{source.name.rsplit('/', 1)[-1]}-{model.file_type}.gguf"
        assumptions.append(f"{model_arg} stands for the {model.file_type} GGUF of the model (convert_hf_to_gguf.py, "
                           f"then llama-quantize ... {model.file_type}, or a published one)")
    cmd_ngl = ngl if ngl <= L else L + 1
    command = server_command(model, replace(s, n_ctx=lay.n_ctx), cmd_ngl, lay.n_ctx, model_arg)
    llama = {
        "version": VERSIONS[s.version]["label"],
        "model_buffer_bytes": sum(d.model_bytes for d in gpu_devs),
        "kv_cache_bytes": sum(d.kv_bytes for d in devs),
        "compute_buffer_bytes": sum(d.compute_bytes for d in gpu_devs),
        "host_model_buffer_bytes": devs[-1].model_bytes,
        "host_kv_cache_bytes": devs[-1].kv_bytes,
        "host_compute_buffer_bytes": devs[-1].compute_bytes,
        "per_device": [d.row() for d in devs],
        "n_gpu_layers": ngl,
        "n_layers": L + 1,
        "max_gpu_layers_that_fit": max_ngl,
        "n_ctx": lay.n_ctx,
        "max_ctx_that_fits": max_ctx,
        "max_ctx_that_fits_fully_offloaded": max_ctx_full,
        "flash_attn": lay.flash_attn,
        "cache_type_k": s.type_k, "cache_type_v": s.type_v,
        "n_parallel": s.n_parallel, "kv_unified": s.kv_unified, "n_ubatch": lay.n_ubatch, "n_batch": s.n_batch,
        "file_type": model.file_type,
        "command": command,
    }
    if engine == "ollama":
        llama["ollama"] = ollama_settings(lay.n_ctx, ngl, s, L)
        env = " ".join(f"{k}={v}" for k, v in llama["ollama"]["env"].items())
        llama["command"] = (env + " " if env else "") + "ollama serve   # Modelfile: " + "; ".join(
            llama["ollama"]["modelfile"])
    fits_rows = []
    for t in targets:
        tdevs = devs if t is first else usage(model, s, t.count, ngl, t.memory_bytes, t.cc)[0]
        tpeak = max((d.total_bytes for d in tdevs[:t.count]), default=0)
        fits_rows.append({"gpu": t.name, "gpu_id": t.gpu_id, "count": t.count, "memory_bytes": t.memory_bytes,
                          "memory_source": t.source, "fits": tpeak <= t.memory_bytes,
                          "headroom_bytes": t.memory_bytes - tpeak, "peak_process_bytes_per_gpu": tpeak})
    breakdown = {"weights": llama["model_buffer_bytes"], "kv_cache": sum(d.kv_bytes for d in gpu_devs),
                 "compute_buffer": llama["compute_buffer_bytes"],
                 "cuda_context_and_libraries": sum(d.overhead_bytes - d.pool_bytes for d in gpu_devs),
                 "cuda_pool": sum(d.pool_bytes for d in gpu_devs)}
    report = {
        "schema": REPORT_SCHEMA, "schema_version": REPORT_SCHEMA_VERSION, "tool_version": __version__,
        "model": model.name, "kind": "llm", "engine": engine,
        "workload": {"n_ctx": lay.n_ctx, "n_parallel": s.n_parallel, "n_batch": s.n_batch, "n_ubatch": lay.n_ubatch,
                     "flash_attn": lay.flash_attn, "cache_type_k": s.type_k, "cache_type_v": s.type_v,
                     "n_gpu_layers": ngl},
        "architecture": {"arch": model.hp.arch, "layers": L, "embedding": model.hp.n_embd, "heads": model.hp.n_head,
                         "kv_heads": max(model.hp.n_head_kv), "head_dim": model.hp.head_k, "vocab_size": model.hp.n_vocab,
                         "context_train": model.n_ctx_train, "sliding_window": model.hp.n_swa or None,
                         "experts": model.hp.n_expert or None, "file_type": model.file_type},
        "peak_process_bytes": peak,
        "peak_allocated_bytes": peak - peak_dev.overhead_bytes + peak_dev.pool_bytes if n_gpu else peak,
        "breakdown": breakdown,
        "fits": fits_rows,
        "max_context_tokens": max_ctx,
        "max_batch": None,
        "suggestions": _suggestions(model, s, n_gpu, mem, cc, ngl, max_ngl, max_ctx, lay, fits_rows, model_arg),
        "assumptions": assumptions,
        "llama_cpp": llama,
    }
    return report


def _fa_note(model: LlamaModel, s: Settings, lay: Layout) -> str | None:
    if s.flash_attn == "auto" and not lay.flash_attn:
        return f"-fa auto leaves flash attention off: head size {model.hp.head_k} has no CUDA flash-attention kernel"
    return None


def _suggestions(model, s, n_gpu, mem, cc, ngl, max_ngl, max_ctx, lay, fits_rows, model_arg) -> list[dict[str, Any]]:
    if not fits_rows or fits_rows[0]["fits"] or not n_gpu:
        return []
    L = model.hp.n_layer
    out: list[dict[str, Any]] = []

    def add(change: str, s2: Settings, ngl2: int, n_ctx: int) -> None:
        devs, lay2 = usage(model, s2, n_gpu, ngl2, mem, cc)
        peak = max(d.total_bytes for d in devs[:n_gpu])
        out.append({"change": change, "flag": server_command(model, replace(s2, n_ctx=lay2.n_ctx), min(ngl2, L + 1),
                                                             lay2.n_ctx, model_arg),
                    "peak_process_bytes": peak, "fits": peak <= mem, "headroom_bytes": mem - peak})

    if max_ngl is not None and 0 <= max_ngl < ngl:
        add(f"offload {max_ngl} of {L + 1} layers to the GPU (the rest run on the CPU, slower)", s, max_ngl, lay.n_ctx)
    full_ctx = max_context(model, s, n_gpu, L + 1, mem, cc)
    if full_ctx and full_ctx < lay.n_ctx:
        add(f"context {full_ctx} with every layer on the GPU", replace(s, n_ctx=full_ctx), L + 1, full_ctx)
    if s.type_k == "f16" and any(model.hp.head_k == h for h in FA_HEAD_DIMS):
        s8 = replace(s, type_k="q8_0", type_v="q8_0", flash_attn="on")
        add("8-bit KV cache (-ctk q8_0 -ctv q8_0, with flash attention): half the KV bytes", s8, ngl, lay.n_ctx)
    if not lay.flash_attn and model.hp.head_k in FA_HEAD_DIMS:
        add("flash attention (-fa on): no n_ctx x n_ubatch x n_head score matrix", replace(s, flash_attn="on"), ngl,
            lay.n_ctx)
    if lay.n_ubatch > 256:
        add("smaller micro-batch (-ub 256): halves the compute buffer's logits and scores", replace(s, n_ubatch=256),
            ngl, lay.n_ctx)
    out.sort(key=lambda x: (not x["fits"], x["peak_process_bytes"]))
    return out


def run_llama(source, o, targets, common):
    return run_engine(source, o, targets, common, engine="llama.cpp")


def run_ollama(source, o, targets, common):
    return run_engine(source, o, targets, common, engine="ollama")


ENGINES = (
    Engine("llama.cpp", ("gguf", "llm"), "llama.cpp llama-server: GGUF weights, KV cache and compute buffers per "
           "device", LLAMA_OPTIONS, run_llama, default_for=("gguf",), aliases=("llama-cpp", "llamacpp", "llama-server"),
           selected_by=("llama_cpp", "quant", "n_gpu_layers", "ctx")),
    Engine("ollama", ("gguf", "llm"), "Ollama: llama.cpp with Ollama's defaults for the release given", OLLAMA_OPTIONS,
           run_ollama, selected_by=("ollama",)),
)
