#!/usr/bin/env bash
# GPU measurement of quantized loading in transformers (torchao), one call on the GPU machine.
# Usage (repository root): bash bench/device_quant.sh [BUDGET_S]   (default 60; results in $OUT/quant.jsonl)
# Needs torch >= 2.11 + transformers 5.17 there and the carried wheel .whl/torchao-0.18.0-*.whl.
# Check it on a CPU first: python bench/quant_probe.py --out /tmp/q --dry-run
set -u
BUDGET=${1:-60}
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
PY=/opt/torch/.venv/bin/python
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONUNBUFFERED=1
"$PY" -c "import gpu_preflight" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import torchao" 2>/dev/null; then
  whl=$(ls .whl/torchao-*.whl 2>/dev/null | head -1)
  if [ -n "$whl" ]; then  # a wheel is a zip archive: unpacking it needs neither pip nor a network
    "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$whl" /tmp/site-quant \
      && export PYTHONPATH="/tmp/site-quant${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
"$PY" -c "import torchao, transformers, torch; print('torchao', torchao.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)" 2>&1 | tail -1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/quant-nvidia-smi.txt" 2>&1 || true
"$PY" bench/quant_probe.py --out "$OUT" --budget-s "$BUDGET" 2>&1 | grep -v "Loading weights\|Writing model shards" | tail -40
