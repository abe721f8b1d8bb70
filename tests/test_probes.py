"""Probes replayed on fakes: a scripted pynvml-like module, a fake libcuda collector, a fake
filesystem root, a scripted subprocess runner and a fake torch distribution.

Every expected value is written out by hand from the fake input; nothing here runs on a GPU
or touches the network.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gpu_preflight.snapshots.field import Fact
from gpu_preflight.probes import cudadrv, host, nvml, system_cuda, torchmeta
from gpu_preflight.probes.context import ProbeContext, ProbeTimeout, RunResult
from nvml_fakes import (  # shared with the watch tests
    NVMLError,
    NVMLError_NotSupported,
    NVMLError_LibraryNotFound,
    NVMLError_LibRmVersionMismatch,
    NVMLError_DriverNotLoaded,
    NVMLError_NoPermission,
    NVMLError_GpuIsLost,
    NVMLError_Unknown,
)

GiB = 1024**3


# --------------------------------------------------------------------------- fake NVML



@dataclass
class FakeGpu:
    name: str | bytes
    uuid: str | bytes
    bus_id: str | bytes
    cc: tuple[int, int]
    total: int
    used: int
    free: int
    mig: tuple[int, int] = (0, 0)
    ecc: tuple[int, int] = (1, 1)
    ecc_uncorrected_volatile: int = 0
    ecc_uncorrected_aggregate: int = 0
    ecc_corrected_volatile: int = 0
    retired_pending: int = 0
    remapped: tuple[int, int, int, int] = (0, 0, 0, 0)
    processes: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class _Handle:
    index: int


class FakeNvml:
    """The pynvml functions the NVML probe calls, scripted per GPU.

    field_errors maps (gpu index, function name) to the exception that function raises;
    handle_errors maps a GPU index to the exception nvmlDeviceGetHandleByIndex raises.
    """

    NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    NVML_AGGREGATE_ECC = 1

    def __init__(self, gpus: list[FakeGpu], driver: str | bytes = "570.86.10", cuda: int = 12080,
                 nvml_version: str = "12.570.86.10", init_error: BaseException | None = None,
                 init_block: threading.Event | None = None, handle_errors: dict | None = None,
                 field_errors: dict | None = None):
        self.gpus = gpus
        self.driver = driver
        self.cuda = cuda
        self.nvml_version = nvml_version
        self.init_error = init_error
        self.init_block = init_block
        self.handle_errors = handle_errors or {}
        self.field_errors = field_errors or {}
        self.calls: list[str] = []

    def nvmlInit(self):
        self.calls.append("init")
        if self.init_block is not None:
            self.init_block.wait(10)
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion_v2(self):
        return self.cuda

    def nvmlSystemGetNVMLVersion(self):
        return self.nvml_version

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        if index in self.handle_errors:
            raise self.handle_errors[index]
        return _Handle(index)

    def _gpu(self, handle: _Handle, fn: str) -> FakeGpu:
        assert isinstance(handle, _Handle), f"{fn} got {handle!r}, not a handle"
        err = self.field_errors.get((handle.index, fn))
        if err is not None:
            raise err
        return self.gpus[handle.index]

    def nvmlDeviceGetName(self, h):
        return self._gpu(h, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, h):
        return self._gpu(h, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=self._gpu(h, "nvmlDeviceGetPciInfo").bus_id, domain=0, bus=0x18)

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return self._gpu(h, "nvmlDeviceGetCudaComputeCapability").cc

    def nvmlDeviceGetMemoryInfo(self, h):
        g = self._gpu(h, "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=g.total, used=g.used, free=g.free)

    def nvmlDeviceGetMigMode(self, h):
        return list(self._gpu(h, "nvmlDeviceGetMigMode").mig)

    def nvmlDeviceGetEccMode(self, h):
        return list(self._gpu(h, "nvmlDeviceGetEccMode").ecc)

    def nvmlDeviceGetTotalEccErrors(self, h, error_type, counter_type):
        g = self._gpu(h, "nvmlDeviceGetTotalEccErrors")
        counters = {
            (self.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, self.NVML_VOLATILE_ECC): g.ecc_uncorrected_volatile,
            (self.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, self.NVML_AGGREGATE_ECC): g.ecc_uncorrected_aggregate,
            (self.NVML_MEMORY_ERROR_TYPE_CORRECTED, self.NVML_VOLATILE_ECC): g.ecc_corrected_volatile,
        }
        return counters[(error_type, counter_type)]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h):
        return self._gpu(h, "nvmlDeviceGetRetiredPagesPendingStatus").retired_pending

    def nvmlDeviceGetRemappedRows(self, h):
        return self._gpu(h, "nvmlDeviceGetRemappedRows").remapped

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return list(self._gpu(h, "nvmlDeviceGetComputeRunningProcesses").processes)


def two_gpus() -> list[FakeGpu]:
    """A healthy 2-GPU box: GPU 0 idle, GPU 1 in MIG mode with a process, ECC and row remaps."""
    return [
        FakeGpu(name="NVIDIA H100 80GB HBM3", uuid="GPU-9483f7e0-ed97-05b2-055a-4adfbd2c4c51",
                bus_id="00000000:18:00.0", cc=(9, 0), total=85520809984, used=506724352, free=85014085632,
                ecc_uncorrected_aggregate=7, ecc_corrected_volatile=99),
        # older pynvml returns bytes for strings
        FakeGpu(name=b"NVIDIA A100-SXM4-40GB", uuid=b"GPU-0b1c2d3e-0000-1111-2222-333344445555",
                bus_id=b"00000000:2A:00.0", cc=(8, 0), total=42949672960, used=1577058304,
                free=41372614656, mig=(1, 1), ecc=(1, 0), ecc_uncorrected_volatile=2,
                ecc_uncorrected_aggregate=5, retired_pending=1, remapped=(3, 1, 1, 0),
                processes=[SimpleNamespace(pid=4242, usedGpuMemory=GiB),
                           SimpleNamespace(pid=4243, usedGpuMemory=None)]),
    ]


def nv(value: Any) -> Fact:
    return Fact(value, "nvml")


def nv_unknown(reason: str) -> Fact:
    return Fact(None, "nvml", reason)


def expected_gpu0() -> dict[str, Fact]:
    return {
        "index": nv(0),
        "name": nv("NVIDIA H100 80GB HBM3"),
        "uuid": nv("GPU-9483f7e0-ed97-05b2-055a-4adfbd2c4c51"),
        "pci_bus_id": nv("00000000:18:00.0"),
        "compute_capability": nv("9.0"),
        "memory_total_bytes": nv(85520809984),
        "memory_used_bytes": nv(506724352),
        "memory_free_bytes": nv(85014085632),
        "mig_mode": nv({"current": False, "pending": False}),
        "ecc_enabled": nv(True),
        "ecc_uncorrected_volatile": nv(0),
        "retired_pages_pending": nv(False),
        "remapped_rows": nv({"correctable": 0, "uncorrectable": 0, "pending": False, "failure": False}),
        "processes": nv([]),
    }


def expected_gpu1() -> dict[str, Fact]:
    return {
        "index": nv(1),
        "name": nv("NVIDIA A100-SXM4-40GB"),
        "uuid": nv("GPU-0b1c2d3e-0000-1111-2222-333344445555"),
        "pci_bus_id": nv("00000000:2A:00.0"),
        "compute_capability": nv("8.0"),
        "memory_total_bytes": nv(42949672960),
        "memory_used_bytes": nv(1577058304),
        "memory_free_bytes": nv(41372614656),
        "mig_mode": nv({"current": True, "pending": True}),
        "ecc_enabled": nv(True),
        "ecc_uncorrected_volatile": nv(2),
        "retired_pages_pending": nv(True),
        "remapped_rows": nv({"correctable": 3, "uncorrectable": 1, "pending": True, "failure": False}),
        "processes": nv([{"pid": 4242, "used_bytes": 1073741824}, {"pid": 4243, "used_bytes": None}]),
    }


def all_unknown(reason: str) -> dict[str, Fact]:
    return {
        "available": nv(False),
        "driver_version": nv_unknown(reason),
        "cuda_driver_version": nv_unknown(reason),
        "nvml_version": nv_unknown(reason),
        "gpus": nv_unknown(reason),
        "error": nv(reason),
    }


def nvml_ctx(fake: Any, timeout_s: float = 2.0) -> ProbeContext:
    return ProbeContext(environ={}, root="/nonexistent-root", nvml=fake, timeout_s=timeout_s)


def test_nvml_healthy_two_gpus_exact_fields():
    fake = FakeNvml(two_gpus())
    out = nvml.probe_nvml(nvml_ctx(fake))
    assert out == {
        "available": nv(True),
        "driver_version": nv("570.86.10"),
        "cuda_driver_version": nv(12080),
        "nvml_version": nv("12.570.86.10"),
        "gpus": nv([expected_gpu0(), expected_gpu1()]),
    }
    assert fake.calls == ["init", "shutdown"]


def test_nvml_driver_version_as_bytes_is_decoded():
    out = nvml.probe_nvml(nvml_ctx(FakeNvml(two_gpus(), driver=b"550.54.15")))
    assert out["driver_version"] == nv("550.54.15")


def test_nvml_not_supported_marks_only_that_field():
    fake = FakeNvml(two_gpus(), field_errors={
        (0, "nvmlDeviceGetRetiredPagesPendingStatus"): NVMLError_NotSupported("Not Supported")})
    out = nvml.probe_nvml(nvml_ctx(fake))
    gpu0 = expected_gpu0()
    gpu0["retired_pages_pending"] = nv_unknown("not supported on this GPU or driver")
    assert out["gpus"] == nv([gpu0, expected_gpu1()])
    assert out["driver_version"] == nv("570.86.10")
    assert fake.calls == ["init", "shutdown"]


def test_nvml_memory_info_failure_marks_the_three_memory_fields():
    fake = FakeNvml(two_gpus(), field_errors={
        (1, "nvmlDeviceGetMemoryInfo"): NVMLError_NoPermission("Insufficient Permissions")})
    out = nvml.probe_nvml(nvml_ctx(fake))
    gpu1 = expected_gpu1()
    reason = "permission denied opening the NVIDIA device files"
    for key in ("memory_total_bytes", "memory_used_bytes", "memory_free_bytes"):
        gpu1[key] = nv_unknown(reason)
    assert out["gpus"] == nv([expected_gpu0(), gpu1])


def test_nvml_unmapped_error_keeps_class_and_message():
    fake = FakeNvml(two_gpus(), field_errors={(0, "nvmlDeviceGetUUID"): NVMLError_Unknown("Unknown Error")})
    out = nvml.probe_nvml(nvml_ctx(fake))
    assert out["gpus"].value[0]["uuid"] == nv_unknown("NVMLError_Unknown: Unknown Error")
    assert out["gpus"].value[0]["name"] == nv("NVIDIA H100 80GB HBM3")


@pytest.mark.parametrize("exc, reason", [
    (NVMLError_LibraryNotFound("NVML Shared Library Not Found"),
     "NVML library not found (libnvidia-ml.so.1: no NVIDIA driver installed, "
     "or the container was started without GPU access)"),
    (NVMLError_LibRmVersionMismatch("RM has detected an NVML/RM version mismatch."),
     "Driver/library version mismatch: the user-space NVIDIA libraries and the loaded kernel "
     "module are different versions"),
    (NVMLError_DriverNotLoaded("Driver Not Loaded"), "NVIDIA driver not loaded (kernel module missing)"),
    (RuntimeError("something odd"), "RuntimeError: something odd"),
])
def test_nvml_init_failure_makes_every_field_unavailable(exc, reason):
    out = nvml.probe_nvml(nvml_ctx(FakeNvml(two_gpus(), init_error=exc)))
    assert out == all_unknown(reason)


@pytest.mark.parametrize("code_name, reason_start", [
    ("NVML_ERROR_LIBRARY_NOT_FOUND", "NVML library not found"),
    ("NVML_ERROR_LIB_RM_VERSION_MISMATCH", "Driver/library version mismatch"),
    ("NVML_ERROR_NO_PERMISSION", "permission denied"),
])
def test_nvml_reasons_match_real_pynvml_exception_classes(code_name, reason_start):
    """The reason table is keyed on class names that nvidia-ml-py generates at import time."""
    pynvml = pytest.importorskip("pynvml")
    exc = pynvml.NVMLError(getattr(pynvml, code_name))
    out = nvml.probe_nvml(nvml_ctx(FakeNvml([], init_error=exc)))
    assert out["driver_version"].unavailable.startswith(reason_start)
    assert out["available"] == nv(False)


def test_nvml_hanging_init_times_out():
    release = threading.Event()
    try:
        fake = FakeNvml(two_gpus(), init_block=release)
        start = time.monotonic()
        out = nvml.probe_nvml(nvml_ctx(fake, timeout_s=0.2))
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert elapsed < 0.6
    assert out == all_unknown("NVML timed out after 0.2 s (GPU or driver not responding)")


def test_nvml_one_gpu_handle_lookup_fails():
    gpus = two_gpus()
    gpus.insert(1, gpus[0])  # three GPUs; the middle one fell off the bus
    fake = FakeNvml(gpus, handle_errors={1: NVMLError_GpuIsLost("GPU is lost")})
    out = nvml.probe_nvml(nvml_ctx(fake))
    gpu2 = expected_gpu1()
    gpu2["index"] = nv(2)
    assert out["gpus"] == nv([
        expected_gpu0(),
        {"index": nv(1), "error": nv_unknown("NVMLError_GpuIsLost: GPU is lost")},
        gpu2,
    ])
    assert out["available"] == nv(True)
    assert fake.calls == ["init", "shutdown"]


def test_nvml_without_nvidia_ml_py(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)  # makes `import pynvml` fail
    out = nvml.probe_nvml(nvml_ctx(None))
    assert out == all_unknown("nvidia-ml-py is not installed (pip install nvidia-ml-py)")


# --------------------------------------------------------------------------- CUDA driver API

CUDA_SRC = "cuda driver api"
CUDA_KEYS = ("path", "driver_version", "cu_init", "device_count")


def cu(value: Any) -> Fact:
    return Fact(value, CUDA_SRC)


def test_cuda_driver_success():
    def collect():
        return {"path": "/usr/lib/x86_64-linux-gnu/libcuda.so.570.86.10", "driver_version": 12080,
                "cu_init": 0, "device_count": 2}

    assert cudadrv.probe_cuda_driver(1.0, collect) == {
        "path": cu("/usr/lib/x86_64-linux-gnu/libcuda.so.570.86.10"),
        "driver_version": cu(12080),
        "cu_init": cu({"code": 0, "name": "CUDA_SUCCESS"}),
        "device_count": cu(2),
    }


def test_cuda_driver_system_driver_mismatch():
    def collect():
        return {"path": "/usr/local/cuda-12.8/compat/libcuda.so.570.86.10", "driver_version": 12080,
                "cu_init": 803, "device_count": None}

    out = cudadrv.probe_cuda_driver(1.0, collect)
    assert out["cu_init"] == cu({"code": 803, "name": "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"})
    assert out["path"] == cu("/usr/local/cuda-12.8/compat/libcuda.so.570.86.10")
    assert out["device_count"] == cu(None)


def test_cuda_driver_unknown_result_code_keeps_the_number():
    out = cudadrv.probe_cuda_driver(1.0, lambda: {"path": None, "driver_version": 12040, "cu_init": 42,
                                                  "device_count": None})
    assert out["cu_init"] == cu({"code": 42, "name": "CUresult 42"})


def test_cuda_driver_collector_raises():
    def collect():
        raise OSError("libcuda.so.1: cannot open shared object file: No such file or directory")

    reason = "OSError: libcuda.so.1: cannot open shared object file: No such file or directory"
    assert cudadrv.probe_cuda_driver(1.0, collect) == {k: Fact(None, CUDA_SRC, reason) for k in CUDA_KEYS}


def test_cuda_driver_library_missing_error_dict():
    reason = "libcuda.so.1 could not be loaded: libcuda.so.1: cannot open shared object file"
    out = cudadrv.probe_cuda_driver(1.0, lambda: {"error": reason})
    assert out == {k: Fact(None, CUDA_SRC, reason) for k in CUDA_KEYS}


def test_cuda_driver_init_not_run():
    out = cudadrv.probe_cuda_driver(1.0, lambda: {"path": None, "driver_version": 12080, "cu_init": None,
                                                  "device_count": None}, init=False)
    assert out == {"path": cu(None), "driver_version": cu(12080),
                   "cu_init": Fact(None, CUDA_SRC, "not run (cuInit runs with --deep)"),
                   "device_count": Fact(None, CUDA_SRC, "not run (cuInit runs with --deep)")}


def test_cuda_driver_hanging_collector_times_out():
    release = threading.Event()

    def collect():
        release.wait(10)
        return {"path": None, "driver_version": None, "cu_init": 0, "device_count": 0}

    try:
        start = time.monotonic()
        out = cudadrv.probe_cuda_driver(0.2, collect)
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert elapsed < 0.6
    reason = "cuInit timed out after 0.2 s (GPU or driver not responding)"
    assert out == {k: Fact(None, CUDA_SRC, reason) for k in CUDA_KEYS}


# --------------------------------------------------------------------------- fake filesystem


def write(root: Path, rel: str, text: str = "", mode: int | None = None) -> Path:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    if mode is not None:
        p.chmod(mode)
    return p


def fs_ctx(root: Path, environ: dict | None = None, run: Any = None, timeout_s: float = 0.2) -> ProbeContext:
    kw = {"run": run} if run is not None else {}
    return ProbeContext(environ=environ or {}, root=str(root), timeout_s=timeout_s, **kw)


PROPRIETARY = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
               "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04) \n")
OPEN = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.10  Release Build  "
        "(dvs-builder@U16-I3-B03-4-3)  Thu Jan 16 01:03:30 UTC 2025\n"
        "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04) \n")
KM = "/proc/driver/nvidia/version"


@pytest.mark.parametrize("text, version", [(PROPRIETARY, "550.54.15"), (OPEN, "570.86.10")])
def test_kernel_module_version(tmp_path, text, version):
    write(tmp_path, KM, text)
    assert system_cuda.probe_kernel_module(fs_ctx(tmp_path)) == {"version": Fact(version, KM)}


def test_kernel_module_garbage(tmp_path):
    write(tmp_path, KM, "hello world\n")
    assert system_cuda.probe_kernel_module(fs_ctx(tmp_path)) == {
        "version": Fact(None, KM, "ValueError: unrecognized /proc/driver/nvidia/version: 'hello world\\n'")}


def test_kernel_module_missing(tmp_path):
    assert system_cuda.probe_kernel_module(fs_ctx(tmp_path)) == {
        "version": Fact(None, KM, "/proc/driver/nvidia/version not found (no NVIDIA kernel module loaded)")}


def test_user_space_libcuda_files(tmp_path):
    for name in ("libcuda.so", "libcuda.so.1", "libcuda.so.550.54.15", "libcudart.so.12"):
        write(tmp_path, f"/usr/lib/x86_64-linux-gnu/{name}")
    write(tmp_path, "/usr/local/nvidia/lib64/libcuda.so.580.159.04")
    assert system_cuda.probe_user_space(fs_ctx(tmp_path)) == {"libcuda_files": Fact([
        {"dir": "/usr/lib/x86_64-linux-gnu", "version": "550.54.15"},
        {"dir": "/usr/local/nvidia/lib64", "version": "580.159.04"},
    ], "filesystem")}


def test_user_space_no_driver(tmp_path):
    assert system_cuda.probe_user_space(fs_ctx(tmp_path)) == {"libcuda_files": Fact([], "filesystem")}


def test_ld_library_path_entries(tmp_path):
    for name in ("libcudart.so.12", "libnvJitLink.so.12", "libfoo.so.1", "README"):
        write(tmp_path, f"/opt/cuda-libs/{name}")
    for name in ("libcuda.so", "libcuda.so.1", "libcuda.so.570.86.10", "libnvidia-ptxjitcompiler.so.1"):
        write(tmp_path, f"/usr/local/cuda-12.8/compat/{name}")
    env = {"LD_LIBRARY_PATH": "/opt/cuda-libs:/usr/local/cuda-12.8/compat:/does/not/exist:"}
    assert system_cuda.probe_ld_library_path(fs_ctx(tmp_path, env)) == Fact([
        {"path": "/opt/cuda-libs", "exists": True, "libs": ["libcudart.so.12", "libnvJitLink.so.12"],
         "libcuda_version": None, "compat": False},
        {"path": "/usr/local/cuda-12.8/compat", "exists": True, "libs": [], "libcuda_version": "570.86.10",
         "compat": True},
        {"path": "/does/not/exist", "exists": False, "libs": [], "libcuda_version": None},
    ], "environment+filesystem")


def test_ld_library_path_unset(tmp_path):
    assert system_cuda.probe_ld_library_path(fs_ctx(tmp_path, {})) == Fact([], "environment")


NVCC_OUT = """nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2024 NVIDIA Corporation
Built on Thu_Mar_28_02:18:24_PDT_2024
Cuda compilation tools, release 12.4, V12.4.131
Build cuda_12.4.r12.4/compiler.34097967_0
"""


def cuda_home(root: Path, version_json: str | None) -> None:
    """/usr/local/cuda -> cuda-12.4 (relative, so it stays inside the fake root) with bin/nvcc."""
    if version_json is not None:
        write(root, "/usr/local/cuda-12.4/version.json", version_json)
    write(root, "/usr/local/cuda-12.4/bin/nvcc", "#!/bin/sh\n", mode=0o755)
    os.symlink("cuda-12.4", root / "usr/local/cuda")


class ScriptedRunner:
    def __init__(self, result: RunResult | None = None, exc: BaseException | None = None):
        self.result, self.exc, self.calls = result, exc, []

    def __call__(self, argv, timeout_s, env=None):
        self.calls.append((list(argv), timeout_s))
        if self.exc is not None:
            raise self.exc
        return self.result


VERSION_JSON = json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.4.1"},
                           "cuda_cudart": {"name": "CUDA Runtime (cudart)", "version": "12.4.127"}})


def test_toolkit_symlink_version_json_and_nvcc(tmp_path):
    cuda_home(tmp_path, VERSION_JSON)
    runner = ScriptedRunner(RunResult(0, NVCC_OUT, ""))
    out = system_cuda.probe_toolkit(fs_ctx(tmp_path, {"PATH": "/usr/local/cuda/bin:/usr/bin"}, runner))
    assert out == {
        "cuda_home_target": Fact("/usr/local/cuda-12.4", "/usr/local/cuda"),
        "cuda_home_version": Fact("12.4.1", "/usr/local/cuda-12.4/version.json"),
        "nvcc_path": Fact("/usr/local/cuda/bin/nvcc", "PATH"),
        "nvcc_version": Fact("12.4.131", "nvcc --version"),
    }
    assert runner.calls == [(["/usr/local/cuda/bin/nvcc", "--version"], 0.2)]


def test_toolkit_nvcc_garbage_and_bad_version_json(tmp_path):
    cuda_home(tmp_path, "not json")
    runner = ScriptedRunner(RunResult(0, "Segmentation fault\n", ""))
    out = system_cuda.probe_toolkit(fs_ctx(tmp_path, {"PATH": "/usr/local/cuda/bin"}, runner))
    assert out["cuda_home_version"] == Fact(None, "/usr/local/cuda-12.4/version.json",
                                            "JSONDecodeError: Expecting value: line 1 column 1 (char 0)")
    assert out["nvcc_version"] == Fact(None, "nvcc --version",
                                       "ValueError: `nvcc --version` gave no version (exit 0)")


def test_toolkit_nvcc_failing_exit_code(tmp_path):
    cuda_home(tmp_path, VERSION_JSON)
    runner = ScriptedRunner(RunResult(127, "", "nvcc: error while loading shared libraries"))
    out = system_cuda.probe_toolkit(fs_ctx(tmp_path, {"PATH": "/usr/local/cuda/bin"}, runner))
    assert out["nvcc_version"] == Fact(None, "nvcc --version",
                                       "ValueError: `nvcc --version` gave no version (exit 127)")


def test_toolkit_nvcc_timeout(tmp_path):
    cuda_home(tmp_path, VERSION_JSON)
    runner = ScriptedRunner(exc=ProbeTimeout("/usr/local/cuda/bin/nvcc --version", 0.2))
    out = system_cuda.probe_toolkit(fs_ctx(tmp_path, {"PATH": "/usr/local/cuda/bin"}, runner))
    assert out["nvcc_version"] == Fact(
        None, "nvcc --version", "ProbeTimeout: /usr/local/cuda/bin/nvcc --version timed out after 0.2 s")
    assert out["nvcc_path"] == Fact("/usr/local/cuda/bin/nvcc", "PATH")


def test_toolkit_absent(tmp_path):
    write(tmp_path, "/usr/bin/python3", "", mode=0o755)
    runner = ScriptedRunner(exc=AssertionError("nvcc must not run when it is not on PATH"))
    out = system_cuda.probe_toolkit(fs_ctx(tmp_path, {"PATH": "/usr/bin"}, runner))
    assert out == {
        "cuda_home_target": Fact(None, "filesystem", "/usr/local/cuda does not exist"),
        "cuda_home_version": Fact(None, "filesystem", "/usr/local/cuda does not exist"),
        "nvcc_path": Fact(None, "PATH", "nvcc is not on PATH"),
        "nvcc_version": Fact(None, "PATH", "nvcc is not on PATH"),
    }
    assert runner.calls == []


# --------------------------------------------------------------------------- host

MEMINFO = """MemTotal:       131979068 kB
MemFree:         2345678 kB
MemAvailable:   131479644 kB
Buffers:          123456 kB
HugePages_Total:       0
"""
OS_RELEASE = """PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
"""
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
processor\t: 1
model name\t: AMD EPYC 9654 96-Core Processor
"""


