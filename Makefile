# The README's commands. Everything a fresh machine needs is installed from here.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OTP_SANDBOX_CACHE ?= $(HOME)/.cache/otp-relay-operator

.PHONY: help venv controlplane test test-fast demo bench clean

help:
	@echo "make demo   - run the whole system on the local sandbox (see README)"
	@echo "make test   - set up everything and run the whole test suite"
	@echo "make bench  - run the benchmarks (prints figures)"

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	@echo ">> creating the virtualenv in $(VENV) and installing the project with its test extras"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

venv: $(STAMP)

controlplane: $(STAMP)
	$(BIN)/otp-sandbox build

test: controlplane
	$(BIN)/python -m pytest -ra

test-fast: $(STAMP)
	$(BIN)/python -m pytest -ra -m "not cluster"

demo: controlplane
	$(BIN)/otp-sandbox demo $(ARGS)

bench: controlplane
	$(BIN)/python bench/relay/run.py
	$(BIN)/python bench/operator/run.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
