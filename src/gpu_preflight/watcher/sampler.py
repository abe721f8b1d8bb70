"""One tick of sampling -> plain records, streamed to JSONL as they are taken.

`Sampler.tick()` reads, for every chosen GPU, the device's used memory and the memory of the
command's processes (NVML compute-process list, matched against the process tree), and on the
slower aux cadence (every N ticks, N * interval >= 100 ms: NVML's utilization is itself an
average over 1/6 s to 1 s, and temperature, power and clocks move slowly) utilization,
temperature, power, clocks and the tree's host RSS.

The tree itself is re-listed at most once a second (`tree_every_s`); a GPU process NVML reports
that is not known yet is checked at once by walking its parent chain, so GPU attribution never
waits for the next re-listing. `Recorder` keeps the columns in compact arrays and appends each
record to the JSONL stream, flushed at least every 100 ms (every tick at 100 ms and slower): a
crash or a kill -9 still leaves the samples taken until then on disk.
"""

from __future__ import annotations

import json
from array import array
from typing import IO, Any, Callable

from gpu_preflight.watcher.gpu import GpuSource
from gpu_preflight.watcher.proctree import ProcTree

AUX_KEYS = ("util_pct", "mem_util_pct", "temperature_c", "power_w", "sm_clock_mhz", "mem_clock_mhz")
_NONE = -1  # stands for None inside the integer arrays


