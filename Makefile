# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make demo   creates .venv, installs scorejax, trains and samples on two Gaussians
#   make test   creates .venv, installs scorejax with its test extras, lints and tests
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export JAX_PLATFORMS ?= cpu

.PHONY: demo test test-slow lint format bench bench-quick bench-test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m experiments.two_gaussians

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q -n 2

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 -m slow

format: $(VENV)/.installed
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q blackjax torch==2.13.0
	touch $@

bench: $(VENV)/.bench
	$(PY) -m benchmarks

bench-quick: $(VENV)/.bench
	$(PY) -m benchmarks --quick

# the harness against the OS (worker processes, malloc, /proc) and the command line
bench-test: $(VENV)/.bench
	$(PY) -m pytest -q benchmarks/test_harness.py

clean:
	rm -rf $(VENV) results .pytest_cache
