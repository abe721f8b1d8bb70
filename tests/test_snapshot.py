"""The snapshot: JSON round trip, refusal of broken files, fact() lookups, the recorded H100
snapshots, and collect() end to end on a fake machine."""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from pathlib import Path

import pytest

from gpu_preflight import snapshots
from gpu_preflight.errors import SnapshotError
from gpu_preflight.snapshots.field import Fact
from gpu_preflight.probes import torchmeta
from gpu_preflight.probes.context import ProbeContext, RunResult
from test_probes import (CPUINFO, MEMINFO, NVCC_OUT, OPEN, OS_RELEASE, REQUIRES_CU128, VERSION_JSON,
                         VERSION_PY_CU128, FakeDist, FakeNvml, NVMLError_LibRmVersionMismatch, ScriptedRunner,
                         cuda_home, finder, two_gpus, write)

FIXTURES = Path(__file__).parent / "fixtures" / "snapshots"
TIMED_OUT = "cuInit timed out after 5 s (GPU or driver not responding)"


def hand_built() -> dict:
    return {
        "schema": "gpu-preflight.snapshot",
        "schema_version": 1,
        "tool_version": "0.1.0",
        "created_utc": "2025-01-02T03:04:05Z",
        "origin": "probe",
        "nvml": {
            "available": Fact(True, "nvml"),
            "driver_version": Fact("570.86.10", "nvml"),
            "cuda_driver_version": Fact(12080, "nvml"),
            "nvml_version": Fact(None, "nvml", "NVMLError_FunctionNotFound: Function Not Found"),
            "gpus": Fact([{
                "index": Fact(0, "nvml"),
                "name": Fact("NVIDIA H100 80GB HBM3", "nvml"),
                "mig_mode": Fact({"current": False, "pending": False}, "nvml"),
                "ecc_uncorrected_volatile": Fact(0, "nvml"),
                "retired_pages_pending": Fact(None, "nvml", "not supported on this GPU or driver"),
                "processes": Fact([{"pid": 4242, "used_bytes": None}], "nvml"),
            }], "nvml"),
        },
        "env": {"CUDA_VISIBLE_DEVICES": Fact(None, "environment"), "CUDA_HOME": Fact("", "environment")},
        "cuda_driver": {"cu_init": Fact(None, "cuda driver api", TIMED_OUT)},
        "ld_library_path": {"entries": Fact([{"path": "/usr/local/cuda-12.8/compat", "exists": True,
                                              "libs": [], "libcuda_version": "570.86.10", "compat": True}],
                                             "environment+filesystem")},
        # a dict with only "value" (no "source") is plain data, not a Fact
        "torch_deep": {"result": Fact({"cudnn_version": {"value": 91900}, "warnings": []}, "torch (subprocess)")},
    }


def test_round_trip_keeps_every_value_and_reason():
    snap = hand_built()
    assert snapshots.loads(snapshots.dumps(snap)) == hand_built()


def test_serialized_form_is_the_documented_one():
    data = json.loads(snapshots.dumps(hand_built()))
    gpu = data["nvml"]["gpus"]["value"][0]
    assert gpu["name"] == {"value": "NVIDIA H100 80GB HBM3", "source": "nvml"}
    assert gpu["retired_pages_pending"] == {"value": None, "source": "nvml",
                                            "unavailable": "not supported on this GPU or driver"}
    assert data["env"]["CUDA_VISIBLE_DEVICES"] == {"value": None, "source": "environment"}
    assert data["cuda_driver"]["cu_init"] == {"value": None, "source": "cuda driver api", "unavailable": TIMED_OUT}
    assert data["torch_deep"]["result"]["value"]["cudnn_version"] == {"value": 91900}
    assert data["schema"] == "gpu-preflight.snapshot" and data["schema_version"] == 1


