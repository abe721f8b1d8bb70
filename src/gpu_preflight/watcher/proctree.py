"""The command's process tree and its host memory: psutil when installed, else /proc.

`tree(root)` lists the live descendants of `root` (not `root` itself); `rss_bytes(pids)` sums
resident memory and counts the processes still alive; `is_descendant(pid, root)` walks one process's parent chain, cheap enough
to run for every GPU process NVML reports that is not yet known. Both implementations return
plain ints; tests inject a fake with the same three methods.

Host RSS is the sum over the tree, so pages shared by forked workers count once per process:
an upper bound, like `ps` shows.
"""

from __future__ import annotations

import os
from typing import Iterable, Protocol


class ProcTree(Protocol):
    name: str

    def tree(self, root: int) -> set[int]: ...

    def rss_bytes(self, pids: Iterable[int]) -> tuple[int | None, int]: ...

    def is_descendant(self, pid: int, root: int) -> bool: ...


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ProcfsTree:
    """Linux /proc parsing, no dependencies."""

    name = "procfs"

    def __init__(self, proc: str = "/proc"):
        self.proc = proc
        self._children_files = None  # /proc/PID/task/TID/children exists (CONFIG_PROC_CHILDREN)
        self._statm: dict[int, int] = {}  # pid -> open fd of /proc/PID/statm

    def available(self) -> bool:
        return os.path.isdir(os.path.join(self.proc, "self"))

    def _ppid(self, pid: int) -> int | None:
        try:
            with open(f"{self.proc}/{pid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            return None
        # "pid (comm) state ppid ..." - comm may contain spaces and parentheses
        try:
            return int(data[data.rindex(b")") + 2:].split()[1])
        except (ValueError, IndexError):
            return None

    def _children(self, pid: int) -> list[int] | None:
        """Children via /proc/PID/task/*/children (cheap); None when the kernel lacks it."""
        try:
            tids = os.listdir(f"{self.proc}/{pid}/task")
        except OSError:
            return []
        out: list[int] = []
        for tid in tids:
            try:
                with open(f"{self.proc}/{pid}/task/{tid}/children", "rb") as f:
                    out.extend(int(x) for x in f.read().split())
            except FileNotFoundError:
                if self._children_files is None:
                    self._children_files = os.path.exists(f"{self.proc}/self/task/{os.getpid()}/children")
                if not self._children_files:
                    return None
            except (OSError, ValueError):
                continue
        return out

    def tree(self, root: int) -> set[int]:
        found: set[int] = set()
        todo = [root]
        while todo:
            kids = self._children(todo.pop())
            if kids is None:
                return self._tree_by_scan(root)
            for k in kids:
                if k not in found:
                    found.add(k)
                    todo.append(k)
        return found

    def _tree_by_scan(self, root: int) -> set[int]:
        parent: dict[int, list[int]] = {}
        for entry in os.listdir(self.proc):
            if entry.isdigit():
                ppid = self._ppid(int(entry))
                if ppid is not None:
                    parent.setdefault(ppid, []).append(int(entry))
        found: set[int] = set()
        todo = [root]
        while todo:
            for k in parent.get(todo.pop(), []):
                if k not in found:
                    found.add(k)
                    todo.append(k)
        return found

    def rss_bytes(self, pids: Iterable[int]) -> tuple[int | None, int]:
        # Keep /proc/PID/statm open and pread it: one syscall per process per reading, where
        # open+read+close costs ~5x more CPU on a cold cache (this runs every 100 ms).
        total, seen = 0, 0
        wanted = set(pids)
        for pid in wanted:
            fd = self._statm.get(pid)
            try:
                if fd is None:
                    fd = self._statm[pid] = os.open(f"{self.proc}/{pid}/statm", os.O_RDONLY)
                total += int(os.pread(fd, 128, 0).split()[1]) * _PAGE
                seen += 1
            except (OSError, ValueError, IndexError):  # gone (ESRCH/ENOENT): forget it
                self._forget(pid)
        for pid in [p for p in self._statm if p not in wanted]:
            self._forget(pid)
        return (total if seen else None), seen

    def _forget(self, pid: int) -> None:
        fd = self._statm.pop(pid, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        for pid in list(self._statm):
            self._forget(pid)

    def is_descendant(self, pid: int, root: int) -> bool:
        for _ in range(64):  # bounded walk: a cycle or a deep chain is not ours
            if pid == root:
                return True
            if pid <= 1:
                return False
            ppid = self._ppid(pid)
            if ppid is None:
                return False
            pid = ppid
        return False


class PsutilTree:
    """psutil: works beyond Linux (macOS, BSD) and reads the same numbers on Linux."""

    name = "psutil"

    def __init__(self, psutil_module):
        self.ps = psutil_module

    def tree(self, root: int) -> set[int]:
        try:
            return {p.pid for p in self.ps.Process(root).children(recursive=True)}
        except (self.ps.Error, OSError):
            return set()

    def rss_bytes(self, pids: Iterable[int]) -> tuple[int | None, int]:
        total, seen = 0, 0
        for pid in pids:
            try:
                total += self.ps.Process(pid).memory_info().rss
                seen += 1
            except (self.ps.Error, OSError):
                continue
        return (total if seen else None), seen

    def is_descendant(self, pid: int, root: int) -> bool:
        try:
            for _ in range(64):
                if pid == root:
                    return True
                if pid <= 1:
                    return False
                pid = self.ps.Process(pid).ppid()
        except (self.ps.Error, OSError):
            return False
        return False


class NoTree:
    """Neither psutil nor /proc: the command still runs; host memory is not sampled."""

    name = "none"

    def tree(self, root: int) -> set[int]:
        return set()

    def rss_bytes(self, pids: Iterable[int]) -> tuple[int | None, int]:
        return None, 0

    def is_descendant(self, pid: int, root: int) -> bool:
        return False


def default_tree() -> ProcTree:
    """/proc when present (cheapest: reads only the tree's own files), psutil elsewhere."""
    procfs = ProcfsTree()
    if procfs.available():
        return procfs
    try:
        import psutil
    except ImportError:
        return NoTree()
    return PsutilTree(psutil)
