"""preflight fleet: snapshots from many nodes judged together, the interconnect probe and checks,
and a real local Ray cluster whose nodes answer with different recorded snapshots.

Expected messages are written out by hand from the scenario; the base snapshot is the recorded
H100 capture in tests/fixtures/snapshots.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from gpu_preflight.checks import run_checks
from gpu_preflight.cli import main
from gpu_preflight.cluster.files import load_paths
from gpu_preflight.cluster.judge import judge
from gpu_preflight.probes.context import ProbeContext
from gpu_preflight.probes.interconnect import probe_interconnect
from gpu_preflight.snapshots import schema
from gpu_preflight.snapshots.field import Fact

FIX = Path(__file__).parent / "fixtures" / "snapshots"
BASE = json.loads((FIX / "h100-torch2.11.json").read_text())


def variant(**changes) -> dict:
    snap = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = snap
        parts = path.split("__")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return snap


def write(folder: Path, name: str, snap: dict) -> Path:
    path = folder / name
    path.write_text(json.dumps(snap))
    return path


def fleet(capsys, *argv):
    code = main(["fleet", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- snapshot files

def test_skew_missing_gpu_and_unreadable_file_are_each_reported(tmp_path, capsys):
    write(tmp_path, "n1.json", BASE)
    write(tmp_path, "n2.json", BASE)
    write(tmp_path, "n3.json", variant(nvml__driver_version={"value": "570.172.08", "source": "nvml"}))
    write(tmp_path, "n4.json", variant(nvml__gpus={"value": [], "source": "nvml"}))
    (tmp_path / "n5.json").write_text('{"not": "a snapshot"}')
    code, out, _ = fleet(capsys, str(tmp_path), "--json")
    r = json.loads(out)
    assert code == 2 and r["exit_code"] == 2 and r["ok"] is False
    assert (r["nodes_total"], r["nodes_answered"]) == (5, 4)
    by_code = {}
    for f in r["findings"]:
        by_code.setdefault(f["code"], []).append(f)
    assert [f["message"] for f in by_code["PF210"]] == [
        "NVIDIA driver differs: 580.159.04 on 3 node(s), 570.172.08 on n3"]
    assert by_code["PF210"][0]["status"] == "fail"
    assert [f["message"] for f in by_code["PF211"]] == ["GPU count differs: 1 on 3 node(s), 0 on n4"]
    assert by_code["PF212"][0]["status"] == "fail" and by_code["PF212"][0]["evidence"]["nodes"] == ["n5.json"]
    # node findings carry the nodes they concern
    pf103 = by_code["PF103"][0]
    assert pf103["status"] == "fail" and pf103["nodes"] == ["n3"]
    assert sorted(len(g["nodes"]) for g in r["groups"]) == [1, 1, 2]


def test_sixty_four_identical_nodes_are_one_line_and_the_odd_one_stands_out(tmp_path, capsys):
    for i in range(64):
        snap = copy.deepcopy(BASE)
        snap["interconnect"] = {"hostname": {"value": f"gpu-{i:02d}", "source": "python"}}
        write(tmp_path, f"{i}.json", snap)
    odd = variant(torch__version={"value": "2.9.1", "source": "package metadata"})
    odd["interconnect"] = {"hostname": {"value": "gpu-odd", "source": "python"}}
    write(tmp_path, "odd.json", odd)
    code, out, _ = fleet(capsys, str(tmp_path))
    assert code == 2
    assert "64 node(s): driver 580.159.04 · torch 2.11.0" in out
    assert "1 node(s): driver 580.159.04 · torch 2.9.1" in out and "gpu-odd" in out
    assert "torch differs: 2.11.0 on 64 node(s), 2.9.1 on gpu-odd" in out


def test_snapshots_one_per_line_in_a_log(tmp_path):
    lines = []
    for i in range(3):
        snap = copy.deepcopy(BASE)
        snap["interconnect"] = {"hostname": {"value": f"pod-{i}", "source": "python"}}
        lines.append(f"2026-12-02T10:00:0{i}Z preflight-ds-{i} " + json.dumps(snap))
    (tmp_path / "daemonset.log").write_text("starting\n" + "\n".join(lines) + "\ndone\n")
    nodes = load_paths([str(tmp_path / "daemonset.log")])
    assert [n.name for n in nodes] == ["pod-0", "pod-1", "pod-2"] and all(n.answered for n in nodes)


def test_usage_errors(capsys, tmp_path):
    assert fleet(capsys)[0] == 3
    assert fleet(capsys, str(tmp_path / "missing"))[0] == 3
    code, _, err = fleet(capsys, str(tmp_path), "--deep")
    assert code == 3 and "--deep (deep=True) runs on the nodes themselves" in err


def test_judging_is_fast_for_a_thousand_nodes(tmp_path):
    """The bar is 1,000 snapshots in under 2 s (bench/fleet_speed.py measures it); here a loose
    bound so a slow CI box does not flake, while a per-node rerun of the checks would blow it."""
    from gpu_preflight.cluster.nodes import Node

    nodes = []
    for i in range(1000):
        snap = schema.loads(json.dumps(BASE))
        nodes.append(Node(f"n{i}", snap))
    start = time.perf_counter()
    r = judge(nodes)
    elapsed = time.perf_counter() - start
    assert r["nodes_answered"] == 1000 and len(r["groups"]) == 1
    assert elapsed < 10


# --------------------------------------------------------------------------- interconnect

class FakeNvmlLinks:
    NVML_P2P_CAPS_INDEX_READ = 0
    NVML_P2P_STATUS_OK = 0

    def __init__(self, n=4, links=18, down=None, p2p_bad=(), fabric=3, persistence=1):
        self.n, self.links, self.down = n, links, down or {}
        self.p2p_bad, self.fabric, self.persistence = set(p2p_bad), fabric, persistence

    def nvmlInit(self): pass  # noqa: E704
    def nvmlShutdown(self): pass  # noqa: E704
    def nvmlDeviceGetCount(self): return self.n  # noqa: E704
    def nvmlDeviceGetHandleByIndex(self, i): return i  # noqa: E704
    def nvmlDeviceGetPersistenceMode(self, h): return self.persistence  # noqa: E704
    def nvmlDeviceGetCurrPcieLinkGeneration(self, h): return 5  # noqa: E704
    def nvmlDeviceGetCurrPcieLinkWidth(self, h): return 16  # noqa: E704

    def nvmlDeviceGetNvLinkState(self, h, link):
        if link >= self.links:
            raise RuntimeError("not supported")
        return 0 if link < self.down.get(h, 0) else 1

    def nvmlDeviceGetGpuFabricInfo(self, h):
        return SimpleNamespace(state=self.fabric, status=0)

    def nvmlDeviceGetP2PStatus(self, a, b, caps):
        return 1 if (min(a, b), max(a, b)) in self.p2p_bad else 0

    def nvmlDeviceGetTopologyCommonAncestor(self, a, b):
        return 0


def sysfs(root: Path, gpus=4, switches=0, ib=(), peermem=False):
    for i in range(gpus + switches):
        d = root / "sys/bus/pci/devices" / f"0000:{i:02x}:00.0"
        d.mkdir(parents=True)
        (d / "vendor").write_text("0x10de\n")
        (d / "class").write_text("0x030200\n" if i < gpus else "0x068000\n")
    other = root / "sys/bus/pci/devices/0000:ff:00.0"
    other.mkdir(parents=True)
    (other / "vendor").write_text("0x8086\n")
    (other / "class").write_text("0x030000\n")
    for name in ib:
        (root / "sys/class/infiniband" / name).mkdir(parents=True)
    if peermem:
        (root / "sys/module/nvidia_peermem").mkdir(parents=True)


def node_snapshot(tmp_path, nv, env=None, **fs) -> dict:
    sysfs(tmp_path, **fs)
    ctx = ProbeContext(environ=env or {}, root=str(tmp_path), nvml=nv, timeout_s=2)
    snap = schema.loads(json.dumps(BASE))
    snap["interconnect"] = probe_interconnect(ctx)
    # NVML of the base capture saw 1 GPU; the fake node has nv.n
    snap["nvml"]["gpus"] = Fact([snap["nvml"]["gpus"].value[0]] * nv.n, "nvml")
    return snap


def statuses(snap, code):
    return [(f.status, f.message) for f in run_checks(snap, only=[code])]


def test_interconnect_probe_reads_links_pairs_and_pci(tmp_path):
    snap = node_snapshot(tmp_path, FakeNvmlLinks(down={2: 6}, p2p_bad=[(1, 3)]), gpus=4, switches=4,
                         ib=["mlx5_0", "mlx5_1"], env={"NCCL_P2P_DISABLE": "1", "PATH": "/bin"})
    ic = snap["interconnect"]
    gpus = ic["gpus"].value
    assert [g["nvlink"].value for g in gpus][2] == {"links": 18, "active": 12}
    assert gpus[0]["pcie_link"].value == {"generation": 5, "width": 16}
    assert ic["p2p_read"].value[1][3] is False and ic["p2p_read"].value[0][1] is True
    assert len(ic["pci_nvidia"].value["gpus"]) == 4 and len(ic["pci_nvidia"].value["nvswitches"]) == 4
    assert ic["infiniband"].value == ["mlx5_0", "mlx5_1"] and ic["nvidia_peermem_loaded"].value is False
    assert ic["nccl_env"].value == {"NCCL_P2P_DISABLE": "1"}
    assert statuses(snap, "PF204") == [("warn", "NVLink links down: GPU 2: 12/18 active")]
    assert statuses(snap, "PF205")[0][0] == "warn" and "1-3" in statuses(snap, "PF205")[0][1]
    assert statuses(snap, "PF206")[0][0] == "warn"
    assert statuses(snap, "PF207") == [("warn", "NCCL_P2P_DISABLE=1 turns off GPU-to-GPU peer transfers over "
                                                "NVLink/PCIe (traffic goes through host memory)")]
    assert statuses(snap, "PF203")[0][0] == "ok"


def test_fabric_manager_not_started_on_an_nvswitch_node_fails(tmp_path):
    snap = node_snapshot(tmp_path, FakeNvmlLinks(fabric=1), gpus=4, switches=4)
    (status, message), = statuses(snap, "PF203")
    assert status == "fail" and "error 802" in message


def test_a_gpu_on_the_bus_that_the_driver_lost_fails(tmp_path):
    snap = node_snapshot(tmp_path, FakeNvmlLinks(n=3), gpus=4)
    snap["container"]["runtime"] = Fact(None, "filesystem")
    assert statuses(snap, "PF202") == [("fail", "4 NVIDIA GPU(s) on the PCI bus but the driver shows 3")]


def test_persistence_off_warns_and_healthy_node_is_ok(tmp_path):
    snap = node_snapshot(tmp_path, FakeNvmlLinks(persistence=0), gpus=4)
    assert statuses(snap, "PF201")[0][0] == "warn"
    healthy = node_snapshot(tmp_path / "h", FakeNvmlLinks(), gpus=4)
    for code in ("PF201", "PF202", "PF204", "PF205", "PF207"):
        assert statuses(healthy, code)[0][0] == "ok", code
    assert statuses(healthy, "PF206")[0][0] == "skip"  # no InfiniBand


# --------------------------------------------------------------------------- a real Ray cluster

ray = pytest.importorskip("ray", reason="Ray not installed (pip install ray)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    folder = tmp_path_factory.mktemp("snaps")
    paths = {
        "good": write(folder, "good.json", BASE),
        "old-driver": write(folder, "old.json", variant(nvml__driver_version={"value": "570.172.08",
                                                                              "source": "nvml"})),
        "no-gpu": write(folder, "nogpu.json", variant(nvml__gpus={"value": [], "source": "nvml"})),
    }
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "env_vars": {"PREFLIGHT_SNAPSHOT_REPLAY": str(paths["good"])}})
    c.add_node(num_cpus=1, env_vars={"PREFLIGHT_SNAPSHOT_REPLAY": str(paths["old-driver"])})
    c.add_node(num_cpus=1, env_vars={"PREFLIGHT_SNAPSHOT_REPLAY": str(paths["no-gpu"])})
    doomed = c.add_node(num_cpus=1, env_vars={"PREFLIGHT_SNAPSHOT_REPLAY": str(paths["good"])})
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    c.remove_node(doomed, allow_graceful=False)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def test_ray_fleet_catches_skew_a_missing_gpu_and_a_dead_node(cluster, capsys):
    start = time.perf_counter()
    code, out, err = fleet(capsys, "--ray", cluster.address, "--json", "--timeout-s", "60")
    elapsed = time.perf_counter() - start
    r = json.loads(out)
    assert code == 2, err
    rows = {n["name"]: n for n in r["nodes"]}
    assert r["nodes_total"] == 4 and r["nodes_answered"] == 3
    dead = [n for n in rows.values() if not n["answered"]]
    assert len(dead) == 1 and dead[0]["error"] == "Ray marks this node dead"
    messages = [f["message"] for f in r["findings"]]
    assert "NVIDIA driver differs: 580.159.04 on 2 node(s), 570.172.08 on " in " ".join(messages)
    assert any(m.startswith("GPU count differs: 1 on 2 node(s), 0 on ") for m in messages)
    assert all(n["elapsed_s"] is not None for n in rows.values() if n["answered"])
    assert elapsed < 60


def test_ray_fleet_timeout_reports_every_silent_node(cluster, capsys):
    code, out, _ = fleet(capsys, "--ray", cluster.address, "--json", "--timeout-s", "0.001")
    r = json.loads(out)
    assert code == 2 and r["nodes_answered"] <= 3
    silent = [n for n in r["nodes"] if not n["answered"]]
    assert silent and all(n["error"] for n in silent)


def test_collective_across_ray_nodes_with_gloo(cluster):
    pytest.importorskip("torch", reason="the collective test needs torch")
    from gpu_preflight.cluster import ray as fleet_ray

    nodes = fleet_ray.collect(cluster.address, timeout_s=60)
    result = fleet_ray.collective_across(nodes, backend="gloo", timeout_s=90, megabytes=8)
    assert result.get("error") is None, result
    assert result["ranks"] == 3 and result["nodes"] and result["correct"] is True
    assert result["busbw_gb_s"] > 0


def test_real_h200_capture_reads_cleanly():
    """The interconnect section as a real H200 VM reported it (one GPU on PCIe Gen5 x16, no NVLink
    exposed, persistence on, NCCL_NVLS_ENABLE=0 set by the host): every node check ok or skip."""
    snap = schema.loads((FIX / "h200-torch2.11-interconnect.json").read_text())
    got = {f.code: f.status for f in run_checks(snap) if f.code.startswith("PF2")}
    assert got == {"PF201": "ok", "PF202": "ok", "PF203": "skip", "PF204": "skip", "PF205": "skip",
                   "PF206": "skip", "PF207": "ok"}
    ic = snap["interconnect"]
    assert ic["gpus"].value[0]["pcie_link"].value == {"generation": 5, "width": 16}
