"""llama.cpp / Ollama engine: buffers against what llama.cpp logged, the recipe against published GGUF
sizes, header reading (local and Hub by range requests), flags, defaults and the CLI."""

from __future__ import annotations

import json
import re
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from models_helpers import ARRAY, STRING, U32, gguf_bytes, gguf_str  # noqa: F401

from gpu_preflight.cli import main
from gpu_preflight.errors import ModelSourceError, UsageError
from gpu_preflight.estimators.engines import llama_cpp as lc
from gpu_preflight.estimators.engines.llama_cpp_graph import Graph, T, _Dyn, allocate
from gpu_preflight.measurement import calibration_llamacpp as cal
from gpu_preflight.models import gguf_quant as gq
from gpu_preflight.models import gguf_remote

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
Q4_K, Q6_K, F32 = 12, 14, 0


# ---- the replay against llama.cpp's own logs ----

def test_compute_and_kv_match_a_cpu_build_of_llama_cpp():
    """48 configurations logged by llama.cpp 0c1e57098 (CPU build): 7 real model shapes x contexts,
    micro-batches, flash attention on/off, q8_0 KV, parallel streams, unified or not."""
    rows = cal.evaluate_cpu_replay(ROOT)
    assert len(rows) >= 40
    for r in rows:
        assert r["kv_predicted_mib"] == pytest.approx(r["kv_logged_mib"], abs=0.01), r["id"]
        assert r["compute_predicted_mib"] == pytest.approx(r["compute_logged_mib"], abs=0.02), r["id"]


def test_published_logs_kv_exact_and_compute_within_the_bar():
    rows = cal.evaluate_published(ROOT)
    assert rows
    errs = []
    for r in rows:
        assert r["kv_predicted_mib"] == pytest.approx(r["kv_logged_mib"], abs=0.01), r["id"]
        errs.append(r["compute_error"])
    s = cal.summary(errs)
    assert s["median"] <= 0.10 and s["worst"] <= 0.25


def test_recipe_file_sizes_within_two_percent_of_published_ggufs():
    rows = cal.evaluate_gguf_sizes(ROOT)
    assert len(rows) >= 10
    for r in rows:
        assert abs(r["error"]) < 0.02, (r["model"], r["quant"], r["error"])


# ---- the H200 measurements (calibration/llamacpp/gpu_h200.jsonl) held to the issue's bars ----
# Issue 10, Deliver 4: KV exact, compute buffer within 5 %, process peak within 3 %. The thresholds
# are the issue's, not what was achieved; training and held-out cases are checked separately.

GPU_HELD_OUT_MODELS = ("mistral-7b", "gemma-3-4b", "qwen2.5-3b")  # chosen before the run


@pytest.mark.parametrize("held_out", [False, True], ids=["training", "held-out"])
def test_gpu_cases_meet_the_issue_bars(held_out):
    rows = [r for r in cal.evaluate_gpu(ROOT) if r["held_out"] == held_out]
    assert len(rows) >= (7 if held_out else 20)
    for r in rows:
        assert r["held_out"] == r["id"].startswith(GPU_HELD_OUT_MODELS), r["id"]
        assert abs(r["model_gpu_predicted"] - r["model_gpu_logged"]) <= 0.01, r["id"]
        assert abs(r["kv_predicted"] - r["kv_logged"]) <= 0.01, r["id"]
        assert abs(r["kv_gpu_predicted"] - r["kv_gpu_logged"]) <= 0.01, r["id"]
        assert abs(r["compute_predicted"] - r["compute_logged"]) <= 0.05 * r["compute_logged"], r["id"]
        assert abs(r["peak_predicted"] - r["nvml_peak_mib"]) <= 0.03 * r["nvml_peak_mib"], r["id"]
        # not a bar of the issue: the host-side compute buffer (inputs, the Hadamard matrices of a
        # quantized cache) is replayed exactly too
        assert abs(r["host_predicted"] - r["host_logged"]) <= 0.01, r["id"]


