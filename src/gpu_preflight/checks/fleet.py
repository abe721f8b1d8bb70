"""Fleet checks PF210-PF212: judged across all nodes at once (scope "fleet"). Each takes a view
with `.nodes` (each with `.name`, `.answered`, `.error`) and `.stacks` (node name -> `stack()`),
built by cluster/judge.py; the node checks run on every node's snapshot separately."""

from __future__ import annotations

from collections import Counter
from typing import Any

from gpu_preflight.checks import Finding, check
from gpu_preflight.snapshots.schema import fact, gpus


def nccl_version(snap: dict) -> str | None:
    pk = fact(snap, "torch.nvidia_packages").get() or {}
    for name, ver in sorted(pk.items()) if isinstance(pk, dict) else []:
        if name.startswith("nvidia-nccl"):
            return str(ver)
    return None


def stack(snap: dict) -> dict[str, Any]:
    """The versions and hardware that every node of a job must share (or that explain a difference)."""
    names = [str(g["name"].get()) for g in gpus(snap) if g.get("name") is not None and g["name"].ok]
    mem = sorted({g["memory_total_bytes"].get() for g in gpus(snap)
                  if g.get("memory_total_bytes") is not None and g["memory_total_bytes"].ok})
    return {
        "driver": fact(snap, "nvml.driver_version").get(),
        "cuda_driver_api": fact(snap, "nvml.cuda_driver_version").get(),
        "torch": fact(snap, "torch.version").get(),
        "torch_cuda": fact(snap, "torch.cuda").get(),
        "nccl": nccl_version(snap),
        "vllm": fact(snap, "packages.vllm").get(),
        "python": fact(snap, "host.python_version").get(),
        "gpu_count": len(names),
        "gpu_models": sorted(set(names)),
        "gpu_memory_bytes": mem,
        "mig": sorted({bool((g["mig_mode"].get() or {}).get("current")) for g in gpus(snap)
                       if g.get("mig_mode") is not None and isinstance(g["mig_mode"].get(), dict)}),
    }


SKEW_KEYS = ("driver", "cuda_driver_api", "torch", "torch_cuda", "nccl", "vllm", "python")
HARDWARE_KEYS = ("gpu_count", "gpu_models", "gpu_memory_bytes", "mig")


LABELS = {"driver": "NVIDIA driver", "cuda_driver_api": "driver's CUDA version", "torch": "torch",
          "torch_cuda": "torch's CUDA", "nccl": "NCCL", "vllm": "vLLM", "python": "Python",
          "gpu_count": "GPU count", "gpu_models": "GPU model", "gpu_memory_bytes": "GPU memory", "mig": "MIG mode"}


def _F(status, title, message, fix=None, **evidence):  # noqa: N802 - short constructor
    return Finding("", status, title, message, fix, evidence)


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "unknown"
    if key == "gpu_memory_bytes" and isinstance(value, list):
        return "/".join(f"{v / (1 << 30):.1f} GiB" for v in value) or "none"
    if key == "cuda_driver_api" and isinstance(value, int):
        return f"{value // 1000}.{value % 1000 // 10}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _split(view, key: str) -> list[tuple[str, list[str]]]:
    """[(value text, nodes)] for one stack key, the majority first; unknown values are left out."""
    by_value: dict[str, list[str]] = {}
    for name, st in view.stacks.items():
        if st.get(key) is None or st.get(key) == []:
            continue
        by_value.setdefault(_fmt(key, st[key]), []).append(name)
    return sorted(by_value.items(), key=lambda kv: -len(kv[1]))


