# The two commands: `make run` (main job on the offline default) and `make test` (every test). Both set up .venv first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ptune-installed
TORCH_VERSION := 2.13.0

# The venv's tools (mlflow, prefect, dvc, uvicorn, ptune) first on PATH for every recipe.
export PATH := $(CURDIR)/$(BIN):$(PATH)

# Offline and telemetry switches (see docs/offline.md).
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_EVALUATE_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
export DO_NOT_TRACK ?= true
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
# Prefect's ephemeral API (make run, tests) gets 20 s to start by default; a first start on a fresh clone
# creates its database, which takes longer than that on a busy 2-core CI machine.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export MLFLOW_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export GX_ANALYTICS_ENABLED ?= false

.PHONY: setup run test lint repro bench docs mlflow-ui server worker deploy deploy-gpu serve up down clean

setup: $(STAMP)

# Torch goes in first, pinned to the CPU build, so nothing later pulls a CUDA wheel.
# The stamp depends on pyproject.toml: a second `make` re-installs nothing.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; } \
	  || echo "warning: could not install Debian's chromium (needs root): the playground browser test will skip"
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null \
	  || { test "$$(id -u)" = 0 && apt-get update -qq && apt-get install -y -qq postgresql; } \
	  || echo "warning: could not install Debian's postgresql (needs root): make up STACK=team and its tests need it"
	@touch $(STAMP)

run: setup
	$(BIN)/python -m flows.run_default

# Two pytest workers, one test file each at a time (module fixtures such as servers stay in one process):
# the suite waits on servers and subprocesses more than it computes. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q --timeout=900 --durations=25 $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile)

lint: setup
	$(BIN)/ruff check ptune tasks flows tests bench

# `dvc repro` behind a workspace lock (ptune/pipeline/repro.py): a cron job and a person can both call it.
repro: setup
	$(BIN)/python -m ptune.cli repro

# The docs site (mkdocs, material theme) over docs/, on 127.0.0.1 only; `make test` runs `mkdocs build --strict`.
DOCS_PORT ?= 8001
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)

bench: setup
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

# MLflow UI + tracking server on the project's SQLite store (docs/mlflow.md); no job-runner processes.
MLFLOW_PORT ?= 5000
mlflow-ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --backend-store-uri sqlite:///mlruns.db \
	  --artifacts-destination ./mlartifacts --host 127.0.0.1 --port $(MLFLOW_PORT)

# Prefect (docs/prefect.md): `make up` starts server, deployments and two workers in the background
# (pid files and logs in .ptune/stack/), `make down` stops them. `make up MLFLOW=1` adds the MLflow UI.
# `make up STACK=team` (docs/deploy.md): Prefect and MLflow on PostgreSQL (the project's cluster on PG_PORT,
# or PTUNE_DATABASE_URL), artifacts served by MLflow on MLFLOW_PORT: workers elsewhere need only two URLs.
# `make server`, `make worker`, `make deploy` do the same in the foreground, one terminal each.
PREFECT_PORT ?= 4200
PTUNE_WORKERS ?= 2
STACK ?= local
PG_PORT ?= 5433
up: setup
	$(BIN)/python -m flows.stack up --stack $(STACK) --port $(PREFECT_PORT) --workers $(PTUNE_WORKERS) \
	  $(if $(filter team,$(STACK)),--pg-port $(PG_PORT) --mlflow-port $(MLFLOW_PORT),$(if $(MLFLOW),--mlflow-port $(MLFLOW_PORT)))

down:
	$(BIN)/python -m flows.stack down

PREFECT_API := http://127.0.0.1:$(PREFECT_PORT)/api
export PTUNE_TZ ?= UTC

server: setup
	PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=$(PREFECT_PORT) \
	  $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

worker: setup
	PREFECT_API_URL=$(PREFECT_API) PTUNE_PROJECT_DIR=$(CURDIR) \
	  $(BIN)/prefect worker start --pool ptune-process --type process

deploy: setup
	PREFECT_API_URL=$(PREFECT_API) $(BIN)/python -m flows.prefect_setup
	PREFECT_API_URL=$(PREFECT_API) PTUNE_PROJECT_DIR=$(CURDIR) $(BIN)/prefect --no-prompt deploy --all

# GPU work pools (docs/deploy-gpu.md): ptune-docker-gpu and ptune-k8s-gpu from flows/pools/ (an existing pool is
# kept), then prefect-gpu.yaml's deployments on them with the worker image and the team's MLflow server.
PTUNE_IMAGE ?= ptune-worker:0.1.0-cuda
deploy-gpu: setup
	@test -n "$$MLFLOW_TRACKING_URI" || { echo "set MLFLOW_TRACKING_URI to the shared MLflow server" >&2; exit 1; }
	PREFECT_API_URL=$(PREFECT_API) $(BIN)/python -m flows.gpu_pools --image $(PTUNE_IMAGE)
	PREFECT_API_URL=$(PREFECT_API) PTUNE_IMAGE=$(PTUNE_IMAGE) $(BIN)/prefect --no-prompt deploy --prefect-file prefect-gpu.yaml --all

# ptune serve (README "Serving"): @champion of every run_tasks task on 127.0.0.1:$(SERVE_PORT).
SERVE_PORT ?= 8000
serve: setup
	$(BIN)/ptune serve --port $(SERVE_PORT) $(SERVE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
