# Two entry points (see README): `make demo` trains on short Yelp sentences, then samples, reconstructs and
# interpolates; `make test` runs the checks. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEXTVAE_DATA ?= ../shared/data
export TEXTVAE_DATA
DEMO_RUN ?= runs/demo
DEMO_EPOCHS ?= 2
DEMO_DATA ?= yelp_short
# The defaults: the demo model keeps 40 nats of each sentence in z (--target-kl), reads it with a
# bidirectional encoder, learns to put the sentence's words there (bag-of-words loss) and feeds z to every
# output (--z-to-output): what reconstructed best after one epoch of the variants tried (scripts/README.md).
DEMO_OPTIONS ?= --word-dropout 0.3

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
	$(BIN)/textvae train --data $(DEMO_DATA) --output-dir $(DEMO_RUN) --epochs $(DEMO_EPOCHS) $(DEMO_OPTIONS) --no-fit-prior --overwrite
	@echo; echo "== the aggregate prior: a Gaussian mixture fitted to the training sentences' codes"
	$(BIN)/textvae fit-prior $(DEMO_RUN) --components 1,4,16 --max-train 10000
	@echo; echo "== five sentences from that prior, each code decoded greedily"
	$(BIN)/textvae sample $(DEMO_RUN) -n 5 --seed 0 --prior aggregate --greedy
	@echo; echo "== reconstructions: each sentence, then what the model decodes from its code"
	$(BIN)/textvae reconstruct $(DEMO_RUN) "the food was delicious and the service was friendly ." "we will definitely be back for the pizza !" "the spicy tuna did n't taste fresh ." --show-input
	@echo; echo "== interpolation: from one sentence's code to the other's"
	$(BIN)/textvae interpolate $(DEMO_RUN) "the staff was friendly and the food was great ." "the service was slow and the food was cold ." --steps 6

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
