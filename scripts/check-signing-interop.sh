#!/usr/bin/env bash
# Interop with the OpenSSF reference signer (Python model-signing 1.1.1, in .venv-sign):
#   1. Rampart signs a model directory (the reference cnn and its card); the Python tool
#      verifies it, and refuses a copy with one flipped byte.
#   2. The Python tool signs it with a key from `rampart keygen`; Rampart verifies that.
# BIN=path runs an already built binary instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(scripts/signing-venv.sh)
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked
fi
bin=$(realpath "${BIN:-target/release/rampart}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/fmnist-cnn"
cp models/fmnist-cnn.safetensors models/fmnist-cnn.md "$work/fmnist-cnn/"
cd "$work"
"$bin" keygen --private key.pem --public key.pub
echo "== Rampart signs, Python verifies"
"$bin" sign --key key.pem fmnist-cnn
"$PY" -m model_signing verify key --public_key key.pub --signature fmnist-cnn/model.sig fmnist-cnn
echo "== Python verifies a copy with one flipped byte (must fail)"
cp -r fmnist-cnn tampered
"$PY" -c 'import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[-1] ^= 1; open(p, "wb").write(b)' tampered/fmnist-cnn.safetensors
if "$PY" -m model_signing verify key --public_key key.pub --signature tampered/model.sig tampered 2>&1; then
  echo "check-signing-interop: the Python tool accepted a tampered copy" >&2
  exit 1
fi
echo "== Python signs, Rampart verifies"
rm fmnist-cnn/model.sig
"$PY" -m model_signing sign key --private_key key.pem --signature py.sig fmnist-cnn
"$bin" verify --key key.pub --signature py.sig fmnist-cnn
echo "== Rampart verifies the tampered copy against the Python signature (must fail)"
if "$bin" verify --key key.pub --signature py.sig tampered; then
  echo "check-signing-interop: Rampart accepted a tampered copy" >&2
  exit 1
fi
echo "check-signing-interop: both directions verified, both tools refused the tampered copy"