class Sampler:
    def __init__(self, gpu: GpuSource | None, tree: ProcTree, root_pid: int, exclude_pid: int | None = None,
                 aux_every: int = 1, tree_every_s: float = 1.0):
        self.gpu = gpu
        self.tree = tree
        self.root_pid = root_pid
        self.exclude_pid = exclude_pid  # the watcher itself when the root is the watcher (subreaper)
        self.aux_every = max(1, int(aux_every))  # aux readings every N ticks
        self.tree_every_s = tree_every_s
        self.members: set[int] = set() if root_pid == exclude_pid else {root_pid}
        self.alive: set[int] = set(self.members)
        self._not_ours: set[int] = set()
        self._next_tree = 0.0
        self._ticks = 0
        self.indices = [d.index for d in gpu.devices] if gpu else []

    def refresh_tree(self) -> set[int]:
        found = self.tree.tree(self.root_pid)
        found.discard(self.exclude_pid)
        if self.root_pid != self.exclude_pid:
            found.add(self.root_pid)
        self.members |= found
        self.alive = found
        return found

    def _ours(self, pid: int) -> bool:
        if pid in self.members:
            return True
        if pid in self._not_ours:
            return False
        if self.tree.is_descendant(pid, self.root_pid):
            self.members.add(pid)
            self.alive.add(pid)
            return True
        self._not_ours.add(pid)
        return False

    def tick(self, t: float, force_aux: bool = False) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Returns (sample, aux or None). `t` is seconds since launch (monotonic)."""
        if t >= self._next_tree:
            self.refresh_tree()
            self._next_tree = t + self.tree_every_s
        used, tree_b = [], []
        for i in self.indices:
            u, _total = self.gpu.memory(i)
            used.append(u)
            procs = self.gpu.processes(i)
            if procs is None:
                tree_b.append(None)
                continue
            mine = [b for pid, b in procs if self._ours(pid)]
            tree_b.append(None if any(b is None for b in mine) else sum(mine))
        sample = {"t": t, "used": used, "tree": tree_b}
        aux = None
        self._ticks += 1
        if force_aux or (self._ticks - 1) % self.aux_every == 0:
            rss, nproc = self.tree.rss_bytes(sorted(self.alive))
            aux = {"t": t, "rss": rss, "nproc": nproc,
                   "gpus": [self.gpu.aux(i) for i in self.indices] if self.gpu else []}
        return sample, aux


def _ints(values: list[int | None]) -> str:
    return ",".join("null" if v is None else str(int(v)) for v in values)


def _nums(values: list[float | int | None]) -> str:
    return ",".join("null" if v is None or v != v else repr(float(v)) if isinstance(v, float) else str(int(v))
                    for v in values)


class Recorder:
    """Columns in memory + the JSONL stream on disk."""

    def __init__(self, stream: IO[bytes] | None, n_gpus: int, write_error: Callable[[str], None] | None = None,
                 flush_every: int = 1):
        self.stream = stream
        self.n = n_gpus
        self.t = array("d")
        self.used = [array("q") for _ in range(n_gpus)]
        self.tree = [array("q") for _ in range(n_gpus)]
        self.aux_t = array("d")
        self.rss = array("q")
        self.nproc = array("q")
        self.aux: list[dict[str, list[Any]]] = [{k: [] for k in AUX_KEYS} for _ in range(n_gpus)]
        self.events: list[dict[str, Any]] = []  # phase, output, signal, exit...: small and rare
        self.write_error = write_error
        self.stream_error: str | None = None
        self.flush_every = max(1, int(flush_every))  # samples; the runner makes this ~100 ms
        self._unflushed = 0
        self._pending: list[str] = []

    def write(self, obj: dict[str, Any], flush: bool = True) -> None:
        self._write_line(json.dumps(obj, separators=(",", ":")), flush)

    def _write_line(self, line: str, flush: bool) -> None:
        self._pending.append(line)
        if flush:
            self.flush()

    def flush(self) -> None:
        """One write() for everything pending (the stream is unbuffered binary)."""
        if not self._pending or self.stream is None or self.stream_error:
            self._pending.clear()
            return
        data = ("\n".join(self._pending) + "\n").encode("utf-8", "replace")
        self._pending.clear()
        try:
            view = memoryview(data)
            while view:
                view = view[self.stream.write(view) or 0:]
        except (OSError, ValueError) as exc:  # disk full, file gone: keep running the job
            self.stream_error = f"{type(exc).__name__}: {exc}"
            if self.write_error:
                self.write_error(self.stream_error)

    def add_sample(self, sample: dict[str, Any]) -> None:
        self.t.append(sample["t"])
        for j in range(self.n):
            u, tr = sample["used"][j], sample["tree"][j]
            self.used[j].append(_NONE if u is None else u)
            self.tree[j].append(_NONE if tr is None else tr)
        # Hand-made JSON: this runs every tick, json.dumps is the costliest part of it.
        self._unflushed += 1
        flush = self._unflushed >= self.flush_every
        if flush:
            self._unflushed = 0
        self._write_line(f'{{"type":"sample","t":{sample["t"]:.6f},"used":[{_ints(sample["used"])}],'
                         f'"tree":[{_ints(sample["tree"])}]}}', flush)

    def add_aux(self, aux: dict[str, Any]) -> None:
        self.aux_t.append(aux["t"])
        self.rss.append(_NONE if aux["rss"] is None else aux["rss"])
        self.nproc.append(aux["nproc"])
        for j, values in enumerate(aux["gpus"]):
            for k, v in zip(AUX_KEYS, values):
                self.aux[j][k].append(v)
        gpus = ",".join(f"[{_nums(g)}]" for g in aux["gpus"])
        rss = "null" if aux["rss"] is None else int(aux["rss"])
        self._write_line(f'{{"type":"aux","t":{aux["t"]:.6f},"rss":{rss},"nproc":{int(aux["nproc"])},'
                         f'"gpus":[{gpus}]}}', flush=False)  # the sample written next flushes it

    def add_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.write(event, flush=False)  # goes out with the next sample's flush (<= 100 ms)

    def columns(self, indices: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(series, aux) in the record's JSON shape, None where a reading failed."""
        def unbox(arr: array) -> list[int | None]:
            return [None if v == _NONE else v for v in arr]

        series = {"t": [round(x, 6) for x in self.t],
                  "gpus": [{"index": i, "used_bytes": unbox(self.used[j]), "tree_bytes": unbox(self.tree[j])}
                           for j, i in enumerate(indices)]}
        aux = {"t": [round(x, 6) for x in self.aux_t], "rss_bytes": unbox(self.rss), "nproc": list(self.nproc),
               "gpus": [{"index": i, **self.aux[j]} for j, i in enumerate(indices)]}
        return series, aux
