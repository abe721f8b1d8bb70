"""The watcher in-process with a scripted fake NVML and a real child process."""

from __future__ import annotations

import io
import sys

import pytest

from gpu_preflight.errors import UsageError
from gpu_preflight.watcher.outputs import resolve
from gpu_preflight.watcher.runner import WatchEnv, WatchOptions, run_watch
from test_watch_fakes import GiB, FakeNvml, NVMLError_LibraryNotFound, child_script

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def run(tmp, body, nv=None, interval_ms=10.0, model=None, renderers=False, **env_kw):
    cmd = child_script(tmp, body)
    talk = io.StringIO()
    outputs = resolve(str(tmp / "out"), None, None, None)
    outputs.png = None  # matplotlib is slow to import; the PNG is checked in test_watch_analysis
    opts = WatchOptions(command=cmd, outputs=outputs, interval_ms=interval_ms, model=model, drain_s=0.5)
    env = WatchEnv(nv=nv if nv is not None else FakeNvml(tmp / "mem"), talk=talk, renderers=renderers, **env_kw)
    result = run_watch(opts, env)
    return result, talk.getvalue()


PHASED = """
    set_mem(0.5 * GiB); time.sleep(0.15)
    with gpu_preflight.phase("load DiT"):
        for k in range(1, 8):
            set_mem((0.5 + k) * GiB); time.sleep(0.03)
    time.sleep(0.1)
    with gpu_preflight.phase("denoise"):
        set_mem(12 * GiB); time.sleep(0.06); set_mem(8 * GiB); time.sleep(0.15)
"""


def test_peak_and_phases_from_markers(tmp_path):
    result, talk = run(tmp_path, PHASED)
    assert result.exit_code == 0
    a = result.record["analysis"]
    assert a["attribution"] == "process"
    (peak,) = a["peaks"]
    assert peak["peak_bytes"] == 12 * GiB and peak["phase"] == "denoise"
    assert peak["total_bytes"] == 80 * GiB
    assert peak["headroom_bytes"] == 80 * GiB - 13 * GiB  # 1 GiB held by "someone else"
    rows = {r["name"]: r for r in a["phases"]["rows"]}
    assert a["phases"]["source"] == "markers"
    assert rows["start"]["delta_bytes"] == int(0.5 * GiB)
    assert rows["load DiT"]["delta_bytes"] == 7 * GiB
    assert rows["denoise"]["peak_bytes"] == 12 * GiB and rows["denoise"]["delta_bytes"] == GiB // 2
    assert "load DiT" in talk and "+7.0 GiB" in talk and "peak 12.0 GiB" in talk
    assert not (tmp_path / "out" / "watch.phases.jsonl").exists()  # merged into the record


def test_auto_phases_without_markers(tmp_path):
    body = """
        print("init", flush=True); set_mem(0.5 * GiB); time.sleep(0.6)
        print("Loading checkpoint shards", flush=True); set_mem(4 * GiB); time.sleep(0.1); set_mem(8 * GiB)
        time.sleep(0.6)
        print("generating", flush=True); set_mem(10 * GiB); time.sleep(0.6)
    """
    result, _ = run(tmp_path, body, interval_ms=20)
    ph = result.record["analysis"]["phases"]
    assert ph["source"] == "auto"
    names = [r["name"] for r in ph["rows"]]
    assert len(names) == 3, names
    assert "Loading checkpoint shards" in names[1] and "generating" in names[2]
    assert round(ph["rows"][1]["delta_bytes"] / GiB, 1) == 7.5


def test_50ms_spike_is_caught_at_10ms(tmp_path):
    body = """
        set_mem(1 * GiB); time.sleep(0.1)
        for _ in range(3):
            set_mem(5 * GiB); time.sleep(0.05); set_mem(1 * GiB); time.sleep(0.1)
    """
    result, _ = run(tmp_path, body, interval_ms=10)
    series = result.record["series"]["gpus"][0]["tree_bytes"]
    assert max(series) == 5 * GiB
    rises = sum(1 for a, b in zip(series, series[1:]) if a != 5 * GiB and b == 5 * GiB)
    assert rises == 3
    assert result.record["analysis"]["sampling"]["median_period_ms"] < 15


def test_device_attribution_when_pids_do_not_match(tmp_path):
    # A container whose driver reports host PIDs: NVML's process never matches our tree.
    result, talk = run(tmp_path, "set_mem(6 * GiB); time.sleep(0.2)",
                       nv=FakeNvml(tmp_path / "mem", report_pids=False))
    a = result.record["analysis"]
    assert a["attribution"] == "device"
    assert a["peaks"][0]["peak_bytes"] == 6 * GiB  # device used minus the 1 GiB there before
    assert "minus the level before it started" in talk


