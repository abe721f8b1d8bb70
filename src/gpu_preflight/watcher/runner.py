"""Run the command under watch: spawn, sample, forward signals, then write the record and reports.

Guarantees, in order of importance:
  1. the command's output reaches our stdout/stderr, live, and its exit code is ours
     (127 not found, 126 not executable, 128+N killed by signal N);
  2. the record streams to disk while it runs (JSONL, flushed each tick), and the final JSON is
     written even when the watcher was interrupted or its sampling failed;
  3. report paths are checked before the command starts.
Anything the watcher cannot do (no GPU, no psutil, plotly missing) is said, never fatal.
"""

from __future__ import annotations

import collections
import ctypes
import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable

from gpu_preflight.errors import UsageError
from gpu_preflight.watcher import diagnose, record as rec_mod
from gpu_preflight.watcher.gpu import GpuSource, open_gpu_source
from gpu_preflight.watcher.outputs import OutputPaths, check_writable, create_channel, open_stream
from gpu_preflight.watcher.phase import CHANNEL_ENV
from gpu_preflight.watcher.proctree import ProcTree, default_tree
from gpu_preflight.watcher.sampler import Recorder, Sampler
from gpu_preflight.watcher.signals import SignalForwarder
from gpu_preflight.watcher.stream import OutputPump

MIN_INTERVAL_MS = 10.0
MAX_LINE_EVENTS = 5000
MAX_MATCHES = 1000
NVML_TIMEOUT_S = 10.0


@dataclass
class WatchOptions:
    command: list[str]
    outputs: OutputPaths
    interval_ms: float = 100.0
    model: str | None = None
    gpu_indices: list[int] | None = None
    quiet: bool = False
    tree_every_s: float = 1.0
    drain_s: float = 1.0

    @property
    def aux_interval_ms(self) -> float:
        """Utilization, power, temperature, clocks, RSS: every N ticks, N*interval >= 100 ms."""
        return self.interval_ms * max(1, math.ceil(100.0 / self.interval_ms - 1e-9))


@dataclass
class WatchEnv:
    """What the watcher touches, injectable for tests."""

    nv: Any = None  # a pynvml-like module; None imports nvidia-ml-py
    no_gpu: bool = False
    tree: ProcTree | None = None
    stdout_fd: int = 1
    stderr_fd: int = 2
    talk: IO[str] = field(default_factory=lambda: sys.stderr)
    handle_signals: bool = True
    subreaper: bool = False  # adopt detached grandchildren (the CLI turns this on; Linux only)
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    renderers: bool = True


@dataclass
class WatchResult:
    exit_code: int
    record: dict[str, Any]


def run_watch(opts: WatchOptions, env: WatchEnv | None = None) -> WatchResult:
    env = env or WatchEnv()
    if not opts.command:
        raise UsageError("no command to watch", hint="preflight watch [options] -- CMD ARGS...")
    if not MIN_INTERVAL_MS <= opts.interval_ms <= 3_600_000:
        raise UsageError(f"--interval-ms {opts.interval_ms:g} is below the {MIN_INTERVAL_MS:g} ms minimum")
    gpu, gpu_reason = _open_gpu(env, opts.gpu_indices)  # first: a bad --gpu-index leaves no folder
    try:
        check_writable(opts.outputs)
        return _Run(opts, env, gpu, gpu_reason).run()
    finally:
        if gpu is not None:
            gpu.close()


def _open_gpu(env: WatchEnv, indices: list[int] | None) -> tuple[GpuSource | None, str | None]:
    if env.no_gpu:
        return None, "GPU sampling turned off"
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = open_gpu_source(env.nv, indices)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    th = threading.Thread(target=target, name="preflight-watch-nvml-init", daemon=True)
    th.start()
    th.join(NVML_TIMEOUT_S)
    if th.is_alive():
        return None, f"NVML did not answer within {NVML_TIMEOUT_S:g} s (a wedged GPU or driver?)"
    if "error" in box:
        raise box["error"]
    return box["value"]


