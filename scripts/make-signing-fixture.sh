#!/usr/bin/env bash
# Builds tests/fixtures/python-signed/: a tiny model directory signed by the
# reference OpenSSF implementation (Python `model-signing`, `sign key` with a
# P-256 key), for interop tests of Rampart's Rust signer/verifier.
#
#   tests/fixtures/python-signed/model/weights.bin       3000 deterministic bytes
#   tests/fixtures/python-signed/model/sub/config.json   small text file
#   tests/fixtures/python-signed/model.sig               Sigstore bundle v0.3 (DSSE)
#   tests/fixtures/python-signed/key.pub                 P-256 public key (SPKI PEM)
#
# The private key is generated in a temporary directory and deleted afterwards.
# Re-running regenerates the key and the signature (ECDSA is randomized and the
# in-toto payload's key order is not stable), so model.sig changes every run;
# the model files are byte-identical every run.
#
# Needs: the venv with model-signing (default .venv-sign, override with
# $SIGN_PY=/path/to/python) and `openssl`. See docs/notes-model-signing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${SIGN_PY:-.venv-sign/bin/python}
OUT=tests/fixtures/python-signed
MODEL=$OUT/model
SIG=$OUT/model.sig
PUB=$OUT/key.pub

[ -x "$PY" ] || { echo "make-signing-fixture: $PY not found (python with model-signing 1.1.x)" >&2; exit 1; }
# model_signing 1.1.1 imports pyOpenSSL (_signing/sign_certificate.py:29) without
# declaring it as a dependency: `$PY -m pip install pyopenssl` if this fails.
"$PY" -c 'import OpenSSL, model_signing' 2>/dev/null \
  || { echo "make-signing-fixture: $PY lacks model_signing or pyOpenSSL (pip install model-signing==1.1.1 pyopenssl)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "make-signing-fixture: openssl not found" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# 1. P-256 key pair: private PKCS#8 PEM ("BEGIN PRIVATE KEY"), public SPKI PEM.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/key.pem" 2>/dev/null
mkdir -p "$OUT"
openssl pkey -in "$TMP/key.pem" -pubout -out "$PUB"

# 2. The model directory (recreated from scratch so no stray files get signed).
rm -rf "$MODEL"
mkdir -p "$MODEL/sub"
"$PY" - "$MODEL" <<'EOF'
import pathlib, sys
root = pathlib.Path(sys.argv[1])
(root / "weights.bin").write_bytes(bytes((i * 31 + 7) % 256 for i in range(3000)))
(root / "sub" / "config.json").write_text('{"arch": "mlp", "layers": [784, 128, 10]}\n')
EOF

# 3. Sign (files serialization, SHA-256, git paths ignored; the signature lives
#    outside the model directory so it is not part of ignore_paths).
rm -f "$SIG"
"$PY" -m model_signing sign key --private_key "$TMP/key.pem" --signature "$SIG" "$MODEL"

# 4. Drop the private key now (the trap would too).
rm -f "$TMP/key.pem"

# 5. Verify with the public key.
"$PY" -m model_signing verify key --public_key "$PUB" --signature "$SIG" "$MODEL"

# 6. Self-check on a temporary copy: flipping one byte must fail verification.
cp -r "$MODEL" "$TMP/model"
"$PY" - "$TMP/model/weights.bin" <<'EOF'
import pathlib, sys
p = pathlib.Path(sys.argv[1]); b = bytearray(p.read_bytes()); b[1000] ^= 0x01; p.write_bytes(b)
EOF
if "$PY" -m model_signing verify key --public_key "$PUB" --signature "$SIG" "$TMP/model"; then
  echo "make-signing-fixture: tampered copy verified, which must not happen" >&2
  exit 1
fi
echo "make-signing-fixture: tampered copy rejected as expected; fixture in $OUT"
