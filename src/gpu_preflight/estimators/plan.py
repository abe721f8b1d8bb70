"""From a model + workload + target GPUs to the estimate report: breakdown, verdict per target,
largest context / batch that fit, and the changes that make a non-fitting setup fit.

The report dict is the `preflight estimate --json` contract (docs/json-schema.md); keys are only
ever added.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gpu_preflight import __version__
from gpu_preflight.compatibility import facts
from gpu_preflight.errors import ModelSourceError, UsageError
from gpu_preflight.estimators.arch import DTYPE_BYTES, LlmArch, parse_llm
from gpu_preflight.estimators.engines.transformers import Workload, estimate_transformers
from gpu_preflight.estimators.overheads import process_overhead
from gpu_preflight.estimators.engines.vllm import VllmSettings, estimate_vllm
from gpu_preflight.estimators.weights import Tensor

REPORT_SCHEMA = "gpu-preflight.estimate"
REPORT_SCHEMA_VERSION = 1
GIB = 1 << 30
HF_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F8_E4M3": "float8_e4m3fn", "I8": "int8",
             "U8": "int8", "I32": "int32", "F64": "float64"}
DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32",
                 "bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


@dataclasses.dataclass
class Target:
    name: str          # display name
    gpu_id: str | None
    count: int
    memory_bytes: int  # per GPU, what a process can use (total, or free on this machine)
    cc: tuple[int, int] | None
    source: str        # "catalog" | "this machine"


def parse_dtype(text: str) -> str:
    d = DTYPE_ALIASES.get(str(text).lower())
    if d is None:
        raise UsageError(f"unknown dtype {text!r}", hint="use bfloat16, float16 or float32")
    return d


def targets_from_specs(specs: list[str]) -> list[Target]:
    out = []
    for spec in specs:
        row, count = facts.parse_gpu_spec(spec)
        out.append(Target(row["name"], row["id"], count, facts.gpu_memory_bytes(row),
                          facts.parse_cc(row["compute_capability"]), "catalog"))
    return out


def targets_from_machine(snap: dict) -> list[Target]:
    # reads the snapshot itself (not checks.context.gpu_views): estimators do not import the checks
    from gpu_preflight.snapshots.schema import gpus

    def value(g: dict, key: str):
        return g[key].get() if g.get(key) is not None else None

    groups: dict[tuple, Target] = {}
    for g in gpus(snap):
        total = value(g, "memory_total_bytes")
        if "error" in g or not total:
            continue
        name = value(g, "name")
        row = facts.match_gpu(name) if name else None
        cc_text = value(g, "compute_capability") or (row or {}).get("compute_capability")
        free = value(g, "memory_free_bytes")
        cc = facts.parse_cc(cc_text) if cc_text else None
        key = (name, cc)
        mem = free if free else total
        label = "this machine (free memory)" if free else "this machine (total memory)"
        if key in groups:
            groups[key].count += 1
            groups[key].memory_bytes = min(groups[key].memory_bytes, mem)
        else:
            groups[key] = Target(name or "GPU", (row or {}).get("id"), 1, mem, cc, label)
    return list(groups.values())


def _tensors_in_dtype(tensors: list[Any] | None, dtype: str, dequantize: bool = False) -> list[Tensor] | None:
    """Header tensors as they will sit on the GPU: float tensors cast to `dtype`; with `dequantize`
    (GGUF through transformers) every tensor becomes `dtype`."""
    if not tensors:
        return None
    out = []
    want = DTYPE_BYTES.get(dtype, 2)
    for t in tensors:
        numel = 1
        for d in t.shape:
            numel *= int(d)
        if dequantize or t.dtype in ("BF16", "F16", "F32", "F64"):
            out.append(Tensor(t.name, numel, numel * want))
        else:
            out.append(Tensor(t.name, numel, int(t.nbytes), True))
    return out


def _peak_transformers(arch: LlmArch, w: Workload, target: Target | None, tensors, tv_torch: str | None,
                       transformers_version: tuple[int, int] | None, replay_decode: bool = True) -> dict[str, Any]:
    cc = target.cc if target else None
    count = target.count if target else 1
    a = arch
    if count > 1:
        # device_map="auto" splits whole layers across GPUs; the fullest GPU holds ceil(L/N) layers
        # plus the embeddings (first GPU) - counted together: conservative.
        per = -(-arch.layers // count)
        a = dataclasses.replace(arch, layers=per, layer_kinds=arch.layer_kinds[:per], moe_layers=arch.moe_layers[:per])
        tensors = None
    est = estimate_transformers(a, w, cc, tensors, decode_samples=2 if replay_decode else 0,
                                transformers_version=transformers_version)
    overhead, provenance = process_overhead(cc, tv_torch)
    return {"est": est, "peak_process_bytes": est.peak_reserved_bytes + overhead, "overhead": overhead,
            "overhead_source": provenance}


def estimate_llm(config: dict, *, tensors=None, workload: Workload, targets: list[Target], engine: str = "transformers",
                 torch_version: str | None = None, transformers_version: str | None = None,
                 vllm: VllmSettings | None = None, model_name: str = "model", gguf: bool = False,
                 quantize: str | None = None, double_quant: bool = False,
                 assume_llama_like: bool = False, searches: bool = True) -> dict[str, Any]:
    """`searches` False (a sweep point, api.report_for(point_only=True)): no largest context /
    batch search and no suggestions; those keys stay None / empty."""
    arch, meta_tensors, weights_source = resolve_architecture(config, workload.dtype, assume_llama_like, tensors)
    if meta_tensors is not None:
        tensors = None
    assumptions = list(arch.warnings)
    if quantize:
        if arch.quant:
            raise UsageError(f"this checkpoint is already quantized ({_quant_name(arch)}); --quantize loads a "
                             f"16-bit checkpoint quantized", hint="drop --quantize")
        arch.quant = quant_config(quantize, double_quant, workload.bnb_compute_dtype)
        tensors = None  # the quantized layout follows from the shapes in config.json
        assumptions.append(quantize_assumption(quantize, double_quant, workload.dtype, arch.is_moe))
    tf_ver = _version_tuple(transformers_version) if transformers_version else (5, 17)
    if not transformers_version and engine == "transformers":
        assumptions.append("transformers >= 5 behaviour assumed (fused MoE experts, batched_mm decode, "
                           "logits_to_keep); pass --transformers VER to model another release")
    dev_tensors = _tensors_in_dtype(tensors, workload.dtype, dequantize=gguf)
    if meta_tensors is not None and not quantize:
        dev_tensors = meta_tensors
    if gguf:
        assumptions.append(f"GGUF file: transformers dequantizes its weights to {workload.dtype} when loading "
                           f"(https://huggingface.co/docs/transformers/gguf); llama.cpp would keep them quantized")
    if dev_tensors is None:
        assumptions.append("weights computed from config.json shapes (no safetensors headers read)")
    elif tensors:
        weights_source = "safetensors headers"
    failures, note = position_check(arch, workload)
    if note:
        assumptions.append(note)
    first = targets[0] if targets else None
    if engine == "vllm":
        return _vllm_report(arch, workload, targets, vllm or VllmSettings(), dev_tensors, torch_version,
                            assumptions + failures, model_name)
    base = _peak_transformers(arch, workload, first, dev_tensors, torch_version, tf_ver)
    est = base["est"]
    assumptions += est.assumptions
    assumptions.append(f"process overhead {base['overhead'] / GIB:.2f} GiB (CUDA context, kernels, library "
                       f"handles): {base['overhead_source']}")
    breakdown = dict(est.breakdown)
    breakdown["cuda_context_and_libraries"] = base["overhead"]
    fits = []
    for t in targets:
        p = base if t is first else _peak_transformers(arch, workload, t, dev_tensors, torch_version, tf_ver)
        fits.append(_fit_row(t, p["peak_process_bytes"]))
    report = {
        "schema": REPORT_SCHEMA, "schema_version": REPORT_SCHEMA_VERSION, "tool_version": __version__,
        "model": model_name, "kind": "llm", "engine": "transformers",
        "workload": dataclasses.asdict(workload),
        "architecture": {**_arch_summary(arch), "weights_source": weights_source},
        "peak_allocated_bytes": est.peak_allocated_bytes,
        "peak_reserved_bytes": est.peak_reserved_bytes,
        "peak_process_bytes": base["peak_process_bytes"],
        "breakdown": breakdown,
        "phases": est.phase_peaks,
        "fits": fits,
        "max_context_tokens": None,
        "max_batch": None,
        "suggestions": [],
        "assumptions": assumptions,
        "failures": failures,
    }
    if first is not None and searches:
        report["max_context_tokens"] = _max_context(arch, workload, first, dev_tensors, torch_version, tf_ver)
        if not failures:  # a context the model cannot index has no largest batch
            report["max_batch"] = _max_batch(arch, workload, first, dev_tensors, torch_version, tf_ver)
        if not fits[0]["fits"]:
            report["suggestions"] = _suggestions(arch, workload, first, torch_version, tf_ver, report)
        if failures:
            report["suggestions"].insert(0, _within_positions(arch, workload, first, torch_version, tf_ver))
    return report


def position_check(arch: LlmArch, w: Workload) -> tuple[list[str], str | None]:
    """(failures, note) for a context beyond the model's positions. generate() feeds prompt + output - 1
    positions (the last generated token is never fed back). Families that read positions from a table
    of fixed size (families.POSITION_TABLES: GPT-2, GPT-BigCode, OPT, GPT-J) cannot go past it: the next
    position indexes out of bounds, a CUDA device-side assert that ends the process (on the H200:
    gpt2-medium at a 2048-token prompt, OPT-1.3B, SantaCoder and GPT-J at 2048 + 32,
    calibration/raw/device-2026-12-02/arch-h200.log), so that is a failure. Models that compute their
    positions (RoPE, ALiBi) run; past max_position_embeddings only the quality is in question (a note).
    Sets arch.max_positions to the table size when config.json leaves it to the config class default."""
    from gpu_preflight.estimators.families import position_table_limit

    limit = position_table_limit(arch)
    context = w.input_len + w.output_len
    if limit:
        arch.max_positions = arch.max_positions or limit
        fed = context - 1
        if fed > limit:
            return [f"does not run: {arch.model_type} reads its positions from a fixed table of {limit} rows "
                    f"(max_position_embeddings / n_positions); this workload feeds {fed} positions (prompt "
                    f"{w.input_len} + {w.output_len} generated - 1), and position {limit} indexes past the table: "
                    f"a CUDA 'index out of bounds' device-side assert that ends the process, not a quality loss. "
                    f"Keep prompt + output within {limit} tokens"], None
        return [], None
    if arch.max_positions and context > arch.max_positions:
        return [], (f"context {context} exceeds max_position_embeddings {arch.max_positions}: it runs (positions are "
                    f"computed, not looked up), but quality degrades unless RoPE scaling (rope_scaling) extends it")
    return [], None


def _within_positions(arch: LlmArch, w: Workload, t: Target, tv, tf) -> dict[str, Any]:
    """The suggestion that keeps prompt + output within the model's position table."""
    limit = arch.max_positions or 1
    out = min(w.output_len, max(limit - 1, 1))
    w2 = dataclasses.replace(w, input_len=max(limit - out, 1), output_len=out)
    flag = f"--input-len {w2.input_len}" + (f" --output-len {out}" if out != w.output_len else "")
    p = _peak_transformers(arch, w2, t, None, tv, tf)["peak_process_bytes"]
    return {"change": f"prompt + output within the model's {limit} positions", "flag": flag,
            "peak_process_bytes": p, "fits": p <= t.memory_bytes, "headroom_bytes": t.memory_bytes - p}


