"""vLLM's start-up memory accounting, release by release (V1 engine, vllm 0.8.5 to 0.33.0).

vLLM does not allocate on demand. At start-up each GPU worker
1. takes a snapshot after creating its CUDA context and asks for
   `requested = gpu_memory_utilization x total`, where total is what CUDA reports
   (`torch.cuda.mem_get_info()[1]`, a few hundred MiB under nvidia-smi's figure)
   (vllm/v1/worker/gpu_worker.py init_device),
2. loads its share of the weights ("Model loading took X GiB"),
3. runs one dummy forward of `max_num_batched_tokens` tokens and one dummy sampler over
   `max_num_seqs` rows (top_k = vocab-1, top_p = 0.9) and records PyTorch's peak
   (gpu_model_runner.py profile_run, _dummy_run, _dummy_sampler_run),
4. subtracts weights + that peak increase + the non-PyTorch memory that appeared since the
   snapshot (NCCL, custom all-reduce, kernels) and, from 0.20, its CUDA-graph estimate:
   the rest is "Available KV cache memory" (gpu_worker.py determine_available_memory,
   utils memory_profiling),
5. cuts that into blocks of `block_size` tokens per layer (kv_cache_utils.py), logs
   "GPU KV cache size: N tokens" and "Maximum concurrency for L tokens per request: Xx",
   and refuses to start when one `max_model_len` request does not fit.

Which rule applies in which release is data: src/gpu_preflight/data/vllm.json, each switch
with the file it was read from. The numbers vLLM cannot derive from its own source either (the
non-PyTorch increase, CUDA-graph size) are measured constants there, with their logs.
docs/accuracy.md compares this module with published start-up logs (calibration/vllm/).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from typing import Any

from gpu_preflight.errors import UsageError
from gpu_preflight.estimators.arch import DTYPE_BYTES, LlmArch
from gpu_preflight.estimators.weights import Tensor, weight_tensors

GIB = 1 << 30
KV_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
QUANTIZATIONS = ("fp8", "awq", "gptq", "compressed-tensors", "bitsandbytes", "mxfp4")


@lru_cache(maxsize=1)
def releases() -> dict[str, Any]:
    return json.loads(resources.files("gpu_preflight.data").joinpath("vllm.json").read_text())


def _vt(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(text).split("."))


def resolve_release(text: str | None) -> tuple[str, dict[str, Any], str | None]:
    """(modelled release, its switches, a note when the user's version maps to an older row)."""
    data = releases()
    newest = data["newest_modelled"]
    if not text:
        return newest, data["releases"][newest], None
    raw = str(text).strip().lstrip("v")
    try:
        want = _vt(raw.split("+")[0].split(".post")[0].split("rc")[0].split(".dev")[0])
    except ValueError:
        raise UsageError(f"--vllm {text!r} is not a version", hint="e.g. --vllm 0.10.2") from None
    rows = sorted(data["releases"], key=_vt)
    if want < _vt(rows[0]):
        raise UsageError(f"vLLM {raw} is older than the oldest modelled release ({rows[0]})",
                         hint=f"use --vllm {rows[0]} or newer (the V1 engine's accounting)")
    if want > _vt(newest):
        why = next((v for k, v in data["not_modelled"].items() if want >= _vt(k)), "")
        raise UsageError(f"vLLM {raw} is newer than the newest modelled release ({newest})",
                         hint=f"use --vllm {newest}" + (f"; {why}" if why else ""))
    row = max((r for r in rows if _vt(r) <= want), key=_vt)
    note = None if _vt(row) == want else f"vLLM {raw} modelled with the rules read at {row} (the newest read release not after it)"
    return row, data["releases"][row], note


@dataclass
class VllmSettings:
    """The flags of `vllm serve` that change memory. None = the release's default."""
    gpu_memory_utilization: float | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    kv_cache_dtype: str | None = None  # None/"auto" = model dtype; fp8* = 1 byte
    cuda_graphs: bool = True           # False = --enforce-eager
    max_model_len: int | None = None
    block_size: int | None = None
    quantization: str | None = None
    version: str | None = None
    flashinfer_sampler: bool = False   # FlashInfer installed (vllm <= 0.11.0 uses it for sampling then)
    entrypoint: str = "serve"          # "serve" (vllm serve) or "llm" (the offline LLM(...) class): other defaults
    nodes: int = 1                     # nodes the --gpu NAME:COUNT GPUs are repeated on (COUNT per node)


@dataclass
class VllmEstimate:
    version: str
    total_bytes: int                 # GPU memory as CUDA reports it
    budget_bytes: int                # gpu_memory_utilization x total ("requested memory")
    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    cuda_graphs_in_budget: bool
    kv_cache_bytes: int              # "Available KV cache memory" (may be <= 0)
    kv_bytes_per_token: int          # all layers, one rank, before block rounding
    max_tokens_in_cache: int         # "GPU KV cache size: N tokens"
    num_blocks: int
    block_size: int
    max_model_len: int
    max_concurrency: float
    needed_bytes: int                # KV for one max_model_len request
    largest_max_model_len: int       # vLLM's own estimate (binary search over the same formula)
    starts: bool
    refusal: str | None
    settings: VllmSettings
    assumptions: list[str] = field(default_factory=list)
    runner: str = "v1"               # vLLM's model runner: "v1" or "v2" (vllm/v1/worker/gpu/)
    cuda_graph_counts: tuple[int, int] = (0, 0)  # (PIECEWISE, FULL) graphs vLLM captures
    state_bytes_per_request: int = 0  # Mamba / linear-attention state of one request (all such layers, one rank)


# ---- total memory, defaults ----

def cuda_total_bytes(gpu_id: str | None, catalog_bytes: int) -> tuple[int, str]:
    """Total as CUDA reports it: vLLM's own logged figure for this GPU where known, else the
    catalog total (nvidia-smi's), which is a few hundred MiB more than CUDA's."""
    row = releases()["cuda_total_gib"].get(gpu_id or "")
    if row:
        return int(row["gib"] * GIB), f"{row['gib']} GiB as vLLM logged it on this GPU ({row['source']})"
    return catalog_bytes, ("catalog total used as CUDA's total; CUDA reports 0.4-0.6 GiB less than nvidia-smi on "
                           "the GPUs where vLLM logged it (data/vllm.json cuda_total_gib), so the budget may be "
                           "that x utilization too high")


def default_batch_limits(row: dict[str, Any], total_bytes: int, gpu_name: str, entrypoint: str = "serve") -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) that `vllm serve` (or the offline LLM class) picks for this GPU."""
    tiers = releases()["default_tiers"][row["default_tiers"]]
    llm = releases()["default_tiers_llm_class"]
    name = (gpu_name or "").lower()
    for t in tiers["tiers"]:
        if total_bytes >= t["min_gib"] * GIB and not any(x in name for x in t["exclude"]):
            if entrypoint == "llm":
                return llm["large"]["max_num_batched_tokens"], llm["large"]["max_num_seqs"]
            return t["max_num_batched_tokens"], t["max_num_seqs"]
    if entrypoint == "llm":
        return llm["else"]["max_num_batched_tokens"], llm["else"]["max_num_seqs"]
    return tiers["else"]["max_num_batched_tokens"], tiers["else"]["max_num_seqs"]


# ---- weights per rank ----

def _quant_config(arch: LlmArch, quantization: str | None) -> tuple[dict | None, str | None]:
    """The quantization_config the weights follow, and a note when it was synthesized."""
    q = arch.quant if isinstance(arch.quant, dict) else None
    if not quantization:
        return q, None
    if q:
        method = str(q.get("quant_method", "")).lower()
        if quantization == method or (quantization == "fp8" and "fp8" in method):
            return q, None
        return q, (f"--quantization {quantization} given; the checkpoint's own quantization_config "
                   f"({method or 'unnamed'}) decides the stored layout")
    if quantization == "fp8":
        return {"quant_method": "fp8", "activation_scheme": "dynamic"}, (
            "--quantization fp8 on a 16-bit checkpoint: vLLM quantizes every linear layer to FP8 when loading "
            "(one scale per tensor); embeddings and lm_head stay 16-bit")
    if quantization == "bitsandbytes":
        return {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}, (
            "--quantization bitsandbytes on a 16-bit checkpoint: vLLM's in-flight 4-bit (NF4) quantization")
    if quantization == "mxfp4":
        return {"quant_method": "mxfp4"}, "MXFP4 layout: expert weights 4-bit + one scale per 32 weights"
    if quantization in ("awq", "gptq", "compressed-tensors"):
        return {"quant_method": "gptq" if quantization == "compressed-tensors" else quantization, "bits": 4,
                "group_size": 128}, (
            f"--quantization {quantization} but the config has no quantization_config: assumed 4-bit, group size "
            f"128 (the common {quantization} checkpoint); point at the quantized checkpoint for its exact layout")
    return None, None


def _is_replicated(name: str, arch: LlmArch, tp: int) -> bool:
    if ".norm" in name or name.endswith(("norm.weight", "q_norm", "k_norm", "kv_a_layernorm", "q_a_layernorm")):
        return True
    if "layers." in name and any(f".{k}" in name for k in ("k_proj", "v_proj")) and arch.kv_heads < tp:
        return True  # fewer KV heads than ranks: each rank keeps a copy (QKVParallelLinear)
    return "router" in name


def weights_per_rank(arch: LlmArch, dtype_bytes: int, tp: int, pp: int, quant: dict | None) -> int:
    """Weight bytes on the fullest rank: linear layers and experts split over TP (column/row
    parallel), norms and routers replicated, K/V projections replicated when there are fewer KV
    heads than ranks, the vocabulary padded to a multiple of 64 and split
    (vllm/model_executor/layers/vocab_parallel_embedding.py pad_vocab_size, DEFAULT_VOCAB_PADDING_SIZE);
    a pipeline stage holds ceil(layers / PP) layers, the first stage the embedding, the last the head."""
    a = replace(arch, quant=quant)
    ts: list[Tensor] = weight_tensors(a, dtype_bytes, dequantize_mxfp4=False, fused_experts=quant is None)
    vocab_pad = -(-arch.vocab // 64) * 64
    layer_bytes = embed = head = rest = 0
    for t in ts:
        if t.name in ("embed_tokens.weight", "lm_head.weight"):
            share = -(-(t.bytes * vocab_pad // arch.vocab) // tp)
            if t.name == "embed_tokens.weight":
                embed = share
            else:
                head = share
            continue
        share = t.bytes if _is_replicated(t.name, arch, tp) else -(-t.bytes // tp)
        if t.name.startswith("layers."):
            layer_bytes += share
        else:
            rest += share
    if pp == 1:
        return layer_bytes + embed + head + rest
    stage = layer_bytes * -(-arch.layers // pp) // max(arch.layers, 1)
    return stage + max(embed, (head or embed) + rest)


def rotary_cache_bytes(arch: LlmArch, dt: int) -> int:
    """The rotary embedding's cos/sin cache vLLM keeps on the GPU next to the weights: one buffer of
    [max_position_embeddings, rotary_dim] in the model dtype, shared by every layer
    (vllm/model_executor/layers/rotary_embedding/base.py RotaryEmbedding.__init__ registers
    cos_sin_cache = cat(cos, sin).to(dtype); get_rope caches one instance per shape). It is part of
    "Model loading took" (Llama-3.1-8B: 131072 x 128 x 2 B = 0.031 GiB over the parameters).
    MLA models rotate only the rope part of the head."""
    rot = arch.qk_rope_dim if arch.mla else arch.head_dim
    return (arch.max_positions or 0) * rot * dt


MXFP4_PAD = {  # (intermediate multiple, hidden multiple) per vLLM MXFP4 MoE backend
    "marlin": (128, 256),   # vllm/model_executor/layers/quantization/mxfp4.py create_weights @ v0.10.2
    "triton": (64, 1),
}


def mxfp4_backend(cc: tuple[int, int] | None) -> str:
    """vllm/model_executor/layers/quantization/mxfp4.py get_mxfp4_backend @ v0.10.2: compute
    capability below 9.0 takes Marlin; Hopper without FlashInfer takes the Triton kernels (Marlin when
    triton_kernels is missing: not modelled)."""
    return "marlin" if cc and cc < (9, 0) else "triton"


def mxfp4_expert_bytes(arch: LlmArch, tp: int, backend: str) -> tuple[int, int]:
    """(vLLM's MXFP4 expert bytes per rank as allocated, the same unpadded) for all MoE layers:
    w13 [E, 2I', H'/2] + w2 [E, H', I'/2] uint8, scales [E, 2I', H'/32] + [E, H', I'/32],
    biases [E, 2I'] + [E, H'] bf16, with I' = round_up(I/TP, a) and H' = round_up(H, b)."""
    ai, bh = MXFP4_PAD[backend]
    i_tp = arch.moe_intermediate // tp

    def one(i: int, h: int) -> int:
        return arch.experts * (2 * i * h // 2 + h * i // 2 + 2 * i * h // 32 + h * i // 32 + 2 * i * 2 + h * 2)

    layers = sum(1 for x in (arch.moe_layers or [True] * arch.layers) if x)
    padded = one(-(-i_tp // ai) * ai, -(-arch.hidden // bh) * bh) * layers
    plain = one(i_tp, arch.hidden) * layers
    return padded, plain


# ---- KV cache layout ----

@dataclass
class KvLayout:
    page_bytes: int                 # one block of one layer
    block_size: int
    kinds: list[str]                # per layer on this rank: "full" | "sliding" | "mamba"
    window: int | None
    hybrid: bool                    # sliding layers kept to their window (hybrid allocator)

    def groups(self) -> list[tuple[str, int]]:
        """vLLM's KV cache groups: (kind, layers in group); group size = the smallest type's count."""
        counts: dict[str, int] = {}
        for k in self.kinds:
            counts[k] = counts.get(k, 0) + 1
        if not self.hybrid or len(counts) == 1:
            return [("full" if not self.hybrid else next(iter(counts)), len(self.kinds))]
        size = min(counts.values())
        out = []
        for kind, n in counts.items():
            out += [(kind, size)] * (-(-n // size))
        return out

    def layer_blocks(self, kind: str, max_model_len: int, batched_tokens: int) -> int:
        """Blocks one request may need in one layer (KVCacheSpec.max_memory_usage_bytes / page)."""
        if kind == "mamba":
            return 1  # MambaSpec.max_memory_usage_bytes: one padded state page per request
        if kind == "sliding" and self.hybrid and self.window:
            tokens = min(self.window - 1 + batched_tokens, max_model_len)  # SlidingWindowSpec
            return -(-tokens // self.block_size) + 1
        return -(-max_model_len // self.block_size)  # FullAttentionSpec

    def needed_bytes(self, max_model_len: int, batched_tokens: int) -> int:
        return sum(self.layer_blocks(k, max_model_len, batched_tokens) for k in self.kinds) * self.page_bytes


def attention_page_bytes(arch: LlmArch, kv_bytes: int, tp: int, block_size: int) -> int:
    """Per-layer page: 2 x block x kv_heads/TP x head_dim x bytes (AttentionSpec.page_size_bytes);
    MLA: block x (kv_lora_rank + rope dim) x bytes, one latent, not split (MLAAttentionSpec)."""
    if arch.mla:
        return block_size * (arch.kv_lora_rank + arch.qk_rope_dim) * kv_bytes
    heads = max(arch.kv_heads // tp, 1)
    return 2 * block_size * heads * arch.head_dim * kv_bytes


def kv_layout(arch: LlmArch, kv_bytes: int, tp: int, pp: int, block_size: int, hybrid: bool,
              state: "StateSpec | None" = None) -> KvLayout:
    """The KV cache blocks of one rank. With Mamba / linear-attention layers (`state`), every
    layer's page is the attention page of the (raised) block size: the state page is padded to it
    (vllm/model_executor/models/config.py HybridAttentionMambaModelConfig)."""
    page = attention_page_bytes(arch, kv_bytes, tp, block_size)
    kinds = list(state.kinds if state else (arch.layer_kinds or ["full"] * arch.layers))
    kinds = [k for k in kinds if k != "none"]
    kinds = kinds[: -(-len(kinds) // pp)]
    if state:
        page = max(page, state.bytes)
    return KvLayout(page, block_size, kinds, arch.sliding_window, hybrid and any(k != "full" for k in kinds))


def default_block_size(arch: LlmArch, cc: tuple[int, int] | None) -> int:
    """16, except MLA: FlashMLA forces 64 on Hopper, CUTLASS MLA 128 on Blackwell
    (vllm/platforms/cuda.py check_and_update_config @ v0.11.0)."""
    if arch.mla and cc:
        if cc >= (10, 0):
            return 128
        if cc >= (9, 0):
            return 64
    return 16


# ---- Mamba / linear-attention state (hybrid models) ----

@dataclass
class StateSpec:
    kinds: list[str]   # per layer: "full" | "sliding" | "mamba" | "none" (no cache: MLP-only layers)
    bytes: int         # one layer's state for one request on one rank (MambaSpec.page_size_bytes, unpadded)
    family: str        # "gated-delta-net" | "mamba2" | "mamba1"
    detail: str


def _dtype_bytes(name: Any, default: int) -> int:
    return {"float32": 4, "float16": 2, "bfloat16": 2}.get(str(name or "").replace("torch.", ""), default)


def hybrid_state(config: dict | None, tp: int, dt: int) -> StateSpec | None:
    """The recurrent state vLLM keeps per request and layer for hybrid models, per
    vllm/model_executor/layers/mamba/mamba_utils.py MambaStateShapeCalculator (@ v0.19.0):
    - gated delta net (Qwen3-Next, Qwen3.5): conv (kernel-1) x (2 x k_heads x k_dim + v_heads x v_dim)/TP
      in the model dtype, temporal v_heads/TP x v_dim x k_dim in mamba_ssm_dtype (Qwen3.5 ships float32);
    - Mamba-2 (Nemotron-H, Granite-4.0-H): conv (kernel-1) x (heads x head_dim + 2 x groups x state)/TP,
      temporal heads/TP x head_dim x state;
    - Mamba-1 (Jamba): conv (kernel-1) x expand x hidden/TP, temporal expand x hidden/TP x state.
    None for a model without such layers."""
    if not isinstance(config, dict):
        return None
    from gpu_preflight.estimators.arch import text_part

    cfg = text_part(config)
    n = int(cfg.get("num_hidden_layers") or 0)
    ssm_dt = _dtype_bytes(cfg.get("mamba_ssm_dtype"), dt)
    if "linear_num_value_heads" in cfg:
        lt = cfg.get("layer_types")
        if isinstance(lt, list) and len(lt) == n:
            kinds = ["mamba" if t == "linear_attention" else "full" for t in lt]
        else:
            every = int(cfg.get("full_attention_interval") or 4)
            kinds = ["full" if (i + 1) % every == 0 else "mamba" for i in range(n)]
        nk, nv = int(cfg["linear_num_key_heads"]), int(cfg["linear_num_value_heads"])
        kd, vd = int(cfg["linear_key_head_dim"]), int(cfg["linear_value_head_dim"])
        kern = int(cfg.get("linear_conv_kernel_dim") or 4)
        conv = (kern - 1) * ((kd * nk * 2 + vd * nv) // tp) * dt
        temporal = (nv // tp) * vd * kd * ssm_dt
        return StateSpec(kinds, conv + temporal, "gated-delta-net",
                         f"gated delta net: conv {conv:,} B + temporal {temporal:,} B per layer and request")
    pattern = cfg.get("hybrid_override_pattern")
    if isinstance(pattern, str) and "M" in pattern:
        kinds = ["mamba" if c == "M" else "full" if c == "*" else "none" for c in pattern]
        heads, hdim = int(cfg["mamba_num_heads"]), int(cfg["mamba_head_dim"])
        return _mamba2(kinds, heads, hdim, int(cfg.get("n_groups") or 1), int(cfg["ssm_state_size"]),
                       int(cfg.get("conv_kernel") or 4), heads * hdim, tp, dt, ssm_dt)
    lt = cfg.get("layer_types")
    if isinstance(lt, list) and "mamba" in lt and "mamba_n_heads" in cfg:
        kinds = ["mamba" if t == "mamba" else "full" for t in lt]
        return _mamba2(kinds, int(cfg["mamba_n_heads"]), int(cfg["mamba_d_head"]), int(cfg.get("mamba_n_groups") or 1),
                       int(cfg["mamba_d_state"]), int(cfg.get("mamba_d_conv") or 4),
                       int(cfg.get("mamba_expand") or 2) * int(cfg["hidden_size"]), tp, dt, ssm_dt)
    if "attn_layer_period" in cfg and "mamba_d_state" in cfg:
        period, offset = int(cfg["attn_layer_period"]), int(cfg.get("attn_layer_offset") or 0)
        kinds = ["full" if i % period == offset else "mamba" for i in range(n)]
        inter = int(cfg.get("mamba_expand") or 2) * int(cfg["hidden_size"]) // tp
        conv = (int(cfg.get("mamba_d_conv") or 4) - 1) * inter * dt
        temporal = inter * int(cfg["mamba_d_state"]) * ssm_dt
        return StateSpec(kinds, conv + temporal, "mamba1", f"Mamba-1: conv {conv:,} B + temporal {temporal:,} B")
    return None


def _mamba2(kinds, heads, head_dim, groups, state, kernel, intermediate, tp, dt, ssm_dt) -> StateSpec:
    groups += 0 if groups % tp == 0 else tp - groups  # extra_groups_for_head_shards
    conv = (kernel - 1) * ((intermediate + 2 * groups * state) // tp) * dt
    temporal = (heads // tp) * head_dim * state * ssm_dt
    return StateSpec(kinds, conv + temporal, "mamba2", f"Mamba-2: conv {conv:,} B + temporal {temporal:,} B")


def hybrid_block_size(arch: LlmArch, kv_bytes: int, tp: int, block: int, state: StateSpec) -> int:
    """HybridAttentionMambaModelConfig.verify_and_update_config: the attention block size is raised
    to the smallest multiple of 16 (64 for MLA) whose page holds one state."""
    align = 64 if arch.mla else 16
    one = attention_page_bytes(arch, kv_bytes, tp, 1)
    need = align * -(-state.bytes // (align * one))
    return max(block, need)


# ---- the profile run ----

def forward_peak_bytes(arch: LlmArch, tokens: int, dt: int, tp: int) -> int:
    """Largest live set of one decoder layer for `tokens` tokens: residual + hidden, plus the MLP's
    gate_up output and activation (or the fused-MoE intermediate caches), or qkv + attention out."""
    h = arch.hidden
    base = 2 * tokens * h * dt
    if arch.mla:
        qkv = tokens * arch.heads * (arch.qk_head_dim * 2 + arch.v_head_dim) * dt // tp
    else:
        qkv = tokens * (2 * arch.heads + 2 * arch.kv_heads) * arch.head_dim * dt // tp
    if arch.is_moe:
        k, im = arch.experts_per_token, arch.moe_intermediate // tp
        mlp = tokens * k * (2 * im + im + h) * dt  # fused_moe intermediate_cache1/2/3
        if arch.shared_intermediate:
            mlp += tokens * 3 * arch.shared_intermediate * dt // tp
    else:
        mlp = tokens * 3 * arch.intermediate * dt // tp
    return base + max(qkv, mlp)


def sampler_bytes_per_logit(seqs: int, path: str) -> int:
    """data/vllm.json sampler_bytes_per_logit (measured on an H200: calibration/vllm/sampler-h200.jsonl). PyTorch's
    CUDA sort takes another algorithm for 2-127 rows (SortStable.cu segmented_sort_pairs_by_full_sort), which
    holds more: 50 bytes per logit, read from source and measured at 64 rows (calibration/vllm/sampler-h200-b.jsonl)."""
    row = releases()["sampler_bytes_per_logit"][path]
    if path == "sort" and 2 <= seqs < 128:
        return row["bytes_2_to_127_rows"]
    return row["bytes"]


def sampler_peak_bytes(arch: LlmArch, seqs: int, path: str) -> int:
    vocab = -(-arch.vocab // 64) * 64
    return seqs * vocab * sampler_bytes_per_logit(seqs, path)


def _sampler_line(path: str, seqs: int) -> str:
    if path == "forward":
        return "no sampler on this pipeline rank"
    per = sampler_bytes_per_logit(seqs, path)
    what = {"sort": "PyTorch top-k/top-p sort path", "flashinfer": "FlashInfer top-k/top-p",
            "triton": "Triton top-k/top-p kernel", "v2": "V2 runner, bf16 logits only, no top-k/top-p"}[path]
    how = {"sort": "measured on an H200" if per == 38 else "PyTorch's sort for 2-127 rows, measured on an H200 at 64",
           "flashinfer": "read from source", "triton": "measured on an H200, without the kernel's SM buffer",
           "v2": "read from source"}[path]
    return f"dummy sampler: {what} ({per} bytes per logit at its peak; {how})"


def activation_bytes(arch: LlmArch, s: VllmSettings, row: dict[str, Any], dt: int, last_rank: bool,
                     runner: str = "v1") -> tuple[int, str]:
    tokens, seqs = s.max_num_batched_tokens, min(s.max_num_seqs, s.max_num_batched_tokens)
    forward = forward_peak_bytes(arch, tokens, dt, s.tensor_parallel)
    if not last_rank:
        return forward, "forward"
    path = "v2" if runner == "v2" else row["sampler"]
    if path == "sort" and s.flashinfer_sampler:
        path = "flashinfer"
    if path == "triton" and seqs < 8:
        path = "sort"
    sampler = sampler_peak_bytes(arch, seqs, path) + tokens * arch.hidden * dt  # hidden states stay alive
    return max(forward, sampler), path


# ---- model runner and CUDA graphs ----

def model_runner(row: dict[str, Any], version: str, arch: LlmArch, architectures: list[str], hybrid: bool,
                 quantized: bool) -> str:
    """Which model runner vLLM picks by default (vllm/config/vllm.py use_v2_model_runner,
    _is_default_v2_model_runner_model at the release)."""
    rule = row.get("runner", "v1")
    listed = set(releases().get("v2_default_architectures", {}).get(version, []))
    if rule == "v1":
        return "v1"
    if rule == "v2":
        return "v2"
    if rule == "v2_qwen3_dense":
        return "v2" if "Qwen3ForCausalLM" in architectures and not arch.is_moe and not quantized else "v1"
    if rule == "v2_non_moe_non_hybrid":
        return "v2" if any(a in listed for a in architectures) or (not hybrid and not arch.is_moe) else "v1"
    return "v1"


def capture_sizes(row: dict[str, Any], max_num_seqs: int, max_num_batched_tokens: int) -> list[int]:
    """vLLM's default cudagraph_capture_sizes (VllmConfig._set_cudagraph_sizes): up to
    min(2 x max_num_seqs, 512, max_num_batched_tokens)."""
    top = min(2 * max_num_seqs, 512, max_num_batched_tokens)
    sizes = [i for i in (1, 2, 4) if i <= top]
    if row.get("capture_sizes") == "step8":
        sizes += list(range(8, top + 1, 8))
    else:
        sizes += list(range(8, min(top + 1, 256), 8)) + (list(range(256, top + 1, 16)) if top >= 256 else [])
    return sorted(set(sizes))


def cuda_graph_counts(row: dict[str, Any], s: VllmSettings) -> tuple[int, int]:
    """(PIECEWISE graphs, FULL graphs): FULL graphs for uniform decode batches of at most
    max_num_seqs (vllm/v1/cudagraph_dispatcher.py initialize_cudagraph_keys, FULL_AND_PIECEWISE)."""
    if not s.cuda_graphs:
        return 0, 0
    sizes = capture_sizes(row, s.max_num_seqs, s.max_num_batched_tokens)
    full = [x for x in sizes if x <= s.max_num_seqs] if row.get("cudagraph_mode") == "full_and_piecewise" else []
    return len(sizes), len(full)


def cuda_graph_estimate(row: dict[str, Any], runner: str, counts: tuple[int, int]) -> tuple[int, bool, str]:
    """(bytes, subtracted from the KV budget, how). vLLM's own estimate (gpu_model_runner.py
    profile_cudagraph_memory): the largest graph of each mode is captured (first capture) and the
    second one (per graph, at least 1 MiB): max(first captures) + sum((graphs - 1) x per_graph).
    The first capture cannot be derived from source (graph pool, attention workspaces, lazily
    loaded kernels): it is a measured constant (data/vllm.json measured.cuda_graph_first_capture_gib,
    from published 'Estimated CUDA graph memory' lines); per graph is vLLM's 1 MiB floor."""
    pw, full = counts
    if pw + full == 0:
        return 0, False, "no CUDA graphs"
    m = releases()["measured"]["cuda_graph_first_capture_gib"]
    per_graph = 1 << 20
    est = int(m["value"] * GIB) + per_graph * (max(pw - 1, 0) + max(full - 1, 0))
    estimated = (row.get("v2_cudagraph_estimate", "none") != "none" if runner == "v2"
                 else row.get("cudagraph_estimate", "none") != "none")
    in_budget = estimated and bool(row["cudagraph_in_budget"])
    return est, in_budget, f"{pw} PIECEWISE + {full} FULL graphs"


