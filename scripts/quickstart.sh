#!/usr/bin/env bash
# Rampart's main job on a fresh machine: fetch Fashion-MNIST if needed, build, train a small
# model, evaluate it and print the report. Pass a config to train something else:
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
echo "== report"
echo "model:   $run/model.safetensors (safetensors, PyTorch layout)"
echo "metrics: $run/metrics.jsonl"
cat "$run/metrics.jsonl"