def test_host_from_proc_and_etc(tmp_path):
    write(tmp_path, "/proc/meminfo", MEMINFO)
    write(tmp_path, "/etc/os-release", OS_RELEASE)
    write(tmp_path, "/proc/cpuinfo", CPUINFO)
    out = host.probe_host(fs_ctx(tmp_path))
    assert out["os"] == Fact("Ubuntu 22.04.4 LTS", "/etc/os-release")
    assert out["cpu_model"] == Fact("AMD EPYC 9654 96-Core Processor", "/proc/cpuinfo")
    assert out["ram_total_bytes"] == Fact(131979068 * 1024, "/proc/meminfo")
    assert out["ram_available_bytes"] == Fact(131479644 * 1024, "/proc/meminfo")
    assert set(out) == {"os", "platform", "kernel", "machine", "cpu_model", "cpu_count", "ram_total_bytes",
                        "ram_available_bytes", "python_version", "python_executable"}


def test_host_missing_files_are_unavailable_not_a_crash(tmp_path):
    out = host.probe_host(fs_ctx(tmp_path))
    reason = f"FileNotFoundError: [Errno 2] No such file or directory: '{tmp_path}/proc/meminfo'"
    assert out["ram_total_bytes"] == Fact(None, "/proc/meminfo", reason)
    assert out["ram_available_bytes"] == Fact(None, "/proc/meminfo", reason)
    assert out["os"].source == "/etc/os-release" and "os-release" in out["os"].unavailable
    assert out["cpu_model"].source == "/proc/cpuinfo" and "cpuinfo" in out["cpu_model"].unavailable