def non_torch_bytes(row: dict[str, Any], tp: int) -> int:
    m = releases()["measured"]
    inc = m["non_torch_increase_gib"]["tp1" if tp == 1 else "tp_gt1"]
    if row["profile"] == "peak_total":
        inc += m["cuda_context_gib"]["value"]
    return int(inc * GIB)


# ---- the estimate ----

def estimate_vllm(arch: LlmArch, total_bytes: int, s: VllmSettings, dtype: str = "bfloat16",
                  tensors: list[Tensor] | None = None, non_torch: int | None = None, *,
                  gpu_name: str = "", cc: tuple[int, int] | None = None,
                  config: dict | None = None) -> VllmEstimate:
    """vLLM's start-up budget on one GPU (the fullest rank). `config` is the model's config.json when
    known: it adds the architecture name (which model runner) and Mamba / linear-attention layers."""
    version, row, note = resolve_release(s.version)
    assumptions: list[str] = [note] if note else []
    dt = DTYPE_BYTES.get(dtype, 2)
    tp, pp = s.tensor_parallel, s.pipeline_parallel
    util = s.gpu_memory_utilization or row["default_gpu_memory_utilization"]
    d_tokens, d_seqs = default_batch_limits(row, total_bytes, gpu_name, s.entrypoint)
    max_len = s.max_model_len or arch.max_positions or 131072
    s = replace(s, gpu_memory_utilization=util, max_num_batched_tokens=s.max_num_batched_tokens or d_tokens,
                max_num_seqs=s.max_num_seqs or min(d_seqs, s.max_num_batched_tokens or d_tokens),
                max_model_len=max_len)
    quant, qnote = _quant_config(arch, s.quantization)
    if qnote:
        assumptions.append(qnote)
    weights, wnotes = _weights(arch, tensors, quant, dt, tp, pp, cc)
    assumptions += wnotes
    budget = int(total_bytes * util)
    kv_b = 1 if (s.kv_cache_dtype or "auto").startswith("fp8") else dt
    state = hybrid_state(config, tp, dt) if row.get("hybrid_mamba") else None
    architectures = list((config or {}).get("architectures") or [])
    runner = model_runner(row, version, arch, architectures, state is not None, quant is not None)
    act, path = activation_bytes(arch, s, row, dt, last_rank=True, runner=runner)
    nt = non_torch if non_torch is not None else non_torch_bytes(row, tp)
    counts = cuda_graph_counts(row, s)
    graphs, in_budget, graph_how = cuda_graph_estimate(row, runner, counts)
    available = budget - weights - act - nt - (graphs if in_budget else 0)
    bs = s.block_size or default_block_size(arch, cc)
    if state:
        bs = hybrid_block_size(arch, kv_b, tp, bs, state)
    lay = kv_layout(arch, kv_b, tp, pp, bs, bool(row["hybrid_allocator"]), state)
    groups = lay.groups()
    group_size = max(n for _, n in groups)
    num_blocks = max(available, 0) // lay.page_bytes // group_size
    tokens = num_blocks // len(groups) * bs if len(groups) > 1 else num_blocks * bs
    per_req_blocks = sum(lay.layer_blocks(k, max_len, s.max_num_batched_tokens) for k, _ in groups)
    if row["concurrency"] == "tokens_over_len":
        conc = tokens / max_len
    else:
        conc = num_blocks / per_req_blocks if per_req_blocks else 0.0
    needed = lay.needed_bytes(max_len, s.max_num_batched_tokens)
    largest = largest_max_model_len(lay, available, s.max_num_batched_tokens, upper=1 << 24)
    refusal = refusal_text(row, weights, total_bytes, available, needed, max_len, largest)
    attn_layers = sum(1 for k in lay.kinds if k != "mamba")
    per_tok = attention_page_bytes(arch, kv_b, tp, bs) * attn_layers // bs
    state_req = sum(1 for k in lay.kinds if k == "mamba") * lay.page_bytes
    assumptions += _assumptions(version, row, s, util, total_bytes, path, in_budget, graphs, bs, d_tokens, d_seqs,
                                runner, graph_how, state)
    return VllmEstimate(version=version, total_bytes=total_bytes, budget_bytes=budget, weights_bytes=weights,
                        activation_bytes=act, non_torch_bytes=nt, cuda_graph_bytes=graphs,
                        cuda_graphs_in_budget=in_budget, kv_cache_bytes=available, kv_bytes_per_token=per_tok,
                        max_tokens_in_cache=tokens, num_blocks=num_blocks, block_size=bs, max_model_len=max_len,
                        max_concurrency=conc, needed_bytes=needed, largest_max_model_len=largest,
                        starts=refusal is None, refusal=refusal, settings=s, assumptions=assumptions, runner=runner,
                        cuda_graph_counts=counts, state_bytes_per_request=state_req)