def resolve_architecture(config: dict, dtype: str, assume_llama_like: bool = False, tensors=None):
    """(arch, exact tensors from the meta device or None, where the weights come from).

    A model_type with a layout table: the table (exact, tests/test_archs.py checks it against
    transformers). Another type: with torch + transformers importable, its weights are counted on the
    meta device (exact) and its activations assumed Llama-like (stated); without them it is refused,
    unless --assume-llama-like asks for the generic estimate (stated, wider error)."""
    from gpu_preflight.estimators import meta_count
    from gpu_preflight.estimators.arch import UnknownArchitecture

    try:
        arch = parse_llm(config, assume_llama_like=False)
        return arch, None, f"family table ({arch.family})"
    except UnknownArchitecture as exc:
        unknown = exc
    if tensors or not meta_count.available():
        if not assume_llama_like:
            raise unknown
        return parse_llm(config, assume_llama_like=True), None, "assumed Llama-like (--assume-llama-like)"
    mc = meta_count.count_weights(config, dtype)
    try:
        arch = parse_llm(config, assume_llama_like=True)
    except ModelSourceError:
        gib = sum(t.bytes for t in mc.tensors) / GIB
        raise ModelSourceError(f"{mc.model_class}: weights counted on the meta device ({gib:.2f} GiB in {dtype}), "
                               f"but its activations are not modelled (no decoder keys in config.json)",
                               hint="the weights figure above is exact; measure the rest with preflight measure")
    arch.warnings = [w for w in arch.warnings if "ASSUMED LLAMA-LIKE" not in w]
    arch.warnings.append(f"model_type {arch.model_type!r}: weights exact ({mc.model_class} built on the meta device "
                         f"with transformers {mc.transformers_version}); activations ASSUMED LLAMA-LIKE (no layout "
                         f"table for this type: peak error may exceed 10 %)")
    arch.assumed = True
    return arch, mc.tensors, f"meta device (transformers {mc.transformers_version}, {mc.model_class})"


