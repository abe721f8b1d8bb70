"""Forward Ctrl-C, SIGTERM, SIGHUP and SIGQUIT to the command, exactly once.

The command stays in the watcher's process group, so it keeps the terminal (it can read stdin,
Ctrl-Z stops both). A Ctrl-C typed in the terminal therefore already reaches the command; the
kernel marks such signals (si_code > 0) and we do not send them again. A signal sent to the
watcher by another process (`kill`, `docker stop`, a scheduler) has si_code <= 0 and is
forwarded. After a third interrupt the command is killed (SIGKILL): a way out of a job that
ignores signals. The watcher itself never dies of these signals; it waits for the command, so
the record is always written and the command's exit code is returned.

On Linux a thread waits on the blocked signals with sigtimedwait (which tells who sent them);
elsewhere ordinary handlers forward everything but a terminal's Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable

FORWARDED = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, n))
KILL_AFTER = 3


class SignalForwarder:
    def __init__(self, on_event: Callable[[dict], None], clock: Callable[[], float] = time.monotonic):
        self.on_event = on_event
        self.clock = clock
        self.child_pid: int | None = None
        self.kill_tree: Callable[[], None] | None = None
        self.count = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._old_mask: set | None = None
        self._old_handlers: dict[int, object] = {}
        self._use_wait = hasattr(signal, "sigtimedwait") and hasattr(signal, "pthread_sigmask")

    # -- before the child starts -------------------------------------------------------------
    def block(self) -> None:
        """Block the signals in this (main) thread; threads started later inherit the mask."""
        if self._use_wait:
            self._old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)

    def child_setup(self) -> Callable[[], None] | None:
        """preexec_fn that gives the child a normal signal mask."""
        if not self._use_wait:
            return None
        return lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)

    # -- while it runs ------------------------------------------------------------------------
    def start(self, child_pid: int, kill_tree: Callable[[], None]) -> None:
        self.child_pid = child_pid
        self.kill_tree = kill_tree
        if self._use_wait:
            self._thread = threading.Thread(target=self._wait_loop, name="preflight-watch-signals", daemon=True)
            self._thread.start()
        else:
            for sig in FORWARDED:
                try:
                    self._old_handlers[sig] = signal.signal(sig, self._handler)
                except (ValueError, OSError):
                    pass

    def _wait_loop(self) -> None:
        while not self._stop.is_set():
            try:
                info = signal.sigtimedwait(FORWARDED, 0.2)
            except (OSError, InterruptedError):
                continue
            if info is not None:
                self._handle(info.si_signo, info.si_code, info.si_pid)

    def _handler(self, signo: int, _frame: object) -> None:
        from_terminal = signo in (signal.SIGINT, getattr(signal, "SIGQUIT", -1)) and _terminal_foreground()
        self._handle(signo, 1 if from_terminal else 0, None)

    def _handle(self, signo: int, si_code: int, sender: int | None) -> None:
        self.count += 1
        name = signal.Signals(signo).name
        from_kernel = si_code > 0  # a terminal (or the kernel) signalled the whole process group
        pid, kill_tree = self.child_pid, self.kill_tree  # the main thread clears them at the exit
        if pid is None:
            action = "ignored: the command had already ended"
        elif from_kernel:
            action = "already delivered by the terminal"
        else:
            action = "forwarded"
            _send(pid, signo)
        if self.count >= KILL_AFTER and kill_tree is not None:
            action += "; third interrupt: command killed (SIGKILL)"
            kill_tree()
        self.on_event({"type": "signal", "t": self.clock(), "signal": name, "sender_pid": sender or None,
                       "action": action})

    # -- after the child ended ---------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        if self._use_wait and self._old_mask is not None:
            # Swallow what arrived after the thread stopped, so unblocking cannot kill us now.
            while True:
                try:
                    if signal.sigtimedwait(FORWARDED, 0) is None:
                        break
                except OSError:
                    break
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)
            self._old_mask = None
        for sig, old in self._old_handlers.items():
            try:
                signal.signal(sig, old)  # type: ignore[arg-type]
            except (ValueError, OSError, TypeError):
                pass
        self._old_handlers.clear()


def _send(pid: int, signo: int) -> None:
    try:
        os.kill(pid, signo)
    except (ProcessLookupError, PermissionError):
        pass


def _terminal_foreground() -> bool:
    """True when we run in the terminal's foreground group (a Ctrl-C reached the child too)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)
