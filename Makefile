# The two set-up commands on a fresh machine: `make demo` and `make test`. Both install what they need.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Nothing but $(VENV) is written inside the checkout: bytecode and tool caches go under it, and run state goes to
# the state dir (DIFFSENTRY_STATE_DIR, default .diffsentry/; every path not set explicitly derives from it).
CACHE := $(abspath $(VENV))/cache
export PYTHONPYCACHEPREFIX := $(CACHE)/pycache
export RUFF_CACHE_DIR := $(CACHE)/ruff
LINT_IMPORTS := $(BIN)/lint-imports --cache-dir $(CACHE)/import-linter
PYTEST := $(BIN)/python -m pytest -o cache_dir=$(CACHE)/pytest

.PHONY: setup demo test lint screenshots stack-up stack-down stack-status

setup: $(VENV)/.installed

# setuptools writes <name>.egg-info into the source tree while pip asks it for the build requirements; the
# installed metadata lies in the venv, so the copy in the checkout is removed.
$(VENV)/.installed: pyproject.toml infra/install-system-deps.sh
	bash infra/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	rm -rf diffsentry.egg-info
	touch $@

# The main job end to end: local stack, small real models (trained once, cached), SKAB + Ped2 replay, alerts to a
# webhook subscriber. DIFFSENTRY_DATA_DIR overrides where SKAB and Ped2 are (default ../shared/data);
# DEMO_ARGS=--keep leaves the stack and the worker running.
demo: setup
	$(BIN)/diffsentry demo $(DEMO_ARGS)

test: setup
	$(BIN)/ruff check .
	$(LINT_IMPORTS)
	$(PYTEST) -ra

# The README's console pictures (docs/console/), taken by the browser tests in a real Chromium.
screenshots: setup
	DIFFSENTRY_SCREENSHOTS=$(abspath docs/console) $(PYTEST) -ra tests/browser

lint: setup
	$(BIN)/ruff check .
	$(LINT_IMPORTS)
	$(BIN)/ruff format --check .

stack-up: setup
	$(BIN)/diffsentry stack up

stack-down: setup
	$(BIN)/diffsentry stack down

stack-status: setup
	$(BIN)/diffsentry stack status
