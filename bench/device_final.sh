#!/usr/bin/env bash
# The last H200 call of 2026-12-02: the NewBie memory modes the first call skipped, the four
# architectures whose first workloads ran past their position tables, the multimodal matrix,
# watch's output-scanning throughput on a quiet 16-core box, and the small-batch sort path of
# vLLM's sampler. Each stage bounded, each packed into $OUT/NAME.tgz when it ends.
set -u
PY=/opt/torch/.venv/bin/python
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
uv pip install -q --python "$PY" --no-deps --no-build-isolation --offline -e . || export PYTHONPATH="$PWD/src"
"$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/diffusers-*.whl .whl/torchao-*.whl \
  && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
stage() {  # name seconds command...
  local name=$1 secs=$2; shift 2; local d=/tmp/final/$name; mkdir -p "$d"
  echo "=== $name (${secs}s)"; ( cd "$PWD" && D="$d" timeout -k 10 "$secs" "$@" ) > "$d/log.txt" 2>&1; echo "rc=$?" >> "$d/log.txt"
  tail -4 "$d/log.txt"; tar czf "$OUT/$name.tgz" -C /tmp/final "$name"
}
stage newbie 150 "$PY" bench/calibrate_diffusion_modes.py bench/matrix_diffusion_modes_newbie_rest.json /tmp/final/newbie/diffusion-modes-h200-newbie.jsonl --budget-s 138
stage archs 110 "$PY" bench/calibrate.py bench/matrix_arch.json /tmp/final/archs/arch-h200-b.jsonl --budget-s 96 --only gpt2-medium,gpt-j-6b-L8,opt-1.3b,santacoder
stage multimodal 100 "$PY" bench/calibrate.py bench/matrix_arch.json /tmp/final/multimodal/arch-mm-h200.jsonl --list multimodal_models --budget-s 86
stage watch 25 "$PY" bench/watch_throughput.py /tmp/final/watch/watch-throughput-h200.json
stage sampler 20 "$PY" bench/vllm_sampler_probe.py --out /tmp/final/sampler/vllm-sampler-h200-b.jsonl --budget-s 15
echo done
