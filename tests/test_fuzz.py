"""Property-based fuzzing (Hypothesis) of every surface that reads untrusted input.

Properties: a config, pipeline, snapshot, safetensors header, GGUF file or command-line number
either passes validation and is then handled without any exception, or is refused with a typed
one-line error (PreflightError). Output scanning finds a trigger line however the output is cut
into chunks, and the fast scan matches what the old case-insensitive one matched. Printed text
never carries a control character.

Examples per test come from the Hypothesis profile: "ci" (default: derandomized, a few hundred in
all, within CI's 2 minutes) or "long" (PREFLIGHT_FUZZ_PROFILE=long; bench/fuzz_long.py runs it).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import struct
import tempfile
import types
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings, strategies as st  # noqa: E402

from gpu_preflight.errors import PreflightError  # noqa: E402
from models_helpers import gguf_bytes, llama_gguf_metadata, llama_gguf_tensors  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=3000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("PREFLIGHT_FUZZ_PROFILE", "ci"))

FIXTURES = Path(__file__).parent / "fixtures"
LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 4096}
BASES = [
    LLAMA,
    {**LLAMA, "model_type": "gemma3_text", "head_dim": 16, "sliding_window": 512, "sliding_window_pattern": 6},
    {**LLAMA, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2},
    {**LLAMA, "model_type": "qwen2_moe", "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
     "shared_expert_intermediate_size": 64, "decoder_sparse_step": 1, "mlp_only_layers": []},
    {**LLAMA, "model_type": "deepseek_v3", "kv_lora_rank": 32, "q_lora_rank": 48, "qk_nope_head_dim": 16,
     "qk_rope_head_dim": 8, "v_head_dim": 16, "n_routed_experts": 4, "num_experts_per_tok": 2,
     "moe_intermediate_size": 32, "n_shared_experts": 1, "first_k_dense_replace": 1},
    {**LLAMA, "model_type": "qwen2", "use_sliding_window": True, "sliding_window": 256, "max_window_layers": 1},
    {**LLAMA, "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}},
    {**LLAMA, "model_type": "gemma3", "text_config": {**LLAMA, "hidden_size": 32}},
]
KEYS = sorted({k for b in BASES for k in b} | {
    "head_dim", "tie_word_embeddings", "attention_bias", "mlp_bias", "layer_types", "sliding_window",
    "torch_dtype", "rope_theta", "n_embd", "num_layers", "d_model", "quantization_config", "text_config"})

# values a hostile or broken config might hold
NASTY = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 12), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from([0, 1, 2, 3, 7, 64, 4096, 10_000, 10_001, 1_000_000, 10**9, 1e30, -1, 64.0, 64.5, "4096", "no",
                     "true", [], {}, [0], [64, 64], ["full_attention"], {"bits": "four"}, {"hidden_size": math.nan}]),
    st.lists(st.integers(-2, 70), max_size=4), st.dictionaries(st.sampled_from(KEYS), st.integers(-2, 70), max_size=3),
)


def _small(config: dict) -> bool:
    """Legal sizes for which the full estimate (fit searches included) runs fast; the estimator's
    speed at legal large sizes is its own concern."""
    def num(*keys, default=1):
        for k in keys:
            v = config.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                return v
        return default
    return (num("num_hidden_layers", "num_layers", "n_layer") <= 16 and num("hidden_size", "d_model", "n_embd") <= 4096
            and num("vocab_size") <= 200_000 and num("intermediate_size") <= 16_384
            and num("num_local_experts", "num_experts", "n_routed_experts", default=0) <= 64
            and num("max_position_embeddings") <= 10**7 and num("num_attention_heads") <= 256
            and num("head_dim", default=64) <= 1024 and num("kv_lora_rank", default=0) <= 4096)


@given(base=st.sampled_from(BASES), changes=st.dictionaries(st.sampled_from(KEYS), NASTY, min_size=1, max_size=3))
def test_llm_configs_are_validated_or_estimated(base, changes):
    from gpu_preflight.estimators.engines.transformers import Workload
    from gpu_preflight.estimators.plan import estimate_llm, targets_from_specs
    from gpu_preflight.models.base import ModelSource
    from gpu_preflight.models.limits import validate_source

    config = {**copy.deepcopy(base), **changes}
    source = ModelSource(name="fuzz", origin="config", config=config, path="fuzz/config.json")
    try:
        validate_source(source)
    except PreflightError as exc:
        assert "\n" not in exc.message and exc.hint
        return
    assume(_small(config) and _small(config.get("text_config") if isinstance(config.get("text_config"), dict)
                                     else {}))
    layers = config.get("num_hidden_layers")
    targets = targets_from_specs(["h100"]) if isinstance(layers, int) and layers <= 4 else []
    try:
        report = estimate_llm(config, workload=Workload(input_len=64, output_len=16), targets=targets)
    except PreflightError as exc:
        assert "\n" not in exc.message
        return
    assert report["peak_process_bytes"] > 0


VAE = {"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512], "latent_channels": 16,
       "layers_per_block": 2}
DIT = {"_class_name": "FluxTransformer2DModel", "num_layers": 2, "num_single_layers": 2, "num_attention_heads": 4,
       "attention_head_dim": 16, "patch_size": 1, "in_channels": 64, "joint_attention_dim": 64}
UNET = {"_class_name": "UNet2DConditionModel", "block_out_channels": [320, 640, 1280], "layers_per_block": 2,
        "attention_head_dim": [5, 10, 20], "cross_attention_dim": 2048}
TE = {"model_type": "t5", "d_model": 64, "d_ff": 128, "num_heads": 4, "num_layers": 2, "vocab_size": 100}
COMPONENT_KEYS = sorted({k for c in (VAE, DIT, UNET, TE) for k in c if k != "_class_name"})


@given(denoiser=st.sampled_from(["transformer", "unet"]), part=st.sampled_from(["vae", "denoiser", "text_encoder"]),
       changes=st.dictionaries(st.sampled_from(COMPONENT_KEYS), NASTY, min_size=1, max_size=3))
def test_pipeline_configs_are_validated_or_estimated(denoiser, part, changes):
    from gpu_preflight.estimators.engines.diffusers import ImageWorkload, pipeline_entry, pipeline_report
    from gpu_preflight.estimators.plan import targets_from_specs
    from gpu_preflight.models.base import ModelSource
    from gpu_preflight.models.limits import validate_source

    den_cfg, den_cls = (DIT, "FluxTransformer2DModel") if denoiser == "transformer" else (UNET, "UNet2DConditionModel")
    configs = {"vae": dict(VAE), denoiser: dict(den_cfg), "text_encoder": dict(TE)}
    target = denoiser if part == "denoiser" else part
    configs[target].update(changes)
    classes = {"vae": "AutoencoderKL", denoiser: den_cls, "text_encoder": "T5EncoderModel"}
    comps = {n: ModelSource(name=n, origin="folder", config=c, metadata={"class": ["diffusers", classes[n]],
                                                                           "weights": {"parameters": 1000}})
             for n, c in configs.items()}
    index = {"_class_name": "FluxPipeline", **{n: ["diffusers", classes[n]] for n in comps}}
    source = ModelSource(name="p", origin="folder", config=index, components=comps, pipeline_index=index,
                         kind="diffusion", path="p")
    try:
        validate_source(source)
    except PreflightError as exc:
        assert "\n" not in exc.message
        return
    big = [v for c in configs.values() for v in c.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assume(all(abs(v) <= 10**6 for v in big))
    try:
        report = pipeline_report(pipeline_entry(source), ImageWorkload(height=256, width=256),
                                 targets_from_specs(["h100"]), 1 << 30, "fuzz", "p")
    except PreflightError as exc:
        assert "\n" not in exc.message
        return
    assert report["peak_process_bytes"] > 0


def _leaf_paths(node, path=()):
    if isinstance(node, dict):
        yield path
        for k, v in node.items():
            yield from _leaf_paths(v, path + (k,))
    elif isinstance(node, list):
        yield path
        for i, v in enumerate(node):
            yield from _leaf_paths(v, path + (i,))
    else:
        yield path


SNAPSHOTS = {p.name: json.loads(p.read_text()) for p in sorted((FIXTURES / "snapshots").glob("*.json"))}


def _with_interconnect(snap: dict) -> dict:
    """The two-GPU capture plus an `interconnect` section shaped as probes/interconnect.py writes it."""
    def f(value, source="nvml"):
        return {"value": value, "source": source}
    snap = copy.deepcopy(snap)
    gpu = {"persistence_mode": f(True), "pcie_link": f({"generation": 5, "width": 16}),
           "nvlink": f({"links": 18, "active": 18}), "fabric_state": f("completed")}
    snap["interconnect"] = {
        "hostname": f("node1", "python"), "pci_nvidia": f({"gpus": ["0000:01:00.0", "0000:02:00.0"],
                                                           "nvswitches": ["0000:03:00.0"]}, "/sys/bus/pci"),
        "infiniband": f(["mlx5_0"], "/sys/class/infiniband"), "nvidia_peermem_loaded": f(False, "/sys/module"),
        "nccl_env": f({"NCCL_P2P_DISABLE": "1", "NCCL_SOCKET_IFNAME": "lo"}, "environment"),
        "gpus": f([{"index": f(0), **gpu}, {"index": f(1), **gpu}]),
        "p2p_read": f([[None, True], [False, None]]), "topology": f([[None, "NVLink"], ["NVLink", None]])}
    return snap


SNAPSHOTS["h200x2-interconnect"] = _with_interconnect(SNAPSHOTS["h200x2-torch2.11.json"])
SNAP_PATHS = [(name, path) for name, snap in SNAPSHOTS.items() for path in _leaf_paths(snap) if path]
SNAP_VALUES = st.one_of(NASTY, st.just("DELETE"), st.sampled_from([
    {"value": "x", "source": "nvml"}, {"value": None, "source": "nvml", "unavailable": "gone"}, {"value": [1]},
    {"value": {"value": 1, "source": "s"}, "source": "s"}, "9.0", "535.54.03", "2.7.1+cu128", "12.8"]))


@given(where=st.lists(st.sampled_from(SNAP_PATHS), min_size=1, max_size=3), values=st.lists(SNAP_VALUES, min_size=3,
                                                                                           max_size=3))
def test_snapshots_are_refused_or_judged_consistently(where, values):
    from gpu_preflight import snapshots
    from gpu_preflight.commands._common import emit_report

    snap = copy.deepcopy(SNAPSHOTS[where[0][0]])
    for (_, path), value in zip(where, values):
        node = snap
        try:
            for part in path[:-1]:
                node = node[part]
            if value == "DELETE":
                del node[path[-1]]
            else:
                node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed this path
    text = json.dumps(snap)
    try:
        loaded = snapshots.loads(text, "box.json")
    except PreflightError as exc:
        assert "\n" not in exc.message
        return
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = emit_report("doctor", loaded, types.SimpleNamespace(json=True, verbose=False))
        except PreflightError as exc:
            assert "\n" not in exc.message
            return
    report = json.loads(out.getvalue())
    crashed = [f["message"] for f in report["findings"] if f["message"].startswith("check crashed")]
    assert crashed == []
    assert report["exit_code"] == code and report["ok"] == (code < 2)


@given(data=st.one_of(st.binary(max_size=200), st.builds(lambda n, body: struct.pack("<Q", n) + body,
                                                         st.integers(0, 2**64 - 1), st.binary(max_size=120))))
def test_safetensors_bytes_never_crash(data):
    from gpu_preflight.models.safetensors_header import read_safetensors_header

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(data)
        try:
            read_safetensors_header(path)
        except PreflightError as exc:
            assert "\n" not in exc.message
            # the first 8 bytes are never echoed (a link could make them any file's)
            if len(data) >= 8 and int.from_bytes(data[:8], "little") > 99:
                n = int.from_bytes(data[:8], "little")
                assert str(n) not in exc.message and f"{n:,}" not in exc.message


ENTRY = st.fixed_dictionaries({
    "dtype": st.one_of(st.sampled_from(["BF16", "F32", "U8", "F4", "Q4", ""]), st.integers(), st.none()),
    "shape": st.one_of(st.lists(st.integers(-2, 2**40), max_size=3), st.integers(), st.text(max_size=2)),
    "data_offsets": st.one_of(st.lists(st.integers(-2, 2**40), min_size=0, max_size=3), st.none()),
})


@given(header=st.dictionaries(st.text(max_size=4), ENTRY, max_size=4), extra=st.integers(0, 64))
def test_safetensors_headers_never_crash(header, extra):
    from gpu_preflight.models.safetensors_header import read_safetensors_header

    body = json.dumps(header).encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        path.write_bytes(struct.pack("<Q", len(body)) + body + bytes(extra))
        try:
            read_safetensors_header(path)
        except PreflightError as exc:
            assert "\n" not in exc.message


VALID_GGUF = gguf_bytes(llama_gguf_metadata(), llama_gguf_tensors())


@given(edits=st.lists(st.tuples(st.integers(0, len(VALID_GGUF) - 1), st.binary(min_size=1, max_size=8)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, len(VALID_GGUF))))
def test_gguf_mutations_never_crash(edits, cut):
    from gpu_preflight.models import gguf
    from gpu_preflight.models.limits import validate_llm_config

    data = bytearray(VALID_GGUF)
    for pos, patch in edits:
        data[pos:pos + len(patch)] = patch
    if cut is not None:
        del data[cut:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.gguf"
        path.write_bytes(bytes(data))
        try:
            header = gguf.read_gguf_header(path)
            validate_llm_config(gguf.gguf_to_hf_config(header.metadata, header.tensors), "m.gguf")
        except PreflightError as exc:
            assert "\n" not in exc.message


FLAGS = [["compat", "--gpu", "h100", "--ram-gb"], ["estimate", "qwen3-8b", "--gpu", "h100", "--batch"],
         ["estimate", "qwen3-8b", "--gpu", "h100", "--input-len"], ["estimate", "qwen3-8b", "--gpu", "h100", "--torch"],
         ["estimate", "qwen3-8b", "--engine", "vllm", "--gpu", "h100", "--gpu-memory-utilization"],
         ["estimate", "flux.1-dev", "--gpu", "h100", "--guidance-scale"], ["measure", "qwen3-8b", "--timeout-s"],
         ["compat", "--gpu", "h100", "--driver"], ["compat", "--gpu"]]


@settings(max_examples=max(10, settings.default.max_examples // 3))  # each runs a whole command
@given(flag=st.sampled_from(FLAGS), value=st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e309", "-1", "0", "0.0", "1e-300", "1_000", "0x10", " 5 ", "١٢"])))
def test_command_line_values_never_crash(flag, value):
    from nasty import judge, run_inprocess

    assume(not value.startswith("-") or value[1:2].isdigit() or value[1:] in ("nan", "inf"))
    outcome = run_inprocess([*flag, value] if not value.startswith("-") else [*flag[:-1], f"{flag[-1]}={value}"])
    assert outcome.rc in (0, 1, 2, 3)
    problems = [p for p in judge(outcome, "ok" if outcome.rc != 3 else "error") if "MiB" not in p]
    assert problems == [], (outcome.stderr[-400:])


HARMLESS = st.text(alphabet="0123456789 .:,=/[]%|#-abfghjpqstuvwxyz", max_size=60)
_TRIGGER_WORDS = [b"out of memory", b"outofmemory", b"memoryallocation", b"alloc_failed", b"resource_exhausted",
                  b"oom when", b"kernel image", b"nokernelimage", b"not compatible with the current pytorch",
                  b"driver version is insufficient", b"insufficientdriver", b"driver on your system is too old",
                  b"library version mismatch", b"not compiled with cuda", b"nvidia driver", b"libcuda.so",
                  b"driver initialization", b"cuda-capable device", b"nodevice", b"nccl",
                  b"collective operation timeout"]  # diagnose.TRIGGER_WORDS, written out
TRIGGERS = ["RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", "NCCL WARN failed",
            "no kernel image is available for execution on the device", "cudaErrorNoDevice",
            "The NVIDIA driver on your system is too old", "libcuda.so.1: cannot open shared object file"]


@given(before=st.lists(HARMLESS, max_size=20), after=st.lists(HARMLESS, max_size=20), trigger=st.sampled_from(TRIGGERS),
       ending=st.sampled_from(["\n", "\r\n", "\r"]), cuts=st.lists(st.integers(0, 4000), max_size=8),
       case=st.sampled_from(["keep", "upper", "lower"]))
def test_a_trigger_line_is_found_however_the_output_is_cut(before, after, trigger, ending, cuts, case):
    from gpu_preflight.watcher.diagnose import TRIGGER_LOWER, may_hold_trigger
    from gpu_preflight.watcher.stream import OutputPump

    line = {"keep": trigger, "upper": trigger.upper(), "lower": trigger.lower()}[case]
    data = (ending.join(before + [line] + after) + ending).encode()
    hits: list[str] = []
    pump = OutputPump({}, {}, TRIGGER_LOWER, on_line=lambda s, t, text: hits.append(text),
                      prefilter=may_hold_trigger)  # as watcher/runner.py builds it
    pump._carry = {"stdout": b""}
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in zip(points, points[1:]):
        pump._queue("stdout", 0.0, data[a:b])
        pump._scan_some(7)  # tiny slices: lines cut anywhere
    pump._scan_all()
    assert hits == [line]


@given(data=st.binary(max_size=300))
def test_the_fast_trigger_matches_the_case_insensitive_one(data):
    from gpu_preflight.watcher.diagnose import TRIGGER, TRIGGER_LOWER

    assert bool(TRIGGER_LOWER.search(data.lower())) == bool(TRIGGER.search(data))


@given(data=st.binary(max_size=400))
def test_the_prefilter_never_hides_what_the_regex_finds(data):
    from gpu_preflight.watcher.diagnose import TRIGGER_LOWER, may_hold_trigger

    if TRIGGER_LOWER.search(data.lower()):
        assert may_hold_trigger(data)


@given(before=st.binary(max_size=200), after=st.binary(max_size=200), word=st.sampled_from(_TRIGGER_WORDS),
       upper=st.lists(st.booleans(), min_size=40, max_size=40))
def test_a_trigger_word_in_any_case_passes_the_prefilter(before, after, word, upper):
    from gpu_preflight.watcher.diagnose import may_hold_trigger

    mixed = bytes(c - 32 if 97 <= c <= 122 and upper[i % 40] else c for i, c in enumerate(word))
    assert may_hold_trigger(before + mixed + after)


@given(text=st.text(max_size=80))
def test_sanitized_text_has_no_control_characters(text):
    from gpu_preflight.render.style import sanitize

    out = sanitize(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
                   "\u2066\u2067\u2068\u2069\u200e\u200f" for c in out)
