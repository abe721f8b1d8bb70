"""The estimate command's flags come from the engines' declarations, and a flag the chosen engine
does not declare is refused instead of being silently ignored."""

import json

import pytest

from gpu_preflight.cli import main
from gpu_preflight.estimators.engines import all_engines


def run(capsys, *argv):
    code = main(["estimate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_engine_flag_is_refused_by_an_engine_that_does_not_declare_it(capsys):
    engines = all_engines()
    kinds = {"llm": "qwen2.5-0.5b-instruct", "pipeline": "sdxl-base-1.0"}
    sample = {"store_true": [], None: ["1"]}
    checked = 0
    for e in engines:
        for kind in e.kinds:
            if kind not in kinds:
                continue
            mine = {o.dest for o in e.options}
            for other in engines:
                for o in other.options:
                    if o.dest in mine:
                        continue
                    value = [] if o.action == "store_true" else [o.choices[0] if o.choices else "1"]
                    code, out, err = run(capsys, kinds[kind], "--engine", e.name, "--gpu", "h100", o.flag, *value)
                    assert code == 3, (e.name, o.flag)
                    assert f"{o.flag} does not apply" in err and "hint:" in err and out == ""
                    checked += 1
    assert checked >= 20
    del sample


def test_values_outside_the_engines_choices_name_them(capsys):
    code, _, err = run(capsys, "sdxl-base-1.0", "--gpu", "h100", "--quantize", "nf4")
    assert code == 3 and "--quantize nf4 is not one of 8bit, 4bit, int8wo, fp8 for --engine diffusers" in err


def test_an_engine_that_does_not_serve_the_model_kind_says_which_do(capsys):
    code, _, err = run(capsys, "qwen2.5-0.5b-instruct", "--engine", "diffusers", "--gpu", "h100")
    assert code == 3 and "does not run an LLM" in err and "--engine transformers" in err


def test_quantize_4bit_is_honoured_for_llms(capsys):
    _, out16, _ = run(capsys, "qwen2.5-7b-instruct", "--gpu", "rtx-4090", "--json")
    _, out4, _ = run(capsys, "qwen2.5-7b-instruct", "--gpu", "rtx-4090", "--json", "--quantize", "4bit")
    _, out4d, _ = run(capsys, "qwen2.5-7b-instruct", "--gpu", "rtx-4090", "--json", "--quantize", "4bit",
                      "--double-quant")
    w16, w4, w4d = (json.loads(o)["breakdown"]["weights"] for o in (out16, out4, out4d))
    # Qwen2.5-7B: 7.62e9 parameters (https://huggingface.co/Qwen/Qwen2.5-7B-Instruct), of which
    # embed + lm_head 2 x 152064 x 3584 = 1.09e9 stay 16-bit (2.18e9 bytes); the 6.53e9 linear weights
    # take 0.5625 bytes each in NF4: 3.67e9 bytes; about 5.85e9 in all
    head = 2 * 152064 * 3584 * 2
    assert w16 > 15e9 and 5.7e9 < w4 < 6.0e9
    linear4 = w4 - head
    # 4 bits per weight + fp32 absmax per 64 weights = 0.5625 bytes; double quant: 0.5 + 1/64 = 0.515625
    assert w4d < w4 and abs((w4 - w4d) / linear4 - (0.5625 - 0.515625) / 0.5625) < 0.02


def test_quantize_on_an_already_quantized_checkpoint_is_refused(capsys):
    code, _, err = run(capsys, "qwen3-14b-fp8", "--gpu", "h100", "--quantize", "8bit")
    assert code == 3 and "already quantized" in err


def test_double_quant_needs_4bit(capsys):
    code, _, err = run(capsys, "qwen2.5-0.5b-instruct", "--gpu", "h100", "--double-quant")
    assert code == 3 and "--double-quant applies to 4-bit" in err


@pytest.mark.parametrize("model", ["qwen2.5-0.5b-instruct", "sdxl-base-1.0"])
def test_no_target_gpu_is_its_own_exit_code_not_fits(capsys, monkeypatch, model):
    import gpu_preflight.api as api
    import gpu_preflight.commands.estimate as cmd

    monkeypatch.setattr(api, "_targets", lambda specs: [])
    code, out, _ = run(capsys, model, "--json")
    assert code == cmd.EXIT_NO_TARGET == 4
    assert json.loads(out)["fits"] == []
