"""Real-world cases (driver, GPU, torch, platform -> verdict and recommended variant), each with
the sources its expected answer was worked out from (by hand, from the official tables, not by
running the code). CASES shaped the platform rules; HELD_OUT were added after the rules were
written, from public environment reports found while verifying which wheels exist, and are
reported separately (test_held_out_cases)."""

import json

import pytest

from gpu_preflight.cli import main

T3 = "https://docs.nvidia.com/cuda/archive/13.2.2/cuda-toolkit-release-notes/index.html"
MVC = "https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html"
REL = "https://github.com/pytorch/pytorch/blob/main/RELEASE.md"
T213 = "https://pypi.org/project/torch/2.13.0/"
JP = "https://developer.nvidia.com/embedded/jetpack-archive"
FC = "https://docs.nvidia.com/deploy/cuda-compatibility/forward-compatibility.html"
OPEN = "https://developer.nvidia.com/blog/nvidia-transitions-fully-towards-open-source-gpu-kernel-modules/"

# (id, compat args, {code: status}, recommended (torch, variant) or None or ... (not checked), sources)
CASES = [
    ("4090-535-cu128", ["--driver", "535.54.03", "--gpu", "RTX 4090", "--torch", "2.7.1+cu128"],
     {"PF103": "warn", "PF104": "ok"}, ("2.14.1", "cu126"), [T3, MVC, REL]),
    ("cu130-on-550", ["--driver", "550.54.15", "--torch", "2.11.0"], {"PF103": "fail"}, ..., [MVC]),
    ("h100-570-2.8", ["--driver", "570.124.06", "--gpu", "h100", "--torch", "2.8.0"], {"PF103": "ok", "PF104": "ok"},
     ..., [T3, REL]),
    ("5090-cu124", ["--gpu", "rtx 5090", "--torch", "2.6.0+cu124"], {"PF104": "fail"}, ..., [REL]),
    ("v100-cu130", ["--gpu", "v100", "--torch", "2.11.0"], {"PF104": "fail"}, ..., [REL]),
    ("1080-cu128", ["--gpu", "gtx 1080", "--torch", "2.8.0+cu128"], {"PF104": "fail"}, ..., [REL]),
    ("1080-580-rec", ["--driver", "580.65.06", "--gpu", "gtx 1080"], {}, ("2.14.1", "cu126"), [REL]),
    ("5090-580.95-rec", ["--driver", "580.95.05", "--gpu", "rtx 5090"], {"PF119": "ok"}, ("2.15.0", "cu130"),
     [T3, "https://github.com/pytorch/pytorch/issues/190385"]),
    ("thor-jp7-2.11", ["--platform", "jetson", "--jetpack", "7.0", "--driver", "580.00", "--gpu", "jetson thor",
                       "--torch", "2.11.0"], {"PF103": "ok", "PF104": "ok", "PF120": "ok"}, ...,
     [MVC, "https://github.com/pytorch/pytorch/issues/172663", "https://developer.nvidia.com/embedded/jetpack/downloads/archive-7.0"]),
    ("orin-jp61-pypi", ["--platform", "jetson", "--jetpack", "6.1", "--gpu", "orin", "--torch", "2.11.0"],
     {"PF120": "fail", "PF104": "fail"}, ("2.5.0", "jetpack6.1"), [T213, JP, "https://forums.developer.nvidia.com/t/pytorch-for-jetson/72048"]),
    ("orin-jp61-nv", ["--platform", "jetson", "--jetpack", "6.1", "--gpu", "agx orin",
                      "--torch", "2.5.0a0+872d972e41.nv24.08"], {"PF120": "ok"}, ..., ["https://github.com/pytorch/TensorRT/pull/3453"]),
    ("orin-jp62-rec", ["--platform", "jetson", "--jetpack", "6.2", "--gpu", "orin nx"], {}, ("2.5.0", "jetpack6.2"),
     ["https://docs.pytorch.org/TensorRT/_sources/getting_started/jetpack.rst.txt"]),
    ("orin-jp72-2.15", ["--platform", "jetson", "--jetpack", "7.2", "--gpu", "orin nano", "--torch", "2.15.0"],
     {"PF104": "ok"}, ..., ["https://nvidia.github.io/TensorRT-Edge-LLM/0.10.1/user_guide/getting_started/support-matrix.html"]),
    ("orin-jp72-2.14", ["--platform", "jetson", "--jetpack", "7.2", "--gpu", "orin nano", "--torch", "2.14.1"],
     {"PF104": "fail"}, ..., ["https://github.com/straga/jetson-jp7-onnxruntime", T213]),
    ("gh200-2.9.1", ["--platform", "linux-aarch64", "--driver", "570.124.06", "--gpu", "gh200", "--torch", "2.9.1"],
     {"PF105": "fail"}, ..., ["https://pypi.org/project/torch/2.9.1/#files"]),
    ("gh200-rec", ["--platform", "linux-aarch64", "--driver", "580.95.05", "--gpu", "gh200"], {}, ("2.15.0", "cu130"),
     ["https://github.com/pytorch/pytorch/issues/190385", T3]),
    ("spark-2.11", ["--platform", "linux-aarch64", "--driver", "580.95.05", "--gpu", "dgx spark", "--torch", "2.11.0"],
     {"PF103": "ok", "PF104": "ok"}, ..., ["https://github.com/pytorch/pytorch/issues/172663", "https://developer.nvidia.com/cuda-gpus"]),
    ("win-4090-pypi", ["--platform", "windows", "--driver", "576.02", "--gpu", "rtx 4090", "--torch", "2.9.1"],
     {"PF105": "fail"}, ..., ["https://pypi.org/project/torch/2.9.1/#files"]),
    ("win-4090-rec", ["--platform", "windows", "--driver", "576.02", "--gpu", "rtx 4090"], {}, ("2.14.1", "cu126"),
     [T3, REL]),
    ("wsl-526.98-cu121", ["--platform", "wsl", "--driver", "526.98", "--gpu", "rtx 3090", "--torch", "2.1.2"],
     {"PF103": "fail"}, ..., [T3, MVC]),
    ("image-12.8-on-535", ["--image", "nvidia/cuda:12.8.0-runtime-ubuntu22.04", "--driver", "535.54.03"],
     {"PF125": "warn"}, ..., [MVC]),
    ("image-13.0-on-535-h100", ["--image", "nvidia/cuda:13.0.0-base-ubuntu24.04", "--driver", "535.54.03", "--gpu", "h100"],
     {"PF125": "warn"}, ..., [FC]),
    ("image-13.0-on-535-4090", ["--image", "nvidia/cuda:13.0.0-base-ubuntu24.04", "--driver", "535.54.03",
                                "--gpu", "rtx 4090"], {"PF125": "fail"}, ..., [FC]),
    ("5090-550", ["--driver", "550.54.15", "--gpu", "rtx 5090"], {"PF119": "fail"}, None,
     ["https://docs.nvidia.com/deeplearning/cudnn/latest/reference/support-matrix.html"]),
    ("b200-570.124", ["--driver", "570.124.06", "--gpu", "b200"], {"PF119": "fail"}, None,
     ["https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/platform-support.html"]),
    ("h100-396", ["--driver", "396.26", "--gpu", "h100"], {"PF119": "fail"}, None, [T3]),
    ("h100-000", ["--driver", "000.0", "--gpu", "h100"], {"PF119": "fail"}, None, [T3]),
    ("k80-470-2.0.1", ["--driver", "470.82.01", "--gpu", "k80", "--torch", "2.0.1"], {"PF103": "warn", "PF104": "ok"},
     ("2.6.0", "cu118"), [T3, MVC, REL]),  # torch.json: 2.6 cu118 keeps sm_37 (its row cites the builder script)
    ("p100-compile", ["--gpu", "p100"], {"PF122": "warn"}, ..., [T213]),
    ("glibc-2.27", ["--glibc", "2.27", "--driver", "570.124.06", "--gpu", "rtx 4090"], {"PF123": "warn"},
     ("2.6.0", "cu124"), ["https://pypi.org/project/torch/2.7.1/#files", "https://pypi.org/project/torch/2.6.0/#files"]),
    ("3050-laptop", ["--gpu", "NVIDIA GeForce RTX 3050 Laptop GPU", "--torch", "2.8.0"], {"PF104": "ok"}, ...,
     ["https://developer.nvidia.com/cuda-gpus"]),
    ("cu129-2.11", ["--driver", "575.57.08", "--gpu", "h100", "--torch", "2.11.0+cu129"], {"PF103": "ok"}, ...,
     ["https://download.pytorch.org/whl/cu129/torch/", T3]),
    ("cu130-2.15-h100", ["--driver", "580.95.05", "--gpu", "h100", "--torch", "2.15.0+cu130"],
     {"PF103": "ok", "PF104": "ok"}, ..., ["https://github.com/pytorch/pytorch/issues/190385"]),
    ("5090d-570.86", ["--driver", "570.86.16", "--gpu", "rtx 5090 d"], {"PF119": "ok"}, ..., [T3]),
    ("branch-580", ["--driver", "580", "--gpu", "h100"], {"PF119": "ok"}, ("2.15.0", "cu130"), [T3]),
]

