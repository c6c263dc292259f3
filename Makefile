# uad: every target sets up its own virtual environment first (pip only; no network but the package index).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-slow test-all lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## Train and evaluate the default method on the embedded synthetic data.
demo: $(STAMP)
	$(PY) run.py

## The default test run (CI runs it first): everything but the tests marked slow.
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

## End-to-end tests marked slow (CI runs them after `make test`).
test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check src tests bench run.py
	$(PY) -m ruff format --check src tests bench run.py

## Speed and memory measurements; writes bench/results.md naming the machine.
bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
