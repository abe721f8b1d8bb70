"""Pure parts of watch: stderr diagnosis, phases, peaks, reduction, the phase API, renderers."""

from __future__ import annotations

import json

import pytest

import gpu_preflight
from gpu_preflight.watcher import analysis, diagnose, render_html, render_png, render_text
from gpu_preflight.watcher.outputs import resolve
from gpu_preflight.watcher.phase import CHANNEL_ENV, phase
from gpu_preflight.watcher.record import finalize

GiB = 1024**3

LINES = {
    "oom": [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB. GPU 1 has a total capacity of "
        "79.19 GiB of which 2.51 GiB is free. Process 4242 has 40.00 GiB memory in use. Process 777 has 36.5 GiB "
        "memory in use. Of the allocated memory 39.1 GiB is allocated by PyTorch, and 12.00 MiB is reserved by "
        "PyTorch but unallocated.",
        "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity; "
        "13.10 GiB already allocated; 1.06 GiB free; 13.40 GiB reserved in total by PyTorch)",
        "RuntimeError: CUDA error: out of memory",
        "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
        "1073741824 bytes.",
    ],
    "no_kernel_image": [
        "RuntimeError: CUDA error: no kernel image is available for execution on the device",
        "UserWarning: NVIDIA GeForce RTX 5090 with CUDA capability sm_120 is not compatible with the current "
        "PyTorch installation. The current PyTorch install supports CUDA capabilities sm_50 sm_60 sm_70 sm_80 sm_90.",
    ],
    "driver_too_old": [
        "RuntimeError: CUDA error: CUDA driver version is insufficient for CUDA runtime version",
        "RuntimeError: The NVIDIA driver on your system is too old (found version 11040).",
    ],
    "cpu_only_torch": ["AssertionError: Torch not compiled with CUDA enabled"],
    "driver_library_mismatch": ["Failed to initialize NVML: Driver/library version mismatch"],
    "no_driver": [
        "RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU",
        "OSError: libcuda.so.1: cannot open shared object file: No such file or directory",
        "RuntimeError: No CUDA GPUs are available; no CUDA-capable device is detected",
    ],
    "nccl": [
        "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.hpp:275, "
        "unhandled system error (run with NCCL_DEBUG=INFO for details), NCCL version 2.20.5",
        "node1:1234:1300 [0] transport/shm.cc:114 NCCL WARN Error: failed to extend /dev/shm/nccl-x to 9637892 bytes",
        "[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=1, OpType=ALLREDUCE)",
    ],
}
CODES = {"oom": [], "no_kernel_image": ["PF104"], "driver_too_old": ["PF103"], "cpu_only_torch": ["PF105"],
         "driver_library_mismatch": ["PF102"],
         "no_driver": ["PF101"], "nccl": []}
HARMLESS = ["epoch 1: loss 0.31", "Loading checkpoint shards: 100%|####| 3/3", "using 8 GPUs for memory-efficient attention"]


@pytest.mark.parametrize("kind,line", [(k, line) for k, lines in LINES.items() for line in lines])
def test_stderr_patterns(kind, line):
    assert diagnose.TRIGGER.search(line.encode()), "the pump's cheap filter must let it through"
    pattern = diagnose.classify(line)
    assert pattern is not None and pattern.kind == kind and list(pattern.codes) == CODES[kind]


@pytest.mark.parametrize("line", HARMLESS)
def test_harmless_lines_are_not_findings(line):
    assert diagnose.classify(line) is None


def test_oom_numbers_new_and_old_wording():
    new = diagnose.oom_details(LINES["oom"][0])
    assert new["tried_bytes"] == 20 * GiB and new["gpu"] == 1 and new["free_bytes"] == int(2.51 * GiB)
    assert new["processes"] == [{"pid": 4242, "bytes": 40 * GiB}, {"pid": 777, "bytes": int(36.5 * GiB)}]
    old = diagnose.oom_details(LINES["oom"][1])
    assert old["tried_bytes"] == 2 * GiB and old["total_bytes"] == int(15.78 * GiB)
    assert old["free_bytes"] == int(1.06 * GiB) and old["gpu"] == 0
    assert diagnose.oom_details(LINES["oom"][3])["tried_bytes"] == GiB
    assert diagnose.arch_details(LINES["no_kernel_image"][1])["gpu_arch"] == "sm_120"


def test_diagnose_dedups_maps_codes_and_names_other_processes():
    matches = [{"t_s": 1.0, "stream": "stderr", "line": LINES["nccl"][1]},
               {"t_s": 2.0, "stream": "stderr", "line": LINES["nccl"][0]},
               {"t_s": 3.0, "stream": "stderr", "line": LINES["oom"][0]},
               {"t_s": 0.5, "stream": "stdout", "line": LINES["driver_too_old"][0]}]
    ctx = {"model": None, "gpus": [{"index": 1, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * GiB}],
           "tree_pids": {4242}, "peaks": [{"gpu": 1, "peak_bytes": 40 * GiB}]}
    found = diagnose.diagnose(matches, ctx)
    assert [f["kind"] for f in found] == ["driver_too_old", "nccl", "oom", "other_processes"]
    nccl = found[1]
    assert nccl["count"] == 2 and "NCCL_DEBUG=INFO" in nccl["hint"] and "/dev/shm" in nccl["hint"]
    assert found[0]["codes"] == ["PF103"] and "preflight doctor" in found[0]["hint"]
    assert 'preflight estimate MODEL --gpu "NVIDIA H100 80GB HBM3"' in found[2]["hint"]
    other = found[3]
    assert other["codes"] == ["PF114"] and other["details"]["pids"] == [777]
    assert other["details"]["other_bytes"] == int(36.5 * GiB)


