"""`preflight watch` end to end, as a user runs it: a real child, the real CLI, no GPU needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpu_preflight.watcher.record import load_stream

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process handling tested on Linux")

PY = sys.executable


def watch(tmp: Path, *cmd: str, opts: tuple[str, ...] = (), **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "gpu_preflight", "watch", "--json", str(tmp / "rec.json"), *opts, "--", *cmd],
                          capture_output=True, cwd=tmp, timeout=30, **kw)


def record(tmp: Path) -> dict:
    return json.loads((tmp / "rec.json").read_text())


def start_watch(tmp: Path, script: str, opts: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start the watcher on a Python child and wait until the child printed 'ready'."""
    (tmp / "child.py").write_text(script)
    proc = subprocess.Popen([PY, "-m", "gpu_preflight", "watch", "--json", str(tmp / "rec.json"), *opts,
                             "--", PY, str(tmp / "child.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == b"ready", line
    return proc


def test_exit_code_and_output_pass_through(tmp_path):
    r = watch(tmp_path, PY, "-c", "import sys; print('to out'); print('to err', file=sys.stderr); sys.exit(7)")
    assert r.returncode == 7
    assert r.stdout == b"to out\n"  # stdout is the command's alone; our talk goes to stderr
    assert b"to err\n" in r.stderr and b"exited 7" in r.stderr
    rec = record(tmp_path)
    assert rec["exit"] == {"t_s": rec["exit"]["t_s"], "code": 7, "status": "exited", "signal": None, "message": None}
    assert rec["complete"] is True and rec["series"]["samples_total"] >= 1
    assert (tmp_path / "rec.jsonl").exists() and not (tmp_path / "rec.html").exists()


def test_missing_command_is_127_with_a_clear_message(tmp_path):
    r = watch(tmp_path, "no-such-command-xyz", "--flag")
    assert r.returncode == 127
    assert b"command not found: no-such-command-xyz" in r.stderr
    assert b"Traceback" not in r.stderr
    assert record(tmp_path)["exit"]["status"] == "not_found"


def test_not_executable_is_126(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("echo hi\n")
    script.chmod(0o644)
    r = watch(tmp_path, str(script))
    assert r.returncode == 126 and b"Traceback" not in r.stderr


def test_instant_exit(tmp_path):
    r = watch(tmp_path, "true")
    assert r.returncode == 0
    rec = record(tmp_path)
    assert rec["series"]["samples_total"] >= 1 and rec["exit"]["code"] == 0
    assert rec["watcher"]["wall_s"] < 2


def test_killed_by_signal_is_128_plus_n(tmp_path):
    r = watch(tmp_path, PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert r.returncode == 137
    assert record(tmp_path)["exit"]["signal"] == "SIGKILL"


def test_flood_of_output_is_not_lost(tmp_path):
    n = 200_000
    code = ("import sys\n"
            f"sys.stdout.write(''.join('line %d\\n' % i for i in range({n})))\n"
            "sys.stderr.write('E' * 100000 + '\\n')\n")
    r = watch(tmp_path, PY, "-c", code, opts=("--quiet",))
    assert r.returncode == 0
    assert r.stdout == "".join(f"line {i}\n" for i in range(n)).encode()
    assert r.stderr == b"E" * 100000 + b"\n"  # --quiet: nothing of ours
    assert record(tmp_path)["output"]["stdout_lines"] == n


def test_unwritable_report_path_is_refused_before_running(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    marker = tmp_path / "ran"
    r = subprocess.run([PY, "-m", "gpu_preflight", "watch", "--out", str(blocker / "sub"), "--",
                        "touch", str(marker)], capture_output=True, timeout=30)
    assert r.returncode == 3
    assert b"cannot write the watch report" in r.stderr and b"not started" in r.stderr
    assert b"Traceback" not in r.stderr
    assert not marker.exists()


def test_usage_errors(tmp_path):
    r = subprocess.run([PY, "-m", "gpu_preflight", "watch"], capture_output=True, timeout=30)
    assert r.returncode == 3 and b"no command to watch" in r.stderr
    r = subprocess.run([PY, "-m", "gpu_preflight", "watch", "--interval-ms", "5", "--", "true"],
                       capture_output=True, timeout=30)
    assert r.returncode == 3 and b"minimum is 10 ms" in r.stderr


SIGNAL_CHILD = """\
import os, signal, sys, time
def handler(signo, frame):
    with open('got', 'a') as f:
        f.write(signal.Signals(signo).name + '\\n')
    time.sleep(0.3)  # a second, duplicated signal would be seen here
    sys.exit(42)
signal.signal(signal.SIGTERM, handler)
signal.signal(signal.SIGINT, handler)
print('ready', flush=True)
time.sleep(20)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_is_forwarded_once_and_record_written(tmp_path, sig):
    proc = start_watch(tmp_path, SIGNAL_CHILD)
    time.sleep(0.2)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 42, err
    assert (tmp_path / "got").read_text() == signal.Signals(sig).name + "\n"
    rec = record(tmp_path)  # the partial (interrupted) run still has its final record
    assert rec["complete"] is True and rec["exit"]["code"] == 42
    assert [(s["signal"], s["action"]) for s in rec["signals"]] == [(signal.Signals(sig).name, "forwarded")]


def test_ctrl_c_in_a_terminal_reaches_the_command_once(tmp_path):
    """A real terminal: Ctrl-C goes to the whole foreground group; the watcher must not resend it."""
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()

    def make_controlling_tty():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    (tmp_path / "child.py").write_text(SIGNAL_CHILD)
    proc = subprocess.Popen([PY, "-m", "gpu_preflight", "watch", "--json", str(tmp_path / "rec.json"), "--",
                             PY, str(tmp_path / "child.py")], stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path, preexec_fn=make_controlling_tty)
    os.close(slave)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        os.write(master, b"\x03")  # the terminal turns this into SIGINT for the foreground group
        proc.communicate(timeout=20)
    finally:
        os.close(master)
    assert proc.returncode == 42
    assert (tmp_path / "got").read_text() == "SIGINT\n"
    assert [s["action"] for s in record(tmp_path)["signals"]] == ["already delivered by the terminal"]


def test_third_interrupt_kills_a_command_that_ignores_signals(tmp_path):
    proc = start_watch(tmp_path, "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                 "print('ready', flush=True)\ntime.sleep(20)\n")
    for _ in range(3):
        time.sleep(0.15)
        proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 137
    rec = record(tmp_path)
    assert len(rec["signals"]) == 3 and "SIGKILL" in rec["signals"][-1]["action"]


def test_partial_stream_survives_kill_of_the_watcher(tmp_path):
    proc = start_watch(tmp_path, "import os, time\nopen('pid', 'w').write(str(os.getpid()))\n"
                                 "print('ready', flush=True)\ntime.sleep(20)\n", opts=("--interval-ms", "10"))
    time.sleep(0.3)
    proc.kill()  # SIGKILL: no chance to write the final JSON
    proc.communicate(timeout=10)
    try:
        os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)
    except (OSError, ValueError):
        pass
    assert not (tmp_path / "rec.json").exists()
    raw = (tmp_path / "rec.jsonl").read_text()
    (tmp_path / "rec.jsonl").write_text(raw + '{"type": "sample", "t": 0.9, "us')  # a torn last line
    rec = load_stream(tmp_path / "rec.jsonl")
    assert rec["complete"] is False and rec["exit"]["status"] == "unknown"
    assert len(rec["series"]["t"]) >= 10


def test_command_that_detaches_does_not_hold_the_watcher(tmp_path):
    t0 = time.monotonic()
    r = watch(tmp_path, "sh", "-c", "sleep 30 & echo $! > bgpid; echo started")
    took = time.monotonic() - t0
    bg = int((tmp_path / "bgpid").read_text())
    try:
        assert r.returncode == 0 and r.stdout == b"started\n"
        assert took < 8
        rec = record(tmp_path)
        assert bg in rec["tree"]["left_running"]
        assert any("still run after it exited" in n for n in rec["notes"])
    finally:
        try:
            os.kill(bg, signal.SIGKILL)
        except OSError:
            pass


def test_help_is_documented_and_module_is_light(tmp_path):
    r = subprocess.run([PY, "-m", "gpu_preflight", "watch", "--help"], capture_output=True, timeout=30)
    assert r.returncode == 0
    for flag in (b"--interval-ms", b"--out", b"--json", b"--html", b"--png", b"--model", b"--gpu-index",
                 b"--quiet", b"exit status", b"gpu_preflight.phase"):
        assert flag in r.stdout
    code = ("import sys, gpu_preflight.commands.watch\n"
            "heavy = [m for m in sys.modules if m.startswith('gpu_preflight.watcher') or "
            "m.split('.')[0] in ('plotly', 'matplotlib', 'psutil', 'pynvml')]\nprint(heavy)")
    r = subprocess.run([PY, "-c", code], capture_output=True, timeout=30)
    assert r.stdout.strip() == b"[]"