def test_overhead_constants_are_the_training_cases_medians():
    d = cal.derive_overhead(ROOT)
    assert not any(i.startswith(GPU_HELD_OUT_MODELS) for i in d["training_ids"])
    assert d["first_prompt"]["n"] >= 10 and d["cublas"]["n"] >= 5 and d["startup"]["n"] >= 1
    m = lc.MEASURED_OVERHEAD
    assert m["context_bytes"] == round(d["context_mib"]) * MIB
    assert m["first_prompt_bytes"] == round(d["first_prompt_mib"]) * MIB
    assert m["cublas_bytes"] == round(d["cublas_mib"]) * MIB
    # the device-wide probes agree with the one start-up-only case: 526.81 + 2 - 8.8 = 520 MiB
    assert d["probes"]["max"] - d["probes"]["min"] < 0.1
    assert d["probes"]["median"] + 2 - d["nvml_offset"]["median"] == pytest.approx(d["context_mib"], abs=1)


def test_cuda_pool_follows_ggml_cuda():
    """Hand-computed from ggml-cuda's pool requests (0c1e57098), Llama-3.2-1B shape: 32 heads of 64,
    8 KV heads, FFN 8192, micro-batch 512."""
    def pool(quant, fa, ctx=4096, n_kv=None, n_tokens=None):
        m = _model(layers=16, quant=quant)
        s = lc.Settings(n_ctx=ctx, n_parallel=1, flash_attn=fa)
        lay = lc.layout(m, s)
        return lc.cuda_pool(m, s, lay, lc.placement(m, s, 1, 17), n_kv=n_kv, n_tokens=n_tokens)[0]

    # no flash attention: KQV converts the scores to F16 and writes F16: (n_kv + 64) x 512 x 32 x 2 bytes
    p = pool("Q4_K_M", "off")
    assert p.cublas and p.op == "KQV" and p.bytes == (4096 + 64) * 512 * 32 * 2 == 130 * MIB
    p = pool("Q4_K_M", "off", ctx=32768)   # a full 32k context: the pool grows with the cells
    assert p.bytes == (32768 + 64) * 512 * 32 * 2 == 1026 * MIB
    p = pool("Q4_K_M", "off", ctx=32768, n_kv=2048)  # what the GPU run's 2048-token prompt reached
    assert p.bytes == 66 * MIB
    # flash attention + quantized weights: MMQ's q8_1 copy of ffn_down's input, 512 x 8192 x 144/128
    # + 512 x 144, rounded up to the 2 MiB granularity
    p = pool("Q4_K_M", "on")
    assert not p.cublas and p.op == "ffn_down" and 512 * 8192 * 144 // 128 + 512 * 144 <= p.bytes == 6 * MIB
    # F16 weights: cuBLAS, activations and result in F16: 512 x (2048 + 8192) x 2 bytes
    p = pool("F16", "on")
    assert p.cublas and p.bytes == 512 * (2048 + 8192) * 2 == 10 * MIB
    # a single token (generation) needs no large scratch
    assert pool("Q4_K_M", "off", n_tokens=1).bytes <= 2 * MIB


def test_the_estimate_holds_the_pool_and_cublas_once_the_context_fills():
    m = _model(layers=16)
    s = lc.Settings(n_ctx=32768, n_parallel=1, flash_attn="off")
    gpu = lc.usage(m, s, 1, 17, 80 << 30, (9, 0))[0][0]
    assert gpu.pool_bytes == 1026 * MIB and gpu.cublas_bytes == lc.MEASURED_OVERHEAD["cublas_bytes"]
    fa = lc.usage(m, lc.replace(s, flash_attn="on"), 1, 17, 80 << 30, (9, 0))[0][0]
    assert fa.cublas_bytes == 0 and fa.pool_bytes == 6 * MIB
    base = lc.MEASURED_OVERHEAD["context_bytes"] + lc.MEASURED_OVERHEAD["first_prompt_bytes"]
    assert fa.overhead_bytes == base + fa.pool_bytes + fa.rounding_bytes
    assert 0 <= fa.rounding_bytes < 3 * 2 * MIB


# ---- the quantization recipe, rule by rule ----

