"""What multi-GPU and multi-node jobs need: persistence mode, NVLink links, peer-to-peer access and
the PCI path between GPU pairs, the NVSwitch fabric, NVIDIA devices on the PCI bus (to see a GPU
that fell off the bus), InfiniBand adapters, GPUDirect RDMA (nvidia-peermem) and NCCL_* settings.

NVML calls run in a daemon thread with the context's timeout, like probes/nvml.py; each call is
isolated so one unsupported query is one unavailable field.
Sources: NVML API reference (https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceQueries.html,
group__nvmlMultiGPU, group__NvLink); PCI class codes (https://pci-ids.ucw.cz/read/PD/);
Fabric Manager user guide (https://docs.nvidia.com/datacenter/tesla/fabric-manager-user-guide/).
"""

from __future__ import annotations

import socket
from typing import Any

from gpu_preflight.probes.context import ProbeContext, call_with_timeout
from gpu_preflight.snapshots.field import Fact, describe_exception, known, unknown

SOURCE = "nvml"
NVLINK_MAX_LINKS = 18  # NVML_NVLINK_MAX_LINKS in nvml.h (Hopper has 18 links)
# nvmlGpuTopologyLevel_t: the closest common ancestor of two GPUs on the PCI tree
TOPOLOGY = {0: "same board", 10: "one PCIe switch", 20: "several PCIe switches", 30: "PCIe host bridge",
            40: "same NUMA node (via CPU)", 50: "across CPU sockets"}
# nvmlGpuFabricState_t
FABRIC_STATES = {0: "not supported", 1: "not started", 2: "in progress", 3: "completed"}
PCI_VENDOR_NVIDIA = "0x10de"
PCI_CLASS_DISPLAY = ("0x0300", "0x0302")  # VGA-compatible controller, 3D controller
PCI_CLASS_BRIDGE_OTHER = "0x0680"          # NVSwitch enumerates as an "other bridge" device


def _gpu_links(nv: Any, h: Any) -> dict[str, Fact]:
    out: dict[str, Fact] = {}
    try:
        out["persistence_mode"] = known(bool(nv.nvmlDeviceGetPersistenceMode(h)), SOURCE)
    except Exception as exc:  # noqa: BLE001
        out["persistence_mode"] = unknown(describe_exception(exc), SOURCE)
    try:
        out["pcie_link"] = known({"generation": int(nv.nvmlDeviceGetCurrPcieLinkGeneration(h)),
                                  "width": int(nv.nvmlDeviceGetCurrPcieLinkWidth(h))}, SOURCE)
    except Exception as exc:  # noqa: BLE001
        out["pcie_link"] = unknown(describe_exception(exc), SOURCE)
    active = total = 0
    reason = None
    for link in range(NVLINK_MAX_LINKS):
        try:
            state = nv.nvmlDeviceGetNvLinkState(h, link)
        except Exception as exc:  # noqa: BLE001 - links past the last one are "not supported"
            if link == 0:
                reason = describe_exception(exc)
            break
        total += 1
        active += 1 if state else 0
    out["nvlink"] = (known({"links": total, "active": active}, SOURCE) if total
                     else known({"links": 0, "active": 0, "note": reason or "no NVLink"}, SOURCE))
    try:
        state = _fabric_state(nv, h)
        out["fabric_state"] = known(FABRIC_STATES.get(state, f"state {state}"), SOURCE)
    except Exception as exc:  # noqa: BLE001 - older drivers / GPUs without a fabric
        out["fabric_state"] = unknown(describe_exception(exc), SOURCE)
    return out


def _fabric_state(nv: Any, h: Any) -> int:
    """nvmlDeviceGetGpuFabricInfo fills a caller's c_nvmlGpuFabricInfo_t (nvidia-ml-py passes the
    struct through); fakes and older bindings return an object with `state`."""
    struct = getattr(nv, "c_nvmlGpuFabricInfo_t", None)
    if struct is not None:
        info = struct()
        nv.nvmlDeviceGetGpuFabricInfo(h, nv.byref(info) if hasattr(nv, "byref") else info)
    else:
        info = nv.nvmlDeviceGetGpuFabricInfo(h)
    return int(getattr(info, "state", 0))