def test_loaded_values_are_facts_with_reasons():
    snap = snapshots.loads(snapshots.dumps(hand_built()))
    assert snap["nvml"]["nvml_version"] == Fact(None, "nvml", "NVMLError_FunctionNotFound: Function Not Found")
    assert snap["env"]["CUDA_HOME"] == Fact("", "environment")
    assert snap["env"]["CUDA_VISIBLE_DEVICES"].ok
    gpu = snap["nvml"]["gpus"].value[0]
    assert gpu["retired_pages_pending"].unavailable == "not supported on this GPU or driver"
    assert gpu["ecc_uncorrected_volatile"] == Fact(0, "nvml")
    assert snap["torch_deep"]["result"].value["cudnn_version"] == {"value": 91900}


def raises(text: str, where: str = "box.json") -> SnapshotError:
    with pytest.raises(SnapshotError) as info:
        snapshots.loads(text, where=where)
    return info.value


def test_truncated_json_is_refused():
    err = raises(snapshots.dumps(hand_built())[:200])
    assert err.message.startswith("box.json is not valid JSON (")
    assert "truncated" in err.hint
    assert "preflight snapshot > box.json" in err.hint


@pytest.mark.parametrize("text", ["[1, 2, 3]", '{"schema": "other", "schema_version": 1}', "{}", '"text"'])
def test_not_a_snapshot_is_refused(text):
    err = raises(text)
    assert err.message == 'box.json is not a gpu-preflight snapshot (no "schema": "gpu-preflight.snapshot")'
    assert "preflight snapshot > box.json" in err.hint


def test_newer_schema_is_refused():
    err = raises(json.dumps({"schema": "gpu-preflight.snapshot", "schema_version": 9}))
    assert err.message == ("box.json uses snapshot schema 9, newer than this gpu-preflight understands (1)")
    # the hint depends on how gpu-preflight was installed (tests/test_hints.py covers each way)
    from gpu_preflight.hints import upgrade_hint

    assert err.hint == upgrade_hint() and "pip install" in err.hint


def test_schema_version_must_be_an_integer():
    err = raises(json.dumps({"schema": "gpu-preflight.snapshot", "schema_version": "1"}))
    assert err.message == "box.json has no integer schema_version"


