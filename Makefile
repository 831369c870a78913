# orlab: `make demo` runs it, `make test` tests it. Both go through `make install`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DATABASE_URL ?=
export CELERY_BROKER_URL ?=

.PHONY: install demo test lint format bench clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	# torch is pinned to the CPU build that pip's configuration finds on disk; never let a CUDA torch in.
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@if $(BIN)/python -m pip list 2>/dev/null | grep -qiE '^(nvidia-|triton)'; then \
		echo "error: a CUDA package (nvidia-*/triton) got installed; the CPU venv must not have it" >&2; exit 1; fi
	@touch $(STAMP)

demo: install
	$(BIN)/python -m webapp.demo

test: install
	$(BIN)/python -m tests.preflight
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python -m bench.run_all