def _pairs(nv: Any, handles: list[Any]) -> tuple[Fact, Fact]:
    n = len(handles)
    p2p: list[list[Any]] = [[None] * n for _ in range(n)]
    topo: list[list[Any]] = [[None] * n for _ in range(n)]
    read_caps = getattr(nv, "NVML_P2P_CAPS_INDEX_READ", 0)
    status_ok = getattr(nv, "NVML_P2P_STATUS_OK", 0)
    p2p_error = topo_error = None
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            try:
                p2p[i][j] = nv.nvmlDeviceGetP2PStatus(handles[i], handles[j], read_caps) == status_ok
            except Exception as exc:  # noqa: BLE001
                p2p_error = describe_exception(exc)
            try:
                level = int(nv.nvmlDeviceGetTopologyCommonAncestor(handles[i], handles[j]))
                topo[i][j] = TOPOLOGY.get(level, f"level {level}")
            except Exception as exc:  # noqa: BLE001
                topo_error = describe_exception(exc)
    p2p_fact = unknown(p2p_error, SOURCE) if p2p_error and n > 1 else known(p2p, SOURCE)
    topo_fact = unknown(topo_error, SOURCE) if topo_error and n > 1 else known(topo, SOURCE)
    return p2p_fact, topo_fact


def _nvml_part(nv: Any) -> dict[str, Any]:
    nv.nvmlInit()
    try:
        handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
        gpus = []
        for i, h in enumerate(handles):
            gpus.append({"index": known(i, SOURCE), **_gpu_links(nv, h)})
        p2p, topo = _pairs(nv, handles)
        return {"gpus": known(gpus, SOURCE), "p2p_read": p2p, "topology": topo}
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _pci(ctx: ProbeContext) -> Fact:
    base = "/sys/bus/pci/devices"
    try:
        names = ctx.listdir(base)
    except OSError as exc:
        return unknown(describe_exception(exc), "/sys/bus/pci")
    gpus, switches = [], []
    for name in names:
        try:
            vendor = ctx.read_text(f"{base}/{name}/vendor", 64).strip()
            klass = ctx.read_text(f"{base}/{name}/class", 64).strip()
        except OSError:
            continue
        if vendor != PCI_VENDOR_NVIDIA:
            continue
        if klass.startswith(PCI_CLASS_DISPLAY):
            gpus.append(name)
        elif klass.startswith(PCI_CLASS_BRIDGE_OTHER):
            switches.append(name)
    return known({"gpus": gpus, "nvswitches": switches}, "/sys/bus/pci")


def _infiniband(ctx: ProbeContext) -> Fact:
    try:
        return known(ctx.listdir("/sys/class/infiniband"), "/sys/class/infiniband")
    except FileNotFoundError:
        return known([], "/sys/class/infiniband")
    except OSError as exc:
        return unknown(describe_exception(exc), "/sys/class/infiniband")


def _peermem(ctx: ProbeContext) -> Fact:
    """nvidia-peermem (GPUDirect RDMA for InfiniBand): /sys/module/nvidia_peermem exists once loaded."""
    try:
        return known(ctx.exists("/sys/module/nvidia_peermem"), "/sys/module")
    except OSError as exc:
        return unknown(describe_exception(exc), "/sys/module")


def probe_interconnect(ctx: ProbeContext) -> dict[str, Any]:
    out: dict[str, Any] = {
        "hostname": known(socket.gethostname(), "python"),
        "pci_nvidia": _pci(ctx),
        "infiniband": _infiniband(ctx),
        "nvidia_peermem_loaded": _peermem(ctx),
        "nccl_env": known({k: v for k, v in sorted(ctx.environ.items()) if k.startswith("NCCL_")}, "environment"),
    }
    nv = ctx.nvml
    if nv is None:
        try:
            import pynvml as nv  # nvidia-ml-py
        except ImportError:
            reason = "nvidia-ml-py is not installed"
            return {**out, "gpus": unknown(reason, SOURCE), "p2p_read": unknown(reason, SOURCE),
                    "topology": unknown(reason, SOURCE)}
    data, reason = call_with_timeout(lambda: _nvml_part(nv), ctx.timeout_s, "preflight-interconnect",
                                     describe_exception)
    if reason:
        return {**out, "gpus": unknown(reason, SOURCE), "p2p_read": unknown(reason, SOURCE),
                "topology": unknown(reason, SOURCE)}
    return {**out, **data}
