"""Node checks PF201-PF207: what multi-GPU jobs on one node need (persistence mode, GPUs on the PCI
bus vs the ones the driver sees, the NVSwitch fabric, NVLink links, peer-to-peer access, GPUDirect
RDMA, NCCL settings). They read the snapshot's `interconnect` section (probes/interconnect.py)."""

from __future__ import annotations

from gpu_preflight.checks import Finding, check
from gpu_preflight.checks.context import gpu_views
from gpu_preflight.snapshots.schema import fact

# NCCL variables that switch a transport off, and what it costs.
# Source: https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html
NCCL_DISABLES = {
    "NCCL_P2P_DISABLE": "GPU-to-GPU peer transfers over NVLink/PCIe (traffic goes through host memory)",
    "NCCL_SHM_DISABLE": "the shared-memory transport between processes of one node",
    "NCCL_IB_DISABLE": "InfiniBand/RoCE (traffic falls back to TCP sockets)",
    "NCCL_NVLS_ENABLE": None,  # 0 turns NVLink SHARP off: a choice, not a fault
}


def _F(status, title, message, fix=None, **evidence):  # noqa: N802 - short constructor
    return Finding("", status, title, message, fix, evidence)


def _ic(snap, name):
    return fact(snap, f"interconnect.{name}")


def _ic_gpus(snap) -> list[dict]:
    f = _ic(snap, "gpus")
    return [g for g in (f.value or []) if isinstance(g, dict)] if f.ok else []


def _val(entry: dict, key: str):
    f = entry.get(key)
    return f.get() if f is not None and hasattr(f, "get") else None


def _skip(snap, title):
    if snap.get("origin") == "described":
        return _F("skip", title, "not known for a described machine")
    return None


@check("PF201", "persistence-mode", "interconnect", "Persistence mode")
def persistence_mode(snap):
    """
    What it checks:
    Whether each GPU has persistence mode (or the nvidia-persistenced daemon) keeping the driver
    loaded while no process uses it.

    Why it matters:
    Without it the driver tears the GPU state down when the last process exits and builds it
    again at the next start: every job start pays seconds of initialization, and on multi-GPU
    nodes the first CUDA call of each rank is slow enough to trip launcher and NCCL timeouts.

    Example:
    `nvidia-smi -q | grep Persistence` shows "Disabled" on a node where torchrun ranks time out
    at start-up.

    Fix:
    Start the nvidia-persistenced daemon (the recommended way) or, as root, `nvidia-smi -pm 1`.

    Sources:
    https://docs.nvidia.com/deploy/driver-persistence/index.html
    """
    title = "Persistence mode"
    if (s := _skip(snap, title)):
        return s
    off = [_val(g, "index") for g in _ic_gpus(snap) if _val(g, "persistence_mode") is False]
    known = [g for g in _ic_gpus(snap) if _val(g, "persistence_mode") is not None]
    if not known:
        return _F("skip", title, "persistence mode not reported")
    if off:
        return _F("warn", title, f"persistence mode is off on GPU {', '.join(map(str, off))}: the driver reloads "
                                 f"its state at every job start", "start nvidia-persistenced (or, as root, "
                                 "`nvidia-smi -pm 1`)", gpus=off)
    return _F("ok", title, f"on for all {len(known)} GPU(s)")


@check("PF202", "gpus-missing", "interconnect", "GPUs on the PCI bus vs the driver")
def gpus_missing(snap):
    """
    What it checks:
    The NVIDIA GPUs on the PCI bus (/sys/bus/pci/devices, vendor 0x10de, display or 3D
    controller class) against the GPUs the driver reports through NVML.

    Why it matters:
    A GPU that "fell off the bus" (Xid 79) or failed to initialize is still on the PCI bus but
    the driver no longer shows it: jobs sized for 8 GPUs start with 7, or hang in NCCL waiting for
    a rank that has no device.

    Example:
    `lspci` lists 8 NVIDIA 3D controllers; `nvidia-smi -L` lists 7.

    Fix:
    Look for Xid 79 / "fallen off the bus" in `dmesg`; drain the node and reboot it; have the GPU
    serviced if it recurs. In a container, check which devices were passed in
    (NVIDIA_VISIBLE_DEVICES) before suspecting hardware.

    Sources:
    https://docs.nvidia.com/deploy/xid-errors/index.html
    """
    title = "GPUs on the PCI bus vs the driver"
    if (s := _skip(snap, title)):
        return s
    pci = _ic(snap, "pci_nvidia").get()
    if not isinstance(pci, dict):
        return _F("skip", title, "PCI devices not readable")
    on_bus = len(pci.get("gpus") or [])
    seen = len(gpu_views(snap))
    if not fact(snap, "nvml.available").get(False):
        return _F("skip", title, "the driver reports no GPUs (see PF101)")
    if seen < on_bus:
        container = fact(snap, "container.runtime").get()
        why = (" (in a container only the GPUs passed in are visible: check NVIDIA_VISIBLE_DEVICES)"
               if container else "")
        return _F("fail" if not container else "warn", title,
                  f"{on_bus} NVIDIA GPU(s) on the PCI bus but the driver shows {seen}{why}",
                  "look for Xid 79 ('fallen off the bus') in dmesg; drain and reboot the node",
                  pci_gpus=on_bus, nvml_gpus=seen)
    return _F("ok", title, f"{seen} GPU(s), all seen by the driver")


