# Set-up and the everyday commands. `make run`, `make test` and `make lint` create the virtual
# environment on first use: the CPU build of torch 2.13.0 first (a plain `torch`
# requirement would pull several GB of CUDA packages), then n2nonnx with its development
# tools, the framework converters' extras and the edge runtimes (MNN) (about 5 minutes;
# `pip install -e .` alone is light).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint setup

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,frameworks,edge]"
	$(BIN)/python -m pip install --quiet --no-deps paddle2onnx==2.1.0
	touch $@

run: setup
	$(BIN)/n2nonnx run

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