def test_host_garbage_meminfo_and_os_release(tmp_path):
    write(tmp_path, "/proc/meminfo", "garbage\n")
    write(tmp_path, "/etc/os-release", 'NAME="Mystery"\n')
    write(tmp_path, "/proc/cpuinfo", "processor\t: 0\nFeatures\t: fp asimd\n")
    out = host.probe_host(fs_ctx(tmp_path))
    assert out["ram_total_bytes"] == Fact(None, "/proc/meminfo", "ValueError: /proc/meminfo has no MemTotal line")
    assert out["os"] == Fact(None, "/etc/os-release", "ValueError: /etc/os-release has no PRETTY_NAME")
    assert out["cpu_model"] == Fact(None, "/proc/cpuinfo", "ValueError: /proc/cpuinfo has no model name")


@pytest.mark.parametrize("files, environ, runtime", [
    ({"/.dockerenv": ""}, {}, "docker"),
    ({"/run/.containerenv": 'engine="podman-4.9.3"\n'}, {}, "podman"),
    ({}, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, "kubernetes"),
    ({"/proc/1/cgroup": "12:pids:/docker/3f1c0e2a9b8d\n11:memory:/docker/3f1c0e2a9b8d\n"}, {}, "docker"),
    ({"/proc/1/cgroup": "0::/kubepods.slice/kubepods-besteffort.slice/cri-containerd-ab12.scope\n"}, {},
     "kubepods"),
    ({"/proc/1/cgroup": "0::/init.scope\n"}, {}, None),
    ({}, {}, None),
])
def test_container_runtime(tmp_path, files, environ, runtime):
    for rel, text in files.items():
        write(tmp_path, rel, text)
    out = host.probe_container(fs_ctx(tmp_path, environ))
    assert out["runtime"] == Fact(runtime, "filesystem")
    assert out["nvidia_device_nodes"] == Fact([], "/dev")


