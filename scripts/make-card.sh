#!/usr/bin/env bash
# Regenerates models/fmnist-cnn.md, the reference cnn's security model card, from recorded
# runs kept in models/evidence/fmnist-cnn/ (each report records its own command):
#   eval on the 10,000 test images; AutoAttack standard, L-inf 0.1, on 200 test images
#   (reduced); CERTIFY σ 0.25 with n 1,000 on 50 images (reduced); and, when present,
#   detect.json from scripts/reproduce-fmnist-detect.sh (copy OUT/evaluate.json there).
# RUNS=1 runs eval, evaluate and certify again first (about 10 minutes on 2 cores).
# SIGN_KEY=key.pem signs the card (models/fmnist-cnn.md.sig).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/release/rampart}
ev=models/evidence/fmnist-cnn
model=models/fmnist-cnn.safetensors
if [ "${RUNS:-0}" = 1 ]; then
  "$bin" eval --model "$model" --json > "$ev/eval.json"
  "$bin" evaluate --model "$model" --norm linf --eps 0.1 --version standard --limit 200 --json > "$ev/evaluate.json"
  "$bin" certify --model "$model" --sigma 0.25 --n 1000 --skip 200 --limit 50 --json > "$ev/certify.json"
fi
runs="$ev/eval.json,$ev/evaluate.json,$ev/certify.json"
[ -f "$ev/detect.json" ] && runs="$runs,$ev/detect.json"
sign=()
[ -n "${SIGN_KEY:-}" ] && sign=(--sign-key "$SIGN_KEY")
"$bin" card --model "$model" --evaluation "$runs" --out models/fmnist-cnn.md "${sign[@]}" \
  --intended-use "A clean-trained reference (the Madry et al. MNIST cnn on Fashion-MNIST, 2 epochs of standard training, configs/fmnist-cnn.toml) for Rampart's evaluation, attack, certification and detector examples. Not for deployment: it is not adversarially trained, and the figures below show it has almost no robustness."
