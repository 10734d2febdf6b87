# The two commands of the README. Python 3.11+, git and make are all a fresh machine needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# The CPU wheel keeps a laptop install small; on a GPU machine: make TORCH=torch
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# dvc's stages call gravrev, papermill and jupyter-book: the venv's, without activating it
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all test test-fast setup browser lint deps lab benchmark clean

## all: set up, run the whole pipeline on the preset in params.yaml (tiny), build the book
all: setup
	$(BIN)/dvc repro
	@echo "Read the book (its search needs http, not file://): $(BIN)/python -m http.server -d book/_build/html 8000, then open http://localhost:8000"

## test: set up and run the tests (the smoke preset runs end to end through dvc; its book is
## read in headless Chromium, installed from Debian's packages when missing)
test: setup browser
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

## browser: Chromium and its driver from Debian's packages, when they can be installed (root
## or passwordless sudo, apt-get, a network); otherwise say why and go on: the browser test
## then skips. With CI=true a failed install fails (.ci/run needs the browser test to run).
browser:
	@command -v chromedriver >/dev/null && exit 0; \
	why=; SUDO=; \
	if ! command -v apt-get >/dev/null; then why="no apt-get on this system"; \
	elif [ "$$(id -u)" -ne 0 ]; then \
	  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else why="not root and no passwordless sudo"; fi; \
	fi; \
	if [ -z "$$why" ]; then \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
	  || why="apt-get failed (offline?)"; \
	fi; \
	if [ -n "$$why" ]; then \
	  echo "browser: Chromium not installed: $$why; the browser test will skip"; \
	  [ "$${CI:-}" != true ] || { echo "browser: CI=true needs Chromium" >&2; exit 1; }; \
	fi

## test-fast: the unit tests only (no pipeline, no subprocess training): the edit-test loop
test-fast: setup
	$(BIN)/python -m pytest -q -m "not pipeline and not slow" -p no:cacheprovider

## lab: Jupyter at the repository root; every chapter runs top to bottom against the last run
lab: setup
	$(BIN)/python -m pip install -q -c constraints.txt jupyterlab || true
	$(BIN)/jupyter lab --notebook-dir=$(CURDIR)

## deps: write each dvc.yaml step's gravrev/ deps as exactly its import closure
deps: setup
	$(BIN)/python tools/sync_deps.py

setup: $(STAMP)

# constraints.txt pins every package at the versions that made the committed metrics: the
# same bytes need the same software as well as the same CPU code path.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11, 5))' || { \
	  echo "setup: $(PYTHON) is $$($(PYTHON) -V 2>&1); constraints.txt needs Python 3.11.5 or newer" \
	       "(soupsieve 4.1.2 requires it). Point PYTHON at one: make PYTHON=/path/to/python3.11" >&2; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[pipeline,dev,lora,ray]"
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check gravrev tests benchmarks notebooks tools

## benchmark: training throughput, FLOP/s and parallel efficiency here (data/timings/benchmark.json)
benchmark: setup
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf book/_build