def _record(t, used, tree, events=(), total=80 * GiB, baseline=GiB):
    return {"interval_ms": 100, "duration_s": t[-1], "gpus": [{"index": 0, "name": "G", "memory_total_bytes": total,
                                                               "baseline_used_bytes": baseline}],
            "series": {"t": list(t), "gpus": [{"index": 0, "used_bytes": list(used), "tree_bytes": list(tree)}]},
            "aux": {"t": [], "rss_bytes": [], "nproc": [], "gpus": []}, "phase_events": list(events),
            "output_lines": [], "output": {"matches": []}, "tree": {"pids": []}}


def test_unclosed_phase_ends_at_the_end_and_marks_pair_per_pid():
    events = [{"t_s": 0.1, "phase": "load", "event": "start", "pid": 1},
              {"t_s": 0.2, "phase": "load", "event": "start", "pid": 2},
              {"t_s": 0.5, "phase": "load", "event": "end", "pid": 1},
              {"t_s": 0.6, "phase": "ckpt", "event": "mark", "pid": 1}]
    phases = analysis.pair_phases(events, end_s=3.0)
    assert [(p["pid"], p["start_s"], p["end_s"], p["open"]) for p in phases] == [(1, 0.1, 0.5, False), (2, 0.2, 3.0, True)]


def test_auto_phases_on_synthetic_steps():
    t = [i * 0.1 for i in range(60)]
    mem = [0] * 10 + [GiB] * 10 + [8 * GiB] * 20 + [9 * GiB, 12 * GiB, 9 * GiB] + [9 * GiB] * 17
    phases = analysis.auto_phases(t, mem)
    assert len(phases) == 3
    rows = analysis.phase_rows(phases, t, mem, end_s=t[-1], add_edges=False)
    assert [r["delta_bytes"] for r in rows] == [GiB, 7 * GiB, GiB]
    assert rows[2]["peak_bytes"] == 12 * GiB
    assert analysis.auto_phases(t, [5 * GiB] * 60) == []  # flat: no news


def test_peak_headroom_and_device_attribution():
    t = [0.0, 0.1, 0.2, 0.3]
    rec = _record(t, used=[GiB, 5 * GiB, 9 * GiB, GiB], tree=[0, 0, 0, 0])
    a = analysis.analyze(rec)
    assert a["attribution"] == "device"  # NVML never listed one of ours
    p = a["peaks"][0]
    assert (p["peak_bytes"], p["at_s"], p["headroom_bytes"], p["min_free_bytes"]) == (8 * GiB, 0.2, 71 * GiB, 71 * GiB)


def test_reduction_keeps_every_spike():
    n = 100_000
    t = [i * 0.01 for i in range(n)]
    col = [GiB] * n
    for k in (123, 50_000, 99_998):
        col[k] = 5 * GiB  # single-sample spikes
    rt, (rc,), reduced = analysis.reduce_minmax(t, [col], 2000)
    assert reduced and len(rt) <= 2100 and rc.count(5 * GiB) == 3


def test_phase_api_is_a_noop_unless_watched(tmp_path, monkeypatch):
    monkeypatch.delenv(CHANNEL_ENV, raising=False)
    with phase("x"):
        pass
    channel = tmp_path / "ch.jsonl"
    monkeypatch.setenv(CHANNEL_ENV, str(channel))
    with gpu_preflight.phase("load"):  # the lazy top-level name
        pass
    events = [json.loads(x) for x in channel.read_text().splitlines()]
    assert [(e["phase"], e["event"]) for e in events] == [("load", "start"), ("load", "end")]
    monkeypatch.setenv(CHANNEL_ENV, str(tmp_path / "missing-dir" / "x"))
    with phase("never raises"):
        pass
    with pytest.raises(AttributeError):
        gpu_preflight.not_a_thing  # noqa: B018


def test_renderers_without_plotly(tmp_path, monkeypatch):
    t = [i * 0.1 for i in range(30)]
    mem = [GiB] * 10 + [6 * GiB] * 20
    rec = _record(t, used=mem, tree=[m - GiB for m in mem],
                  events=[{"t_s": 0.95, "phase": "load <b>", "event": "start", "pid": 9},
                          {"t_s": 2.0, "phase": "load <b>", "event": "end", "pid": 9}])
    rec.update(command=["python", "x.py"], exit={"code": 0, "status": "exited"}, interval_ms=100,
               gpu_sampling={"available": True}, files={}, notes=[])
    rec["output"]["matches"] = [{"t_s": 1.5, "stream": "stderr", "line": LINES["no_kernel_image"][0]}]
    finalize(rec)

    def no_plotly(_data):
        raise ImportError("plotly")

    monkeypatch.setattr(render_html, "_plotly", no_plotly)
    out = tmp_path / "r.html"
    assert render_html.write_html(rec, out) == "svg"
    page = out.read_text()
    assert "<polyline" in page and "load &lt;b&gt;" in page and "PF104" in page and "<script" not in page
    text = render_text.summary(rec)
    assert "PF104" in text and "load <b>" in text and "+5.0 GiB" in text
    skipped = render_png.write_png(rec, tmp_path / "r.png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in skipped
    else:
        assert skipped is None and (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_output_paths():
    p = resolve("runs/x", None, "/tmp/r.html", None)
    assert (str(p.json), str(p.html), str(p.png), str(p.jsonl)) == \
        ("runs/x/watch.json", "/tmp/r.html", "runs/x/watch.png", "runs/x/watch.jsonl")
    p = resolve(None, "rec.json", None, None)
    assert (p.html, p.png, str(p.jsonl), str(p.channel)) == (None, None, "rec.jsonl", "rec.phases.jsonl")