HELD_OUT = [
    # public report: H100 SXM, driver 550.144.03, torch 2.11.0+cu129 worked (minor-version compatibility)
    ("h100-550-cu129", ["--driver", "550.144.03", "--gpu", "h100", "--torch", "2.11.0+cu129"], {"PF103": "warn"}),
    # torch 2.9.1+cu129 on an NVIDIA L4 (sm_89), arch list sm_70..sm_120 printed by the report
    ("l4-2.9.1-cu129", ["--driver", "580.95.05", "--gpu", "l4", "--torch", "2.9.1+cu129"], {"PF104": "ok", "PF103": "ok"}),
    # H100, driver 580.159.03 / CUDA 13.0, torch 2.9.1+cu129: a cold-start validation passed
    ("h100-580-2.9.1-cu129", ["--driver", "580.159.03", "--gpu", "h100", "--torch", "2.9.1+cu129"], {"PF103": "ok", "PF104": "ok"}),
    # Tesla T4 (7.5) with torch 2.10.0+cu129: ran (arch list of 2.10 cu129 unknown -> not judged, never 'fail')
    ("t4-2.10-cu129", ["--driver", "575.57.08", "--gpu", "t4", "--torch", "2.10.0+cu129"], {"PF103": "ok", "PF104": "skip"}),
    # RTX 5060 Laptop, Windows driver 596.49, torch 2.15.0+cu130: ran
    ("5060-laptop-win-2.15-cu130", ["--platform", "windows", "--driver", "596.49", "--gpu", "rtx 5060 laptop",
                                    "--torch", "2.15.0+cu130"], {"PF103": "ok", "PF104": "ok"}),
    # WSL2 + RTX 5060 + Windows driver 610.88 + torch 2.12.1+cu129: training passed
    ("wsl-5060-610.88-2.12.1-cu129", ["--platform", "wsl", "--driver", "610.88", "--gpu", "rtx 5060",
                                      "--torch", "2.12.1+cu129"], {"PF103": "ok", "PF119": "ok"}),
    # A100-SXM4-80GB + torch 2.12.1+cu129 (driver not stated): ran
    ("a100-2.12.1-cu129", ["--gpu", "a100-80gb", "--torch", "2.12.1+cu129"], {"PF105": "ok"}),
    # RTX 4090 + torch 2.11.0+cu129, driver 575.57.08: vLLM deployment
    ("4090-575-2.11-cu129", ["--driver", "575.57.08", "--gpu", "rtx 4090", "--torch", "2.11.0+cu129"], {"PF103": "ok"}),
    # Jetson Orin Nano Super, JetPack 6.2, torch 2.5.0a0+872d972e41.nv24.08 (bitsandbytes report): torch itself ran
    ("orin-jp62-nv24.08", ["--platform", "jetson", "--jetpack", "6.2", "--gpu", "orin nano",
                           "--torch", "2.5.0a0+872d972e41.nv24.08"], {"PF120": "ok"}),
    # Tesla T4 GCP VM, torch 2.9.1+cu129 system-wide: ran
    ("t4-2.9.1-cu129", ["--driver", "580.95.05", "--gpu", "t4", "--torch", "2.9.1+cu129"], {"PF104": "ok", "PF103": "ok"}),
]


