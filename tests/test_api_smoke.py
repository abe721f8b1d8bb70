"""The CLI works in a fresh process (where no subpackage was imported before the command runs)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [["doctor", "--json"], ["snapshot"], ["explain", "PF201"],
                                  ["estimate", "qwen2.5-0.5b-instruct", "--gpu", "rtx-4090", "--json"]])
def test_each_verb_runs_in_a_fresh_process(argv, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gpu_preflight", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1, 2), proc.stderr
