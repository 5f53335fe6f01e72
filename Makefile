# The two set-up commands on a fresh machine: `make demo` and `make test`. Both install what they need.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test lint stack-up stack-down stack-status

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml infra/install-system-deps.sh
	bash infra/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	touch $@

# The main job end to end: local stack, small real models (trained once, cached), SKAB + Ped2 replay, alerts to a
# webhook subscriber. DIFFSENTRY_DATA_DIR overrides where SKAB and Ped2 are (default ../shared/data).
demo: setup
	$(BIN)/diffsentry demo $(DEMO_ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -ra

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check .

stack-up: setup
	$(BIN)/diffsentry stack up

stack-down: setup
	$(BIN)/diffsentry stack down

stack-status: setup
	$(BIN)/diffsentry stack status