def test_container_device_nodes(tmp_path):
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm", "null"):
        write(tmp_path, f"/dev/{name}")
    out = host.probe_container(fs_ctx(tmp_path))
    assert out["nvidia_device_nodes"] == Fact(["nvidia-uvm", "nvidia0", "nvidiactl"], "/dev")


def test_env_unset_variable_is_a_known_null():
    environ = {"CUDA_VISIBLE_DEVICES": "0,1", "LD_LIBRARY_PATH": "/usr/local/cuda/lib64", "HOME": "/root"}
    out = host.probe_env(ProbeContext(environ=environ, root="/nonexistent-root"))
    names = ["CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
             "NVIDIA_REQUIRE_CUDA", "CUDA_VERSION", "CUDA_HOME", "CUDA_PATH", "LD_LIBRARY_PATH",
             "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_NVML_BASED_CUDA_CHECK", "CUDA_MODULE_LOADING"]
    expected = {n: Fact(None, "environment") for n in names}
    expected["CUDA_VISIBLE_DEVICES"] = Fact("0,1", "environment")
    expected["LD_LIBRARY_PATH"] = Fact("/usr/local/cuda/lib64", "environment")
    assert out == expected
    assert out["CUDA_HOME"].ok and out["CUDA_HOME"].value is None


# --------------------------------------------------------------------------- torch metadata