def _weights(arch: LlmArch, tensors, quant, dt: int, tp: int, pp: int, cc) -> tuple[int, list[str]]:
    """Weight bytes on the fullest rank as "Model loading took" reports them: the checkpoint's
    tensors (or the config's shapes), vLLM's vocabulary padding, the rotary cos/sin cache, and
    MXFP4 experts in the layout of vLLM's MoE backend for this GPU."""
    notes: list[str] = []
    if tensors and tp == 1 and pp == 1 and (quant is arch.quant):
        # the checkpoint's own tensors as they sit on the GPU, plus vLLM's vocabulary padding
        pad = (-(-arch.vocab // 64) * 64 - arch.vocab) * arch.hidden * dt * (1 if arch.tied else 2)
        weights = sum(t.bytes for t in tensors) + pad
    else:
        weights = weights_per_rank(arch, dt, tp, pp, quant)
    weights += rotary_cache_bytes(arch, dt)
    if isinstance(quant, dict) and str(quant.get("quant_method", "")).lower() == "mxfp4" and arch.is_moe:
        backend = mxfp4_backend(cc)
        padded, plain = mxfp4_expert_bytes(arch, tp, backend)
        stage = -(-arch.layers // pp) / max(arch.layers, 1)
        weights += int((padded - plain) * stage)
        if padded != plain:
            notes.append(f"MXFP4 experts in vLLM's {backend} MoE layout: intermediate and hidden sizes padded "
                         f"(+{(padded - plain) * stage / GIB:.2f} GiB; quantization/mxfp4.py create_weights)")
    return weights, notes


def largest_max_model_len(lay: KvLayout, available: int, batched_tokens: int, upper: int) -> int:
    """vLLM's estimate_max_model_len: the largest length whose one-request KV fits (0 if none)."""
    if available <= 0 or lay.needed_bytes(1, batched_tokens) > available:
        return 0
    lo, hi = 1, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if lay.needed_bytes(mid, batched_tokens) <= available:
            lo = mid
        else:
            hi = mid - 1
    return lo


def refusal_text(row: dict[str, Any], weights: int, total: int, available: int, needed: int, max_len: int,
                 largest: int) -> str | None:
    """vLLM's own error for this start-up, or None when it starts."""
    if weights > total:
        return ("torch.OutOfMemoryError: CUDA out of memory while loading the weights "
                f"({weights / GIB:.2f} GiB per GPU > {total / GIB:.2f} GiB)")
    v2 = row["refusal_text"] == "v2"
    if available <= 0:
        if v2:
            return ("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
                    "when initializing the engine (this flag also controls CPU memory reservation on the CPU "
                    "backend, despite its name). See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ "
                    "for more details.")
        return ("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
                "when initializing the engine.")
    if needed <= available:
        return None
    est = (f"Based on the available memory, the estimated maximum model length is {largest}." if largest > 0 else "")
    if v2:
        return (f"ValueError: To serve at least one request with the model's max seq len ({max_len}), "
                f"({needed / GIB:.2f} GiB KV cache is needed, which is larger than the available KV cache memory "
                f"({available / GIB:.2f} GiB). {est + ' ' if est else ''}Try increasing `gpu_memory_utilization` "
                f"(which also controls CPU memory on the CPU backend) or decreasing `max_model_len` when "
                f"initializing the engine. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ "
                f"for more details.")
    return (f"ValueError: To serve at least one request with the models's max seq len ({max_len}), "
            f"({needed / GIB:.2f} GiB KV cache is needed, which is larger than the available KV cache memory "
            f"({available / GIB:.2f} GiB). {est} Try increasing `gpu_memory_utilization` or decreasing "
            f"`max_model_len` when initializing the engine.")


def _assumptions(version, row, s: VllmSettings, util, total, path, in_budget, graphs, bs, d_tokens, d_seqs,
                 runner="v1", graph_how="", state: StateSpec | None = None) -> list[str]:
    newest = releases()["newest_modelled"]
    what = "vllm serve" if s.entrypoint == "serve" else "the offline LLM class"
    out = [
        f"vLLM {version} accounting" + (" (the newest release modelled; pass --vllm VER for another)"
                                        if version == newest and not s.version else ""),
        f"budget = gpu_memory_utilization {util} x {total / GIB:.2f} GiB (CUDA's total); vLLM holds all of it",
        f"profile run: {s.max_num_batched_tokens} tokens (max_num_batched_tokens), sampler over "
        f"{min(s.max_num_seqs, s.max_num_batched_tokens)} rows (max_num_seqs); {what}'s defaults here: "
        f"{d_tokens} / {d_seqs}",
        f"model runner {runner.upper()} ({'vllm/v1/worker/gpu/model_runner.py' if runner == 'v2' else 'vllm/v1/worker/gpu_model_runner.py'})",
        _sampler_line(path, min(s.max_num_seqs, s.max_num_batched_tokens)),
    ]
    if path == "sort" and _vt(version) <= (0, 11, 0) and not s.flashinfer_sampler:
        out.append("FlashInfer not installed (pip install vllm <= 0.11.0 leaves it out; the Docker image has it "
                   "and then the sampler peak is about 2.7x smaller)")
    if not s.cuda_graphs:
        out.append("--enforce-eager: no CUDA graphs")
    elif in_budget:
        out.append(f"CUDA graphs ({graph_how}): vLLM's own estimate, {graphs / GIB:.2f} GiB, is subtracted from the "
                   f"KV budget; modelled as a measured first capture plus vLLM's 1 MiB per further graph")
    else:
        out.append(f"CUDA graphs ({graph_how}, ~{graphs / GIB:.2f} GiB) are captured after the KV cache, outside the "
                   f"budget: the process takes that on top of gpu_memory_utilization")
    if state:
        out.append(f"hybrid model: {sum(k == 'mamba' for k in state.kinds)} {state.family} layers keep one state per "
                   f"request ({state.detail}), padded to the attention page; attention block size {bs} "
                   f"(raised so one page holds a state); their weights are counted as attention layers")
    else:
        out.append(f"KV blocks of {bs} tokens")
    return out


# ---- report (the `preflight estimate --engine vllm` JSON) ----

def serve_command(model: str, s: VllmSettings, dtype: str, default_len: int | None, release_util: float) -> str:
    parts = ["vllm", "serve", model]
    if s.max_model_len and s.max_model_len != default_len:
        parts += ["--max-model-len", str(s.max_model_len)]
    if s.tensor_parallel > 1:
        parts += ["--tensor-parallel-size", str(s.tensor_parallel)]
    if s.pipeline_parallel > 1:
        parts += ["--pipeline-parallel-size", str(s.pipeline_parallel)]
    if s.kv_cache_dtype and s.kv_cache_dtype != "auto":
        parts += ["--kv-cache-dtype", s.kv_cache_dtype]
    if s.quantization:
        parts += ["--quantization", s.quantization]
    if s.gpu_memory_utilization and abs(s.gpu_memory_utilization - release_util) > 1e-9:
        parts += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
    if not s.cuda_graphs:
        parts.append("--enforce-eager")
    if s.block_size:
        parts += ["--block-size", str(s.block_size)]
    if dtype != "bfloat16":
        parts += ["--dtype", dtype]
    return " ".join(parts)


def _vllm_key(v: VllmEstimate, command: str) -> dict[str, Any]:
    return {"version": v.version, "total_memory_bytes": v.total_bytes, "budget_bytes": v.budget_bytes,
            "gpu_memory_utilization": v.settings.gpu_memory_utilization,
            "available_kv_cache_bytes": v.kv_cache_bytes, "kv_cache_tokens": v.max_tokens_in_cache,
            "num_blocks": v.num_blocks, "block_size": v.block_size, "max_model_len": v.max_model_len,
            "max_concurrency": round(v.max_concurrency, 2), "needed_kv_bytes_per_request": v.needed_bytes,
            "largest_max_model_len": v.largest_max_model_len,
            "weights_bytes": v.weights_bytes, "activation_bytes": v.activation_bytes,
            "non_torch_bytes": v.non_torch_bytes, "cuda_graph_bytes": v.cuda_graph_bytes,
            "cuda_graphs_in_budget": v.cuda_graphs_in_budget,
            "max_num_batched_tokens": v.settings.max_num_batched_tokens, "max_num_seqs": v.settings.max_num_seqs,
            "tensor_parallel_size": v.settings.tensor_parallel, "pipeline_parallel_size": v.settings.pipeline_parallel,
            "starts": v.starts, "refusal": v.refusal, "serve_command": command}


def _run(arch, t, s, dtype, tensors, config=None) -> VllmEstimate:
    total, _ = cuda_total_bytes(t.gpu_id, t.memory_bytes)
    return estimate_vllm(arch, total, s, dtype, tensors, gpu_name=t.name or t.gpu_id or "", cc=t.cc, config=config)


# ---- multi-GPU plan: tensor parallel within a node, pipeline parallel across nodes ----

def _tp_ok(arch: LlmArch, tp: int) -> bool:
    """vLLM's own checks: attention heads split evenly over TP ranks
    (vllm/config/parallel.py / model_executor linear layers: num_attention_heads % tp == 0);
    KV heads either split evenly or replicated (QKVParallelLinear)."""
    kv = arch.kv_heads or arch.heads
    return arch.heads % tp == 0 and (kv % tp == 0 or tp % kv == 0)


def intra_node_link(gpu_id: str | None) -> tuple[str, str]:
    """(what joins the GPUs of one node, its source) from data/vllm.json intra_node_links."""
    for row in releases()["intra_node_links"]["rows"]:
        if gpu_id and any(gpu_id.startswith(p) for p in row["ids"]):
            return row["link"], row["source"]
    return releases()["intra_node_links"]["default"], releases()["intra_node_links"]["default_source"]


def plan_parallel(arch: LlmArch, per_node: int, nodes: int, user_tp: int | None, user_pp: int | None,
                  gpu_id: str | None) -> dict[str, Any]:
    """Tensor-parallel and pipeline-parallel sizes the way vLLM's distributed-serving guide sets
    them ("the tensor parallel size should be the number of GPUs in each node, and the pipeline
    parallel size the number of nodes", https://docs.vllm.ai/en/v0.8.3/serving/distributed_serving.html),
    with TP lowered to the largest size vLLM accepts for this model's heads; and which link each
    parallel group crosses."""
    total = per_node * nodes
    how = "as given"
    if user_tp:
        tp, pp = user_tp, user_pp or 1
    else:
        pp = user_pp or nodes
        room = max(total // pp, 1)
        tp = next(d for d in range(min(room, per_node) if pp >= nodes else room, 0, -1)
                  if room % d == 0 and _tp_ok(arch, d))
        how = ("TP = GPUs per node, PP = nodes (vLLM's distributed-serving guide)" if tp == per_node and pp == nodes
               else f"TP {tp}: the largest size that divides the {arch.heads} attention heads and the GPUs per stage")
    if tp * pp > total:
        raise UsageError(f"--tensor-parallel-size {tp} x --pipeline-parallel-size {pp} needs {tp * pp} GPUs; the "
                         f"target has {total}" + (f" ({nodes} nodes x {per_node})" if nodes > 1 else ""),
                         hint=f"--gpu {gpu_id or 'NAME'}:{tp * pp}" if nodes == 1 else "use more nodes or smaller sizes")
    link, source = intra_node_link(gpu_id)
    tp_nodes = -(-tp // per_node)
    tp_link = (f"within one node: {link}" if tp_nodes == 1 else
               f"across {tp_nodes} nodes: the network between nodes (vLLM's guide keeps TP inside a node)")
    stages_per_node = max(per_node // tp, 1) if tp <= per_node else 0
    pp_nodes = 1 if pp == 1 or (stages_per_node and pp <= stages_per_node) else min(nodes, -(-tp * pp // per_node))
    pp_link = ("none (one stage)" if pp == 1 else f"within one node: {link}" if pp_nodes == 1
               else f"across {pp_nodes} nodes: the network between nodes")
    return {"nodes": nodes, "gpus_per_node": per_node, "tensor_parallel_size": tp, "pipeline_parallel_size": pp,
            "gpus_used": tp * pp, "gpus_idle": total - tp * pp, "tp_interconnect": tp_link,
            "pp_interconnect": pp_link, "how_chosen": how, "link_source": source,
            "tp_valid": _tp_ok(arch, tp)}


def _suggestions(arch, t, s: VllmSettings, dtype, v: VllmEstimate, workload_tokens: int) -> list[dict[str, Any]]:
    """Closed-form changes that make it start: the largest max_model_len vLLM accepts, an FP8 KV
    cache, more tensor-parallel GPUs, a higher utilization."""
    out: list[dict[str, Any]] = []

    def add(change: str, flag: str, s2: VllmSettings, target=t) -> None:
        e = _run(arch, target, s2, dtype, None)
        out.append({"change": change, "flag": flag, "settings": s2, "estimate": e, "fits": e.starts,
                    "peak_process_bytes": e.budget_bytes, "headroom_bytes": max(e.kv_cache_bytes - e.needed_bytes, 0)
                    if e.starts else e.kv_cache_bytes - e.needed_bytes,
                    "kv_cache_tokens": e.max_tokens_in_cache, "max_concurrency": round(e.max_concurrency, 2)})

    if v.largest_max_model_len > 0 and not v.starts:
        n = v.largest_max_model_len
        n = n // 1024 * 1024 if n >= 4096 else n
        add(f"shorter context: --max-model-len {n} (the largest that starts)", f"--max-model-len {n}",
            replace(s, max_model_len=n))
    if not (s.kv_cache_dtype or "auto").startswith("fp8"):
        add("FP8 KV cache (half the bytes per token)", "--kv-cache-dtype fp8", replace(s, kv_cache_dtype="fp8"))
    for n in (2, 4, 8) if s.pipeline_parallel <= 1 and s.nodes <= 1 else ():
        if n > s.tensor_parallel and (arch.heads % n == 0):
            t2 = replace(t, count=n)
            s2 = replace(s, tensor_parallel=n)
            e = _run(arch, t2, s2, dtype, None)
            if e.starts:
                add(f"{n} GPUs with tensor parallelism", f"--tensor-parallel-size {n} (--gpu {t.gpu_id or t.name}:{n})",
                    s2, t2)
                break
    if (s.gpu_memory_utilization or 0.9) < 0.95:
        add("gpu_memory_utilization 0.95 (less left for other processes)", "--gpu-memory-utilization 0.95",
            replace(s, gpu_memory_utilization=0.95))
    # what keeps the asked context on the asked GPUs first: FP8 KV, then a shorter context, then more GPUs
    rank = {"--kv-cache-dtype": 0, "--max-model-len": 1, "--tensor-parallel-size": 2, "--gpu-memory-utilization": 3}
    out.sort(key=lambda x: (not x["fits"], rank.get(x["flag"].split()[0], 9)))
    return out


def vllm_report(arch: LlmArch, w, targets: list, s: VllmSettings, tensors, assumptions: list[str], model_name: str,
                model_ref: str, config: dict | None = None) -> dict[str, Any]:
    """The estimate report for --engine vllm (keys of docs/json-schema.md, plus "vllm")."""
    from gpu_preflight import __version__
    from gpu_preflight.estimators.plan import REPORT_SCHEMA, REPORT_SCHEMA_VERSION, _arch_summary

    if not targets:
        raise UsageError("the vllm engine needs a target GPU", hint="pass --gpu NAME[:COUNT]")
    t = targets[0]
    rows = []
    first: VllmEstimate | None = None
    plan: dict[str, Any] | None = None
    for tt in targets:
        pl = plan_parallel(arch, tt.count, max(s.nodes, 1), s.tensor_parallel or None, s.pipeline_parallel or None,
                           tt.gpu_id)
        tp, pp = pl["tensor_parallel_size"], pl["pipeline_parallel_size"]
        v = _run(arch, tt, replace(s, tensor_parallel=tp, pipeline_parallel=pp), w.dtype,
                 tensors if tp == 1 and pp == 1 else None, config)
        first = first or v
        plan = plan or pl
        need = w.batch * (w.input_len + w.output_len)
        ok = v.starts and v.max_tokens_in_cache >= need and w.input_len + w.output_len <= v.max_model_len
        rows.append({"gpu": tt.name, "gpu_id": tt.gpu_id, "count": tt.count * max(s.nodes, 1),
                     "memory_bytes": tt.memory_bytes, "memory_source": tt.source, "fits": ok, "starts": v.starts,
                     "headroom_bytes": (v.max_tokens_in_cache - need) * v.kv_bytes_per_token if v.starts
                     else v.kv_cache_bytes - v.needed_bytes,
                     "peak_process_bytes_per_gpu": v.budget_bytes})
    v = first
    s_used = v.settings
    default_len = arch.max_positions
    util_default = resolve_release(s.version)[1]["default_gpu_memory_utilization"]
    ask = serve_command(model_ref, s_used, w.dtype, default_len, util_default)
    suggestions = [] if rows[0]["fits"] else _suggestions(arch, t, s_used, w.dtype, v, w.input_len + w.output_len)
    command = ask
    fixing = next((x for x in suggestions if x["fits"]), None)
    if not v.starts and fixing:
        command = serve_command(model_ref, fixing["settings"], w.dtype, default_len, util_default)
    for x in suggestions:
        x.pop("settings")
        x.pop("estimate")
    total_note = cuda_total_bytes(t.gpu_id, t.memory_bytes)[1]
    graphs_outside = 0 if v.cuda_graphs_in_budget else v.cuda_graph_bytes
    overhead = int(releases()["measured"]["cuda_context_gib"]["value"] * GIB)
    need = w.batch * (w.input_len + w.output_len)
    return {
        "schema": REPORT_SCHEMA, "schema_version": REPORT_SCHEMA_VERSION, "tool_version": __version__,
        "model": model_name, "kind": "llm", "engine": "vllm", "workload": _workload(w),
        "architecture": _arch_summary(arch),
        "peak_allocated_bytes": v.weights_bytes + v.activation_bytes + max(v.kv_cache_bytes, 0),
        "peak_process_bytes": v.budget_bytes + graphs_outside + overhead,
        "breakdown": {"weights": v.weights_bytes, "activations": v.activation_bytes,
                      "non_torch": v.non_torch_bytes,
                      "cuda_graphs": v.cuda_graph_bytes, "kv_cache": max(v.kv_cache_bytes, 0),
                      "cuda_context_and_libraries": overhead},
        "kv_cache_tokens": v.max_tokens_in_cache, "kv_bytes_per_token": v.kv_bytes_per_token,
        "fits": rows,
        "max_context_tokens": v.largest_max_model_len or None,
        "max_batch": min(v.max_tokens_in_cache // max(w.input_len + w.output_len, 1), s_used.max_num_seqs)
        if v.starts else None,
        "peak_reserved_bytes": v.budget_bytes - v.non_torch_bytes, "phases": {},
        "suggestions": suggestions,
        "assumptions": assumptions + v.assumptions + _parallel_notes(plan) + [
            f"GPU total: {total_note}", f"workload: {w.batch} x {w.input_len + w.output_len} tokens "
                                        f"= {need:,} tokens of KV cache"],
        "vllm": {**_vllm_key(v, command), "parallel": plan, "runner": v.runner,
                 "cuda_graph_counts": list(v.cuda_graph_counts),
                 "state_bytes_per_request": v.state_bytes_per_request},
    }


def _parallel_notes(plan: dict[str, Any] | None) -> list[str]:
    if not plan or plan["gpus_used"] == 1 and plan["nodes"] == 1:
        return []
    out = [f"parallel plan: TP {plan['tensor_parallel_size']} x PP {plan['pipeline_parallel_size']} on "
           f"{plan['gpus_used']} GPUs ({plan['nodes']} node(s) x {plan['gpus_per_node']}); {plan['how_chosen']}; "
           f"figures are per GPU (the fullest rank)",
           f"TP group: {plan['tp_interconnect']}; PP stages: {plan['pp_interconnect']} ({plan['link_source']})"]
    if plan["gpus_idle"]:
        out.append(f"{plan['gpus_idle']} GPU(s) left idle by this plan")
    if plan["nodes"] > 1:
        out.append("several nodes: vLLM runs its workers on a Ray cluster spanning the nodes (start Ray on every "
                   "node first); the serve command runs on the head node")
    if not plan["tp_valid"]:
        out.append(f"vLLM will refuse TP {plan['tensor_parallel_size']}: the attention heads do not split evenly")
    return out


def _workload(w) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(w)


# ---- the engine's flags and entry point (commands/estimate.py builds its parser from these) ----

from gpu_preflight.estimators.engines.base import Engine, Option, bounded_float, positive_int  # noqa: E402
from gpu_preflight.estimators.engines.transformers import LLM_WORKLOAD_OPTIONS  # noqa: E402


def _block_size(text: str) -> int:
    import argparse

    n = positive_int(text)
    if n not in (1, 8, 16, 32, 64, 128, 256):
        raise argparse.ArgumentTypeError("must be one of 1, 8, 16, 32, 64, 128, 256 (vLLM's BlockSize)")
    return n


OPTIONS = LLM_WORKLOAD_OPTIONS + (
    Option("--vllm", "vllm_version", f"vLLM release to model (default: {releases()['newest_modelled']}, the newest "
           f"modelled)", metavar="VER"),
    Option("--max-model-len", "max_model_len", "context length vLLM reserves per request (default: the model's "
           "max_position_embeddings)", type=positive_int),
    Option("--tensor-parallel-size", "tensor_parallel_size", "GPUs that split each layer (default: the target's "
           "GPU count, divided by --pipeline-parallel-size)", type=positive_int),
    Option("--pipeline-parallel-size", "pipeline_parallel_size", "GPUs that split the layers (default 1 on one "
           "node, the number of nodes with --nodes)", type=positive_int),
    Option("--nodes", "nodes", "nodes with --gpu NAME:COUNT GPUs each (default 1): TP within a node, PP across "
           "nodes, as vLLM's distributed-serving guide sets them", type=positive_int, default=1),
    Option("--enforce-eager", "enforce_eager", "no CUDA graphs", action="store_true", default=False),
    Option("--block-size", "block_size", "KV cache block size in tokens (default 16; 64 for MLA on Hopper)",
           type=_block_size),
    Option("--kv-cache-dtype", "kv_cache_dtype", "KV cache type: auto (the model's dtype) or an FP8 type (1 byte)",
           default="auto", choices=KV_DTYPES),
    Option("--quantization", "quantization", "checkpoint quantization format (the weights' storage layout)",
           choices=QUANTIZATIONS),
    Option("--gpu-memory-utilization", "gpu_memory_utilization", "share of each GPU vLLM may take (default: the "
           "release's, 0.9 or 0.92)", type=bounded_float(0.05, 1.0)),
    Option("--max-num-batched-tokens", "max_num_batched_tokens", "tokens per scheduler step (default: vLLM's for "
           "the GPU: 8192 on >= 70 GiB GPUs but A100, else 2048)", type=positive_int),
    Option("--max-num-seqs", "max_num_seqs", "concurrent sequences (default: 1024 on >= 70 GiB GPUs but A100, "
           "else 256)", type=positive_int),
)


def _model_ref(source) -> str:
    url = source.source_url or ""
    if url.startswith("https://huggingface.co/"):
        return url[len("https://huggingface.co/"):].split("/tree/")[0].split("/blob/")[0]
    return source.path or source.name


def run_engine(source, o: dict, targets: list, common: dict) -> dict:
    from gpu_preflight.estimators.arch import parse_llm
    from gpu_preflight.estimators.engines.transformers import Workload
    from gpu_preflight.estimators.plan import _tensors_in_dtype, parse_dtype

    kv = o["kv_cache_dtype"]
    w = Workload(batch=o["batch"], input_len=o["input_len"], output_len=o["output_len"],
                 dtype=parse_dtype(o["dtype"]), attn="sdpa",
                 kv_dtype="float8_e4m3fn" if kv.startswith("fp8") else None)
    resolve_release(o["vllm_version"])  # a bad version fails before any work
    settings = VllmSettings(gpu_memory_utilization=o["gpu_memory_utilization"],
                            max_num_batched_tokens=o["max_num_batched_tokens"], max_num_seqs=o["max_num_seqs"],
                            tensor_parallel=o["tensor_parallel_size"] or 0,
                            pipeline_parallel=o["pipeline_parallel_size"] or 0, nodes=o.get("nodes") or 1,
                            kv_cache_dtype=kv, cuda_graphs=not o["enforce_eager"],
                            max_model_len=o["max_model_len"], block_size=o["block_size"],
                            quantization=o["quantization"], version=o["vllm_version"])
    arch = parse_llm(source.config)
    assumptions = list(arch.warnings)
    if source.origin == "gguf":
        raise UsageError("--engine vllm reads safetensors checkpoints here, not GGUF files",
                         hint="use --engine llama.cpp for a .gguf, or point at the original checkpoint")
    if isinstance(source.config.get("vision_config"), dict):
        assumptions.append("multimodal checkpoint: only the language model is counted; vLLM also loads the vision "
                           "encoder and profiles it with the largest image batch, which leaves less KV cache")
    tensors = _tensors_in_dtype(source.tensors, w.dtype)
    if tensors is None:
        assumptions.append("weights computed from config.json shapes (no safetensors headers read)")
    return vllm_report(arch, w, targets, settings, tensors, assumptions, source.name, _model_ref(source),
                       config=source.config)


ENGINES = (Engine("vllm", ("llm", "gguf"), "vLLM serving: its start-up memory budget, KV-cache capacity and whether "
                  "it starts, per release", OPTIONS, run_engine),)
