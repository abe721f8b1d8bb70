#!/usr/bin/env bash
# One call on the GPU machine: install the project (and carried wheels), then run the named stages
# in order, each bounded by its own time limit, each stage's files packed into $OUT/STAGE.tgz as soon
# as it ends (so a call killed at its limit still returns every finished stage).
# Usage (repository root, on the device): bash bench/device_round.sh STAGE[:SECONDS] ...
# Stages: env pipelines vllm_sampler llamacpp archs training
set -u
REAL_OUT="${OUT:-$PWD/out}"
mkdir -p "$REAL_OUT"
PY=/opt/torch/.venv/bin/python
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
start=$(date +%s)
if command -v uv >/dev/null; then
  uv pip install -q --python "$PY" --no-deps --no-build-isolation --offline -e . || echo "uv install failed"
fi
"$PY" -c "import gpu_preflight" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "setup took $(( $(date +%s) - start )) s"

run_stage() {  # name seconds command...
  local name=$1 secs=$2; shift 2
  local dir=/tmp/round/$name
  mkdir -p "$dir"
  echo "=== $name (limit ${secs}s) at +$(( $(date +%s) - start ))s"
  ( export OUT="$dir"; timeout --kill-after=15 "$secs" "$@" ) > "$dir/stage.log" 2>&1
  echo "rc=$?" >> "$dir/stage.log"
  tail -5 "$dir/stage.log"
  tar czf "$REAL_OUT/$name.tgz" -C /tmp/round "$name"
}

for spec in "$@"; do
  name=${spec%%:*}; secs=${spec#*:}; [ "$secs" = "$spec" ] && secs=300
  case "$name" in
    env) run_stage env "$secs" bash -c 'nvidia-smi > "$OUT/nvidia-smi.txt"; free -b > "$OUT/free.txt";
           '"$PY"' -m gpu_preflight snapshot -o "$OUT/h200-snapshot.json";
           '"$PY"' -m gpu_preflight snapshot --deep -o "$OUT/h200-snapshot-deep.json";
           for i in 1 2 3 4 5; do /usr/bin/time -f "%e" '"$PY"' -m gpu_preflight doctor --json > /dev/null; done 2> "$OUT/doctor-times.txt"' ;;
    pipelines) run_stage pipelines "$secs" bash bench/device_diffusion_modes.sh $(( secs - 30 )) ;;
    vllm_sampler) run_stage vllm_sampler "$secs" "$PY" bench/vllm_sampler_probe.py --out "/tmp/round/vllm_sampler/vllm_sampler.jsonl" --budget-s $(( secs - 10 )) ;;
    llamacpp) run_stage llamacpp "$secs" "$PY" bench/llamacpp_device.py --budget-s $(( secs - 25 )) --out /tmp/round/llamacpp ;;
    archs) run_stage archs "$secs" "$PY" bench/calibrate.py bench/matrix_arch.json /tmp/round/archs/arch-h200.jsonl --budget-s $(( secs - 20 )) ;;
    *) run_stage "$name" "$secs" bash "bench/device_$name.sh" $(( secs - 20 )) ;;
  esac
done
echo "round done at +$(( $(date +%s) - start ))s"
