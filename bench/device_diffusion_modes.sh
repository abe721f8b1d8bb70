#!/usr/bin/env bash
# Issue 15 on the GPU machine: diffusers memory modes for NewBie, FLUX.1-dev, SDXL, SD3.5-medium and Sonic (video).
# Run from the repository root with the wheels carried under .whl/:
#   .whl/diffusers-0.42.1-py3-none-any.whl, .whl/torchao-0.18.0-cp310-abi3-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl
# Usage: bash bench/device_diffusion_modes.sh [BUDGET_S]      (default 330; results under $OUT or ./out)
set -u
BUDGET="${1:-330}"
OUTDIR="${OUT:-$PWD/out}"
mkdir -p "$OUTDIR"
PY="$(command -v python3)"
# the image has torch, transformers, accelerate, safetensors, pillow, regex, requests, psutil, nvidia-ml-py;
# diffusers and torchao travel as wheels (no dependencies pulled: none are missing there)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/diffusers-*.whl .whl/torchao-*.whl \
  || { echo "wheel install failed"; exit 2; }
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" - <<'PYEOF' || exit 2
import importlib.metadata as m, torch
import diffusers, transformers, accelerate, torchao, psutil, pynvml  # noqa: F401  (fail fast, before any GPU work)
print("torch", torch.__version__, "diffusers", m.version("diffusers"), "transformers", m.version("transformers"),
      "accelerate", m.version("accelerate"), "torchao", m.version("torchao"), "gpu", torch.cuda.get_device_name())
PYEOF
nvidia-smi > "$OUTDIR/nvidia-smi.txt" 2>&1
free -b > "$OUTDIR/free.txt" 2>&1
"$PY" bench/calibrate_diffusion_modes.py bench/matrix_diffusion_modes.json "$OUTDIR/diffusion-modes-h200.jsonl" \
  --budget-s "$BUDGET" 2>&1 | tee "$OUTDIR/diffusion-modes-h200.log"
