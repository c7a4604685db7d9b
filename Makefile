# Two entry points (see README): `make demo` trains on PTB then samples and interpolates; `make test` runs the checks.
# Each installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEXTVAE_DATA ?= ../shared/data
export TEXTVAE_DATA
DEMO_RUN ?= runs/demo
DEMO_EPOCHS ?= 1

.PHONY: install test lint demo clean

install: $(VENV)/.installed

# torch first, pinned: a plain `torch` requirement would pull a multi-GB CUDA build onto a CPU machine.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

lint: install
	$(BIN)/ruff check textvae tests scripts
	$(BIN)/ruff format --check textvae tests scripts

test: lint
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/textvae train --data ptb --output-dir $(DEMO_RUN) --epochs $(DEMO_EPOCHS) --overwrite
	$(BIN)/textvae sample $(DEMO_RUN) -n 5 --seed 0
	$(BIN)/textvae interpolate $(DEMO_RUN) "the company said it expects to report a loss" "he declined to comment on the report" --steps 5

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
