# The README's commands. Everything a fresh machine needs is installed from here.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OTP_SANDBOX_CACHE ?= $(HOME)/.cache/otp-relay-operator

.PHONY: help venv node controlplane helm gitops-tools image image-tools node-tools test-tools check test test-fast demo bench bench-tools clean

help:
	@echo "make demo   - run the whole system on the local sandbox (see README)"
	@echo "make test   - set up everything and run the whole test suite (make check first)"
	@echo "make check  - the type checker (mypy) and the linter (ruff)"
	@echo "make bench  - run the benchmarks (prints figures)"
	@echo "make image  - build the image from the Dockerfile with podman (prints its id, size and how to run it)"

$(STAMP): pyproject.toml sandbox/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	@echo ">> creating the virtualenv in $(VENV) and installing the project with its test extras and the sandbox"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' -e ./sandbox
	@touch $@

venv: $(STAMP)

node:
	@command -v node >/dev/null || { echo "error: Node.js not found; the Auth0 emulator runs the registered code in it: install Node.js >= 20 (apt-get install nodejs)"; exit 1; }

controlplane: $(STAMP) node
	$(BIN)/otp-sandbox build

# helm for the chart tests: from PATH, or built once into the same cache as the control plane.
helm: $(STAMP)
	$(BIN)/python -m tests.chart.helm

# kstatus (how Flux and kpt judge health) and Argo CD's Lua health runner (gopher-lua) for the
# GitOps tests: Go programs built once into the same cache.
gitops-tools: $(STAMP)
	$(BIN)/python -m tests.gitops.tools

# Debian tools the tests run for real, as command:package: redis-server (the relay's shared state,
# started by a fixture on loopback), promtool (the alert rules'
# checks and unit tests). Installed in one apt run, only when missing.
TEST_TOOLS := redis-server:redis-server promtool:prometheus
test-tools:
	@missing=$$(for t in $(TEST_TOOLS); do command -v $${t%%:*} >/dev/null || echo $${t#*:}; done); \
	if [ -n "$$missing" ]; then \
	  echo ">> installing from Debian for the tests:" $$missing; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; fi

# podman and runc build and run the image without a Docker engine; mmdebstrap makes its local
# Python base from Debian packages (no registry is needed).
image-tools:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null || { \
	  echo ">> installing podman, runc and mmdebstrap from Debian to build the image"; \
	  apt-get update -qq && apt-get install -y -qq podman runc mmdebstrap; }

image: $(STAMP) image-tools
	$(BIN)/otp-sandbox image

# containerd, runc and the CNI plugins (Debian) run the sandbox's real kubelet Node.
node-tools:
	@command -v containerd >/dev/null && command -v runc >/dev/null && test -x /usr/lib/cni/bridge || { \
	  echo ">> installing containerd, runc and containernetworking-plugins from Debian for the sandbox's real node"; \
	  apt-get update -qq && apt-get install -y -qq containerd runc containernetworking-plugins; }

# Two workers (pytest-xdist): most tests wait on timers, clusters and processes, not on a core.
# Each worker has its own session control plane and emulators; every test that runs a kubelet
# goes to one worker (tests/conftest.py). TEST_WORKERS=0 runs in this process, one test at a time.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadgroup

# The type checker and the linter (their settings: pyproject.toml); `make test` runs them first.
check: $(STAMP)
	$(BIN)/mypy
	$(BIN)/ruff check operator relay sandbox

test: check controlplane helm gitops-tools image node-tools test-tools
	$(BIN)/python -m pytest -ra --durations=20 $(PYTEST_PARALLEL)

test-fast: $(STAMP) test-tools
	$(BIN)/python -m pytest -ra -m "not cluster and not container" $(PYTEST_PARALLEL)

demo: controlplane image node-tools
	$(BIN)/otp-sandbox demo $(ARGS)

# wrk (load generator) and nginx (reference proxy and canned upstream) come from Debian.
bench-tools:
	@command -v wrk >/dev/null && command -v nginx >/dev/null || { \
	  echo ">> installing wrk and nginx-light from Debian for the relay benchmark"; \
	  apt-get update -qq && apt-get install -y -qq wrk nginx-light; }

bench: controlplane bench-tools test-tools
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/controlplane.py
	$(BIN)/python bench/relay/run.py
	$(BIN)/python bench/relay/slowloris.py
	$(BIN)/python bench/operator/run.py
	$(BIN)/python bench/fraud/run.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
