#!/usr/bin/env bash
# Makes .venv-torch/, a Python venv with PyTorch, safetensors and torchattacks, for the interop
# scripts (check-pytorch.py, check-pytorch-fusion.py, make-torch-fixture.py) and the AutoAttack
# parity check and benchmark (train-torch-at.py, parity-autoattack.py,
# parity-original-autoattack.py, bench-autoattack.py), with the original AutoAttack package
# from $AUTOATTACK (default: fra31/auto-attack at a392200 from GitHub; a local checkout works).
# Prints its python.
#   scripts/pytorch-venv.sh && .venv-torch/bin/python scripts/check-pytorch.py MODEL
set -euo pipefail
cd "$(dirname "$0")/.."
AUTOATTACK=${AUTOATTACK:-git+https://github.com/fra31/auto-attack@a392200}
if [ ! -x .venv-torch/bin/python ] || ! .venv-torch/bin/python -c "import torch, safetensors, torchattacks, autoattack" 2>/dev/null; then
  python3 -m venv .venv-torch
  .venv-torch/bin/pip install --quiet torch safetensors numpy torchattacks==3.5.1 "$AUTOATTACK"
fi
echo "$(pwd)/.venv-torch/bin/python"