def bnb_config(quantize: str, double_quant: bool = False, compute_dtype: str | None = None) -> dict[str, Any]:
    """The quantization_config transformers writes for BitsAndBytesConfig(load_in_8bit / load_in_4bit)."""
    if quantize == "8bit":
        return {"quant_method": "bitsandbytes", "load_in_8bit": True}
    return {"quant_method": "bitsandbytes", "load_in_4bit": True,
            "bnb_4bit_quant_type": "fp4" if quantize == "fp4" else "nf4",
            "bnb_4bit_use_double_quant": bool(double_quant),
            "bnb_4bit_compute_dtype": compute_dtype or "float32"}


# --quantize for torchao: the TorchAoConfig(quant_type) that transformers serializes (quant_type.default)
TORCHAO_QUANTIZE = {
    "int8wo": ("Int8WeightOnlyConfig", {}),
    "int4wo": ("Int4WeightOnlyConfig", {"group_size": 128, "int4_packing_format": "plain"}),
    "fp8": ("Float8WeightOnlyConfig", {}),
    "fp8dq": ("Float8DynamicActivationFloat8WeightConfig", {}),
}
QUANTIZE_WORDS = {
    "8bit": "bitsandbytes LLM.int8 (8-bit)", "4bit": "bitsandbytes NF4", "nf4": "bitsandbytes NF4",
    "fp4": "bitsandbytes FP4", "int8wo": "torchao int8 weight-only", "int4wo": "torchao int4 weight-only (group 128)",
    "fp8": "torchao float8 weight-only", "fp8dq": "torchao float8 dynamic activation + float8 weight",
}


