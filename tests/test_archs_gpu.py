"""Issue 19 on the H200: the committed measurements (calibration/raw/arch-h200*.jsonl, bench/matrix_arch.json,
NVIDIA H200, driver 580.159.04, torch 2.11.0+cu130, transformers 5.17.0) held to the issue's bar (weights
within 1 %, peak process memory within 5 %, on every case), and the runs that crashed held to what the
estimate says about a context past a model's position table.

The expected values are the measurements and the issue's thresholds; nothing here is computed by the code
under test except the estimate being judged."""

import importlib.util
import json
import os

import pytest

from gpu_preflight.cli import main
from gpu_preflight.estimators.arch import parse_llm
from gpu_preflight.estimators.engines.transformers import Workload
from gpu_preflight.estimators.plan import position_check
from gpu_preflight.measurement.calibration import (arch_crashes, arch_files, arch_matrix, compare_arch_records,
                                               compare_encdec_records, encdec_files, encdec_matrix, load_records,
                                               summarize_arch)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS_BAR, PEAK_BAR = 0.01, 0.05  # issue 19: "weights within 1 % and peak within 5 % on every case"
HAVE_TRANSFORMERS = bool(importlib.util.find_spec("transformers") and importlib.util.find_spec("torch"))

# Cases outside the peak bar, each with its cause (none today). A case that comes within the bar fails
# test_known_gaps_are_still_gaps until it is removed from this list.
KNOWN_GAPS: dict[tuple[str, str, str], str] = {}


@pytest.fixture(scope="module")
def records():
    return load_records(arch_files(ROOT))


@pytest.fixture(scope="module")
def rows(records):
    return compare_arch_records(records, ROOT)


def _case_ids():
    recs = load_records(arch_files(ROOT))
    return sorted({(r["model"], r["workload"]["name"], r["phase"]) for r in recs
                   if r.get("type") == "phase" and r.get("phase") in ("prefill", "generate")})


def test_the_records_are_the_h200_run(records):
    envs = [r for r in records if r.get("type") == "env"]
    assert envs and all(e["gpu"] == "NVIDIA H200" and e["torch"].startswith("2.11") and e["transformers"] == "5.17.0"
                        for e in envs)


def test_weights_within_one_percent_on_every_case(rows):
    assert len(rows) >= 40
    bad = [(r["model"], r["weights_error"]) for r in rows if r["weights_error"] is None
           or abs(r["weights_error"]) > WEIGHTS_BAR]
    assert not bad


@pytest.mark.parametrize("case", _case_ids(), ids=lambda c: "-".join(c))
def test_peak_within_five_percent(rows, case):
    if case in KNOWN_GAPS:
        pytest.xfail(KNOWN_GAPS[case])
    (row,) = [r for r in rows if (r["model"], r["workload"], r["phase"]) == case]
    assert abs(row["process_error"]) <= PEAK_BAR, f"{case}: {row['process_error']:+.2%}"


def test_known_gaps_are_still_gaps(rows):
    """A gap that closed must leave KNOWN_GAPS (so the bar test checks it again)."""
    for case in KNOWN_GAPS:
        (row,) = [r for r in rows if (r["model"], r["workload"], r["phase"]) == case]
        assert abs(row["process_error"]) > PEAK_BAR, f"{case} is within the bar now: remove it from KNOWN_GAPS"


def test_held_out_models_are_reported_separately(rows):
    sets = {s["set"]: s for s in summarize_arch(rows)}
    matrix = arch_matrix(ROOT)
    held = {m for m, e in matrix.items() if e.get("held_out")}
    assert held == {"gpt-j-6b-L8", "falcon-40b-L4", "bloom-560m", "opt-1.3b", "stablelm-2-1.6b", "command-r-L4"}
    assert {r["model"] for r in rows if r["set"] == "training"}.isdisjoint(held)
    # BLOOM's replay was rewritten after its comparison: reported apart from the blind held-out models
    assert {r["model"] for r in rows if r["set"] == "held out, seen"} == {"bloom-560m"}
    assert sets["all"]["cases"] == sets["training"]["cases"] + sets["held out"]["cases"] + sets["held out, seen"][
        "cases"]
    assert sets["held out"]["peak_within"] == sets["held out"]["cases"]


def test_falcon_multi_query_attention_is_the_math_backend(rows):
    """Falcon-7B's single K / V head reaches torch SDPA without enable_gqa: the math backend with float32
    scores. The first comparison was -37 % (p2k) and -20 % (b8); counting it puts both within the bar."""
    falcon = [r for r in rows if r["model"] == "falcon-7b-L8"]
    assert len(falcon) == 4 and all(abs(r["process_error"]) <= PEAK_BAR for r in falcon)