@check("PF203", "fabric-manager", "interconnect", "NVSwitch fabric")
def fabric_manager(snap):
    """
    What it checks:
    On nodes with NVSwitch devices on the PCI bus (HGX / DGX A100, H100, H200, B200), whether
    each GPU reports its fabric registration as completed (NVML GPU fabric info).

    Why it matters:
    On NVSwitch systems the GPUs cannot be used until nvidia-fabricmanager has configured the
    switches: CUDA fails at initialization with error 802 "system not yet initialized", and
    torch reports no usable GPU although nvidia-smi lists them all.

    Example:
    An HGX H100 after a driver upgrade where the fabricmanager package was left at the old
    version: `cudaGetDeviceCount` returns 802.

    Fix:
    Install nvidia-fabricmanager of exactly the driver's version and start it:
    `systemctl enable --now nvidia-fabricmanager`.

    Sources:
    https://docs.nvidia.com/datacenter/tesla/fabric-manager-user-guide/index.html
    https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__TYPES.html
    """
    title = "NVSwitch fabric"
    if (s := _skip(snap, title)):
        return s
    pci = _ic(snap, "pci_nvidia").get()
    switches = len((pci or {}).get("nvswitches") or []) if isinstance(pci, dict) else 0
    states = {_val(g, "index"): _val(g, "fabric_state") for g in _ic_gpus(snap)}
    pending = [i for i, s in states.items() if s in ("not started", "in progress")]
    if not switches and not pending:
        return _F("skip", title, "no NVSwitch on this node")
    if pending:
        return _F("fail", title, f"NVSwitch fabric not ready on GPU {', '.join(map(str, pending))} "
                                 f"({states[pending[0]]}): CUDA will fail with error 802 'system not yet "
                                 f"initialized'", "install nvidia-fabricmanager matching the driver version and "
                                 "`systemctl enable --now nvidia-fabricmanager`", gpus=pending, nvswitches=switches)
    if states and all(s == "completed" for s in states.values()):
        return _F("ok", title, f"fabric registered on all {len(states)} GPU(s) ({switches} NVSwitch device(s))")
    return _F("skip", title, f"{switches} NVSwitch device(s); fabric state not reported by this driver")


@check("PF204", "nvlink-links", "interconnect", "NVLink links")
def nvlink_links(snap):
    """
    What it checks:
    NVLink links per GPU (NVML link state): links that are down on a GPU whose peers have them
    up, or fewer active links than the node's other GPUs.

    Why it matters:
    A down link halves or removes the GPU's NVLink bandwidth: tensor-parallel all-reduces on that
    GPU crawl, and NCCL may route through PCIe or host memory, making one rank the straggler of
    every step.

    Example:
    GPU 3 of an 8-GPU HGX node reports 12 of its 18 links active; the others report 18.

    Fix:
    Check `nvidia-smi nvlink -s` and `dmesg` for NVLink errors; reset the GPUs or reboot; have the
    baseboard serviced when a link stays down.

    Sources:
    https://docs.nvidia.com/deploy/nvml-api/group__NvLink.html
    """
    title = "NVLink links"
    if (s := _skip(snap, title)):
        return s
    links = {_val(g, "index"): _val(g, "nvlink") for g in _ic_gpus(snap)}
    links = {i: v for i, v in links.items() if isinstance(v, dict) and v.get("links")}
    if not links:
        return _F("skip", title, "no NVLink reported")
    best = max(v["active"] for v in links.values())
    weak = {i: v for i, v in links.items() if v["active"] < best or v["active"] < v["links"]}
    if weak:
        text = ", ".join(f"GPU {i}: {v['active']}/{v['links']} active" for i, v in sorted(weak.items()))
        return _F("warn", title, f"NVLink links down: {text}", "check `nvidia-smi nvlink -s` and dmesg; reset the "
                                                              "GPUs or reboot", gpus=sorted(weak))
    return _F("ok", title, f"all links active ({best} per GPU)")


