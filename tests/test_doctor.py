"""`preflight doctor` replaying recorded machines.

h100-torch2.11(-deep).json were captured on a real H100 (driver 580.159.04, torch 2.11.0+cu130)
through the device machine. Broken machines are that snapshot with the one fact changed that
the scenario is about, so each test shows which fact drives which finding.
"""

import copy
import json
import os

import pytest

from gpu_preflight import snapshots
from gpu_preflight.checks import exit_code, run_checks
from gpu_preflight.cli import main
from gpu_preflight.snapshots.field import Fact
from gpu_preflight.render.findings import render_text, report_json
from gpu_preflight.render.style import Style

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "snapshots")


def load(name="h100-torch2.11-deep.json"):
    return snapshots.load(os.path.join(FIX, name))


def by_code(findings):
    out = {}
    for f in findings:
        out.setdefault(f.code, []).append(f)
    return out


def status(findings, code):
    return {f.status for f in by_code(findings).get(code, [])}


def gpu(snap, i=0):
    return snap["nvml"]["gpus"].value[i]


def test_healthy_h100():
    snap = load()
    f = run_checks(snap)
    for code in ("PF101", "PF102", "PF103", "PF104", "PF105", "PF106", "PF108", "PF109", "PF110", "PF112",
                 "PF113", "PF114", "PF115", "PF117"):
        assert status(f, code) == {"ok"}, (code, [x.message for x in by_code(f).get(code, [])])
    # the deep probe's real arch list decides PF104
    pf104 = by_code(f)["PF104"][0]
    assert pf104.evidence["arch_source"].startswith("torch.cuda.get_arch_list()")
    assert "sm_90" in pf104.message
    assert exit_code(f) == 0


def test_without_deep_uses_the_wheel_table():
    f = run_checks(load("h100-torch2.11.json"))
    pf104 = by_code(f)["PF104"][0]
    assert pf104.status == "ok" and pf104.evidence["arch_source"].startswith("https://")
    assert status(f, "PF117") == {"skip"}


def no_driver(snap):
    reason = "NVML library not found (libnvidia-ml.so.1: no NVIDIA driver installed, or the container was started without GPU access)"
    for k in ("driver_version", "cuda_driver_version", "nvml_version", "gpus"):
        snap["nvml"][k] = Fact(None, "nvml", reason)
    snap["nvml"]["available"] = Fact(False, "nvml")
    snap["nvml"]["error"] = Fact(reason, "nvml")
    return snap


def test_no_driver_on_bare_metal_warns():
    snap = no_driver(load())
    snap["container"]["runtime"] = Fact(None, "filesystem")
    snap["container"]["nvidia_device_nodes"] = Fact([], "/dev")
    snap["kernel_module"]["version"] = Fact(None, "/proc/driver/nvidia/version", "not found")
    f = run_checks(snap)
    assert status(f, "PF101") == {"warn"}
    assert "no NVIDIA driver" in by_code(f)["PF101"][0].message


def test_container_started_without_gpus_fails():
    snap = no_driver(load())
    snap["container"]["nvidia_device_nodes"] = Fact([], "/dev")
    snap["kernel_module"]["version"] = Fact(None, "/proc/driver/nvidia/version", "not found")
    snap["env"]["NVIDIA_VISIBLE_DEVICES"] = Fact("all", "environment")
    f = run_checks(snap)
    assert status(f, "PF116") == {"fail"}
    assert "--gpus all" in by_code(f)["PF116"][0].fix


def test_driver_library_mismatch():
    snap = no_driver(load())
    snap["nvml"]["error"] = Fact("Driver/library version mismatch: the user-space NVIDIA libraries and the loaded "
                                 "kernel module are different versions", "nvml")
    snap["kernel_module"]["version"] = Fact("570.86.15", "/proc/driver/nvidia/version")
    f = run_checks(snap)
    assert status(f, "PF102") == {"fail"}
    assert status(f, "PF101") == {"skip"}
    assert "reboot" in by_code(f)["PF102"][0].fix


def test_kernel_module_older_than_libcuda():
    snap = load()
    snap["kernel_module"]["version"] = Fact("570.86.15", "/proc/driver/nvidia/version")
    assert status(run_checks(snap), "PF102") == {"fail"}


