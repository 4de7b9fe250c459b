#!/usr/bin/env bash
# Makes .venv-torch/, a Python venv with PyTorch and safetensors, for the interop scripts
# (check-pytorch.py, check-pytorch-fusion.py, make-torch-fixture.py). Prints its python.
#   scripts/pytorch-venv.sh && .venv-torch/bin/python scripts/check-pytorch.py MODEL
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-torch/bin/python ] || ! .venv-torch/bin/python -c "import torch, safetensors" 2>/dev/null; then
  python3 -m venv .venv-torch
  .venv-torch/bin/pip install --quiet torch safetensors numpy
fi
echo "$(pwd)/.venv-torch/bin/python"