def test_every_crash_is_a_context_past_the_position_table(records):
    """The four crashed runs (calibration/raw/device-2026-12-02/arch-h200.log: CUDA index asserts) died in the
    phase whose positions pass the model's table, after the phases that stay within it."""
    crashes = {c["model"]: c for c in arch_crashes(records, ROOT)}
    assert set(crashes) == {"gpt2-medium", "gpt-j-6b-L8", "opt-1.3b", "santacoder"}
    assert crashes["gpt2-medium"]["finished"] == [] and crashes["gpt2-medium"]["crashed_in"] == ("p2k", "prefill")
    for name in ("gpt-j-6b-L8", "opt-1.3b", "santacoder"):  # 2048 positions fed: fine; 2079: past 2048
        assert crashes[name]["finished"] == [("p2k", "prefill")] and crashes[name]["crashed_in"] == ("p2k", "generate")
    for c in crashes.values():
        assert c["estimate_runs_crashed"] is False and all(c["estimate_runs_finished"])


def test_the_matrix_stays_within_every_position_table():
    """bench/matrix_arch.json: each model's workloads must run (the four crashed models get p1k / p2k_fit)."""
    for mid, m in arch_matrix(ROOT).items():
        arch = parse_llm(m["config"])
        for name in m["workloads"]:
            wl = m["_workloads"][name]
            failures, _ = position_check(arch, Workload(wl["batch"], wl["input_len"], wl["output_len"]))
            assert not failures, (mid, name)
    assert arch_matrix(ROOT)["gpt2-medium"]["workloads"] == ["p1k", "b8"]


def _write(tmp_path, cfg):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return str(p)


GPT2_MEDIUM = {"model_type": "gpt2", "n_embd": 1024, "n_layer": 24, "n_head": 16, "vocab_size": 50257,
               "n_positions": 1024}