VERSION_PY_CU128 = """from typing import Optional

__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip', 'xpu']
__version__ = '2.7.1+cu128'
debug = False
cuda: Optional[str] = '12.8'
git_version = 'e2d141dbde55c2a4370fac5165b0561b6af4798b'
hip: Optional[str] = None
xpu: Optional[str] = None
"""
VERSION_PY_CPU = """from typing import Optional

__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip', 'xpu']
__version__ = '2.5.1+cpu'
debug = False
cuda: Optional[str] = None
git_version = 'a8d6afb511a69687bbb2b7e88a3cf67917e1697e'
hip: Optional[str] = None
xpu: Optional[str] = None
"""
REQUIRES_CU128 = [
    "filelock",
    "typing-extensions>=4.10.0",
    "sympy>=1.13.3",
    'nvidia-cuda-nvrtc-cu12==12.8.61; platform_system == "Linux" and platform_machine == "x86_64"',
    'nvidia-cuda-runtime-cu12==12.8.57; platform_system == "Linux" and platform_machine == "x86_64"',
    'nvidia-cudnn-cu12==9.7.1.26; platform_system == "Linux" and platform_machine == "x86_64"',
    'triton==3.3.1; platform_system == "Linux" and platform_machine == "x86_64"',
    'setuptools; python_version >= "3.12"',
    'opt-einsum>=3.3; extra == "opt-einsum"',
]


