"""The package works as users install it: build the wheel, install it into a fresh virtualenv
outside the repository, and run the README's commands from an empty folder. Guards against
data that only exists in the source tree (package data, calibration files) and against code that
finds files relative to the repository.

Needs the package index (an isolated build fetches setuptools; the install fetches
nvidia-ml-py and packaging, usually from pip's cache): deselect with `-m "not network"`."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.network


def _run(argv, cwd, env=None, timeout=300):
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)], cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = dist.glob("gpu_preflight-*.whl")
    venv = tmp / "venv"
    proc = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    python = venv / "bin" / "python"
    proc = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)], cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", NO_COLOR="1", PYTHONIOENCODING="utf-8")
    return {"wheel": wheel, "venv": venv, "python": python, "cwd": work, "env": env}


def preflight(inst, *args):
    return _run([str(inst["venv"] / "bin" / "preflight"), *args], cwd=inst["cwd"], env=inst["env"], timeout=120)


def test_the_wheel_carries_every_data_file(installed):
    tracked = subprocess.run(["git", "ls-files", "src/gpu_preflight"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    data = {p[len("src/"):] for p in tracked.stdout.split() if not p.endswith(".py")}
    assert any(p.startswith("gpu_preflight/data/models/") for p in data)
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    assert sorted(data - names) == []


def test_the_installed_package_is_the_wheel_not_the_source_tree(installed):
    proc = _run([str(installed["python"]), "-c", "import gpu_preflight; print(gpu_preflight.__file__)"],
                cwd=installed["cwd"], env=installed["env"])
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(installed["venv"]), proc.stdout


def test_doctor_runs(installed):
    proc = preflight(installed, "doctor")
    assert proc.returncode in (0, 1, 2), proc.stderr  # 2: this machine has a real problem, still a report
    assert proc.stdout.startswith("gpu-preflight doctor") and "Exit code" in proc.stdout
    assert "internal error" not in proc.stderr


def test_estimate_runs(installed):
    proc = preflight(installed, "estimate", "qwen2.5-7b-instruct", "--gpu", "rtx-4090")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("qwen2.5-7b-instruct · transformers · bfloat16")
    assert "Peak GPU memory (nvidia-smi):" in proc.stdout and "NVIDIA GeForce RTX 4090" in proc.stdout


def test_compat_runs(installed):
    proc = preflight(installed, "compat", "--driver", "535.54.03", "--gpu", "RTX 4090")
    assert proc.returncode == 0, proc.stderr
    assert "driver 535.54.03" in proc.stdout and "pip install torch==" in proc.stdout


def test_install_hints_of_the_wheel_name_real_packages(installed):
    code = "from gpu_preflight import hints; print(hints.installation()['from']); print(hints.install_hint('hub'))"
    proc = _run([str(installed["python"]), "-c", code], cwd=installed["cwd"], env=installed["env"])
    assert proc.returncode == 0, proc.stderr
    kind, hint = proc.stdout.strip().split("\n")
    assert kind == "archive"
    assert "huggingface_hub>=0.23" in hint
    assert "'gpu-preflight[hub]'" not in hint  # the bare index form would not install from here
