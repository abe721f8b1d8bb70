"""Judging a fleet: snapshots from every node of a cluster, judged one by one and together.

nodes.py    a node's answer (snapshot, or why there is none) and its stack signature
files.py    snapshots gathered by any means (Slurm srun, a Kubernetes Job, scp): files and folders
ray.py      one Ray task per alive node (node-affinity scheduling), with a timeout per node
judge.py    node checks on each snapshot, fleet checks across them, nodes grouped by identical stack
deep.py     --deep across GPUs: peer-to-peer matrix and an NCCL all-reduce smoke test with bus bandwidth
"""