def _nodes(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _describe(key: str, split: list[tuple[str, list[str]]]) -> str:
    major, rest = split[0], split[1:]
    odd = "; ".join(f"{v} on {_nodes(ns)}" for v, ns in rest)
    return f"{LABELS[key]} differs: {major[0]} on {len(major[1])} node(s), {odd}"


def _mismatches(view, title: str, keys: tuple[str, ...], status: str, what: str, fix: str):
    """One finding per stack key whose value differs across the nodes that answered."""
    if len(view.stacks) < 2:
        return _F("skip", title, "fewer than two nodes answered")
    out = []
    for key in keys:
        split = _split(view, key)
        if len(split) > 1:
            odd = [n for _, ns in split[1:] for n in ns]
            out.append(_F(status, title, _describe(key, split),
                          fix.format(odd=_nodes(odd), label=LABELS[key], majority=split[0][0]),
                          key=key, values={v: ns for v, ns in split}))
    return out or _F("ok", title, f"the same {what} on all {len(view.stacks)} nodes")


@check("PF210", "version-skew", "fleet", "Versions across nodes", scope="fleet")
def version_skew(view):
    """
    What it checks:
    That every node answering runs the same NVIDIA driver, driver CUDA version, torch (and its
    CUDA), NCCL, vLLM and Python.

    Why it matters:
    A distributed job runs the same code on every node and exchanges tensors through NCCL:
    different NCCL or torch builds across ranks fail at the first collective or hang; Ray
    refuses workers whose Python differs from the head's; vLLM requires one version across its
    Ray workers; a node on an older driver fails where a wheel needs a newer one.

    Example:
    63 nodes on driver 580.95.05 and one reimaged node on 570.172.08: the job dies on that node
    with "CUDA driver version is insufficient".

    Fix:
    Bring the odd nodes to the majority's versions (the same image or the same pip lock file on
    every node), or drain them from the pool until they are.

    Sources:
    https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/troubleshooting.html
    https://docs.ray.io/en/latest/ray-core/handling-dependencies.html
    """
    return _mismatches(view, "Versions across nodes", SKEW_KEYS, "fail", "versions",
                       "bring {odd} to {label} {majority} (same image or lock file on every node)")


@check("PF211", "hardware-mismatch", "fleet", "GPUs across nodes", scope="fleet")
def hardware_mismatch(view):
    """
    What it checks:
    That every node has the same number and model of GPUs, the same memory per GPU and the same
    MIG mode.

    Why it matters:
    Launchers size a job per node (`--nproc-per-node 8`, vLLM's tensor and pipeline parallel
    sizes): a node with 7 visible GPUs, a smaller card or MIG slices fails to start its ranks or
    runs out of memory where the others fit.

    Example:
    One node of an H100 pool was replaced by an H100 PCIe with 80 GB but no NVLink, or one GPU
    fell off the bus: 7 GPUs instead of 8.

    Fix:
    Exclude the odd nodes from the job (Slurm `--exclude`, a Kubernetes node selector, a Ray
    node label), or size the job for the smallest node.

    Sources:
    https://docs.pytorch.org/docs/stable/elastic/run.html
    https://docs.vllm.ai/en/latest/serving/parallelism_scaling.html
    """
    return _mismatches(view, "GPUs across nodes", HARDWARE_KEYS, "warn", "GPUs",
                       "exclude {odd} from jobs sized for the majority, or size for the smallest node")


@check("PF212", "unreachable-nodes", "fleet", "Nodes that did not answer", scope="fleet")
def unreachable_nodes(view):
    """
    What it checks:
    Nodes of the fleet that gave no snapshot: dead in Ray, unschedulable, timed out, crashed
    while probing, or whose snapshot file could not be read.

    Why it matters:
    A node that cannot run a one-second probe cannot run a job either, and a report that left
    it out would call a broken fleet healthy.

    Example:
    A node whose GPU driver hangs: the probe task never returns and the node shows as "no answer
    within 60 s".

    Fix:
    Look at the node directly (`preflight doctor` on it, `dmesg`, `ray status`); drain it until it
    answers.

    Sources:
    https://docs.ray.io/en/latest/ray-core/fault-tolerance.html
    """
    title = "Nodes that did not answer"
    silent = [n for n in view.nodes if not n.answered]
    if not silent:
        return _F("ok", title, f"all {len(view.nodes)} node(s) answered")
    reasons = Counter(n.error or "no snapshot" for n in silent)
    text = "; ".join(f"{_nodes([n.name for n in silent if (n.error or 'no snapshot') == r])}: {r}"
                     for r, _ in reasons.most_common())
    return _F("fail", title, f"{len(silent)} of {len(view.nodes)} node(s) gave no snapshot: {text}",
              "check those nodes directly (`preflight doctor` on the node, dmesg, `ray status`) and drain them",
              nodes=[n.name for n in silent])


@check("PF213", "collective-bandwidth", "fleet", "All-reduce across GPUs (--deep)", scope="fleet")
def collective_bandwidth(view):
    """
    What it checks:
    With `--deep`: on each node, an all-reduce of 256 MiB across all its GPUs through
    torch.distributed and NCCL (bounded by a timeout), its result checked, and its bus bandwidth
    (as nccl-tests computes it) against the link's speed: NVLink from NVIDIA's product pages,
    PCIe from the link generation and width NVML reports. Across nodes (with `--ray`), one
    all-reduce spanning every node.

    Why it matters:
    A collective that hangs or runs far below the link speed means tensor parallelism will hang
    or crawl: a wrong network interface, P2P disabled, a down NVLink, or a missing fabric
    manager show up here before a training job burns hours.

    Example:
    8x H100 SXM reaching 38 GB/s bus bandwidth instead of a few hundred: NCCL_P2P_DISABLE=1 was
    set, so every transfer goes through host memory.

    Fix:
    Run with NCCL_DEBUG=INFO to see the transports NCCL picked; fix what PF204, PF205 and PF207
    report; set NCCL_SOCKET_IFNAME to the cluster interface for multi-node jobs.

    Sources:
    https://github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md
    https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/troubleshooting.html
    """
    from gpu_preflight.compatibility.links import SLOW_FRACTION, expected_link_gb_s

    title = "All-reduce across GPUs (--deep)"
    out = []
    ran = 0
    for n in view.nodes:
        deep = getattr(n, "extra", {}).get("deep")
        if not isinstance(deep, dict) or deep.get("skipped"):
            continue
        ran += 1
        if deep.get("error"):
            out.append(_F("fail", title, f"{n.name}: {deep['error']}", "run with NCCL_DEBUG=INFO; fix PF204/PF205/"
                                                                        "PF207 findings", node=n.name))
            continue
        if not deep.get("correct", True):
            out.append(_F("fail", title, f"{n.name}: the all-reduce returned a wrong sum", "reset the GPUs; report "
                                                                                           "the NCCL version", node=n.name))
            continue
        bus = deep.get("busbw_gb_s")
        link = _node_link(n)
        expected, what = expected_link_gb_s(*link)
        text = f"{n.name}: {deep.get('ranks')} ranks ({deep.get('backend')}), bus bandwidth {bus:.1f} GB/s"
        if expected and deep.get("backend") == "nccl" and bus < SLOW_FRACTION * expected:
            out.append(_F("warn", title, f"{text}, under half of the link's {expected:.0f} GB/s per direction ({what})",
                          "run with NCCL_DEBUG=INFO to see the transport; check PF204/PF205/PF207", node=n.name,
                          busbw_gb_s=bus, expected_gb_s=expected))
        else:
            out.append(_F("ok", title, text + (f" (link: {expected:.0f} GB/s per direction, {what})" if expected else ""),
                          node=n.name, busbw_gb_s=bus, expected_gb_s=expected))
    cross = getattr(view, "cross_node", None)
    if isinstance(cross, dict) and not cross.get("skipped"):
        ran += 1
        where = f"across {len(cross.get('nodes') or [])} nodes"
        if cross.get("error"):
            out.append(_F("fail", title, f"{where}: {cross['error']}", "check NCCL_SOCKET_IFNAME, the firewall between "
                                                                      "nodes and PF206 (GPUDirect RDMA)"))
        else:
            out.append(_F("ok" if cross.get("correct", True) else "fail", title,
                          f"{where}: {cross.get('ranks')} ranks ({cross.get('backend')}), bus bandwidth "
                          f"{cross.get('busbw_gb_s', 0):.2f} GB/s", busbw_gb_s=cross.get("busbw_gb_s")))
    return out if ran else _F("skip", title, "not run (pass --deep)")


def _node_link(node) -> tuple[str | None, int, int | None, int | None]:
    snap = node.snapshot or {}
    names = [g["name"].get() for g in gpus(snap) if g.get("name") is not None]
    ic = fact(snap, "interconnect.gpus").get() or []
    first = ic[0] if ic and isinstance(ic[0], dict) else {}
    nvl = first.get("nvlink").get() if first.get("nvlink") is not None else None
    pcie = first.get("pcie_link").get() if first.get("pcie_link") is not None else None
    return (names[0] if names else None, int((nvl or {}).get("active") or 0),
            (pcie or {}).get("generation"), (pcie or {}).get("width"))
