#!/usr/bin/env bash
# Rampart's main job on a fresh machine: fetch Fashion-MNIST if needed, build, train a small
# model (with Gaussian noise), evaluate it, attack it with PGD, certify test images with
# randomized smoothing and print the report. Pass a config to train something else:
#   scripts/quickstart.sh configs/fmnist-cnn.toml
set -euo pipefail
cd "$(dirname "$0")/.."

config=${1:-configs/quickstart.toml}
run="runs/quickstart-$(date +%Y%m%d-%H%M%S)"

scripts/fetch-data.sh
cargo build --release --locked
bin=target/release/rampart

echo "== train ($config -> $run)"
$bin train --config "$config" --out "$run"
echo "== inspect"
$bin inspect --model "$run/model.safetensors"
echo "== evaluate"
$bin eval --model "$run/model.safetensors"
echo "== attack (L-infinity PGD-10, epsilon 0.1, 500 test images)"
$bin attack --model "$run/model.safetensors" --attack pgd --eps 0.1 --steps 10 --limit 500 \
  --save-examples "$run/adversarial"
echo "== certify (randomized smoothing at the training sigma; a short protocol: n 2000, 50 images)"
# A model trained with --mode gaussian carries its sigma; any other is certified at 0.25.
sigma=(); grep -Eq '^kind *= *"gaussian"' "$config" || sigma=(--sigma 0.25)
$bin certify --model "$run/model.safetensors" "${sigma[@]}" --n0 100 --n 2000 --alpha 0.001 \
  --skip 200 --limit 50 --out "$run/cert.tsv"
echo "== explain (integrated gradients of test image 0 and of its PGD version)"
$bin explain --model "$run/model.safetensors" --index 0 --method ig --compare-adversarial \
  --eps 0.1 --out "$run/explain"
echo "== report"
echo "model:         $run/model.safetensors (safetensors, PyTorch layout)"
echo "metrics:       $run/metrics.jsonl"
echo "adversarial:   $run/adversarial/ (examples.safetensors, grid.png)"
echo "certificates:  $run/cert.tsv, plot $run/cert.png"
echo "explanation:   $run/explain/ (heatmap.png, explanation.json)"
cat "$run/metrics.jsonl"
