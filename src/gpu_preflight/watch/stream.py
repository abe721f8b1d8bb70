"""Pass the child's stdout/stderr through, live and byte for byte, while looking at them.

One thread `select`s on both pipes and copies each chunk to our own fd 1 / fd 2 as soon as it
arrives (no line buffering, so progress bars with \\r still move). A full terminal or a slow
reader blocks us and, through the pipe, the child: nothing is dropped. If our own stdout is
closed (`| head`), we close the child's pipe too, so it gets SIGPIPE as if it wrote there.

Looking costs little: one regex search per chunk decides whether the chunk holds a line worth
diagnosing; only then is it split into lines. The last line printed is kept so phases found
without markers can be labelled by what the command was saying at the time.
"""

from __future__ import annotations

import os
import re
import select
import threading
import time
from typing import Callable

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]")
_MAX_CARRY = 16384


class OutputPump:
    """Copies `pipes` ({"stdout": read_fd, ...}) to `sinks` ({"stdout": 1, ...})."""

    def __init__(self, pipes: dict[str, int], sinks: dict[str, int], trigger: re.Pattern[bytes] | None,
                 on_line: Callable[[str, float, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.pipes = dict(pipes)
        self.sinks = sinks
        self.trigger = trigger
        self.on_line = on_line  # called with (stream, monotonic time, line) for triggered lines
        self.clock = clock
        self.bytes = {name: 0 for name in pipes}
        self.lines = {name: 0 for name in pipes}
        self.last_line: tuple[float, str] | None = None
        self.sink_errors: dict[str, str] = {}
        self._carry = {name: b"" for name in pipes}
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
        return not open_left

    def _run(self) -> None:
        while self.pipes:
            fds = {fd: name for name, fd in self.pipes.items()}
            timeout = 0.25
            if self._stop_at is not None:
                timeout = max(0.0, min(0.05, self._stop_at - self.clock()))
            try:
                ready, _, _ = select.select(list(fds), [], [], timeout)
            except (OSError, ValueError):
                break
            if self._stop_at is not None and self.clock() >= self._stop_at:
                break  # a detached process still writing (or holding the pipe): stop here
            for fd in ready:
                self._pump_once(fds[fd], fd)

    def _pump_once(self, name: str, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
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
        self._look(name, chunk)

    def _close(self, name: str) -> None:
        fd = self.pipes.pop(name, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        rest = self._carry.pop(name, b"")
        if rest:
            self._look_lines(name, rest, final=True)

    def _look(self, name: str, chunk: bytes) -> None:
        data = self._carry.get(name, b"") + chunk
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        complete, rest = (data[: cut + 1], data[cut + 1:]) if cut >= 0 else (b"", data)
        self._carry[name] = rest[-_MAX_CARRY:]
        if complete:
            self._look_lines(name, complete)

    def _look_lines(self, name: str, data: bytes, final: bool = False) -> None:
        now = self.clock()
        tail = data.rstrip(b"\r\n")
        last = tail[max(tail.rfind(b"\n"), tail.rfind(b"\r")) + 1:]
        last_text = _clean(last)
        if last_text:
            self.last_line = (now, last_text[:200])
        if self.on_line is None or self.trigger is None or not self.trigger.search(data):
            return
        for raw in re.split(rb"[\r\n]+", data):
            if raw and self.trigger.search(raw):
                self.on_line(name, now, _clean(raw)[:2000])


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
