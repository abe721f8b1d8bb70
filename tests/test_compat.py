"""`preflight compat`: verdicts derived by hand from NVIDIA's and PyTorch's tables.

Each case names the table rows it rests on; the expected values were worked out from those
rows, not by running the code.
"""

import json
import subprocess
import sys

import pytest

from gpu_preflight.cli import main


def compat(capsys, *args):
    code = main(["compat", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def statuses(report):
    return {f["code"]: f["status"] for f in report["findings"] if f["status"] != "skip"}


def test_issue_example_535_4090_cu128(capsys):
    # CUDA 12.x floor 525.60.13 <= 535.54.03 < 570.26 (12.8 GA): minor-version compatibility -> warn.
    # RTX 4090 is 8.9; the 2.7 cu128 wheel has sm_86 -> a cubin runs on 8.9.
    code, r = compat(capsys, "--driver", "535.54.03", "--gpu", "RTX 4090", "--torch", "2.7.1+cu128")
    assert statuses(r)["PF103"] == "warn"
    assert statuses(r)["PF104"] == "ok"
    assert "sm_86" in next(f for f in r["findings"] if f["code"] == "PF104")["message"]
    assert r["ok"] is True and code == 1
    # newest release with a wheel that runs on 535: 2.15 has only cu132 (needs >= 580), 2.14.1 has cu126
    rec = r["recommended_install"]
    assert (rec["torch"], rec["variant"], rec["cuda"]) == ("2.14.1", "cu126", "12.6")
    assert rec["command"] == "pip install torch==2.14.1 --index-url https://download.pytorch.org/whl/cu126"
    assert set(r) >= {"ok", "findings", "recommended_install"}
    assert set(r["findings"][0]) >= {"code", "status", "title", "message", "fix"}


def test_driver_below_cuda13_floor_fails(capsys):
    # torch 2.11.0 from PyPI is cu130; 550.54.15 < 580.65.06 (13.x floor)
    code, r = compat(capsys, "--driver", "550.54.15", "--torch", "2.11.0")
    assert statuses(r)["PF103"] == "fail"
    assert r["ok"] is False and code == 2
    pf103 = next(f for f in r["findings"] if f["code"] == "PF103")
    # Table 1 of the minor-version-compatibility page: CUDA 13.x needs ">= 580" (a branch, not 580.65.06)
    assert "R580" in pf103["message"] and "pip install torch==" in pf103["fix"]


def test_full_feature_driver_is_ok(capsys):
    # 570.124.06 >= 570.26 (12.8 GA); H100 9.0 has sm_90 in 2.8 cu128 (PyPI default of 2.8)
    code, r = compat(capsys, "--driver", "570.124.06", "--gpu", "h100", "--torch", "2.8.0")
    assert statuses(r)["PF103"] == "ok" and statuses(r)["PF104"] == "ok"
    assert code == 0


@pytest.mark.parametrize("gpu,torch", [
    ("rtx 5090", "2.6.0+cu124"),     # 12.0; cu124 wheels stop at 9.0, no PTX
    ("v100", "2.11.0"),              # 7.0; cu130 wheels start at 7.5
    ("gtx 1080", "2.8.0+cu128"),     # 6.1; cu128 in 2.8 starts at 7.0
])
def test_arch_not_in_wheel_fails(capsys, gpu, torch):
    code, r = compat(capsys, "--gpu", gpu, "--torch", torch)
    assert statuses(r)["PF104"] == "fail"
    assert "no kernel image" in next(f for f in r["findings"] if f["code"] == "PF104")["message"]
    assert code == 2


def test_pascal_gets_a_cu126_recommendation(capsys):
    # GTX 1080 (6.1) with a 580 driver: cu126 wheels keep sm_60/sm_61 up to 2.14; cu130/cu132 start at 7.5
    _, r = compat(capsys, "--driver", "580.65.06", "--gpu", "gtx 1080")
    assert r["recommended_install"]["variant"] == "cu126"
    assert r["recommended_install"]["torch"] == "2.14.1"


def test_blackwell_gets_the_variant_without_limitations(capsys):
    # RTX 5090 (12.0) on 580.95.05: 2.15.0 has cu130 (13.0 GA driver 580.65.06 <= 580.95.05: full features,
    # RFC pytorch#190385 keeps 13.0 stable) and cu132 (13.2 GA driver 595.45.04 > 580.95.05: limited) -> cu130
    _, r = compat(capsys, "--driver", "580.95.05", "--gpu", "rtx 5090")
    rec = r["recommended_install"]
    assert (rec["torch"], rec["variant"]) == ("2.15.0", "cu130")
    assert rec["command"] == "pip install torch==2.15.0 --index-url https://download.pytorch.org/whl/cu130"
    assert not any("driver" in lim for lim in rec["limitations"])
    assert rec["requires"]["python"] == ">=3.11,<3.16" and rec["requires"]["driver_full_features"] == "580.65.06"


def test_cpu_wheel_on_gpu_fails(capsys):
    code, r = compat(capsys, "--driver", "570.124.06", "--gpu", "rtx 4090", "--torch", "2.9.1+cpu")
    assert statuses(r)["PF105"] == "fail"
    assert code == 2


def test_bf16_warning_on_t4(capsys):
    _, r = compat(capsys, "--gpu", "t4")
    assert statuses(r)["PF106"] == "warn"


def test_python_outside_release_range(capsys):
    # torch 2.15 requires Python >= 3.11 (its wheel metadata)
    _, r = compat(capsys, "--torch", "2.15.0", "--python", "3.10")
    assert statuses(r)["PF118"] == "warn"


@pytest.mark.parametrize("args,needle", [
    (["--driver", "999"], "no driver of branch 999"),
    (["--driver", "abc"], "not an NVIDIA driver version"),
    (["--driver", "535.54.03.1"], "not an NVIDIA driver version"),
    (["--gpu", "rtx 9999"], "unknown GPU"),
    (["--torch", "2.5.1+rocm6.2"], "ROCm"),
    (["--torch", "1.13.1"], "not in the release table"),
    (["--torch", "2.15.0+cu118"], "has no cu118 build"),
    (["--gpu", "h100:0"], "GPU count"),
    ([], "at least one of"),
])
def test_bad_input_is_one_line_error(capsys, args, needle):
    code = main(["compat", *args])
    err = capsys.readouterr().err
    assert code == 3
    assert needle in err
    assert "Traceback" not in err


def test_no_traceback_from_subprocess():
    proc = subprocess.run([sys.executable, "-m", "gpu_preflight", "compat", "--driver", "abc"],
                          capture_output=True, text=True)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr and proc.stdout == ""
