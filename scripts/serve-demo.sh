#!/usr/bin/env bash
# Prepares everything `rampart serve --config configs/serve.toml` names, under runs/serve-demo/
# (or $OUT), and starts the service unless PREPARE_ONLY=1:
#   - a release key pair; the reference cnn as the primary, signed;
#   - a backup: the mlp trained under Gaussian noise (sigma 0.5), signed;
#   - adversarial-input detectors (msp, squeeze, mahalanobis) fitted on 2,000 training images
#     and calibrated on test images 0-999; a drift reference from test images 1000-1999;
#     extraction-ledger settings (PRADA, a rate CUSUM at 100 queries/s alerting at 200, a cap of 2,000 queries per client);
#   - two API keys (alice: client, ops: admin), printed once, their SHA-256 in serve.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/serve-demo}
BIN=${BIN:-target/release/rampart}
[ -x "$BIN" ] || cargo build --release
mkdir -p "$OUT"
run() { echo "+ $*" >&2; "$@"; }

[ -f "$OUT/release.key" ] || run "$BIN" keygen --private "$OUT/release.key" --public "$OUT/release.pub"
if [ ! -f "$OUT/primary.safetensors" ]; then
  cp models/fmnist-cnn.safetensors "$OUT/primary.safetensors"
  run "$BIN" sign "$OUT/primary.safetensors" --key "$OUT/release.key"
fi
if [ ! -f "$OUT/backup.safetensors" ]; then
  run "$BIN" train --config configs/fmnist-mlp.toml --mode gaussian --sigma 0.5 --epochs 2 \
    --train-limit 12000 --eval-limit 1000 --out "$OUT/backup-run" --device flex
  cp "$OUT/backup-run/model.safetensors" "$OUT/backup.safetensors"
  run "$BIN" sign "$OUT/backup.safetensors" --key "$OUT/release.key"
fi
[ -f "$OUT/detectors.safetensors" ] || run "$BIN" detect fit --kind adversarial \
  --model "$OUT/primary.safetensors" --detectors msp,squeeze,mahalanobis --fit-limit 2000 \
  --limit 1000 --out "$OUT/detectors.safetensors" --device flex
[ -f "$OUT/drift.safetensors" ] || run "$BIN" detect fit --kind drift \
  --model "$OUT/primary.safetensors" --offset 1000 --limit 1000 --out "$OUT/drift.safetensors" --device flex
[ -f "$OUT/ledger.safetensors" ] || run "$BIN" detect fit --kind extraction \
  --model "$OUT/primary.safetensors" --rate 100 --alert-rate 200 --max-queries 2000 --out "$OUT/ledger.safetensors" --device flex

if [ ! -f "$OUT/serve.toml" ]; then
  alice=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  ops=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  sed -e "s|runs/serve-demo|$OUT|g" \
      -e "s|SHA256_OF_ALICE_KEY|$(printf %s "$alice" | sha256sum | cut -d' ' -f1)|" \
      -e "s|SHA256_OF_OPS_KEY|$(printf %s "$ops" | sha256sum | cut -d' ' -f1)|" \
      configs/serve.toml > "$OUT/serve.toml"
  umask 077
  printf 'ALICE_KEY=%s\nOPS_KEY=%s\n' "$alice" "$ops" > "$OUT/keys.env"
  echo "API keys written to $OUT/keys.env (only their SHA-256 is in $OUT/serve.toml)" >&2
fi
[ "${PREPARE_ONLY:-0}" = 1 ] && exit 0
exec "$BIN" serve --config "$OUT/serve.toml" "$@"