def test_missing_file_is_refused(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(SnapshotError) as info:
        snapshots.load(path)
    assert info.value.message == f"cannot read snapshot {path}: No such file or directory"
    assert "check the path" in info.value.hint


def test_load_names_the_file_in_errors(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('{"schema": "gpu-preflight.snapsh')
    with pytest.raises(SnapshotError) as info:
        snapshots.load(str(path))
    assert info.value.message.startswith(f"{path} is not valid JSON")
    assert info.value.hint


def test_fact_lookups():
    snap = hand_built()
    assert snapshots.fact(snap, "a.b.c") == Fact(None, "snapshot", "a.b.c is not in this snapshot")
    assert snapshots.fact(snap, "nvml.nope") == Fact(None, "snapshot", "nvml.nope is not in this snapshot")
    assert snapshots.fact(snap, "nvml.driver_version") == Fact("570.86.10", "nvml")
    # through an unavailable fact: its own reason, not "not in this snapshot"
    assert snapshots.fact(snap, "cuda_driver.cu_init.code") == Fact(None, "cuda driver api", TIMED_OUT)
    # into the value of a known fact
    assert snapshots.fact(snap, "torch_deep.result.warnings") == Fact([], "snapshot")
    assert snapshots.fact(snap, "torch_deep.result.missing") == Fact(
        None, "snapshot", "torch_deep.result.missing is not in this snapshot")
    assert snapshots.fact(snap, "schema_version") == Fact(1, "snapshot")
    assert snapshots.fact({}, "nvml.gpus") == Fact(None, "snapshot", "nvml.gpus is not in this snapshot")


def test_gpus_helper():
    snap = hand_built()
    assert [g["name"] for g in snapshots.gpus(snap)] == [Fact("NVIDIA H100 80GB HBM3", "nvml")]
    snap["nvml"]["gpus"] = Fact(None, "nvml", "NVML library not found")
    assert snapshots.gpus(snap) == []
    assert snapshots.gpus({}) == []


# ---------------------------------------------------------------- recorded H100 (ground truth)


@pytest.mark.parametrize("name", ["h100-torch2.11.json", "h100-torch2.11-deep.json"])
def test_recorded_h100_snapshot(name):
    path = FIXTURES / name
    snap = snapshots.load(str(path))
    f = lambda p: snapshots.fact(snap, p)  # noqa: E731
    assert f("nvml.driver_version") == Fact("580.159.04", "nvml")
    assert f("nvml.cuda_driver_version") == Fact(13000, "nvml")
    gpus = snapshots.gpus(snap)
    assert len(gpus) == 1
    assert gpus[0]["name"] == Fact("NVIDIA H100 80GB HBM3", "nvml")
    assert gpus[0]["compute_capability"] == Fact("9.0", "nvml")
    assert gpus[0]["memory_total_bytes"] == Fact(85520809984, "nvml")
    assert gpus[0]["retired_pages_pending"] == Fact(None, "nvml", "not supported on this GPU or driver")
    assert f("torch.version") == Fact("2.11.0", "package metadata")
    assert f("torch.cuda") == Fact("13.0", "torch/version.py")
    assert f("cuda_driver.cu_init") == Fact({"code": 0, "name": "CUDA_SUCCESS"}, "cuda driver api")
    # re-serializing gives back exactly the recorded JSON
    assert json.loads(snapshots.dumps(snap)) == json.loads(path.read_text())


def test_recorded_h100_deep_result():
    snap = snapshots.load(str(FIXTURES / "h100-torch2.11-deep.json"))
    deep = snapshots.fact(snap, "torch_deep.result")
    assert deep.ok and deep.source == "torch (subprocess)"
    assert deep.value["version"] == "2.11.0+cu130"
    assert deep.value["cuda"] == "13.0"
    assert deep.value["devices"][0]["name"] == {"value": "NVIDIA H100 80GB HBM3"}
    assert deep.value["devices"][0]["capability"] == {"value": "9.0"}


# ---------------------------------------------------------------- collect() on a fake machine


def fake_machine(tmp_path: Path, nv, collector, runner) -> ProbeContext:
    write(tmp_path, "/proc/driver/nvidia/version", OPEN)
    write(tmp_path, "/proc/meminfo", MEMINFO)
    write(tmp_path, "/etc/os-release", OS_RELEASE)
    write(tmp_path, "/proc/cpuinfo", CPUINFO)
    write(tmp_path, "/.dockerenv")
    write(tmp_path, "/dev/nvidia0")
    write(tmp_path, "/usr/lib/x86_64-linux-gnu/libcuda.so.570.86.10")
    write(tmp_path, "/usr/local/cuda-12.8/compat/libcuda.so.570.86.10")
    cuda_home(tmp_path, VERSION_JSON)
    environ = {"PATH": "/usr/local/cuda/bin:/usr/bin", "LD_LIBRARY_PATH": "/usr/local/cuda-12.8/compat",
               "CUDA_VISIBLE_DEVICES": "0"}
    return ProbeContext(environ=environ, root=str(tmp_path), run=runner, nvml=nv, cuda_driver=collector,
                        timeout_s=0.2)


@pytest.fixture
def fake_torch(tmp_path, monkeypatch):
    dist = FakeDist(tmp_path / "site", "2.7.1+cu128", REQUIRES_CU128, VERSION_PY_CU128)
    real = torchmeta.probe_torch
    monkeypatch.setattr(torchmeta, "probe_torch", lambda: real(finder(dist)))
    monkeypatch.setattr(torchmeta, "_dist_version", {}.get)


def test_collect_end_to_end(tmp_path, fake_torch):
    before = dict(os.environ)
    collector = lambda: {"path": "/usr/lib/x86_64-linux-gnu/libcuda.so.570.86.10",  # noqa: E731
                         "driver_version": 12080, "cu_init": 0, "device_count": 2}
    ctx = fake_machine(tmp_path, FakeNvml(two_gpus()), collector, ScriptedRunner(RunResult(0, NVCC_OUT, "")))
    snap = snapshots.collect(ctx)
    f = lambda p: snapshots.fact(snap, p)  # noqa: E731
    assert snap["schema"] == "gpu-preflight.snapshot" and snap["schema_version"] == 1
    assert snap["origin"] == "probe"
    assert f("nvml.driver_version") == Fact("570.86.10", "nvml")
    assert [g["name"].value for g in snapshots.gpus(snap)] == ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]
    assert f("cuda_driver.cu_init") == Fact({"code": 0, "name": "CUDA_SUCCESS"}, "cuda driver api")
    assert f("kernel_module.version") == Fact("570.86.10", "/proc/driver/nvidia/version")
    assert f("user_space.libcuda_files") == Fact([{"dir": "/usr/lib/x86_64-linux-gnu", "version": "570.86.10"}],
                                                 "filesystem")
    assert f("ld_library_path.entries").value[0]["libcuda_version"] == "570.86.10"
    assert f("toolkit.nvcc_version") == Fact("12.4.131", "nvcc --version")
    assert f("toolkit.cuda_home_version") == Fact("12.4.1", "/usr/local/cuda-12.4/version.json")
    assert f("host.os") == Fact("Ubuntu 22.04.4 LTS", "/etc/os-release")
    assert f("host.ram_total_bytes") == Fact(131979068 * 1024, "/proc/meminfo")
    assert f("container.runtime") == Fact("docker", "filesystem")
    assert f("container.nvidia_device_nodes") == Fact(["nvidia0"], "/dev")
    assert f("env.CUDA_VISIBLE_DEVICES") == Fact("0", "environment")
    assert f("torch.version") == Fact("2.7.1+cu128", "package metadata")
    assert f("torch.cuda") == Fact("12.8", "torch/version.py")
    assert "torch_deep" not in snap

    text = snapshots.dumps(snap)
    assert snapshots.loads(text) == snap
    assert snapshots.dumps(snapshots.loads(text)) == text
    assert dict(os.environ) == before  # probes never change os.environ


def test_collect_on_a_broken_machine_never_raises(tmp_path, fake_torch):
    release = threading.Event()

    def hanging_collector():
        release.wait(10)
        return {"path": None, "driver_version": None, "cu_init": 0, "device_count": 0}

    nv = FakeNvml(two_gpus(), init_error=NVMLError_LibRmVersionMismatch("RM has detected an NVML/RM version mismatch."))
    ctx = fake_machine(tmp_path, nv, hanging_collector, ScriptedRunner(exc=PermissionError(13, "Permission denied")))
    os.unlink(tmp_path / "proc/meminfo")
    write(tmp_path, "/proc/driver/nvidia/version", "\x00\x01garbage")
    try:
        start = time.monotonic()
        snap = snapshots.collect(ctx)
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert elapsed < 1.0
    f = lambda p: snapshots.fact(snap, p)  # noqa: E731
    assert f("nvml.available") == Fact(False, "nvml")
    assert f("nvml.driver_version").unavailable.startswith("Driver/library version mismatch")
    assert snapshots.gpus(snap) == []
    assert f("cuda_driver.cu_init") == Fact(None, "cuda driver api",
                                            "cuInit timed out after 0.2 s (GPU or driver not responding)")
    assert f("toolkit.nvcc_version") == Fact(None, "nvcc --version", "PermissionError: [Errno 13] Permission denied")
    assert f("host.ram_total_bytes").unavailable.startswith("FileNotFoundError: ")
    assert f("kernel_module.version").unavailable.startswith("ValueError: unrecognized /proc/driver/nvidia/version")
    text = snapshots.dumps(snap)
    assert snapshots.loads(text) == copy.deepcopy(snap)
