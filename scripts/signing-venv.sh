#!/usr/bin/env bash
# Makes .venv-sign/, a Python venv with the OpenSSF reference signer (model-signing 1.1.1;
# it imports pyOpenSSL without declaring it, so that is installed too). Prints its python.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-sign/bin/python ] || ! .venv-sign/bin/python -c "import OpenSSL, model_signing" 2>/dev/null; then
  python3 -m venv .venv-sign
  .venv-sign/bin/pip install --quiet model-signing==1.1.1 pyopenssl
fi
echo "$(pwd)/.venv-sign/bin/python"