@check("PF205", "peer-access", "interconnect", "Peer-to-peer between GPUs")
def peer_access(snap):
    """
    What it checks:
    Whether every pair of GPUs on the node supports peer-to-peer reads (NVML P2P status), and
    the PCI path between them (NVLink/one board, a PCIe switch, the host bridge, or across CPU
    sockets).

    Why it matters:
    Tensor parallelism all-reduces activations between the GPUs of a group at every layer.
    Without P2P the data goes through host memory; across CPU sockets PCIe P2P is often
    disabled. vLLM and NCCL then fall back to slower paths, and some custom all-reduce kernels
    refuse to start.

    Example:
    Two RTX 4090s: consumer cards have P2P disabled by the driver; NVML reports "not supported".

    Fix:
    Keep tensor-parallel groups on GPUs that have P2P (same PCIe switch or NVLink); on consumer
    cards use pipeline parallelism or `--disable-custom-all-reduce` in vLLM; check IOMMU / ACS
    settings in the BIOS when P2P should work.

    Sources:
    https://docs.nvidia.com/deploy/nvml-api/group__nvmlMultiGPU.html
    https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/troubleshooting.html
    """
    title = "Peer-to-peer between GPUs"
    if (s := _skip(snap, title)):
        return s
    p2p = _ic(snap, "p2p_read").get()
    topo = _ic(snap, "topology").get() or []
    if not isinstance(p2p, list) or len(p2p) < 2:
        return _F("skip", title, "fewer than two GPUs")
    bad = [(i, j) for i in range(len(p2p)) for j in range(i + 1, len(p2p)) if p2p[i][j] is False]
    paths = sorted({topo[i][j] for i in range(len(topo)) for j in range(len(topo)) if i != j and topo[i][j]})
    if bad:
        pairs = ", ".join(f"{i}-{j}" for i, j in bad[:8]) + (" ..." if len(bad) > 8 else "")
        return _F("warn", title, f"no peer-to-peer access between GPU pairs {pairs}: tensor-parallel traffic "
                                 f"goes through host memory", "keep tensor-parallel groups on GPUs with P2P; on "
                                 "consumer cards prefer pipeline parallelism", pairs=bad, paths=paths)
    return _F("ok", title, f"P2P between all {len(p2p)} GPUs" + (f" (paths: {', '.join(paths)})" if paths else ""))


@check("PF206", "gpudirect-rdma", "interconnect", "GPUDirect RDMA")
def gpudirect_rdma(snap):
    """
    What it checks:
    On nodes with InfiniBand / RoCE adapters (/sys/class/infiniband), whether the nvidia-peermem
    kernel module is loaded.

    Why it matters:
    Without nvidia-peermem, NCCL cannot let the network adapter read and write GPU memory
    directly (GPUDirect RDMA): every inter-node transfer is staged through host memory, cutting
    multi-node all-reduce bandwidth severalfold.

    Example:
    NCCL_DEBUG=INFO prints "NET/IB : GPU Direct RDMA Disabled for HCA 0" on a DGX node.

    Fix:
    `modprobe nvidia-peermem` (as root; it ships with the driver) and make it load at boot.

    Sources:
    https://docs.nvidia.com/cuda/gpudirect-rdma/index.html
    https://docs.nvidia.com/networking/display/gpudirectrdmav18/installing+gpudirect+rdma
    """
    title = "GPUDirect RDMA"
    if (s := _skip(snap, title)):
        return s
    ib = _ic(snap, "infiniband").get()
    if not ib:
        return _F("skip", title, "no InfiniBand / RoCE adapter")
    loaded = _ic(snap, "nvidia_peermem_loaded").get()
    if loaded is False:
        return _F("warn", title, f"{len(ib)} InfiniBand adapter(s) ({', '.join(ib[:4])}) but nvidia-peermem is not "
                                 f"loaded: inter-node GPU traffic is staged through host memory",
                  "as root: `modprobe nvidia-peermem` (and load it at boot)", adapters=ib)
    return _F("ok", title, f"nvidia-peermem loaded ({len(ib)} adapter(s))")


@check("PF207", "nccl-env", "interconnect", "NCCL settings")
def nccl_env(snap):
    """
    What it checks:
    NCCL_* environment variables that switch a transport off (NCCL_P2P_DISABLE, NCCL_SHM_DISABLE,
    NCCL_IB_DISABLE) or pin the network interface to loopback (NCCL_SOCKET_IFNAME=lo).

    Why it matters:
    Such settings are often copied from a workaround for one broken machine and then slow down
    every job: with P2P disabled, tensor-parallel all-reduces go through host memory; with IB
    disabled, inter-node traffic uses TCP; a loopback interface makes multi-node jobs hang.

    Example:
    NCCL_P2P_DISABLE=1 left in a Dockerfile after a driver bug was fixed.

    Fix:
    Unset the variable (or justify it): `unset NCCL_P2P_DISABLE`.

    Sources:
    https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html
    """
    title = "NCCL settings"
    env = _ic(snap, "nccl_env").get()
    if not isinstance(env, dict):
        return _F("skip", title, "environment not recorded")
    out = []
    for name, what in NCCL_DISABLES.items():
        if what and str(env.get(name, "")).strip() not in ("", "0"):
            out.append(_F("warn", title, f"{name}={env[name]} turns off {what}", f"unset {name}", variable=name))
    ifname = str(env.get("NCCL_SOCKET_IFNAME", ""))
    if ifname in ("lo", "=lo"):
        out.append(_F("warn", title, f"NCCL_SOCKET_IFNAME={ifname} pins NCCL to loopback: jobs across nodes hang",
                      "set it to the node's cluster interface (e.g. eth0, ib0) or unset it",
                      variable="NCCL_SOCKET_IFNAME"))
    return out or _F("ok", title, "no NCCL transport switched off" + (f" ({len(env)} NCCL_* set)" if env else ""))
