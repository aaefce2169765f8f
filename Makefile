# xecg: `make train` and `make test` work on a fresh machine; everything else is here too.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel by default; on a GPU machine e.g. `make TORCH="torch==2.13.0 --index-url ..."`.
TORCH ?= torch==2.13.0
DATA ?=
# The synthetic smoke run by default; with DATA=PATH, the full-size xECGNet on the paper's split.
EXPERIMENT ?= $(if $(DATA),experiments/xecgnet.yaml,experiments/smoke.yaml)
ARGS ?=
SWEEP ?= sweeps/gamma.yaml
# The ablation grid of `make ablate` (experiments/ablations/gamma-cpu.yaml: the CPU one, about 1 h 5 min on 2 cores).
ABLATION ?= experiments/ablations/gamma.yaml

# Real records for `make sim2real` and `make finetune-cv` (never training data for sim2real).
REAL ?= ../shared/data/cpsc2018-wfdb-sample
# `make sim2real` trains a run per seed (the first in runs/$(NAME), the others in
# runs/$(NAME)-seedS) and evaluates them on REAL as one ensemble: on the 100 shared records
# three gave micro-F1 0.668 ± 0.015 where one gave 0.606 ± 0.032 (experiments/sim2real.md,
# "Ensembles"). SEEDS=0 trains and evaluates one run, as before 2026-11-28.
SEEDS ?= 0 1 2
NAME ?= sim2real

.DEFAULT_GOAL := help
.PHONY: help setup train sweep ablate sim2real finetune-cv test test-slow lint bench bench-gpu clean

help:  ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed  ## Create .venv and install xecg with its dev tools

train: setup  ## Train xECGNet (synthetic default; DATA=PATH for a CPSC dataset)
	$(VENV)/bin/xecg train $(if $(DATA),--data "$(DATA)",) $(foreach c,$(EXPERIMENT),--config $(c)) $(ARGS)

# The gamma study by default (GPU-sized); SWEEP=sweeps/smoke.yaml runs on a CPU in minutes.
sweep: setup  ## Optuna sweep of gamma and lr (SWEEP=FILE; ARGS="--workers 2 --n-trials 10")
	$(VENV)/bin/xecg sweep $(SWEEP) $(ARGS)

ablate: setup  ## Ablation grid, variants x seeds to early stopping, then xecg compare (resumable)
	$(VENV)/bin/xecg ablate $(ABLATION) $(ARGS)

# The run folder of seed $$s (shell): runs/$(NAME) for the first of SEEDS, runs/$(NAME)-seedS after.
run_of_seed = $(NAME)$$([ "$$s" = "$(firstword $(SEEDS))" ] || echo "-seed$$s")

sim2real: setup  ## Train on synthetic data only (a run per seed), then evaluate their ensemble on REAL
	@set -e; for s in $(SEEDS); do \
	  echo "sim2real: seed $$s -> runs/$(run_of_seed)"; \
	  $(VENV)/bin/xecg train --config experiments/sim2real.yaml $(ARGS) \
	    --seed_everything $$s --experiment.name $(run_of_seed); \
	done
	@if [ -d "$(REAL)" ]; then \
	  set -e; ckpts=(); for s in $(SEEDS); do \
	    ckpts+=(--ckpt "$$($(PY) -c "import json, sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" "runs/$(run_of_seed)/metrics.json")"); \
	  done; \
	  $(VENV)/bin/xecg evaluate "$${ckpts[@]}" "$(REAL)" --out runs/$(NAME)/real; \
	else \
	  echo "sim2real: no real records at $(REAL): trained on synthetic data only; evaluate with"; \
	  echo "  make sim2real REAL=/path/to/cpsc2018   (or xecg evaluate --ckpt CKPT PATH)"; \
	fi

finetune-cv: setup  ## 5-fold CV on REAL: from scratch vs fine-tuned from runs/sim2real
	PY=$(PY) REAL="$(REAL)" experiments/finetune_cv.sh

# Test processes (pytest-xdist); each test file runs whole in one of them. Most tests wait on
# subprocesses and imports, so two overlap well on two cores (12.3 -> 8.7 min here).
TEST_WORKERS ?= 2

test: setup  ## Run the test suite (slow tests excluded)
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(ARGS)

test-slow: setup  ## Run every test, the slow ones too
	$(PY) -m pytest $(ARGS)

lint: setup  ## ruff
	$(VENV)/bin/ruff check xecg tests

bench: setup  ## Benchmarks side by side (Lightning vs plain loop, bucket vs pad, loader, prepare)
	$(PY) tests/benchmarks/bench.py $(ARGS)

# A lent GPU machine has no network: its own python3 (torch, lightning, torchmetrics, numpy,
# tqdm) runs xecg from this folder, with nothing to install. Writes benchmarks/results-gpu.json.
GPU_PYTHON ?= python3
bench-gpu:  ## The same on a CUDA GPU at the paper's lengths, bf16, eager and compiled
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) tests/benchmarks/bench.py --gpu $(ARGS)

clean:  ## Remove the virtual environment and caches (keeps data/ and runs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
