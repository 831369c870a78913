# orlab: `make demo` runs it, `make test` tests it. Both go through `make install`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The suite runs on real PostgreSQL and Redis (override either in the environment).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/orlab
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15

.PHONY: install demo test lint format bench clean-demo gpu-smoke drill

install: $(STAMP)

$(STAMP): pyproject.toml client/pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	# torch is pinned to the CPU build that pip's configuration finds on disk; never let a CUDA torch in.
	$(BIN)/python -m pip install --quiet -e ".[dev]" -e ./client
	# verl's tracking module for tests/webapp/test_mlflow_api.py, without its dependencies (they would
	# replace the CPU torch); the test loads verl/utils/tracking.py by path, never the verl package
	$(BIN)/python -m pip install --quiet --no-deps "verl==0.9.1"
	@if $(BIN)/python -m pip list 2>/dev/null | grep -qiE '^(nvidia-|triton)'; then \
		echo "error: a CUDA package (nvidia-*/triton) got installed; the CPU venv must not have it" >&2; exit 1; fi
	@touch $(STAMP)

demo: install
	$(BIN)/python -m workers.demo

# The pytest run includes schemathesis (tests/webapp/test_api_fuzz.py): all four phases, default checks,
# a fixed seed, at most ORLAB_FUZZ_MAX_TIME s (150) against a live server; it fails on any 5xx.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)} \
		$(BIN)/python -m tests.preflight
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)} \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python -m bench.run_all

# Issue 11's fault drill: its own PostgreSQL, Redis, gunicorn and workers on free ports (never the
# shared ones), worker kills, restarts, concurrent writers and hostile uploads; prints a table (~10 min).
drill: install
	$(BIN)/python -m bench.drill $(DRILL_ARGS)

# Issue 10's GPU smoke, from the source tree with the host's own Python, torch and transformers (no
# `make install`: a GPU host keeps its CUDA torch). See bench/gpu_smoke.py for the few wheels to bring.
GPU_PY ?= python3
gpu-smoke:
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PY) -m bench.gpu_smoke $(GPU_SMOKE_ARGS)
