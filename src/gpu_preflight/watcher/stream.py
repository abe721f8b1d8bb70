"""Pass the child's stdout/stderr through, live and byte for byte, while looking at them.

One thread `select`s on both pipes and copies each chunk to our own fd 1 / fd 2 as soon as it
arrives (no line buffering, so progress bars with \\r still move). A full terminal or a slow
reader blocks us and, through the pipe, the child: nothing is dropped. If our own stdout is
closed (`| head`), we close the child's pipe too, so it gets SIGPIPE as if it wrote there.

Looking never slows the child down. Copying comes first; the copied chunks wait in a backlog
that is scanned 64 KiB at a time (a fraction of a millisecond) whenever no pipe has data
waiting, and at the end; once more than BEHIND_BYTES wait, only when the command has paused
for IDLE_S. Scanning is one
`bytes.lower()` and one case-sensitive regex of literal words (diagnose.TRIGGER_LOWER) per chunk,
hundreds of MB/s; only the lines around a hit are split out. If the child writes faster than
that for long, the backlog keeps its newest SCAN_BACKLOG_BYTES and the older part is counted in
`unscanned_bytes` (the record says so) instead of holding the child back. The Linux pipe
buffer is raised to 1 MiB, so the child rarely waits for us at all.

The last line printed is kept so phases found without markers can be labelled by what the
command was saying at the time.
"""

from __future__ import annotations

import collections
import os
import re
import select
import sys
import threading
import time
from typing import Callable

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]")
_MAX_CARRY = 16384
_LINE_AROUND = 4096
READ_BYTES = 64 << 10  # larger reads are slower (fresh 1 MiB buffers fault in pages)
PIPE_BYTES = 1 << 20
SCAN_SLICE_BYTES = 64 << 10
SCAN_BACKLOG_BYTES = 16 << 20
BEHIND_BYTES = 4 << 20
IDLE_S = 0.0005
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux 2.6.35+), not exported before Python 3.10