class FakeDist:
    """What importlib.metadata.Distribution offers: version, requires, files, locate_file."""

    def __init__(self, site: Path, version: str, requires: list[str] | None, version_py: str | None):
        self.site, self.version, self.requires = site, version, requires
        names = ["torch/__init__.py", f"torch-{version}.dist-info/METADATA"]
        if version_py is not None:
            write(site, "torch/version.py", version_py)
            names.insert(1, "torch/version.py")
        self.files = []
        for name in names:
            p = metadata.PackagePath(name)
            p.dist = self
            self.files.append(p)

    def locate_file(self, path) -> Path:
        return self.site / str(path)


def finder(dist: FakeDist | None):
    def find_dist(name: str):
        assert name == "torch"
        if dist is None:
            raise metadata.PackageNotFoundError(name)
        return dist
    return find_dist


def test_torch_cuda_wheel(tmp_path, monkeypatch):
    installed = {"nvidia-cuda-runtime-cu12": "12.8.57", "nvidia-cudnn-cu12": "9.7.1.26"}
    monkeypatch.setattr(torchmeta, "_dist_version", installed.get)
    dist = FakeDist(tmp_path, "2.7.1+cu128", REQUIRES_CU128, VERSION_PY_CU128)
    src = "package metadata"
    assert torchmeta.probe_torch(finder(dist)) == {
        "installed": Fact(True, src),
        "version": Fact("2.7.1+cu128", src),
        "local": Fact("cu128", src),
        "cuda": Fact("12.8", "torch/version.py"),
        "hip": Fact(None, "torch/version.py"),
        "requires": Fact([
            'nvidia-cuda-nvrtc-cu12==12.8.61; platform_system == "Linux" and platform_machine == "x86_64"',
            'nvidia-cuda-runtime-cu12==12.8.57; platform_system == "Linux" and platform_machine == "x86_64"',
            'nvidia-cudnn-cu12==9.7.1.26; platform_system == "Linux" and platform_machine == "x86_64"',
            'triton==3.3.1; platform_system == "Linux" and platform_machine == "x86_64"',
        ], src),
        "nvidia_packages": Fact({"nvidia-cuda-runtime-cu12": "12.8.57", "nvidia-cudnn-cu12": "9.7.1.26"}, src),
    }