def _llama(layers=32, tied=False, kv=8, experts=0):
    return gq.ModelShape(arch="llama", n_layer=layers, n_embd=4096, n_head=32, n_head_kv=kv, head_dim=128,
                         n_ff=14336, n_vocab=128256, tied=tied, n_expert=experts, n_expert_used=2 if experts else 0,
                         n_ff_exp=14336 if experts else 0)


def _types(shape, ftype):
    return {t.name: t.type for t in gq.quantize(gq.gguf_tensors(shape), ftype, shape)}


def test_q4_k_m_uses_q6_k_for_output_and_every_third_attn_v_and_ffn_down():
    t = _types(_llama(), "Q4_K_M")
    assert t["output.weight"] == "Q6_K" and t["token_embd.weight"] == "Q4_K"
    assert t["blk.10.attn_q.weight"] == "Q4_K" and t["blk.0.attn_norm.weight"] == "F32"
    six = [il for il in range(32) if t[f"blk.{il}.attn_v.weight"] == "Q6_K"]
    # use_more_bits: first and last eighth, and (i - n/8) % 3 == 2 in between
    assert six == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    assert [il for il in range(32) if t[f"blk.{il}.ffn_down.weight"] == "Q6_K"] == six


def test_tied_embeddings_take_the_output_type_and_70b_bumps_attn_v():
    assert _types(_llama(tied=True), "Q4_K_M")["token_embd.weight"] == "Q6_K"
    t70 = _types(gq.ModelShape("llama", 80, 8192, 64, 8, 128, 28672, 128256, False), "Q4_K_M")
    assert {t70[f"blk.{i}.attn_v.weight"] for i in range(80)} == {"Q5_K", "Q6_K"}


def test_rows_that_do_not_split_into_256_blocks_fall_back():
    s = gq.ModelShape("qwen2", 8, 896, 14, 2, 64, 4800, 151936, True, qkv_bias=True)  # 896 wide, as Qwen2.5-0.5B
    t = _types(s, "Q4_K_M")
    assert t["blk.1.attn_q.weight"] == "Q5_0"     # 896 % 256 != 0: Q4_K -> Q5_0
    assert t["blk.0.ffn_down.weight"] == "Q8_0"   # rows of 4800: the Q6_K of layer 0 falls back to Q8_0
    assert t["blk.1.ffn_down.weight"] == "Q5_0"   # ... and Q4_K to Q5_0
    assert t["token_embd.weight"] == "Q8_0"       # tied output type with rows not divisible -> Q8_0


def test_eight_experts_and_imatrix_types():
    t = _types(_llama(experts=8), "Q4_K_M")
    assert t["blk.3.attn_v.weight"] == "Q8_0" and t["blk.3.attn_k.weight"] == "Q8_0"
    assert t["blk.3.ffn_gate_inp.weight"] == "F32"
    with pytest.raises(UsageError, match="importance matrix"):
        gq.parse_ftype("IQ2_XXS")
    with pytest.raises(UsageError, match="not a llama.cpp file type"):
        gq.parse_ftype("Q7_K")


# ---- the allocator replay on hand-checked graphs ----

def test_allocator_best_fit_reuses_freed_blocks_and_in_place_ops():
    a = _Dyn(32)
    x = a.alloc(100)
    y = a.alloc(64)
    a.free(x, 100)
    z = a.alloc(64)          # fits in the freed 128-byte block
    assert (x, y, z) == (0, 128, 0) and a.max_size == 192

    def leaf(n):
        t = T("in", "NONE", [], (n,))
        t.flags = 1
        t.backend = 0
        return t

    g = Graph()
    inp = leaf(1024)
    a1 = T("a", "MUL_MAT", [inp], (1024,))
    b1 = T("b", "ADD", [a1], (1024,))      # in place on a (its only consumer)
    c1 = T("c", "MUL_MAT", [b1], (2048,))
    c1.flags = 2
    g.expand(c1)
    for t in g.nodes:
        t.backend = 0
    peak = allocate([(t, 0) for t in g.nodes], g.leafs, {0: 32})[0]
    # input [0, 4K) is freed after a [4K, 8K); b runs in place on a; c (8 KiB) does not fit the freed
    # 4 KiB block, so it extends the buffer: [8K, 16K)
    assert peak == 16384


