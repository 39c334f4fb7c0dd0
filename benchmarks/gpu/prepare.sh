#!/usr/bin/env bash
# Run here, before a GPU session: what benchmarks/gpu/run.sh needs on the GPU machine and its image lacks.
# - .whl/: fire and termcolor (pure Python; everything else bench_gpu.py imports is in the image:
#   torch, transformers, pyarrow, pyyaml, tqdm, safetensors, tensorboard)
# - build/gpu/smollm2-135m/: the embedded model's config and tokenizer (its 270 MB of weights cannot travel;
#   bench_gpu.py builds the same architecture with random weights there)
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pin() { grep -i "^$1==" constraints.txt; }
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
    -d .whl "$(pin fire)" "$(pin termcolor)"
test -f models/smollm2-135m-instruct/config.json || make base
mkdir -p build/gpu/smollm2-135m
for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja; do
    cp "models/smollm2-135m-instruct/$f" build/gpu/smollm2-135m/
done
du -sh .whl build/gpu/smollm2-135m