def test_several_gpus(tmp_path):
    result, _ = run(tmp_path, "set_mem(3 * GiB); time.sleep(0.15)", nv=FakeNvml(tmp_path / "mem", n_gpus=3, on_gpu=2))
    peaks = {p["gpu"]: p["peak_bytes"] for p in result.record["analysis"]["peaks"]}
    assert peaks == {0: 0, 1: 0, 2: 3 * GiB}
    aux = result.record["aux"]["gpus"]
    assert [g["index"] for g in aux] == [0, 1, 2]
    assert set(aux[0]["power_w"]) == {123.0} and set(aux[0]["sm_clock_mhz"]) == {None}  # unsupported: None
    assert result.record["gpu_sampling"]["errors"]["sm_clock_mhz"] == "not supported on this GPU or driver"


def test_gpu_index_selects_and_validates(tmp_path):
    cmd = child_script(tmp_path, "pass")
    outs = resolve(str(tmp_path / "out"), None, None, None)
    env = WatchEnv(nv=FakeNvml(tmp_path / "mem", n_gpus=2), talk=io.StringIO(), renderers=False)
    result = run_watch(WatchOptions(command=cmd, outputs=outs, gpu_indices=[1]), env)
    assert [g["index"] for g in result.record["gpus"]] == [1]
    with pytest.raises(UsageError, match="NVML sees 2 GPU"):
        run_watch(WatchOptions(command=cmd, outputs=resolve(str(tmp_path / "o2"), None, None, None),
                               gpu_indices=[5]), env)
    assert not (tmp_path / "o2").exists()  # refused before creating anything


def test_no_gpu_still_runs_the_command(tmp_path):
    result, talk = run(tmp_path, "print('hello'); sys.exit(5)", nv=FakeNvml(fail_init=NVMLError_LibraryNotFound))
    assert result.exit_code == 5
    rec = result.record
    assert rec["gpu_sampling"]["available"] is False
    assert "NVML library not found" in rec["gpu_sampling"]["reason"]
    assert rec["analysis"]["attribution"] == "none" and rec["analysis"]["peaks"] == []
    assert "nothing could be sampled on a GPU" in talk
    assert rec["analysis"]["host"]["peak_rss_bytes"] > 0  # host memory is still measured


OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity "
       "of 79.19 GiB of which 2.51 GiB is free. Including non-PyTorch memory, this process has 76.67 GiB memory "
       "in use. Of the allocated memory 70.1 GiB is allocated by PyTorch, and 5.2 GiB is reserved by PyTorch "
       "but unallocated.")


def test_oom_in_stderr_is_tied_to_the_timeline(tmp_path):
    body = f"""
        with gpu_preflight.phase("denoise"):
            set_mem(30 * GiB); time.sleep(0.1)
            print("Traceback (most recent call last):", file=sys.stderr)
            print({OOM!r}, file=sys.stderr, flush=True)
            time.sleep(0.1)
        sys.exit(1)
    """
    result, talk = run(tmp_path, body, model="black-forest-labs/FLUX.1-dev", renderers=True)
    assert result.exit_code == 1
    (d,) = result.record["diagnosis"]
    assert d["kind"] == "oom" and d["details"]["tried_bytes"] == 20 * GiB
    assert d["timeline"]["phase"] == "denoise" and d["timeline"]["child_bytes"] == 30 * GiB
    assert 'preflight estimate black-forest-labs/FLUX.1-dev --gpu "Fake GPU 80GB"' in d["hint"]
    assert "expandable_segments" in d["hint"]
    assert "CUDA out of memory" in talk and "phase denoise" in talk
    html = (tmp_path / "out" / "watch.html").read_text()
    assert "CUDA out of memory" in html and "denoise" in html and "<script src=" not in html


def test_other_processes_flagged_pf114(tmp_path):
    body = f"""
        set_mem(50 * GiB); time.sleep(0.1)
        print({OOM!r}, file=sys.stderr, flush=True); time.sleep(0.05)
    """
    result, _ = run(tmp_path, body, nv=FakeNvml(tmp_path / "mem", other=25 * GiB))
    kinds = {d["kind"]: d for d in result.record["diagnosis"]}
    assert kinds["other_processes"]["codes"] == ["PF114"]
    assert kinds["other_processes"]["details"]["other_bytes"] == 25 * GiB


def test_sampler_failure_never_loses_the_command(tmp_path):
    class Broken(FakeNvml):
        def nvmlDeviceGetComputeRunningProcesses(self, h):  # noqa: N802
            raise RuntimeError("boom")  # not an NVML error: a bug in the watcher's world

        def nvmlDeviceGetMemoryInfo(self, h):  # noqa: N802
            if self.calls > 3:
                raise ZeroDivisionError("sampler bug")
            return super().nvmlDeviceGetMemoryInfo(h)

    result, _ = run(tmp_path, "print('ok'); time.sleep(0.2); sys.exit(9)", nv=Broken(tmp_path / "mem"))
    assert result.exit_code == 9
    assert (tmp_path / "out" / "watch.json").exists()