class _ChildWaiter:
    """Notices the command's exit at once (pidfd on Linux), and with `reap_all` also reaps the
    orphans the watcher adopted as subreaper."""

    def __init__(self, proc: subprocess.Popen, reap_all: bool):
        self.proc = proc
        self.reap_all = reap_all
        self.returncode: int | None = None
        self.pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(proc.pid)
            except OSError:
                self.pidfd = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if not self.reap_all:
            self.returncode = self.proc.poll()
            return self.returncode
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == self.proc.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.proc.returncode = self.returncode
        return self.returncode

    def wait(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            return
        if self.pidfd is not None:
            select.select([self.pidfd], [], [], timeout_s)
        else:
            time.sleep(timeout_s)

    def wait_forever(self) -> int:
        while self.poll() is None:
            self.wait(0.1)
        return self.returncode  # type: ignore[return-value]

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def exit_code_of(returncode: int) -> int:
    """Popen's negative "killed by signal N" becomes the shell's 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def _set_subreaper() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


class _Run:
    def __init__(self, opts: WatchOptions, env: WatchEnv, gpu: GpuSource | None, gpu_reason: str | None):
        self.opts, self.env, self.gpu, self.gpu_reason = opts, env, gpu, gpu_reason
        self.paths = opts.outputs
        self.tree = env.tree or default_tree()
        self.indices = [d.index for d in gpu.devices] if gpu else []
        self.pending: collections.deque[dict[str, Any]] = collections.deque()  # from other threads
        self.notes: list[str] = []
        self.start_mono = 0.0
        self.start_wall = 0.0
        self._line_events = 0
        self._last_line: tuple[float, str] | None = None
        self._matches = 0
        self._channel_buf = b""
        self._channel_f: IO[bytes] | None = None

    def say(self, text: str) -> None:
        from gpu_preflight.safetext import sanitize

        try:
            self.env.talk.write(f"preflight watch: {sanitize(text)}\n")
            self.env.talk.flush()
        except (OSError, ValueError):
            pass

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> WatchResult:
        stream = open_stream(self.paths.jsonl)  # locked for the run; closed in finally
        try:
            try:
                self.paths.channel = create_channel(self.paths.channel)  # a fresh file, never a neighbour
            except OSError as exc:
                raise UsageError(f"cannot create the phase channel next to {self.paths.jsonl}: "
                                 f"{exc.strerror or exc}") from None
            self._channel_f = open(self.paths.channel, "rb")  # noqa: SIM115
            return self._run(stream)
        finally:
            stream.close()
            if self._channel_f is not None:
                self._channel_f.close()

    def _run(self, stream: IO[bytes]) -> WatchResult:
        recorder = Recorder(stream, len(self.indices), write_error=lambda e: self.say(f"stream stopped: {e}"),
                            flush_every=max(1, int(100.0 // self.opts.interval_ms)))
        devices = [d.as_dict() for d in self.gpu.devices] if self.gpu else []
        baseline = {i: self.gpu.memory(i)[0] for i in self.indices} if self.gpu else {}
        for d in devices:
            d["baseline_used_bytes"] = baseline.get(d["index"])
        subreaper = self.env.subreaper and _set_subreaper()
        # t = 0 for samples (monotonic) and for phase markers (wall clock) is the same moment
        self.start_mono, self.start_wall = self.env.clock(), self.env.wall()
        head = rec_mod.header(self.opts.command, self.start_wall, self.opts.interval_ms, self.opts.aux_interval_ms,
                              devices, self.gpu_reason, self.tree.name, self.opts.model, os.getpid(),
                              self.paths.as_dict())
        head["watcher"]["subreaper"] = subreaper
        recorder.write(head)
        if not self.gpu and not self.opts.quiet:
            self.say(f"no GPU sampling: {self.gpu_reason}; running the command anyway")

        forwarder = SignalForwarder(self.pending.append, clock=self.env.clock) if self.env.handle_signals else None
        if forwarder:
            forwarder.block()
        try:
            return self._supervise(recorder, head, forwarder, subreaper)
        finally:
            if forwarder:
                forwarder.stop()

    def _spawn(self, forwarder: SignalForwarder | None) -> tuple[subprocess.Popen | None, dict[str, Any], dict[str, int]]:
        child_env = dict(os.environ)
        child_env[CHANNEL_ENV] = str(self.paths.channel.resolve())
        child_env.setdefault("PYTHONUNBUFFERED", "1")  # Python output stays live through the pipe
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        cmd = self.opts.command
        failure: dict[str, Any] = {}
        proc = None
        try:
            proc = subprocess.Popen(cmd, stdout=out_w, stderr=err_w, env=child_env, close_fds=True,
                                    preexec_fn=forwarder.child_setup() if forwarder else None)
        except FileNotFoundError:
            failure = {"code": 127, "status": "not_found", "message": f"command not found: {cmd[0]}"}
        except PermissionError:
            failure = {"code": 126, "status": "not_executable", "message": f"permission denied: {cmd[0]}"}
        except OSError as exc:
            failure = {"code": 126, "status": "spawn_failed",
                       "message": f"cannot run {cmd[0]}: {exc.strerror or exc}"}
        finally:
            os.close(out_w)
            os.close(err_w)
        if proc is None:
            os.close(out_r)
            os.close(err_r)
            return None, failure, {}
        return proc, failure, {"stdout": out_r, "stderr": err_r}

    def _supervise(self, recorder: Recorder, head: dict[str, Any], forwarder: SignalForwarder | None,
                   subreaper: bool) -> WatchResult:
        cpu0 = time.process_time()
        proc, failure, pipes = self._spawn(forwarder)
        sampler = None
        left_running: list[int] = []
        drained = True
        pump = None
        if proc is None:
            self.say(failure["message"])
            recorder.add_event({"type": "exit", "t_s": 0.0, "signal": None, **failure})
            code = failure["code"]
        else:
            pump = OutputPump(pipes, {"stdout": self.env.stdout_fd, "stderr": self.env.stderr_fd},
                              diagnose.TRIGGER_LOWER, on_line=self._on_match, clock=self.env.clock,
                              prefilter=diagnose.may_hold_trigger)
            pump.start()
            me = os.getpid()
            sampler = Sampler(self.gpu, self.tree, root_pid=me if subreaper else proc.pid,
                              exclude_pid=me if subreaper else None,
                              aux_every=round(self.opts.aux_interval_ms / self.opts.interval_ms),
                              tree_every_s=self.opts.tree_every_s)
            waiter = _ChildWaiter(proc, reap_all=subreaper)
            if forwarder:
                forwarder.start(proc.pid, lambda: _kill_all(proc.pid, sampler))
            try:
                returncode = self._loop(sampler, recorder, waiter, pump)
            finally:
                waiter.close()
                if forwarder:  # the PID may be reused from now on: never signal it again
                    forwarder.child_pid, forwarder.kill_tree = None, None
            exit_t = self.env.clock() - self.start_mono
            try:
                sample, aux = sampler.tick(exit_t, force_aux=True)  # the state just after the end
                if aux:
                    recorder.add_aux(aux)
                recorder.add_sample(sample)
                left_running = sorted(sampler.refresh_tree() - {proc.pid})
            except Exception as exc:  # noqa: BLE001
                self.notes.append(f"final sample failed: {type(exc).__name__}: {exc}")
            drained = pump.finish(self.opts.drain_s)
            code = exit_code_of(returncode)
            sig = signal.Signals(-returncode).name if returncode < 0 and -returncode in signal.valid_signals() else None
            recorder.add_event({"type": "exit", "t_s": round(exit_t, 6), "code": code,
                                "status": "signaled" if sig else "exited", "signal": sig, "message": None})
        wall_s = self.env.clock() - self.start_mono
        cpu_s = time.process_time() - cpu0
        try:
            record = self._finish(recorder, head, pump, sampler, left_running, drained, wall_s, cpu_s)
        except Exception as exc:  # noqa: BLE001 - the command's exit code must survive a watcher bug
            self.say(f"could not build the report ({type(exc).__name__}: {exc}); "
                     f"the samples are in {self.paths.jsonl}")
            record = {}
        return WatchResult(code, record)

    def _finish(self, recorder: Recorder, head: dict[str, Any], pump: OutputPump | None, sampler: Sampler | None,
                left_running: list[int], drained: bool, wall_s: float, cpu_s: float) -> dict[str, Any]:
        if hasattr(self.tree, "close"):
            self.tree.close()
        self._drain_pending(recorder)
        self._poll_channel(recorder, final=True)
        recorder.flush()
        series, aux = recorder.columns(self.indices)
        record = rec_mod.assemble(head, series, aux, recorder.events, complete=True)
        record["duration_s"] = round(record["exit"].get("t_s") or wall_s, 6)
        record["output"].update(
            {f"{k}_bytes": v for k, v in (pump.bytes.items() if pump else [])} |
            {f"{k}_lines": v for k, v in (pump.lines.items() if pump else [])} |
            {"sink_errors": pump.sink_errors if pump else {}, "drained": drained,
             "unscanned_bytes": pump.unscanned_bytes if pump else 0,
             "matches_dropped": max(0, self._matches - MAX_MATCHES)})
        record["tree"] = {"pids": sorted(sampler.members) if sampler else [], "left_running": left_running}
        record["watcher"].update({"cpu_s": round(cpu_s, 4), "wall_s": round(wall_s, 4),
                                  "cpu_pct": round(100.0 * cpu_s / wall_s, 3) if wall_s > 0 else None})
        record["gpu_sampling"]["errors"] = dict(self.gpu.errors) if self.gpu else {}
        record["stream_error"] = recorder.stream_error
        record["notes"] = self.notes
        if left_running:
            self.notes.append(f"{len(left_running)} process(es) started by the command still run after it exited "
                              f"(PIDs {', '.join(map(str, left_running[:10]))}): detached; not waited for")
        if pump and pump.unscanned_bytes:
            self.notes.append(f"the command wrote faster than its output could be scanned: "
                              f"{pump.unscanned_bytes / 2**20:.0f} MiB of it were passed through without "
                              "looking for GPU errors (never slowed down)")
        if not drained:
            self.notes.append("a detached process still holds the command's output open; "
                              "output after the command exited may be cut")
        self._report(record)
        return record

    def _loop(self, sampler: Sampler, recorder: Recorder, waiter: _ChildWaiter, pump: OutputPump) -> int:
        interval = self.opts.interval_ms / 1000.0
        next_tick = self.start_mono
        next_channel = self.start_mono
        try:
            while True:
                now = self.env.clock()
                sample, aux = sampler.tick(now - self.start_mono)
                if aux:
                    recorder.add_aux(aux)
                recorder.add_sample(sample)
                self._drain_pending(recorder)
                self._track_line(pump, recorder)
                if now >= next_channel:
                    self._poll_channel(recorder)
                    next_channel = now + 0.25
                returncode = waiter.poll()
                if returncode is not None:
                    return returncode
                next_tick += interval
                now = self.env.clock()
                if next_tick < now:  # we fell behind (a slow NVML call): skip, do not burst
                    next_tick += ((now - next_tick) // interval + 1) * interval
                waiter.wait(next_tick - now)
        except Exception as exc:  # noqa: BLE001 - the command must outlive a sampler bug
            self.notes.append(f"sampling stopped early: {type(exc).__name__}: {exc}")
            self.say(f"sampling stopped early ({type(exc).__name__}: {exc}); still waiting for the command")
            return waiter.wait_forever()

    # -- events from threads and the phase channel -------------------------------------------
    def _on_match(self, stream: str, t: float, line: str) -> None:
        self._matches += 1
        if self._matches <= MAX_MATCHES:
            self.pending.append({"type": "match", "t": t, "stream": stream, "line": line})

    def _drain_pending(self, recorder: Recorder) -> None:
        while self.pending:
            ev = self.pending.popleft()
            t = ev.pop("t")
            recorder.add_event({**ev, "t_s": round(t - self.start_mono, 6)})

    def _track_line(self, pump: OutputPump, recorder: Recorder) -> None:
        last = pump.last_line
        if last is None or last is self._last_line:
            return
        if self._line_events >= MAX_LINE_EVENTS and self._last_line and last[0] - self._last_line[0] < 1.0:
            return
        self._last_line = last
        self._line_events += 1
        recorder.add_event({"type": "line", "t_s": round(last[0] - self.start_mono, 6), "text": last[1]})

    def _poll_channel(self, recorder: Recorder, final: bool = False) -> None:
        if self._channel_f is None:
            return
        try:
            data = self._channel_buf + self._channel_f.read()
        except OSError:
            return
        *lines, self._channel_buf = data.split(b"\n")
        if final and self._channel_buf:
            lines.append(self._channel_buf)
            self._channel_buf = b""
        for raw in lines:
            try:
                ev = json.loads(raw)
                t_s = float(ev["t"]) - self.start_wall
            except (ValueError, KeyError, TypeError):
                continue
            recorder.add_event({"type": "phase", "t_s": round(t_s, 6), "phase": str(ev.get("phase")),
                                "event": ev.get("event"), "pid": ev.get("pid")})

    # -- after -------------------------------------------------------------------------------
    def _write_json(self, record: dict[str, Any], again: bool = False) -> bool:
        if not self.paths.json:
            return False
        try:
            rec_mod.write_json(record, self.paths.json)
            return True
        except (OSError, TypeError, ValueError) as exc:
            if again:
                return True  # the first write stands; only its file list is stale
            record["files"]["errors"]["json"] = _why(exc)
            self.say(f"could not write {self.paths.json}: {record['files']['errors']['json']} "
                     f"(the stream {self.paths.jsonl} has the samples)")
            return False

    def _report(self, record: dict[str, Any]) -> None:
        from gpu_preflight.watcher import render_text

        try:
            rec_mod.finalize(record)
        except Exception as exc:  # noqa: BLE001 - a bad analysis must not hide the raw record
            self.notes.append(f"analysis failed: {type(exc).__name__}: {exc}")
            record.setdefault("analysis", None)
            record.setdefault("diagnosis", [])
        files = record["files"]
        files["errors"] = {}
        if not self.env.renderers:
            files["html"] = files["png"] = None
        # JSON first: it is the record; the HTML and PNG are views of it and may fail (a full disk)
        json_ok = self._write_json(record)
        before = (files.get("html"), files.get("png"))
        if self.env.renderers and self.paths.html:
            try:
                from gpu_preflight.watcher import render_html

                files["html_plot"] = render_html.write_html(record, self.paths.html)
            except Exception as exc:  # noqa: BLE001
                files["errors"]["html"] = _why(exc)
                files["html"] = None
        if self.env.renderers and self.paths.png:
            try:
                from gpu_preflight.watcher import render_png

                skipped = render_png.write_png(record, self.paths.png)
            except Exception as exc:  # noqa: BLE001
                skipped = None
                files["errors"]["png"] = _why(exc)
                files["png"] = None
            if skipped:
                files["png"] = None
                files["png_skipped"] = skipped
        if json_ok and ((files.get("html"), files.get("png")) != before or files["errors"]):
            self._write_json(record, again=True)  # so the record lists only what was written
        if not json_ok:
            files["json"] = None
        try:  # the phase events are in the record and the stream now; the channel is our own file
            if json_ok or self.paths.channel.stat().st_size == 0:
                self.paths.channel.unlink()
        except OSError:
            pass
        if not self.opts.quiet:
            try:
                text = render_text.summary(record)
            except Exception as exc:  # noqa: BLE001
                text = f"preflight watch: summary failed: {type(exc).__name__}: {exc}\n"
            try:
                self.env.talk.write(text)
                self.env.talk.flush()
            except (OSError, ValueError):
                pass


def _why(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"


def _kill_all(child_pid: int, sampler: Sampler | None) -> None:
    pids = {child_pid}
    if sampler is not None:
        try:
            pids |= set(list(sampler.alive))
        except RuntimeError:
            pass
    for pid in pids:
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

