"""Flags that do not apply are refused with a clear message, never silently dropped (doctor,
snapshot and measure; estimate's engine flags are covered by test_engine_options.py)."""

from __future__ import annotations

import sys

import pytest

from gpu_preflight.cli import main
from gpu_preflight.snapshots.field import known


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("verb", ["doctor", "snapshot"])
def test_python_without_deep_is_refused(capsys, verb):
    code, out, err = run(capsys, verb, "--python", "/opt/my env/bin/python")
    assert code == 3 and out == ""
    assert "--python applies only with --deep" in err
    assert f"hint: add --deep: preflight {verb} --deep --python '/opt/my env/bin/python'" in err


def test_doctor_from_file_refuses_deep(capsys, tmp_path):
    code, out, err = run(capsys, "doctor", "--from", str(tmp_path / "box.json"), "--deep")
    assert code == 3 and out == "" and "--deep does not apply with --from" in err


def _fake_gpu(monkeypatch, present: bool):
    from gpu_preflight.probes import nvml

    def probe(ctx):
        if not present:
            return {"available": known(False, "nvml"), "gpus": known([], "nvml"),
                    "error": known("NVML library not found", "nvml")}
        return {"available": known(True, "nvml"), "gpus": known([{"name": known("NVIDIA H100", "nvml")}], "nvml")}

    monkeypatch.setattr(nvml, "probe_nvml", probe)


def test_measure_without_a_gpu_says_so_before_asking_for_torch(capsys, monkeypatch):
    import importlib.util

    _fake_gpu(monkeypatch, present=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "transformers")
                        else real(name, *a))
    code, out, err = run(capsys, "measure", "qwen2.5-0.5b-instruct")
    assert code == 3 and out == ""
    assert err.startswith("preflight: error: no NVIDIA GPU to measure on: NVML library not found")
    assert "torch" not in err.splitlines()[0]


def test_measure_with_a_gpu_and_no_torch_prints_the_install_command(capsys, monkeypatch):
    import importlib.util

    from gpu_preflight import hints

    _fake_gpu(monkeypatch, present=True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "transformers")
                        else real(name, *a))
    code, out, err = run(capsys, "measure", "qwen2.5-0.5b-instruct")
    assert code == 3 and "needs torch and transformers" in err
    assert hints.install_hint("measure") in err


@pytest.mark.parametrize("model,flags,named", [
    ("qwen2.5-0.5b-instruct", ["--height", "512"], "--height"),
    ("qwen2.5-0.5b-instruct", ["--height", "512", "--width", "512"], "--height, --width"),
    ("sdxl-base-1.0", ["--input-len", "100"], "--input-len"),
    ("sdxl-base-1.0", ["--output-len", "100"], "--output-len"),
    ("sdxl-base-1.0", ["--attn", "eager"], "--attn"),
    ("sdxl-base-1.0", ["--weights", "/tmp"], "--weights"),
])
def test_measure_refuses_flags_of_the_other_model_kind(capsys, monkeypatch, model, flags, named):
    _fake_gpu(monkeypatch, present=True)
    code, out, err = run(capsys, "measure", model, "--python", sys.executable, *flags)
    assert code == 3 and out == ""
    kind = "an LLM" if "qwen" in model else "an image/video pipeline"
    assert f"error: {named} do" in err and f"not apply to {kind}" in err and "hint:" in err