def test_cpu_only_torch_on_gpu_box():
    snap = load()
    snap["torch"]["version"] = Fact("2.11.0+cpu", "package metadata")
    snap["torch"]["local"] = Fact("cpu", "package metadata")
    snap["torch"]["cuda"] = Fact(None, "torch/version.py")
    del snap["torch_deep"]
    f = run_checks(snap)
    assert status(f, "PF105") == {"fail"}
    assert "Torch not compiled with CUDA enabled" in by_code(f)["PF105"][0].message
    # the fix names a wheel for this driver (580) and GPU (9.0): torch 2.15.0's cu132 needs 595.45.04,
    # more than 580.159.04 -> minor-version compat (warn); 2.15.0 is still the newest that runs
    assert "pip install torch==2.15.0" in by_code(f)["PF105"][0].fix


def test_wheel_newer_than_driver():
    snap = load()
    snap["nvml"]["driver_version"] = Fact("550.54.15", "nvml")
    snap["nvml"]["cuda_driver_version"] = Fact(12040, "nvml")
    f = run_checks(snap)
    assert status(f, "PF103") == {"fail"}
    assert "R580" in by_code(f)["PF103"][0].message


def test_gpu_arch_missing_from_wheel():
    snap = load("h100-torch2.11.json")
    g = gpu(snap)
    g["name"] = Fact("Tesla V100-SXM2-16GB", "nvml")
    g["compute_capability"] = Fact("7.0", "nvml")
    f = run_checks(snap)
    assert status(f, "PF104") == {"fail"}
    assert "cu126" in by_code(f)["PF104"][0].fix


@pytest.mark.parametrize("value,expected", [("", "fail"), ("-1", "fail"), ("1", "fail"), ("0", "ok"),
                                            ("GPU-9483f7e0", "ok"), ("0,1", "warn")])
def test_cuda_visible_devices(value, expected):
    snap = load()
    snap["env"]["CUDA_VISIBLE_DEVICES"] = Fact(value, "environment")
    assert status(run_checks(snap), "PF108") == {expected}


def test_ld_library_path_shadowing():
    snap = load()
    snap["ld_library_path"]["entries"] = Fact([{"path": "/usr/local/cuda-12.1/lib64", "exists": True,
                                                "libs": ["libcudart.so.12", "libnvJitLink.so.12"],
                                                "libcuda_version": None, "compat": False}], "environment+filesystem")
    f = run_checks(snap)
    assert status(f, "PF109") == {"warn"}
    assert "env -u LD_LIBRARY_PATH" in by_code(f)["PF109"][0].fix


def test_old_cuda_compat_library_fails_and_driver_mount_does_not():
    snap = load()
    entries = snap["ld_library_path"]["entries"].value
    f = run_checks(snap)
    assert status(f, "PF110") == {"ok"}  # /usr/local/nvidia/lib64 holds the driver's own libcuda
    entries.append({"path": "/usr/local/cuda-12.8/compat", "exists": True, "libs": [],
                    "libcuda_version": "570.86.10", "compat": True})
    assert status(run_checks(snap), "PF110") == {"fail"}


def test_mig_ecc_memory_in_use_and_low_ram():
    snap = load()
    g = gpu(snap)
    g["mig_mode"] = Fact({"current": True, "pending": False}, "nvml")
    g["remapped_rows"] = Fact({"correctable": 0, "uncorrectable": 1, "pending": True, "failure": False}, "nvml")
    g["memory_used_bytes"] = Fact(40 << 30, "nvml")
    g["processes"] = Fact([{"pid": 4242, "used_bytes": 40 << 30}], "nvml")
    snap["host"]["ram_total_bytes"] = Fact(32 << 30, "/proc/meminfo")
    f = run_checks(snap)
    assert status(f, "PF112") == {"warn"}
    assert status(f, "PF113") == {"warn"}
    assert status(f, "PF114") == {"warn"} and "4242" in by_code(f)["PF114"][0].message
    assert status(f, "PF115") == {"warn"}


def test_nvcc_major_differs_from_torch():
    snap = load()
    snap["toolkit"]["nvcc_version"] = Fact("12.4.131", "nvcc --version")
    f = run_checks(snap)
    assert status(f, "PF111") == {"warn"}
    assert "extensions" in by_code(f)["PF111"][0].message


