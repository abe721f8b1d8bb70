"""Collect one snapshot per alive Ray node: one task per node, pinned with node-affinity
scheduling (soft=False, so a task never lands on another node), gathered in the driver with a
deadline. A node that is dead, unschedulable, crashes or does not answer in time is reported as
such, never dropped.

Every node needs gpu-preflight installed in the Python environment its Ray workers use (or pass
a runtime_env). Sources: https://docs.ray.io/en/latest/ray-core/scheduling/index.html
(NodeAffinitySchedulingStrategy), https://docs.ray.io/en/latest/ray-core/api/doc/ray.nodes.html
"""

from __future__ import annotations

import os
import time
from typing import Any

from gpu_preflight.errors import DependencyMissing, UsageError
from gpu_preflight.cluster.nodes import Node

REPLAY_ENV = "PREFLIGHT_SNAPSHOT_REPLAY"  # a node that should answer with a recorded snapshot file


def node_answer(deep: bool, deep_backend: str | None = None) -> dict[str, Any]:
    """What a node sends back: its snapshot as JSON text (and the --deep results). Runs on the node."""
    import socket

    import gpu_preflight.snapshots as snapshots

    replay = os.environ.get(REPLAY_ENV)
    if replay:
        with open(replay, encoding="utf-8") as fh:
            text = fh.read(64 << 20)
    else:
        text = snapshots.dumps(snapshots.collect(deep=deep))
    out: dict[str, Any] = {"snapshot": text, "hostname": socket.gethostname()}
    if deep:
        from gpu_preflight.cluster.deep import node_deep

        out["deep"] = node_deep(backend=deep_backend)
    return out


def _import_ray():
    try:
        import ray
    except ImportError:
        from gpu_preflight.hints import install_extra

        raise DependencyMissing("`preflight fleet --ray` needs Ray", hint=install_extra("fleet", ("ray>=2.9",))) from None
    return ray


def connect(address: str | None):
    """Connect to a running cluster (ADDRESS, else RAY_ADDRESS, else the local one): never start one."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    try:
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "auto", logging_level="ERROR",
                 log_to_driver=False, ignore_reinit_error=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot connect to a Ray cluster at {address or 'auto'}: {str(exc).splitlines()[0]}",
                         hint="start one with `ray start --head` (and `ray start --address=HEAD:6379` on the "
                              "other nodes), or pass --ray HEAD_IP:6379") from None
    return ray


def _label(n: dict[str, Any], dup: bool) -> str:
    host = n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or "node"
    return f"{host}/{n['NodeID'][:6]}" if dup else str(host)


def collect(address: str | None = None, deep: bool = False, timeout_s: float = 60.0,
            deep_backend: str | None = None) -> list[Node]:
    ray = connect(address)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    listed = ray.nodes()
    hosts = [n.get("NodeManagerHostname") for n in listed]
    nodes: list[Node] = []
    pending: dict[Any, tuple[Node, float]] = {}
    task = ray.remote(num_cpus=0, max_retries=0)(node_answer)
    for n in listed:
        node = Node(_label(n, hosts.count(n.get("NodeManagerHostname")) > 1), origin="ray",
                    extra={"ray_node_id": n["NodeID"], "address": n.get("NodeManagerAddress")})
        nodes.append(node)
        if not n.get("Alive"):
            node.error = "Ray marks this node dead"
            continue
        strategy = NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
        ref = task.options(scheduling_strategy=strategy).remote(deep, deep_backend)
        pending[ref] = (node, time.monotonic())
    deadline = time.monotonic() + timeout_s
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        for ref in ready:
            node, started = pending.pop(ref)
            node.elapsed_s = round(time.monotonic() - started, 3)
            try:
                _accept(node, ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - a dead node, a crashed task: reported
                node.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}" if str(exc) \
                    else type(exc).__name__
    for ref, (node, _) in pending.items():
        node.error = f"no answer within {timeout_s:g} s (node busy, hung GPU driver, or unschedulable)"
        ray.cancel(ref, force=True)
    return nodes


def _accept(node: Node, answer: dict[str, Any]) -> None:
    from gpu_preflight.snapshots import schema

    node.snapshot = schema.loads(answer["snapshot"], where=f"snapshot from {node.name}")
    if answer.get("deep") is not None:
        node.extra["deep"] = answer["deep"]


def collective_across(nodes: list[Node], backend: str = "nccl", timeout_s: float = 120.0,
                      megabytes: int = 256) -> dict[str, Any]:
    """One all-reduce spanning every answered Ray node (one process per GPU; gloo: one per node),
    rendezvous at the first node. Bounded: a hang becomes a verdict."""
    ray = _import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    members = [n for n in nodes if n.answered and n.extra.get("ray_node_id")]
    if len(members) < 2:
        return {"skipped": "fewer than two nodes answered"}

    def pin(n: Node):
        return NodeAffinitySchedulingStrategy(node_id=n.extra["ray_node_id"], soft=False)

    rendezvous = ray.remote(num_cpus=0, max_retries=0)(_free_endpoint)
    try:
        master = ray.get(rendezvous.options(scheduling_strategy=pin(members[0])).remote(), timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"no rendezvous endpoint on {members[0].name}: {type(exc).__name__}"}
    from gpu_preflight.cluster.deep import run_collective

    task = ray.remote(num_cpus=0, max_retries=0)(run_collective)
    refs = [task.options(scheduling_strategy=pin(n)).remote(
        backend, timeout_s=timeout_s, megabytes=megabytes, nnodes=len(members), node_rank=r, master=master,
        procs=1 if backend == "gloo" else 0) for r, n in enumerate(members)]
    ready, waiting = ray.wait(refs, num_returns=len(refs), timeout=timeout_s + 10)
    for ref in waiting:
        ray.cancel(ref, force=True)
    if waiting:
        return {"error": f"the all-reduce across {len(members)} nodes did not finish within {timeout_s:g} s",
                "timed_out": True, "nodes": [n.name for n in members]}
    results = []
    for ref in refs:
        try:
            results.append(ray.get(ref))
        except Exception as exc:  # noqa: BLE001
            results.append({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"})
    errors = [f"{n.name}: {r['error']}" for n, r in zip(members, results) if r.get("error")]
    if errors:
        return {"error": "; ".join(errors)[:600], "nodes": [n.name for n in members]}
    return {**results[0], "nodes": [n.name for n in members]}


def _free_endpoint() -> str:
    import socket

    import ray

    ip = ray.util.get_node_ip_address()
    with socket.socket() as s:
        s.bind((ip, 0))
        return f"{ip}:{s.getsockname()[1]}"
