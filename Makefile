# The two commands of the README. Python 3.11+, git and make are all a fresh machine needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# The CPU wheel keeps a laptop install small; on a GPU machine: make TORCH=torch
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# dvc's stages call gravrev, papermill and jupyter-book: the venv's, without activating it
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all test setup browser lint benchmark clean

## all: set up, run the whole pipeline on the preset in params.yaml (tiny), build the book
all: setup
	$(BIN)/dvc repro
	@echo "The book is at $(CURDIR)/book/_build/html/index.html"

## test: set up and run the tests (the smoke preset runs end to end through dvc; its book is
## read in headless Chromium, installed from Debian's packages when missing)
test: setup browser
	$(BIN)/python -m pytest -q -ra

browser:
	@command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" -ne 0 ] && echo sudo ); \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

setup: $(STAMP)

# constraints.txt pins every package at the versions that made the committed metrics: the
# same bytes need the same software as well as the same CPU code path.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[pipeline,dev,lora,ray]"
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check gravrev tests benchmarks notebooks

## benchmark: training throughput, FLOP/s and parallel efficiency here (data/timings/benchmark.json)
benchmark: setup
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf book/_build
