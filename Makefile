# uad: every target sets up its own virtual environment first (pip only; no network but the package index).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-slow test-all lint bench gpu-check clean

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

## Speed and memory measurements; writes bench/results.md naming the machine. The side-by-side rows against
## the official code need their checkouts (never part of uad): `make bench OFFICIAL=/path/to/checkouts`, a
## folder holding UniAD/ (zhiyuanyou/UniAD), Dinomaly/ (guojiajeremy/Dinomaly) and DualAD/ (cyhaan/DualAD).
## Their scripts end to end (bench/bench_official_e2e.py) also need OFFICIAL_PYTHONPATH=DIR, a folder with
## the packages they import and uad does not (easydict tensorboardX ptflops pandas tabulate colorama).
OFFICIAL ?= $(UAD_OFFICIAL_DIR)
OFFICIAL_PYTHONPATH ?= $(UAD_OFFICIAL_PYTHONPATH)
bench: $(STAMP)
	UAD_OFFICIAL_DIR=$(OFFICIAL) UAD_OFFICIAL_PYTHONPATH=$(OFFICIAL_PYTHONPATH) $(PY) bench/run_all.py

## On a CUDA machine: each recipe's steps (cache, bf16, compile, official step, DDP) into bench/results.md
## within ~8 minutes; without a GPU one line, exit 0.
gpu-check: $(STAMP)
	UAD_OFFICIAL_DIR=$(OFFICIAL) $(PY) bench/gpu_check.py

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
