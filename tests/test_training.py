"""The training estimate (estimators/engines/training.py): counts checked against hand-derived bytes,
the CLI contract, the search, and (when torch, transformers and peft are installed) real training
steps on the CPU compared with the replay."""

import json
import os
import sys

import pytest

from gpu_preflight.cli import main
from gpu_preflight.estimators.arch import parse_llm
from gpu_preflight.estimators.engines import training as T
from gpu_preflight.models.catalog import default_catalog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30


def shape(model_id, **over):
    cfg = dict(default_catalog().find(model_id).config)
    cfg.update(over)
    return T.shape_from_arch(parse_llm(cfg))


def run(capsys, *argv):
    code = main(["estimate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- bytes the replay must count, derived by hand from the sources ----

def test_adamw_states_are_two_param_sized_tensors_plus_the_fused_step_scalar():
    # Qwen2.5-0.5B: 494,032,768 parameters in 290 tensors (embeddings tied; per layer q/k/v weight+bias, o,
    # gate, up, down, two norms = 12; 24 layers; final norm). bf16 weights: exp_avg + exp_avg_sq = 4 bytes per
    # parameter; torch's fused AdamW keeps state["step"] as a float32 scalar on the device.
    r = T.replay(shape("qwen2.5-0.5b-instruct"), T.TrainSetup(seq_len=256), (9, 0))
    assert r.trainable_params == 494_032_768
    assert r.state_bytes == 4 * 494_032_768 + 4 * 290


def test_saved_activations_per_llama_layer_match_the_autograd_count():
    # Per token, full fine-tuning, bf16 weights, flash SDPA, no checkpointing (docs/training.md):
    # 2 RMSNorms x (float32 copy 4H + rstd 4 + bf16 normalized 2H + output 2H), q after RoPE 2*q, K and V
    # copied by the DynamicCache 2*kv each, SDPA output 2*q and logsumexp 4 per head, MLP gate/act/up/prod 4 x 2I.
    sh = shape("llama-3.2-1b-instruct")
    H, I, q, kv, nh = sh.hidden, sh.intermediate, sh.heads * sh.head_dim, sh.kv_heads * sh.head_dim, sh.heads
    per_token = 2 * (4 * H + 4 + 2 * H + 2 * H) + 2 * q + 2 * 2 * kv + 2 * q + 4 * nh + 4 * 2 * I
    st = T.TrainSetup(seq_len=1024, micro_batch=2, device="cpu")
    r = T.replay(sh, st, steps=1)
    assert r.act_per_layer == 2048 * per_token


def test_checkpointing_keeps_only_each_layer_input():
    sh = shape("llama-3.2-1b-instruct")
    r = T.replay(sh, T.TrainSetup(seq_len=1024, grad_ckpt=True, device="cpu"), steps=1)
    assert r.act_per_layer == 1024 * sh.hidden * 2


def test_the_loss_holds_three_float32_vocab_sized_tensors_at_the_start_of_backward():
    # ForCausalLMLoss: log_softmax's float32 result (saved), nll_loss's zero-filled gradient and
    # log_softmax's gradient, each tokens x vocab x 4 bytes.
    sh = shape("qwen2.5-0.5b-instruct")
    N = 2048
    r = T.replay(sh, T.TrainSetup(seq_len=N, device="cpu"), steps=1)
    loss = r.phases["backward"]["at_peak"]["logits_and_loss"]
    assert abs(loss - 12 * N * sh.vocab) < 0.001 * loss


def test_lora_trainable_parameters_are_rank_times_in_plus_out():
    sh = shape("llama-3.2-1b-instruct")
    H, I, q, kv = sh.hidden, sh.intermediate, sh.heads * sh.head_dim, sh.kv_heads * sh.head_dim
    per_layer = 16 * ((H + q) + (H + kv) * 2 + (q + H) + (H + I) * 2 + (I + H))
    r = T.replay(sh, T.TrainSetup(mode="lora", seq_len=128, device="cpu"), steps=1)
    assert r.trainable_params == per_layer * sh.layers
    # float32 adapters (peft autocast_adapter_dtype) with fused AdamW: 4 + 4 + 4 bytes each, plus the step
    assert r.state_bytes == 8 * r.trainable_params + 4 * 2 * 7 * sh.layers


def test_qlora_weights_are_nf4_with_double_quantized_absmax():
    sh = shape("llama-3.2-1b-instruct")
    lin = sh.params() - sh.vocab * sh.hidden - sh.hidden - sh.layers * 2 * sh.hidden  # the nn.Linear weights
    r = T.replay(sh, T.TrainSetup(mode="qlora", seq_len=128, device="cpu"), steps=1)
    blocks = lin / 64
    nf4 = lin / 2 + blocks + blocks / 256 * 4
    others = (sh.vocab * sh.hidden + sh.hidden + sh.layers * 2 * sh.hidden) * 4   # float32 (prepare_model_for_kbit_training)
    adapters = r.trainable_params * 4
    assert abs(r.weights_bytes - (nf4 + others + adapters)) < 0.001 * r.weights_bytes


def test_zero3_keeps_a_gpus_share_of_deepspeeds_sixteen_bytes_per_parameter():
    sh = shape("llama-3.2-3b-instruct")
    for n in (2, 8):
        r = T.replay(sh, T.TrainSetup(seq_len=256, gpus=n, zero=3, device="cpu"), steps=1)
        assert abs(r.state_bytes - 16 * sh.params() / n) < 0.002 * r.state_bytes


def test_host_ram_for_zero_offload_follows_deepspeeds_estimators():
    sh = shape("llama-3.2-3b-instruct")
    st = T.TrainSetup(gpus=2, zero=2, offload_optimizer="cpu")
    assert T.host_ram_bytes(sh, st) == int(sh.params() * 16 * 1.5)       # max(4 x 2, 16) x 1.5
    st8 = T.TrainSetup(gpus=8, zero=2, offload_optimizer="cpu")
    assert T.host_ram_bytes(sh, st8) == int(sh.params() * 32 * 1.5)      # max(4 x 8, 16) x 1.5
    assert T.host_ram_bytes(sh, T.TrainSetup(gpus=8, zero=3, offload_optimizer="cpu")) == int(sh.params() * 24)


def test_foreach_adamw_needs_one_more_param_sized_temporary_than_fused():
    sh = shape("qwen2.5-0.5b-instruct")
    fused = T.replay(sh, T.TrainSetup(seq_len=128, device="cpu"), steps=2).phases["optimizer"]["alloc"]
    foreach = T.replay(sh, T.TrainSetup(seq_len=128, optimizer="adamw_foreach", device="cpu"), steps=2)
    extra = foreach.phases["optimizer"]["alloc"] - fused
    assert abs(extra - (2 * 494_032_768 - 4 * 290)) < 1e6


def test_the_compressed_search_replay_tracks_the_full_one():
    sh = shape("llama-3.2-3b-instruct")
    st = T.TrainSetup(seq_len=2048)
    full = T.replay(sh, st, (9, 0))
    small = T.replay(sh, st, (9, 0), explicit_layers=T.SEARCH_LAYERS)
    for ph in ("forward", "backward", "optimizer"):
        assert abs(small.phases[ph]["alloc"] - full.phases[ph]["alloc"]) < 0.01 * full.phases[ph]["alloc"]
    peak = max(p["reserved"] for p in full.phases.values())
    assert abs(max(p["reserved"] for p in small.phases.values()) - peak) < 0.03 * peak


def test_search_max_finds_the_boundary_of_a_monotone_test():
    assert T.search_max(1, 4096, lambda n: n <= 37) == 37
    assert T.search_max(1, 4096, lambda n: n <= 5000) == 4096
    assert T.search_max(1, 4096, lambda n: False) is None
    big = T.search_max(16, 131072, lambda n: n <= 50_000)
    assert 50_000 - 50_000 / 64 <= big <= 50_000


# ---- the command ----

def test_train_selects_the_training_engine_and_reports_phases(capsys):
    code, out, err = run(capsys, "qwen2.5-0.5b-instruct", "--train", "lora", "--gpu", "h100", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["engine"] == "training" and r["workload"]["train"] == "lora"
    assert set(r["phases"]) == {"forward", "backward", "optimizer"}
    for key in ("weights", "grads", "optimizer_states", "activations", "logits_and_loss", "allocator", "context"):
        assert key in r["breakdown"]
    assert r["peak_process_bytes"] == max(p["peak_process_bytes"] for p in r["phases"].values())
    assert r["max_micro_batch"] >= 1 and r["max_seq_len"] >= 2048
    assert r["fits"][0]["fits"] and r["suggestions"] == []


def test_a_setup_that_does_not_fit_gets_the_cheapest_change(capsys):
    code, out, _ = run(capsys, "llama-3.2-3b-instruct", "--train", "full", "--seq-len", "4096", "--gpu", "rtx-4090",
                       "--json")
    assert code == 2
    r = json.loads(out)
    cheapest = [s for s in r["suggestions"] if s["cheapest"]]
    assert len(cheapest) == 1 and cheapest[0]["fits"]
    assert r["max_micro_batch"] is None


def test_text_report_renders(capsys):
    code, out, _ = run(capsys, "llama-3.2-1b-instruct", "--train", "full", "--grad-checkpointing", "--gpu", "h100")
    assert code == 0
    assert "Peak GPU memory per GPU" in out and "optimizer_states" in out and "largest micro-batch" in out


def test_training_flags_are_refused_by_the_inference_engine(capsys):
    code, _, err = run(capsys, "qwen2.5-0.5b-instruct", "--engine", "transformers", "--train", "full", "--gpu", "h100")
    assert code == 3 and "--train does not apply" in err


def test_zero_and_fsdp_together_are_a_usage_error(capsys):
    code, _, err = run(capsys, "qwen2.5-0.5b-instruct", "--train", "full", "--gpu", "h100:4", "--zero", "3",
                       "--fsdp", "full_shard")
    assert code == 3 and "choose one" in err


def test_moe_training_is_refused_with_a_hint(capsys):
    code, _, err = run(capsys, "mixtral-8x7b-instruct-v0.1", "--train", "lora", "--gpu", "h100")
    assert code == 3 and "mixture-of-experts" in err and "hint:" in err


def test_offload_reports_host_ram(capsys):
    _, out, _ = run(capsys, "llama-3.2-3b-instruct", "--train", "full", "--gpu", "rtx-4090:2", "--zero", "2",
                    "--offload-optimizer", "cpu", "--grad-checkpointing", "--ram-gb", "128", "--json")
    r = json.loads(out)
    assert r["host_ram_bytes"] == int(shape("llama-3.2-3b-instruct").params() * 16 * 1.5)
    assert r["host_ram_fits"] is True and r["measured"] is False and r["unmeasured"]


def test_more_gpus_with_zero3_lower_the_per_gpu_peak():
    sh = shape("llama-3.2-3b-instruct")
    one = T.estimate_training(sh, T.TrainSetup(seq_len=1024, grad_ckpt=True, zero=3, gpus=2), (9, 0), 0)
    eight = T.estimate_training(sh, T.TrainSetup(seq_len=1024, grad_ckpt=True, zero=3, gpus=8), (9, 0), 0)
    assert eight.peak_process_bytes < one.peak_process_bytes


# ---- the measurement matrix and child ----

def test_matrix_has_eight_models_both_modes_both_checkpointing_settings_two_lengths():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import calibrate_train

    with open(os.path.join(ROOT, "bench", "matrix_train.json"), encoding="utf-8") as fh:
        matrix = json.load(fh)
    assert len(matrix["models"]) >= 8
    for m in matrix["models"]:
        cases = calibrate_train.model_cases(matrix, m)
        grid = {(c["mode"], c["grad_ckpt"], c["seq_len"]) for c in cases}
        assert len({c[2] for c in grid}) >= 2 and {c[0] for c in grid} == {"full", "lora"}
        assert {c[1] for c in grid} == {False, True}
    assert set(matrix["held_out"]["models"]) <= {m.get("tag") or m["id"] for m in matrix["models"]}


class _Records:
    def __init__(self):
        self.rows = []

    def write(self, record):
        self.rows.append(json.loads(json.dumps(record)))


@pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in ("torch", "transformers", "peft")),
                    reason="torch, transformers and peft are not installed")
def test_real_training_steps_on_the_cpu_match_the_replay():
    """The measurement child's own code, in this process, on a toy Qwen2 (GQA, qkv biases, tied
    embeddings): the bytes of live tensor storages per phase against the replay without allocator."""
    import torch

    from gpu_preflight.measurement import train_child as tc
    from gpu_preflight.measurement.calibration_train import compare

    config = {"model_type": "qwen2", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024, "tie_word_embeddings": True,
              "max_position_embeddings": 1024}
    cases = [{"name": n, "mode": mode, "micro_batch": 2, "seq_len": 64, "grad_ckpt": ck, "optimizer": opt,
              "mixed_precision": "bf16", "param_dtype": "bfloat16", "lora_rank": 4, "steps": 2}
             for n, mode, ck, opt in (("full", "full", False, "adamw_foreach"), ("full-ck", "full", True, "adamw"),
                                      ("lora-ck", "lora", True, "sgd"))]
    rec = _Records()
    dev = tc.Device(torch, "cpu")
    rec.write({**tc.environment(torch, "cpu"), "model": "tiny-qwen2"})
    tc.run(torch, {"model": {"id": "tiny-qwen2", "config": config}, "cases": cases}, rec, dev)
    for r in rec.rows:
        r["_env"], r["_file"] = rec.rows[0], "in-process"
    rows = compare(rec.rows, ROOT)
    assert len([r for r in rows if r["phase"] == "step"]) == 3
    for r in rows:
        assert abs(r["allocated_error"]) < 0.01, r


# ---- tied embeddings: the lm_head's and the embedding's gradients are summed out of place ----

def test_tied_embeddings_hold_two_extra_embedding_sized_tensors_at_the_end_of_backward():
    # At 64 tokens the backward peak is its end: every gradient, plus the embedding's gradient and the
    # new sum of the two (input_buffer.cpp cannot add into the lm_head's gradient, a view): weights +
    # gradients + 2 x vocab x hidden x 2 bytes. With fp32 weights the lm_head's gradient comes through
    # autocast's cast backward (a fresh tensor) and the sum is in place: one extra. Untied: none.
    for model_id, dtype, extra in (("llama-3.2-1b-instruct", "bfloat16", 2), ("llama-3.2-1b-instruct", "float32", 1),
                                   ("mistral-7b-instruct-v0.3", "bfloat16", 0)):
        sh = shape(model_id, num_hidden_layers=2)
        r = T.replay(sh, T.TrainSetup(seq_len=64, device="cpu", param_dtype=dtype), steps=1)
        unit = sh.vocab * sh.hidden * T.dtype_bytes(dtype)
        above = r.phases["backward"]["alloc"] - r.weights_bytes - r.grad_bytes
        assert abs(above - extra * unit) < 0.01 * unit, (model_id, dtype, above / unit)


@pytest.mark.skipif(not __import__("importlib").util.find_spec("torch"), reason="torch is not installed")
def test_torch_adds_a_linear_weights_two_gradients_out_of_place():
    """What the replay assumes, seen in the installed torch: a weight used by F.embedding and F.linear
    (tied embeddings) gets its two gradients summed by aten::add (a new tensor); a weight used by two
    embeddings (fresh gradients) by aten::add_ (in place)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    def ops(tied_linear: bool) -> list[str]:
        w = torch.nn.Parameter(torch.randn(300, 64))
        idx = torch.randint(0, 300, (1, 8))
        x = torch.nn.functional.embedding(idx, w)
        y = torch.nn.functional.linear(x, w) if tied_linear else torch.nn.functional.embedding(idx, w) * x
        loss = y.sum()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            loss.backward()
        return [e.name for e in prof.events() if e.name in ("aten::add", "aten::add_")]

    assert ops(True) == ["aten::add"]
    assert ops(False) == ["aten::add_"]


# ---- the committed GPU measurements (calibration/raw/train-h200.jsonl) held to issue 13's bars ----

@pytest.fixture(scope="module")
def h200_rows():
    from gpu_preflight.measurement.calibration_train import compare, load

    path = os.path.join(ROOT, "calibration", "raw", "train-h200.jsonl")
    return compare(load([path]), ROOT)


def _step(rows, held):
    return [r for r in rows if r["phase"] == "step" and r["held_out"] == held]


def test_h200_matrix_is_complete_and_its_held_out_models_are_reported_apart(h200_rows):
    held, rest = _step(h200_rows, True), _step(h200_rows, False)
    assert len(held) == 26 and len({r["model"] for r in held}) == 3
    assert len(rest) == 54 and len({r["model"] for r in rest}) == 5
    assert all(r["gpu"] == "NVIDIA H200" and r["torch"].startswith("2.11") for r in held + rest)
    assert {r["mode"] for r in held + rest} == {"full", "lora"} and {r["grad_ckpt"] for r in held + rest} == {True, False}


@pytest.mark.parametrize("held", [True, False], ids=["held-out", "not-held-out"])
def test_h200_process_peak_within_five_percent_median_twelve_worst(h200_rows, held):
    import statistics

    errs = [abs(r["process_error"]) for r in _step(h200_rows, held)]
    assert statistics.median(errs) <= 0.05
    assert max(errs) <= 0.12


def test_h200_allocated_peaks_within_two_percent(h200_rows):
    # torch's max_memory_allocated per phase; before the tied-embedding accumulation was modelled the
    # backward of short sequences was up to 6 % low
    worst = max(abs(r["allocated_error"]) for r in h200_rows)
    assert worst <= 0.02


def test_the_training_overhead_constant_is_the_median_of_the_cases_not_held_out(h200_rows):
    from gpu_preflight.measurement.calibration_train import overhead_fit, overhead_samples

    assert T.TRAIN_OVERHEAD[(9, "2.11")]["bytes"] == overhead_fit(h200_rows)
    spread = overhead_samples(h200_rows, held=False)
    assert spread[-1] - spread[0] <= 8 << 20        # every case within a few MiB: one constant fits
    assert T.train_process_overhead((9, 0), "2.11.0+cu130")[0] == T.TRAIN_OVERHEAD[(9, "2.11")]["bytes"]
    assert "not measured" in T.train_process_overhead((8, 0), "2.11")[1]


def test_docs_accuracy_shows_the_current_h200_comparison(h200_rows):
    from gpu_preflight.measurement.calibration_train import markdown

    table = markdown(h200_rows, "x").split("\n", 2)[2]
    with open(os.path.join(ROOT, "docs", "accuracy.md"), encoding="utf-8") as fh:
        assert table.strip() in fh.read(), "regenerate with python -m gpu_preflight.measurement.calibration_train"
