"""Output never crashes on a terminal that is not UTF-8: every verb's text, run as a user runs it
(a subprocess with PYTHONIOENCODING=ascii or latin-1), exits with its normal code and prints only
characters the stream can show."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASES = [
    (["estimate", "qwen2.5-7b-instruct", "--gpu", "rtx-4090"], {0}),
    (["estimate", "llama-3.1-70b-instruct", "--gpu", "h100:2", "--gpu", "rtx-4090"], {0}),
    (["estimate", "flux.1-dev", "--gpu", "rtx-4090"], {2}),
    (["doctor"], {0, 1, 2}),
    (["doctor", "-v"], {0, 1, 2}),
    (["snapshot"], {0}),
    (["compat", "--driver", "535.54.03", "--gpu", "RTX 4090"], {0, 1}),
    (["compat", "--list-gpus"], {0}),
    (["explain", "PF101"], {0}),
]
CHILD = "import sys; sys.stdout.buffer.write('CUDA out of memory. Tried to allocate 2.00 GiB \\u2713 \\u00e9\\n'.encode()); sys.exit(1)"


def preflight(args, encoding, cwd):
    env = dict(os.environ, PYTHONIOENCODING=encoding, NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "gpu_preflight", *args], capture_output=True, env=env,
                          timeout=120, cwd=cwd)


@pytest.mark.parametrize("args,codes,encoding", [(*c, "ascii") for c in CASES] + [(*CASES[2], "latin-1")],
                         ids=[" ".join(c[0][:2]) for c in CASES] + ["latin-1"])
def test_text_output_on_a_non_utf8_stream(args, codes, encoding, tmp_path):
    proc = preflight(args, encoding, tmp_path)
    assert b"internal error" not in proc.stderr and b"Traceback" not in proc.stderr, proc.stderr.decode()
    assert proc.returncode in codes, proc.stderr.decode()
    assert proc.stdout.strip()
    proc.stdout.decode(encoding)  # only what the stream can show
    proc.stderr.decode(encoding)


def test_watch_summary_on_an_ascii_stream(tmp_path):
    proc = preflight(["watch", "--out", str(tmp_path / "w"), "--", sys.executable, "-c", CHILD], "ascii", tmp_path)
    assert proc.returncode == 1, proc.stderr.decode()
    assert b"internal error" not in proc.stderr and b"Traceback" not in proc.stderr
    proc.stderr.decode("ascii")
    assert b"CUDA out of memory" in proc.stderr  # the summary's diagnosis was printed


def test_the_fallback_names_the_usual_characters():
    from gpu_preflight.cli import ENCODE_ERRORS

    text = "a \u00b7 b \u2713 \u2717 \u00d7 \u2192 \u2026 \u4e2d"
    assert text.encode("ascii", ENCODE_ERRORS) == b"a - b + x x -> ... ?"