def test_torch_cpu_wheel(tmp_path, monkeypatch):
    monkeypatch.setattr(torchmeta, "_dist_version", {}.get)
    dist = FakeDist(tmp_path, "2.5.1+cpu", ["filelock", "sympy==1.13.1"], VERSION_PY_CPU)
    out = torchmeta.probe_torch(finder(dist))
    assert out["version"] == Fact("2.5.1+cpu", "package metadata")
    assert out["local"] == Fact("cpu", "package metadata")
    assert out["cuda"] == Fact(None, "torch/version.py")
    assert out["cuda"].ok
    assert out["requires"] == Fact([], "package metadata")
    assert out["nvidia_packages"] == Fact({}, "package metadata")


def test_torch_without_version_py(tmp_path, monkeypatch):
    monkeypatch.setattr(torchmeta, "_dist_version", {}.get)
    dist = FakeDist(tmp_path, "2.6.0", None, None)
    out = torchmeta.probe_torch(finder(dist))
    reason = ("FileNotFoundError: torch/version.py not readable next to the torch distribution: "
              f"[Errno 2] No such file or directory: '{tmp_path}/torch/version.py'")
    assert out["cuda"] == Fact(None, "torch/version.py", reason)
    assert out["hip"] == Fact(None, "torch/version.py", reason)
    assert out["local"] == Fact(None, "package metadata")
    assert out["version"] == Fact("2.6.0", "package metadata")