def run(capsys, args):
    code = main(["compat", *args, "--json"])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return code, json.loads(cap.out)


def verdicts(report):
    out = {}
    for f in report["findings"]:
        out.setdefault(f["code"], set()).add(f["status"])
    return out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_case(capsys, case):
    _id, args, expect, rec, sources = case
    assert sources and all(s.startswith("https://") for s in sources)
    _code, report = run(capsys, args)
    got = verdicts(report)
    for code, status in expect.items():
        assert got.get(code) == {status}, (code, [f["message"] for f in report["findings"] if f["code"] == code])
    if rec is not ...:
        r = report["recommended_install"]
        assert (None if r is None else (r["torch"].split("a0")[0].split("+")[0], r["variant"])) == rec


def test_at_least_30_cases_and_10_held_out():
    assert len(CASES) >= 30 and len(HELD_OUT) >= 10


@pytest.mark.parametrize("case", HELD_OUT, ids=[c[0] for c in HELD_OUT])
def test_held_out_cases(capsys, case):
    _id, args, expect = case
    _code, report = run(capsys, args)
    got = verdicts(report)
    for code, status in expect.items():
        assert got.get(code) == {status}, (code, [f["message"] for f in report["findings"] if f["code"] == code])
    assert "fail" not in {f["status"] for f in report["findings"]}  # each of these machines really ran
