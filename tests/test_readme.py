"""The README's two commands are the ones that work: "Run the tests" is one command, and
.ci/run runs exactly it (after making a fresh virtualenv)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def first_sh_block(section: str) -> list[str]:
    body = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", body, re.S)
    assert block, f"no sh block under '## {section}'"
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


def test_the_test_command_is_one_line_that_installs_and_runs():
    (cmd,) = first_sh_block("Run the tests")
    assert cmd.startswith("pip install ") and "[test]" in cmd and cmd.endswith("python -m pytest -q")


def test_ci_runs_exactly_the_readme_test_command():
    (cmd,) = first_sh_block("Run the tests")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert cmd in ci
    commands = [ln for ln in ci if ln.strip() and not ln.lstrip().startswith("#")]
    assert commands[-1] == cmd  # the last thing CI does, so its exit code is CI's


def test_install_and_run_is_one_command():
    (cmd,) = first_sh_block("Install and run")
    assert cmd == "pip install . && preflight doctor"

