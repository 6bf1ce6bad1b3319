# The two commands: `make run` (main job on the offline default) and `make test` (every test). Both set up .venv first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ptune-installed
TORCH_VERSION := 2.13.0

# Offline and telemetry switches (see docs/offline.md).
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_EVALUATE_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
export DO_NOT_TRACK ?= true
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export GX_ANALYTICS_ENABLED ?= false

.PHONY: setup run test lint bench mlflow-ui server worker deploy clean

setup: $(STAMP)

# Torch goes in first, pinned to the CPU build, so nothing later pulls a CUDA wheel.
# The stamp depends on pyproject.toml: a second `make` re-installs nothing.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

run: setup
	$(BIN)/python -m flows.run_default

test: setup
	$(BIN)/python -m pytest -q --timeout=900

lint: setup
	$(BIN)/ruff check ptune tasks flows tests bench

bench: setup
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
