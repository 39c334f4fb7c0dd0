#!/usr/bin/env bash
# On a lent GPU machine (one H100: under 8 minutes), after benchmarks/gpu/prepare.sh here:
#   run(command="bash benchmarks/gpu/run.sh", carry=[".whl", "build/gpu/smollm2-135m"], timeout_s=540)
# Arguments go to bench_gpu.py (e.g. --parts train,profile to rerun only those).
# Writes $OUT/gpu.json and $OUT/log.txt; the numbers go to docs/benchmarks.md ("GPU").
set -uo pipefail
OUT=${OUT:-build/gpu/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH="/tmp/site:$PWD"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 --version;
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
} 2>&1 | tee "$OUT/log.txt"
timeout 500 python3 benchmarks/bench_gpu.py --model_dir build/gpu/smollm2-135m --out "$OUT" "$@" 2>&1 \
    | grep -v -E 'Loading weights|Writing model shards' | tee -a "$OUT/log.txt"