def widen_pipe(fd: int, size: int = PIPE_BYTES) -> None:
    """Ask Linux for a bigger pipe buffer (64 KiB by default); harmless where it cannot."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", _F_SETPIPE_SZ), size)
    except (OSError, ImportError):
        pass  # above /proc/sys/fs/pipe-max-size for an unprivileged user: keep the default


class OutputPump:
    """Copies `pipes` ({"stdout": read_fd, ...}) to `sinks` ({"stdout": 1, ...}).

    `trigger` is matched against the lowercased output (e.g. diagnose.TRIGGER_LOWER); each line
    holding a match is passed to `on_line(stream, monotonic time it arrived, line)`. `prefilter`
    (e.g. diagnose.may_hold_trigger) is asked first about each slice of complete lines: False means
    no trigger can be there, and the regex is skipped.
    """

    def __init__(self, pipes: dict[str, int], sinks: dict[str, int], trigger: re.Pattern[bytes] | None,
                 on_line: Callable[[str, float, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, backlog_bytes: int = SCAN_BACKLOG_BYTES,
                 prefilter: Callable[[bytes], bool] | None = None):
        self.pipes = dict(pipes)
        self.sinks = sinks
        self.trigger = trigger
        self.prefilter = prefilter
        self.on_line = on_line
        self.clock = clock
        self.backlog_bytes = backlog_bytes
        self.bytes = {name: 0 for name in pipes}
        self.lines = {name: 0 for name in pipes}
        self.unscanned_bytes = 0
        self.last_line: tuple[float, str] | None = None
        self.sink_errors: dict[str, str] = {}
        self._carry = {name: b"" for name in pipes}
        self._backlog: collections.deque[tuple[str, float, bytes]] = collections.deque()
        self._backlog_size = 0
        self._stop_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="preflight-watch-output", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self, drain_s: float = 1.0) -> bool:
        """After the child exits: drain what is buffered, give up after `drain_s` if a detached
        grandchild still holds the pipes open. Returns True when every pipe reached EOF."""
        self._stop_at = self.clock() + drain_s
        if self._thread.is_alive():
            self._thread.join(drain_s + 1.0)
        open_left = bool(self.pipes)
        if self._thread.is_alive():  # stuck writing to a sink that does not read: leave it be
            return False
        for fd in list(self.pipes.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self.pipes.clear()
        self._scan_all()
        return not open_left

    def _run(self) -> None:
        for fd in self.pipes.values():
            widen_pipe(fd)
        idle = False
        while self.pipes:
            fds = {fd: name for name, fd in self.pipes.items()}
            if not self._backlog:
                timeout = 0.25
            elif self._backlog_size < BEHIND_BYTES or idle:
                timeout = 0.0  # keeping up, or the command is pausing: scan while the pipes are empty
            else:
                timeout = IDLE_S  # behind: wait for the command to pause, never get in its way
            if self._stop_at is not None:
                timeout = max(0.0, min(0.05, self._stop_at - self.clock()))
            try:
                ready, _, _ = select.select(list(fds), [], [], timeout)
            except (OSError, ValueError):
                break
            if self._stop_at is not None and self.clock() >= self._stop_at:
                break  # a detached process still writing (or holding the pipe): stop here
            if not ready:
                idle = timeout > 0 or idle  # it paused for IDLE_S (or longer): scan until it writes again
                self._scan_some()  # the pipes are empty: look at what was copied
                continue
            idle = False
            for fd in ready:
                self._pump_once(fds[fd], fd)
        self._scan_all()

    def _pump_once(self, name: str, fd: int) -> None:
        try:
            chunk = os.read(fd, READ_BYTES)
        except OSError:
            chunk = b""
        if not chunk:
            self._close(name)
            return
        sink = self.sinks.get(name)
        if sink is not None and name not in self.sink_errors:
            try:
                _write_all(sink, chunk)
            except OSError as exc:  # our own stdout went away: let the child see it too
                self.sink_errors[name] = f"{type(exc).__name__}: {exc}"
                self._close(name)
        self.bytes[name] += len(chunk)
        self.lines[name] += chunk.count(b"\n")
        now = self.clock()
        self._note_last_line(chunk, now)
        self._queue(name, now, chunk)

    def _queue(self, name: str, t: float, chunk: bytes) -> None:
        self._backlog.append((name, t, chunk))
        self._backlog_size += len(chunk)
        while self._backlog_size > self.backlog_bytes and len(self._backlog) > 1:  # behind: forget the oldest
            old_name, _, old = self._backlog.popleft()
            self._backlog_size -= len(old)
            self.unscanned_bytes += len(old)
            self._carry[old_name] = b""  # a line cut by the gap is not joined to the next one

    def _scan_some(self, budget: int = SCAN_SLICE_BYTES) -> None:
        """Scan at most `budget` bytes of the backlog (about 0.3 ms), then let the pipes be read."""
        if not self._backlog:
            return
        name, t, chunk = self._backlog.popleft()
        if len(chunk) > budget:
            self._backlog.appendleft((name, t, chunk[budget:]))
            chunk = chunk[:budget]
        self._backlog_size -= len(chunk)
        self._look(name, t, chunk)

    def _scan_all(self) -> None:
        while self._backlog:
            self._scan_some(1 << 20)
        for name in list(self._carry):
            rest = self._carry.pop(name, b"")
            if rest:
                self._look_lines(name, self.clock(), rest)
        self._carry = {}

    def _close(self, name: str) -> None:
        fd = self.pipes.pop(name, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _note_last_line(self, chunk: bytes, now: float) -> None:
        """The last non-empty line of the chunk (a cheap scan from its end)."""
        end = len(chunk)
        while end > 0:
            start = max(chunk.rfind(b"\n", 0, end), chunk.rfind(b"\r", 0, end)) + 1
            if start < end:
                text = _clean(chunk[max(start, end - 4096):end])
                if text:
                    self.last_line = (now, text[:200])
                return
            end = start - 1

    def _look(self, name: str, t: float, chunk: bytes) -> None:
        data = self._carry.get(name, b"") + chunk
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        complete, rest = (data[: cut + 1], data[cut + 1:]) if cut >= 0 else (b"", data)
        self._carry[name] = rest[-_MAX_CARRY:]
        if complete:
            self._look_lines(name, t, complete)

    def _look_lines(self, name: str, t: float, data: bytes) -> None:
        if self.on_line is None or self.trigger is None:
            return
        if self.prefilter is not None and not self.prefilter(data):
            return  # no trigger word can be in it (diagnose.may_hold_trigger): the regex is not needed
        low = data.lower()  # same length as data: offsets match
        seen_end = -1
        for m in self.trigger.finditer(low):
            if m.start() < seen_end:
                continue  # a second hit on a line already passed on
            lo = max(0, m.start() - _LINE_AROUND)  # a line is at most 2 x 4 KiB around the hit
            start = max(data.rfind(b"\n", lo, m.start()), data.rfind(b"\r", lo, m.start()), lo - 1) + 1
            hi = min(len(data), m.end() + _LINE_AROUND)
            ends = [i for i in (data.find(b"\n", m.end(), hi), data.find(b"\r", m.end(), hi)) if i >= 0]
            end = min(ends) if ends else hi
            seen_end = end
            self.on_line(name, t, _clean(data[start:end])[:2000])


def _clean(raw: bytes) -> str:
    return _ANSI.sub(b"", raw).decode("utf-8", "replace").strip()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:  # a non-blocking terminal: wait until it drains
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]