def quant_config(quantize: str, double_quant: bool = False, compute_dtype: str | None = None) -> dict[str, Any]:
    """The quantization_config of a 16-bit checkpoint loaded with `--quantize`."""
    if quantize in TORCHAO_QUANTIZE:
        name, data = TORCHAO_QUANTIZE[quantize]
        return {"quant_method": "torchao", "quant_type": {"default": {"_type": name, "_data": dict(data)}}}
    return bnb_config(quantize, double_quant, compute_dtype)


def quantize_assumption(quantize: str, double_quant: bool, dtype: str, moe: bool) -> str:
    what = QUANTIZE_WORDS.get(quantize, quantize)
    if quantize in ("4bit", "nf4", "fp4"):
        what += f" {'with' if double_quant else 'without'} double quantization"
    text = (f"{what}: every nn.Linear but the output head quantized on the GPU while loading; embeddings and "
            f"norms kept in {dtype} (get_keys_to_not_convert skips lm_head)")
    if moe:
        text += ("; MoE experts stay 16-bit (transformers 5 stores them as fused 3D parameters, which "
                 "bitsandbytes and torchao do not convert)")
    return text


def _quant_name(arch: LlmArch) -> str:
    return str(arch.quant.get("quant_method", "quantized")) if isinstance(arch.quant, dict) else str(arch.quant)


def _version_tuple(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in str(text).split(".")[:2]]
    except ValueError:
        raise UsageError(f"{text!r} is not a version", hint="use MAJOR.MINOR, e.g. 4.46") from None
    return (parts + [0])[0], (parts + [0, 0])[1]


def _fit_row(t: Target, peak: int) -> dict[str, Any]:
    return {"gpu": t.name, "gpu_id": t.gpu_id, "count": t.count, "memory_bytes": t.memory_bytes,
            "memory_source": t.source, "fits": peak <= t.memory_bytes, "headroom_bytes": t.memory_bytes - peak,
            "peak_process_bytes_per_gpu": peak}


def _fits(arch, w, t, tensors, tv, tf) -> bool:
    return _peak_transformers(arch, w, t, tensors, tv, tf, replay_decode=False)["peak_process_bytes"] <= t.memory_bytes


