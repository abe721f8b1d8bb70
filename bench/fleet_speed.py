"""How fast `preflight fleet` is: judging N recorded snapshots (default 1,000), and answering
through Ray on a local cluster of K nodes (default 4), start-up included.

Usage: python bench/fleet_speed.py [--nodes 1000] [--ray-nodes 4] [--repeat 5]
Prints one JSON line per measurement; docs/benchmarks.md quotes them with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAP = os.path.join(ROOT, "tests", "fixtures", "snapshots", "h100-torch2.11.json")


def judge_files(n: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        base = json.load(open(SNAP, encoding="utf-8"))
        for i in range(n):
            base["interconnect"] = {"hostname": {"value": f"node-{i:05d}", "source": "python"}}
            with open(os.path.join(tmp, f"{i}.json"), "w", encoding="utf-8") as fh:
                json.dump(base, fh)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "gpu_preflight", "fleet", tmp, "--json"], check=False,
                           stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
    return {"what": f"preflight fleet DIR with {n} snapshots (fresh process, files read and judged)",
            "median_s": round(statistics.median(times), 3), "runs": [round(t, 3) for t in times]}


def ray_cluster(k: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    env = {"PREFLIGHT_SNAPSHOT_REPLAY": SNAP}
    t0 = time.perf_counter()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "env_vars": env})
    for _ in range(k - 1):
        c.add_node(num_cpus=1, env_vars=env)
    c.wait_for_nodes()
    t1 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gpu_preflight", "fleet", "--ray", c.address, "--json"],
                          capture_output=True, text=True, check=False)
    t2 = time.perf_counter()
    answered = json.loads(proc.stdout)["nodes_answered"] if proc.stdout else None
    c.shutdown()
    del ray
    return {"what": f"preflight fleet --ray on a {k}-node local cluster (connect, one task per node, judge)",
            "cluster_start_s": round(t1 - t0, 3), "fleet_command_s": round(t2 - t1, 3), "answered": answered}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--ray-nodes", type=int, default=4)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    env = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    print(json.dumps({**env, **judge_files(a.nodes, a.repeat)}))
    if a.ray_nodes:
        print(json.dumps({**env, **ray_cluster(a.ray_nodes)}))


if __name__ == "__main__":
    main()
