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

.DEFAULT_GOAL := help
.PHONY: help setup train test test-slow lint bench bench-gpu clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed  ## Create .venv and install xecg with its dev tools

train: setup  ## Train xECGNet (synthetic default; DATA=PATH for a CPSC dataset)
	$(VENV)/bin/xecg train $(if $(DATA),--data "$(DATA)",) $(foreach c,$(EXPERIMENT),--config $(c)) $(ARGS)

test: setup  ## Run the test suite (slow tests excluded)
	$(PY) -m pytest -m "not slow" $(ARGS)

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