def _search_max(lo: int, hi: int, ok) -> int | None:
    """Largest n in [lo, hi] with ok(n) (ok monotone decreasing); None if not even lo."""
    if not ok(lo):
        return None
    if ok(hi):
        return hi
    while hi - lo > max(1, lo // 64):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _max_context(arch, w, t, tensors, tv, tf) -> int | None:
    cap = arch.max_positions or 131072

    def ok(n: int) -> bool:
        return _fits(arch, dataclasses.replace(w, input_len=max(n - w.output_len, 1)), t, tensors, tv, tf)

    return _search_max(max(w.output_len + 1, 16), max(cap, w.output_len + 16), ok)


def _max_batch(arch, w, t, tensors, tv, tf) -> int | None:
    return _search_max(1, 1024, lambda b: _fits(arch, dataclasses.replace(w, batch=b), t, tensors, tv, tf))


def _suggestions(arch: LlmArch, w: Workload, t: Target, tv, tf, report) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(change: str, flag: str, a: LlmArch, w2: Workload, target: Target = t) -> None:
        p = _peak_transformers(a, w2, target, None, tv, tf)["peak_process_bytes"]
        out.append({"change": change, "flag": flag, "peak_process_bytes": p, "fits": p <= target.memory_bytes,
                    "headroom_bytes": target.memory_bytes - p})

    if DTYPE_BYTES.get(w.dtype, 2) > 2:
        add("load in bfloat16 instead of float32", "--dtype bfloat16", arch, dataclasses.replace(w, dtype="bfloat16"))
    if not arch.quant:
        q8 = dataclasses.replace(arch, quant={"quant_method": "bitsandbytes", "load_in_8bit": True})
        add("8-bit weights (bitsandbytes LLM.int8)", "--quantize 8bit", q8, w)
        q4 = dataclasses.replace(arch, quant={"quant_method": "bitsandbytes", "load_in_4bit": True,
                                              "bnb_4bit_quant_type": "nf4"})
        add("4-bit weights (bitsandbytes NF4, or an AWQ/GPTQ checkpoint of the model)",
            "--quantize 4bit", q4, w)
    ctx = report.get("max_context_tokens")
    if ctx and ctx < w.input_len + w.output_len:
        add(f"shorter context: at most {ctx} tokens (prompt + output) at batch {w.batch}",
            f"--input-len {max(ctx - w.output_len, 1)}", arch, dataclasses.replace(w, input_len=max(ctx - w.output_len, 1)))
    mb = report.get("max_batch")
    if mb and mb < w.batch:
        add(f"smaller batch: {mb}", f"--batch {mb}", arch, dataclasses.replace(w, batch=mb))
    if w.attn == "eager":
        add("SDPA attention instead of eager (no S x S score matrix)", "--attn sdpa", arch,
            dataclasses.replace(w, attn="sdpa"))
    for n in (2, 4, 8):
        if n > t.count:
            t2 = dataclasses.replace(t, count=n, name=t.name)
            p = _peak_transformers(arch, w, t2, None, tv, tf)["peak_process_bytes"]
            if p <= t.memory_bytes:
                out.append({"change": f"{n} GPUs (device_map=\"auto\" splits the layers)", "flag": f"--gpu {t.gpu_id or t.name}:{n}",
                            "peak_process_bytes": p, "fits": True, "headroom_bytes": t.memory_bytes - p})
                break
    out.sort(key=lambda s: (not s["fits"], s["peak_process_bytes"]))
    return out


def _vllm_report(arch, w, targets, s, tensors, tv, assumptions, model_name) -> dict[str, Any]:
    from gpu_preflight.estimators.engines.vllm import vllm_report  # the vLLM report lives with its engine

    return vllm_report(arch, w, targets, s, tensors, assumptions, model_name, model_name)


def _arch_summary(a: LlmArch) -> dict[str, Any]:
    out = {"model_type": a.model_type, "layers": a.layers, "hidden_size": a.hidden, "heads": a.heads,
           "kv_heads": a.kv_heads, "head_dim": a.head_dim, "vocab_size": a.vocab, "tied_embeddings": a.tied,
           "max_position_embeddings": a.max_positions}
    if a.sliding_window:
        out["sliding_window"] = a.sliding_window
        out["sliding_layers"] = sum(1 for k in a.layer_kinds if k == "sliding")
    if a.is_moe:
        out.update({"experts": a.experts, "experts_per_token": a.experts_per_token,
                    "moe_intermediate_size": a.moe_intermediate})
    if a.mla:
        out.update({"kv_lora_rank": a.kv_lora_rank, "mla": True})
    if a.quant:
        out["quantization"] = a.quant.get("quant_method") if isinstance(a.quant, dict) else str(a.quant)
    return out
