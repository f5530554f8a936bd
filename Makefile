# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit integration bench clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) || { \
	  echo "venv failed; installing Debian's python3-venv"; \
	  apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

demo: $(STAMP)
	$(BIN)/pagemesh demo --data-dir demo-data

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

integration: $(STAMP)
	$(BIN)/python -m pytest -m integration

bench: $(STAMP)
	$(BIN)/python benchmarks/dht_lookup.py

clean:
	rm -rf demo-data .pytest_cache .mypy_cache .ruff_cache .hypothesis