def test_context_past_the_table_is_a_failure(tmp_path, capsys):
    code = main(["estimate", _write(tmp_path, GPT2_MEDIUM), "--gpu", "h200", "--input-len", "2048",
                 "--output-len", "32", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 2 and r["fits"][0]["fits"]  # it fits in memory, and still does not run
    assert len(r["failures"]) == 1
    assert "index out of bounds" in r["failures"][0] and "2079 positions" in r["failures"][0]
    assert not any("quality degrades" in a for a in r["assumptions"])
    assert r["max_context_tokens"] <= 1024 and r["max_context_limited_by"] == "model" and r["max_batch"] is None
    assert r["suggestions"][0]["flag"] == "--input-len 992" and r["suggestions"][0]["fits"]
    code = main(["estimate", _write(tmp_path, GPT2_MEDIUM), "--gpu", "h200", "--input-len", "992",
                 "--output-len", "32"])
    out = capsys.readouterr().out
    assert code == 0 and "does not run" not in out


def test_gptj_table_defaults_to_its_config_class(tmp_path, capsys):
    """GPTJConfig's n_positions (2048) when config.json omits it: the fit search stops at the table."""
    cfg = {"model_type": "gptj", "n_embd": 1024, "n_layer": 2, "n_head": 16, "rotary_dim": 64, "vocab_size": 50400}
    code = main(["estimate", _write(tmp_path, cfg), "--gpu", "h200", "--input-len", "1024", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and r["failures"] == [] and r["max_context_tokens"] <= 2048
    assert r["max_context_limited_by"] == "model"


def test_rope_models_past_their_length_keep_the_softer_note(tmp_path, capsys):
    cfg = {"model_type": "llama", "hidden_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8,
           "intermediate_size": 1024, "vocab_size": 32000, "max_position_embeddings": 1024}
    code = main(["estimate", _write(tmp_path, cfg), "--gpu", "h200", "--input-len", "2048", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and r["failures"] == []
    assert any("quality degrades" in a for a in r["assumptions"])


@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="needs torch + transformers")
@pytest.mark.parametrize("cfg", [
    {"model_type": "gpt2", "n_embd": 64, "n_layer": 1, "n_head": 4, "vocab_size": 1000, "n_positions": 64},
    {"model_type": "opt", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "ffn_dim": 128,
     "vocab_size": 1000, "max_position_embeddings": 64, "word_embed_proj_dim": 64},
    {"model_type": "gptj", "n_embd": 64, "n_layer": 1, "n_head": 4, "rotary_dim": 8, "vocab_size": 1000,
     "n_positions": 64},
], ids=lambda c: c["model_type"])
def test_the_index_error_on_the_cpu_matches_the_estimate(cfg):
    """transformers' own model on the CPU: prompt 57 + 8 new tokens feeds 64 positions and runs; 58 + 8 feeds 65
    and raises the index error that is a device-side assert on a GPU. The estimate draws the line at the same
    place."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    c = dict(cfg)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(c.pop("model_type"), **c)).eval()
    arch = parse_llm(cfg)
    for prompt, runs in ((57, True), (58, False)):
        ids = torch.randint(10, 900, (1, prompt))
        assert (not position_check(arch, Workload(1, prompt, 8))[0]) is runs
        try:
            with torch.inference_mode():
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                               min_new_tokens=8, do_sample=False, pad_token_id=0)
            ran = True
        except (IndexError, RuntimeError) as exc:
            assert "index" in str(exc).lower() or "out of" in str(exc).lower()
            ran = False
        assert ran is runs, (cfg["model_type"], prompt)


def test_the_four_crashed_models_ran_within_their_tables_in_the_second_call():
    """calibration/raw/arch-h200-b.jsonl: GPT-2 medium, GPT-J, OPT and SantaCoder with the workloads that stay
    inside their position tables, every phase finished and within the bar (GPT-J and OPT held out)."""
    recs = load_records([f for f in arch_files(ROOT) if f.endswith("arch-h200-b.jsonl")])
    rows = compare_arch_records(recs, ROOT)
    matrix = arch_matrix(ROOT)
    for model in ("gpt2-medium", "gpt-j-6b-L8", "opt-1.3b", "santacoder"):
        got = {(r["workload"], r["phase"]) for r in rows if r["model"] == model}
        assert got == {(w, p) for w in matrix[model]["workloads"] for p in ("prefill", "generate")}, model
    assert not [r for r in recs if r.get("type") == "error"]
    assert {r["model"] for r in rows if r["set"] == "held out"} == {"gpt-j-6b-L8", "opt-1.3b"}
    assert all(abs(r["process_error"]) <= PEAK_BAR and abs(r["weights_error"]) <= WEIGHTS_BAR for r in rows)


# ---- encoder-decoders (calibration/raw/arch-mm-h200.jsonl) through estimators/encdec.py ----

ENCDEC_GAPS = {"bart-large": "allocated peak exact (-0.11 %); the replay's allocator keeps 0.17 GiB cached where the "
                             "run kept 0.06 GiB (+6.5 to +6.8 % process)"}


@pytest.fixture(scope="module")
def encdec_rows():
    return compare_encdec_records(load_records(encdec_files(ROOT)), ROOT)


def test_encdec_records_are_the_h200_run_with_three_models(encdec_rows):
    assert {r["model"] for r in encdec_rows} == {"flan-t5-base", "bart-large", "whisper-small"}
    assert all(r["gpu"] == "NVIDIA H200" and r["transformers"] == "5.17.0" for r in encdec_rows)
    assert len(encdec_rows) == 6 and all(r["held_out"] for r in encdec_rows)
    # T5's math-backend replay was written after the comparison: not blind
    assert {r["model"] for r in encdec_rows if r["set"] == "held out, seen"} == {"flan-t5-base"}


def test_encdec_weights_exact(encdec_rows):
    assert all(r["weights_error"] is not None and abs(r["weights_error"]) <= WEIGHTS_BAR for r in encdec_rows)


@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=ENCDEC_GAPS[m]))
                                   if m in ENCDEC_GAPS else m
                                   for m in ("flan-t5-base", "bart-large", "whisper-small")])
def test_encdec_peak_within_five_percent(encdec_rows, model):
    errs = [r["process_error"] for r in encdec_rows if r["model"] == model]
    assert len(errs) == 2 and all(abs(e) <= PEAK_BAR for e in errs), errs


def test_t5_self_attention_is_the_math_backend_on_cuda(encdec_rows):
    """Without the math-backend replay the allocated peak is 38 % under what the H200 allocated."""
    import dataclasses

    from gpu_preflight.estimators import encdec as E

    t5 = next(r for r in encdec_rows if r["model"] == "flan-t5-base" and r["phase"] == "prefill")
    cfg = encdec_matrix(ROOT)["flan-t5-base"]["config"]
    w = Workload(batch=t5["batch"], input_len=t5["input_len"], output_len=1)
    fused = E.estimate_encdec(dataclasses.replace(E.parse_encdec(cfg), t5_sdpa_math=False), w, (9, 0))
    assert fused.peak_allocated_bytes < 0.7 * t5["measured_allocated_bytes"]
    assert abs(t5["allocated_error"]) <= 0.02


def test_accuracy_md_carries_the_generated_section():
    spec = importlib.util.spec_from_file_location("arch_accuracy", os.path.join(ROOT, "bench", "arch_accuracy.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open(os.path.join(ROOT, "docs", "accuracy.md"), encoding="utf-8") as fh:
        assert mod.markdown(ROOT) in fh.read()
