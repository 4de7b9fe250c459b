#!/usr/bin/env bash
# Makes .venv-captum/, a Python venv with PyTorch, Captum, safetensors and numpy, for
# scripts/make-captum-fixture.py (Captum's integrated gradients on the PyTorch cnn fixture).
# Prints its python.
#   "$(scripts/captum-venv.sh)" scripts/make-captum-fixture.py
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-captum/bin/python ] || ! .venv-captum/bin/python -c "import torch, captum, safetensors, numpy" 2>/dev/null; then
  python3 -m venv .venv-captum
  .venv-captum/bin/pip install --quiet torch captum==0.9.0 safetensors numpy
fi
echo "$(pwd)/.venv-captum/bin/python"