# ---- engine: layout, placement, defaults ----

def _model(layers=16, swa=None, quant="Q4_K_M"):
    cfg = {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": layers, "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 8192, "vocab_size": 128256,
           "tie_word_embeddings": True, "max_position_embeddings": 131072}
    return cal.model_from_config(cfg, quant)


def test_context_padding_and_streams_by_release():
    m = _model()
    new = lc.Settings(version="b10800", n_ctx=5000, n_parallel=3)
    lay = lc.layout(m, new)
    assert (lay.n_ctx, lay.cells, lay.n_stream) == (5376, 1792, 3)   # 5000 -> 5120 -> /3 -> 1707 -> 1792 x 3
    old = lc.Settings(version="b6150", n_ctx=5000, flash_attn="off", era=2025)
    assert lc.layout(m, old).n_ctx == 5024                          # 2025: padded to 32 without flash attention
    old_fa = lc.Settings(version="b6150", n_ctx=5000, flash_attn="on", era=2025)
    assert lc.layout(m, old_fa).n_ctx == 5120


def test_kv_bytes_per_type_and_v_cache_needs_flash_attention():
    m = _model()
    s = lc.Settings(n_ctx=4096, n_parallel=1, type_k="q8_0", type_v="q8_0", flash_attn="on")
    lay = lc.layout(m, s)
    kv = sum(lc.kv_buffers(m, s, lay, lc.placement(m, s, 1, 17)).values())
    assert kv == 16 * 2 * 4096 * (512 // 32 * 34)  # 16 layers x K,V x cells x q8_0 row of 512
    with pytest.raises(UsageError, match="needs flash attention"):
        lc._settings(m, {"cache_type_v": "q4_0", "flash_attn": "off"}, "llama.cpp", [])


def test_ngl_counts_the_output_layer_first_in_new_builds():
    m = _model(layers=16)
    new = lc.placement(m, lc.Settings(version="b10800"), 1, 1)
    assert new.dev_output == 0 and set(new.dev_layer) == {1}            # only the output layer on the GPU
    old = lc.placement(m, lc.Settings(version="b6150"), 1, 1)
    assert old.dev_output == 1 and old.dev_layer[-1] == 0 and old.dev_layer[0] == 1
    split = lc.placement(m, lc.Settings(tensor_split=[3, 1]), 2, 17)
    # layer i goes to the first GPU whose cumulative share exceeds i / 17: 13 layers, then 3 + the output
    assert split.dev_layer.count(0) == 13 and split.dev_layer.count(1) == 3 and split.dev_output == 1


def test_max_gpu_layers_and_context_are_monotone_and_fit():
    m = _model(layers=16)
    s = lc.Settings(n_ctx=32768, n_parallel=1, flash_attn="on")
    mem = 2 * (1 << 30)
    ngl = lc.max_gpu_layers(m, s, 1, mem, None)
    assert 0 < ngl < 17
    assert lc.fits(lc.usage(m, s, 1, ngl, mem, None)[0])
    assert not lc.fits(lc.usage(m, s, 1, ngl + 1, mem, None)[0])
    ctx = lc.max_context(m, s, 1, 17, 4 * (1 << 30), None)
    assert ctx and ctx % 256 == 0
    assert lc.fits(lc.usage(m, lc.replace(s, n_ctx=ctx), 1, 17, 4 * (1 << 30), None)[0])
    assert not lc.fits(lc.usage(m, lc.replace(s, n_ctx=ctx + 256), 1, 17, 4 * (1 << 30), None)[0])


def test_ollama_defaults_by_release():
    assert lc.ollama_version("0.6.6")[1]["num_ctx"] == 2048
    assert lc.ollama_version("0.6.7")[1]["num_ctx"] == 4096
    row = lc.ollama_version("0.15.5")[1]
    assert lc.ollama_num_ctx(row, 16 << 30) == 4096 and lc.ollama_num_ctx(row, 40 << 30) == 32768
    assert lc.ollama_num_ctx(row, 80 << 30) == 262144
    assert lc.ollama_flash_attn(row, "gemma3") and not lc.ollama_flash_attn(row, "llama")
    with pytest.raises(UsageError):
        lc.ollama_version("latest")
    assert lc.resolve_version("b5000") == ("b6150", 2024) and lc.resolve_version(None) == ("b10800", 2026)


# ---- the CLI ----

def _gguf(tmp_path: Path, tied=True) -> Path:
    meta = [("general.architecture", STRING, "llama"), ("general.name", STRING, "Tiny"),
            ("general.file_type", U32, 15), ("llama.block_count", U32, 2), ("llama.embedding_length", U32, 256),
            ("llama.feed_forward_length", U32, 512), ("llama.attention.head_count", U32, 4),
            ("llama.attention.head_count_kv", U32, 2), ("llama.context_length", U32, 8192)]
    tensors = [("token_embd.weight", (256, 1024), Q4_K), ("output_norm.weight", (256,), F32)]
    if not tied:
        tensors.append(("output.weight", (256, 1024), Q6_K))
    for il in range(2):
        p = f"blk.{il}."
        tensors += [(p + "attn_norm.weight", (256,), F32), (p + "ffn_norm.weight", (256,), F32),
                    (p + "attn_q.weight", (256, 256), Q4_K), (p + "attn_k.weight", (256, 128), Q4_K),
                    (p + "attn_v.weight", (256, 128), Q6_K), (p + "attn_output.weight", (256, 256), Q4_K),
                    (p + "ffn_gate.weight", (256, 512), Q4_K), (p + "ffn_up.weight", (256, 512), Q4_K),
                    (p + "ffn_down.weight", (512, 256), Q6_K)]
    path = tmp_path / "tiny-Q4_K_M.gguf"
    path.write_bytes(gguf_bytes(meta, tensors))
    return path


def _run(capsys, *args) -> tuple[int, str]:
    rc = main(["estimate", *args])
    return rc, capsys.readouterr().out


def test_a_gguf_defaults_to_llama_cpp_and_reports_the_contract(tmp_path, capsys):
    path = _gguf(tmp_path)
    rc, out = _run(capsys, str(path), "--gpu", "rtx-3060", "--json")
    r = json.loads(out)
    assert rc == 0 and r["engine"] == "llama.cpp"
    keys = {"model_buffer_bytes", "kv_cache_bytes", "compute_buffer_bytes", "per_device", "n_gpu_layers",
            "max_gpu_layers_that_fit", "command"}
    assert keys <= set(r["llama_cpp"])
    assert r["llama_cpp"]["command"].startswith("llama-server -m ")
    assert r["llama_cpp"]["n_gpu_layers"] == 3  # 2 layers + output, everything fits
    # the file stays quantized: its tensors plus a tied output copy on the GPU, token_embd on the CPU
    assert r["llama_cpp"]["per_device"][1]["model_buffer_bytes"] == 1024 * 256 // 256 * 144


def test_transformers_still_takes_a_gguf_when_asked(tmp_path, capsys):
    rc, out = _run(capsys, str(_gguf(tmp_path, tied=False)), "--gpu", "rtx-3060", "--engine", "transformers", "--json")
    assert json.loads(out)["engine"] == "transformers"


def test_flags_of_llama_cpp_are_refused_by_other_engines(tmp_path, capsys):
    rc = main(["estimate", str(_gguf(tmp_path)), "--gpu", "rtx-3060", "--engine", "transformers", "--ctx", "4096"])
    err = capsys.readouterr().err
    assert rc == 3 and "--ctx" in err and "llama.cpp" in err


def test_text_output_names_the_command_and_the_largest_ngl(tmp_path, capsys):
    rc, out = _run(capsys, str(_gguf(tmp_path)), "--gpu", "rtx-3060", "--ctx", "8192", "--n-gpu-layers", "1")
    assert "llama-server -m" in out and "-ngl 1" in out and "CUDA0" in out


def test_catalog_model_needs_quant_and_ollama_prints_its_settings(capsys):
    rc = main(["estimate", "qwen2.5-7b-instruct", "--engine", "llama.cpp", "--gpu", "rtx-4090"])
    assert rc == 3 and "--quant" in capsys.readouterr().err
    rc, out = _run(capsys, "qwen2.5-7b-instruct", "--engine", "ollama", "--quant", "Q4_K_M", "--gpu", "rtx-4090",
                   "--ollama", "0.6.7", "--json")
    r = json.loads(out)
    assert r["engine"] == "ollama" and r["llama_cpp"]["n_ctx"] == 4096
    assert "ollama serve" in r["llama_cpp"]["command"]
    assert any("PARAMETER num_ctx 4096" in x for x in r["llama_cpp"]["ollama"]["modelfile"])


def test_quant_on_a_gguf_is_refused(tmp_path, capsys):
    rc = main(["estimate", str(_gguf(tmp_path)), "--gpu", "rtx-3060", "--quant", "Q4_K_M"])
    assert rc == 3 and "already a GGUF" in capsys.readouterr().err


# ---- a GGUF on the Hub: header only, by range requests ----

class _Ranges(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    seen: list[str | None] = []
    honour_range = True

    def do_GET(self):  # noqa: N802
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path)
        data = self.files.get(m.group(3)) if m else None
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        rng = self.headers.get("Range")
        type(self).seen.append(rng)
        if rng and self.honour_range:
            a, b = (int(x) for x in re.match(r"bytes=(\d+)-(\d+)", rng).groups())
            chunk = data[a:b + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{a + len(chunk) - 1}/{len(data)}")
        else:
            chunk = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        self.wfile.write(chunk)

    def log_message(self, *args):
        pass


@pytest.fixture()
def hub(tmp_path):
    blob = _gguf(tmp_path).read_bytes() + bytes(8 << 20)  # 8 MiB of "tensor data" that must not be fetched
    _Ranges.files = {"tiny-Q4_K_M.gguf": blob}
    _Ranges.seen = []
    _Ranges.honour_range = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ranges)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", blob
    server.shutdown()


def test_hub_gguf_reads_the_header_by_ranges_only(hub):
    endpoint, blob = hub
    src = gguf_remote.load_hub_gguf("org/tiny/tiny-Q4_K_M.gguf", env={"HF_ENDPOINT": endpoint})
    assert src.origin == "gguf" and src.tensors and src.config["num_hidden_layers"] == 2
    assert _Ranges.seen and all(r and r.startswith("bytes=0-") for r in _Ranges.seen)
    fetched = max(int(r.split("-")[1]) for r in _Ranges.seen) + 1
    assert fetched <= 1 << 20 < len(blob)
    assert gguf_remote.is_hub_gguf("org/tiny/tiny-Q4_K_M.gguf@main")
    assert gguf_remote.parse_spec("https://huggingface.co/org/tiny/resolve/v1/sub/x.gguf") == ("org/tiny", "sub/x.gguf",
                                                                                             "v1")


def test_hub_gguf_errors_are_one_line(hub):
    endpoint, _ = hub
    with pytest.raises(ModelSourceError, match="not found"):
        gguf_remote.load_hub_gguf("org/tiny/missing.gguf", env={"HF_ENDPOINT": endpoint})
    _Ranges.honour_range = False
    with pytest.raises(ModelSourceError, match="ignored the byte range"):
        gguf_remote.load_hub_gguf("org/tiny/tiny-Q4_K_M.gguf", env={"HF_ENDPOINT": endpoint})
    with pytest.raises(ModelSourceError, match="offline"):
        gguf_remote.load_hub_gguf("org/tiny/tiny-Q4_K_M.gguf", env={"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "1"})


def test_hub_gguf_through_the_cli(hub, capsys, monkeypatch):
    endpoint, _ = hub
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    rc, out = _run(capsys, "org/tiny/tiny-Q4_K_M.gguf", "--gpu", "rtx-3060", "--json")
    r = json.loads(out)
    assert r["engine"] == "llama.cpp" and "/resolve/" in r["llama_cpp"]["command"]


def test_accuracy_doc_section_is_the_generators_output():
    text = (ROOT / "docs" / "accuracy.md").read_text(encoding="utf-8")
    section = cal.markdown_section(ROOT).strip("\n")
    assert section in text, "regenerate: python -m gpu_preflight.measurement.calibration_llamacpp"