def test_torch_not_installed():
    reason = "torch is not installed in this Python environment"
    src = "package metadata"
    assert torchmeta.probe_torch(finder(None)) == {
        "installed": Fact(False, src),
        "version": Fact(None, src, reason),
        "local": Fact(None, src, reason),
        "cuda": Fact(None, src, reason),
        "nvidia_packages": Fact({}, src),
    }


def test_torch_dist_info_without_metadata(tmp_path):
    """A torch-*.dist-info left without METADATA (interrupted pip) has version None: the probe must
    say so, not crash the snapshot. Uses the real importlib.metadata on a fake site-packages."""
    (tmp_path / "torch-2.5.1.dist-info").mkdir()
    site = [str(tmp_path)]
    reason = "torch's package metadata has no version (broken install: pip install --force-reinstall torch)"
    src = "package metadata"
    out = torchmeta.probe_torch(lambda name: next(iter(metadata.distributions(name=name, path=site))))
    assert out == {
        "installed": Fact(None, src, reason),
        "version": Fact(None, src, reason),
        "local": Fact(None, src, reason),
        "cuda": Fact(None, src, reason),
        "nvidia_packages": Fact({}, src),
    }


# ---------------------------------------------------------------- platform probe (issue 11)

def _root(tmp_path, files):
    for path, text in files.items():
        p = tmp_path / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    from gpu_preflight.probes.context import ProbeContext

    return ProbeContext(environ={}, root=str(tmp_path))


def test_jetson_is_detected_from_nv_tegra_release(tmp_path):
    from gpu_preflight.probes import platform as plat

    ctx = _root(tmp_path, {"/etc/nv_tegra_release": "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, "
                                                     "EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n",
                           "/proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\x00"})
    p = plat.probe_platform(ctx, os_platform="linux", machine="aarch64")
    assert p["kind"].value == "jetson" and p["l4t"].value == "36.4.3"
    assert p["board"].value == "NVIDIA Jetson AGX Orin Developer Kit"


def test_wsl_windows_and_sbsa_are_told_apart(tmp_path):
    from gpu_preflight.probes import platform as plat

    ctx = _root(tmp_path, {"/usr/lib/wsl/lib/libcuda.so.1": ""})
    assert plat.probe_platform(ctx, os_platform="linux", machine="x86_64")["kind"].value == "wsl"
    bare = _root(tmp_path / "b", {"/etc/os-release": "PRETTY_NAME=x\n"})
    assert plat.probe_platform(bare, os_platform="linux", machine="aarch64")["kind"].value == "linux-aarch64"
    assert plat.probe_platform(bare, os_platform="win32", machine="AMD64")["kind"].value == "windows"


def test_garbled_tegra_release_is_unavailable_not_a_crash(tmp_path):
    from gpu_preflight.probes import platform as plat

    ctx = _root(tmp_path, {"/etc/nv_tegra_release": "\x00\x01garbage"})
    p = plat.probe_platform(ctx, os_platform="linux", machine="aarch64")
    assert p["l4t"].unavailable and p["kind"].value == "linux-aarch64"


@pytest.mark.parametrize("banner,taint,flavor", [
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build", None, "open"),
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024", "PO", "proprietary"),
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024", "O", "open"),
])
def test_kernel_module_flavor(tmp_path, banner, taint, flavor):
    from gpu_preflight.probes import platform as plat

    files = {"/proc/driver/nvidia/version": banner + "\n"}
    if taint:
        files["/sys/module/nvidia/taint"] = taint + "\n"
    assert plat.probe_kernel_flavor(_root(tmp_path, files))["flavor"].value == flavor


def test_conda_torch_package_is_read(tmp_path):
    from gpu_preflight.probes import platform as plat

    meta = tmp_path / "env" / "conda-meta"
    meta.mkdir(parents=True)
    (meta / "pytorch-2.5.1-py3.11_cuda12.1_cudnn9.1.0_0.json").write_text(
        '{"name": "pytorch", "version": "2.5.1", "build": "py3.11_cuda12.1_cudnn9.1.0_0", "channel": "pytorch"}')
    c = plat.probe_conda(_root(tmp_path, {}), prefix=str(tmp_path / "env"))
    assert c["env_is_conda"].value is True and c["torch_package"].value["build"].startswith("py3.11_cuda12.1")


def test_image_compat_libs_are_listed(tmp_path):
    from gpu_preflight.probes import platform as plat

    ctx = _root(tmp_path, {"/usr/local/cuda-12.8/compat/libcuda.so.570.124.06": "", "/usr/local/cuda-12.8/x": ""})
    ctx.environ["CUDA_VERSION"] = "12.8.0"
    img = plat.probe_image(ctx)
    assert img["cuda_version"].value == "12.8.0"
    assert img["compat_libcuda"].value == [{"dir": "/usr/local/cuda-12.8/compat", "version": "570.124.06"}]
