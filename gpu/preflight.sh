#!/bin/sh
# The GPU preflight on a node without a package index (README, "On a GPU node without a package
# index"; docs/cluster.md). Needs only the node's python3 with its own torch (>= 2.11) and the
# folder gpu/wheels/ that `make gpu-wheels` built on a machine with the index. Installs that
# folder into a venv beside the node's packages, prints what it runs on, then runs
# `python -m specrepro.bench gpu-check`:
#   PYTHON=/opt/torch/.venv/bin/python3 bash gpu/preflight.sh [--model PATH]
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-gpu/wheels}
VENV=${GPU_VENV:-gpu/.venv}

fail() {
    echo "preflight: $*" >&2
    exit 1
}

if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    fail "no wheels in $WHEELS/. Build that folder on a machine with the package index" \
        "(make gpu-wheels in this checkout), then copy it to $WHEELS/ here."
fi
command -v "$PYTHON" >/dev/null 2>&1 || fail "no $PYTHON: set PYTHON to the node's python3"

# The node's user site (~/.local) would come before the venv's packages; pip's config (an index
# it cannot reach, find-links) has no say in an offline install of exactly these files.
export PYTHONNOUSERSITE=1 PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1

# A folder built from another checkout's lock would install other versions than this one tests.
# Run as a file: importing the package would check the node's own (older) transformers.
"$PYTHON" -P src/specrepro/gpu_wheels.py gpu/wheels.lock "$WHEELS" || exit 1

"$PYTHON" -m venv --clear --system-site-packages "$VENV" ||
    fail "$PYTHON -m venv could not create $VENV (Debian/Ubuntu need the python3-venv package)"
# --system-site-packages shows the base interpreter's packages only: where the node's python3 is
# itself a venv (e.g. /opt/torch/.venv), its torch is not among them. node.pth adds the node
# python's own site-packages, after the venv's, so the folder's wheels still come first.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
"$PYTHON" -c 'import site; print("\n".join(site.getsitepackages()))' >"$SITE/node.pth"

# --ignore-installed: every wheel goes into the venv, even one the node has in the same version,
# and pip never tries to remove a node package it sees through node.pth.
"$VENV/bin/python" -m pip install --quiet --no-index --no-deps --ignore-installed "$WHEELS"/*.whl

"$VENV/bin/python" - <<'EOF'
import sys

import torch
import transformers

print(f"python {sys.version.split()[0]} ({sys.executable})")
print(f"torch {torch.__version__} ({torch.__file__})")
print(f"transformers {transformers.__version__} ({transformers.__file__})")
if torch.cuda.is_available():
    print(f"CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}")
else:
    print(f"CUDA {torch.version.cuda} build, no CUDA device visible")
EOF

exec "$VENV/bin/python" -m specrepro.bench gpu-check "$@"