def test_crashing_check_becomes_error_finding(monkeypatch):
    from gpu_preflight.checks import REGISTRY, all_checks

    all_checks()
    chk = REGISTRY["PF106"]

    def boom(snap):
        raise RuntimeError("boom")

    monkeypatch.setitem(REGISTRY, "PF106", type(chk)(chk.code, chk.name, chk.area, chk.title, boom))
    f = run_checks(load())
    assert status(f, "PF106") == {"error"}
    assert exit_code(f) == 3


def test_doctor_from_snapshot_cli(capsys):
    code = main(["doctor", "--from", os.path.join(FIX, "h100-torch2.11-deep.json"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] is True and report["schema"] == "gpu-preflight.report"
    assert report["machine"]["driver"] == "580.159.04"


def test_golden_text_render(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    snap = load()
    from gpu_preflight.compatibility.described import summary

    report = report_json("doctor", run_checks(snap), None, summary(snap))

    class Out:
        encoding = "utf-8"

        def isatty(self):
            return True

    text = render_text(report, Style(Out(), width=100))
    golden = open(os.path.join(os.path.dirname(__file__), "fixtures", "golden", "doctor-h100.txt")).read()
    assert text + "\n" == golden
    assert "\033[" not in text  # NO_COLOR respected even on a TTY


def test_nvcc_too_old_for_the_gpu():
    # ptxas of CUDA 12.6 lists no sm_120 (cuda.json sm_targets); an RTX 5090 is 12.0
    snap = load()
    g = gpu(snap)
    g["name"] = Fact("NVIDIA GeForce RTX 5090", "nvml")
    g["compute_capability"] = Fact("12.0", "nvml")
    snap["toolkit"]["nvcc_version"] = Fact("12.6.85", "nvcc --version")
    f = run_checks(snap)
    assert any("cannot compile" in x.message and "sm_120" in x.message for x in by_code(f)["PF111"])


def test_two_gpu_machine():
    """Captured on a 2x H200 machine (driver 580.159.04, torch 2.11.0+cu130)."""
    f = run_checks(load("h200x2-torch2.11.json"))
    pf104 = by_code(f)["PF104"]
    assert len(pf104) == 2 and {x.status for x in pf104} == {"ok"}
    assert "2 GPU(s)" in by_code(f)["PF101"][0].message
    assert exit_code(f) == 0


# ---------------------------------------------------------------- platforms (issue 11)
# The recorded 2x H200 snapshot (driver 580.159.04, torch 2.11.0+cu130) with the facts of the
# scenario changed; each test names the fact that drives the finding.

def h200(**changes):
    snap = load("h200x2-torch2.11.json")
    snap.setdefault("platform", {})
    return snap


def set_gpus(snap, name, cc, mem_mib):
    for g in snap["nvml"]["gpus"].value:
        g["name"] = Fact(name, "nvml")
        g["compute_capability"] = Fact(cc, "nvml")
        g["memory_total_bytes"] = Fact(mem_mib << 20, "nvml")


def test_two_gpu_snapshot_still_judged_per_gpu():
    f = run_checks(h200())
    assert len(by_code(f)["PF104"]) == 2 and status(f, "PF104") == {"ok"}
    assert status(f, "PF119") == {"ok"} and status(f, "PF122") == {"ok"}


def test_blackwell_with_proprietary_module_fails():
    snap = h200()
    set_gpus(snap, "NVIDIA B200", "10.0", 183359)
    snap["kernel_module"]["flavor"] = Fact("proprietary", "/proc/driver/nvidia/version")
    f = run_checks(snap)
    assert status(f, "PF121") == {"fail"} and "open kernel modules" in by_code(f)["PF121"][0].message
    snap["kernel_module"]["flavor"] = Fact("open", "/proc/driver/nvidia/version")
    assert status(run_checks(snap), "PF121") == {"ok"}


def test_jetson_orin_with_pypi_torch_fails():
    snap = h200()
    snap["nvml"]["gpus"] = Fact([snap["nvml"]["gpus"].value[0]], "nvml")
    set_gpus(snap, "Orin", "8.7", 62841)
    snap["platform"] = {"kind": Fact("jetson", "filesystem"), "l4t": Fact("36.4.3", "/etc/nv_tegra_release")}
    f = run_checks(snap)
    assert status(f, "PF120") == {"fail"} and "JetPack 6.2" in by_code(f)["PF120"][0].message
    assert status(f, "PF104") == {"fail"} and "Tegra" in by_code(f)["PF104"][0].message
    snap["torch"]["version"] = Fact("2.5.0a0+872d972e41.nv24.08", "package metadata")
    snap["torch"]["cuda"] = Fact("12.6", "torch/version.py")
    snap.pop("torch_deep", None)
    f = run_checks(snap)
    assert status(f, "PF120") == {"ok"} and status(f, "PF104") == {"skip"}


def test_wsl_with_linux_libcuda_fails():
    snap = h200()
    snap["platform"] = {"kind": Fact("wsl", "filesystem")}
    f = run_checks(snap)
    assert status(f, "PF126") == {"fail"}  # the recorded libcuda.so.580.159.04 is not under /usr/lib/wsl/lib
    snap["user_space"]["libcuda_files"] = Fact([{"dir": "/usr/lib/wsl/lib", "version": "1.1"}], "filesystem")
    assert status(run_checks(snap), "PF126") == {"ok"}


def test_aarch64_cpu_only_pypi_torch_warns():
    snap = h200()
    snap["platform"] = {"kind": Fact("linux-aarch64", "filesystem")}
    snap["torch"]["version"] = Fact("2.9.1", "package metadata")
    snap["torch"]["cuda"] = Fact(None, "torch/version.py")
    f = run_checks(snap)
    assert status(f, "PF126") == {"warn"} and status(f, "PF105") == {"fail"}


def test_image_cuda_newer_than_host_driver():
    snap = h200()
    snap["nvml"]["driver_version"] = Fact("535.54.03", "nvml")
    snap["env"]["CUDA_VERSION"] = Fact("13.0.0", "environment")
    snap["image"] = {"cuda_version": Fact("13.0.0", "environment"), "compat_libcuda": Fact([], "filesystem")}
    assert status(run_checks(snap), "PF125") == {"fail"}  # H200 + R535: forward compat possible, libs missing
    snap["image"]["compat_libcuda"] = Fact([{"dir": "/usr/local/cuda/compat", "version": "580.65.06"}], "filesystem")
    assert status(run_checks(snap), "PF125") == {"ok"}


def test_extension_pinned_to_another_torch_fails():
    snap = h200()
    snap["extensions"] = {"installed": Fact({"torchvision": {"version": "0.24.1", "torch_requirement": ["==2.9.1"]}},
                                            "package metadata")}
    f = run_checks(snap)
    assert status(f, "PF124") == {"fail"} and "0.24.1" in by_code(f)["PF124"][0].message
    snap["extensions"]["installed"] = Fact({"torchvision": {"version": "0.26.0", "torch_requirement": ["==2.11.0"]}},
                                           "package metadata")
    assert status(run_checks(snap), "PF124") == {"ok"}


def test_old_glibc_warns_and_conda_torch_is_named():
    snap = h200()
    snap["platform"] = {"kind": Fact("linux-x86_64", "python"), "glibc": Fact("2.17", "os.confstr")}
    snap["conda"] = {"torch_package": Fact({"name": "pytorch", "version": "2.5.1", "build": "py3.11_cuda12.1_cudnn9.1.0_0",
                                            "channel": "pytorch"}, "conda-meta")}
    f = run_checks(snap)
    # PyPI: torch 2.6.0 is the newest x86_64 wheel tagged manylinux1 (2.7+ are manylinux_2_28)
    assert status(f, "PF123") == {"warn"} and "torch 2.6.0" in by_code(f)["PF123"][0].message
    assert status(f, "PF127") == {"warn"}


def test_no_torch_is_a_skip_with_the_install_command():
    snap = h200()
    snap["torch"] = {"installed": Fact(False, "package metadata")}
    f = run_checks(snap)
    assert status(f, "PF105") == {"skip"} and "pip install torch==" in by_code(f)["PF105"][0].message
    assert "fail" not in {x.status for x in f}


def test_doctor_from_file_says_it_replays(capsys):
    code = main(["doctor", "--from", os.path.join(FIX, "h100-torch2.11.json"), "--json"])
    cap = capsys.readouterr()
    report = json.loads(cap.out)
    assert "replaying" in cap.err and report["machine"]["origin"] == "file"
    assert report["machine"]["replayed_from"].endswith("h100-torch2.11.json")


def test_snapshot_output_file_is_confirmed(tmp_path, capsys):
    out = tmp_path / "box.json"
    assert main(["snapshot", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().err and out.stat().st_size > 100
