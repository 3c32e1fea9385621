# Quick start: `make demo` and `make test`. Both create .venv on first use and are idempotent:
# the install step reruns only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
LINT_PATHS := src tests docs noxfile.py $(wildcard bench)

.PHONY: demo test test-fast lint typecheck docs format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The demo reads a FITS cube: the spectral extra (astropy, vorbin) comes with it.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[spectral]'
	touch $@

# The extras (test, lint, docs) are the install path: plain pip reads them at any version.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,lint,docs]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/nnfit demo --out demo-output

# The suite on every core (pytest-xdist): each test runs in one worker process, as alone.
test: lint typecheck docs
	MPLBACKEND=Agg $(BIN)/python -m pytest -n auto

test-fast: $(VENV)/.installed-test
	MPLBACKEND=Agg $(BIN)/python -m pytest -n auto -m "not slow"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

# Strict on the shared layers listed under [tool.mypy] files in pyproject.toml.
typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

docs: $(VENV)/.installed-test
	MPLBACKEND=Agg $(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

format: $(VENV)/.installed-test
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

clean:
	rm -rf $(VENV) demo-output build docs/_build docs/api/generated src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
