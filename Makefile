# `make run` and `make test` work on a fresh machine with only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/feedback run

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check feedback workers benchmarks tests
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)  # full run, about 45 minutes; rewrites benchmarks/results/ and BENCHMARKS.md
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

bench-smoke: $(STAMP)  # under 2 minutes, writes to a temporary folder (CI)
	$(BIN)/python -m benchmarks --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
