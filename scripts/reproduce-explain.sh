#!/usr/bin/env bash
# The faithfulness of every explanation method (rampart faithfulness) on the reference cnn
# (models/fmnist-cnn.safetensors, Fashion-MNIST test images) and on the gated fusion model of
# the SYNTHETIC security task (its network features and, for the gradient methods, its text
# embeddings), plus one explained example of each with its pictures. Deletion and insertion
# areas against a random ranking, stability under N(0, 0.02²) input noise (and across LIME
# seeds), integrated gradients' completeness at 20/50/200 steps; 95% bootstrap intervals.
# Writes runs/repro-explain/{results.md,*.json,examples/}.
#   N (images, default 200), FUSION_N (records, default 200), DEVICE, OUT, BIN
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-auto}
OUT=${OUT:-runs/repro-explain}
N=${N:-200}
FUSION_N=${FUSION_N:-200}
CNN=${CNN:-models/fmnist-cnn.safetensors}

if [ -z "${BIN:-}" ]; then
  cargo build --release --locked
fi
bin=${BIN:-target/release/rampart}
mkdir -p "$OUT"

# The fusion model: trained here on the SYNTHETIC task unless one is given.
FUSION=${FUSION:-$OUT/fusion/model.safetensors}
if [ ! -f "$OUT/test.jsonl" ]; then
  $bin data synth-security --n 8000 --seed 1 --out "$OUT/train.jsonl"
  $bin data synth-security --n 2000 --seed 2 --out "$OUT/test.jsonl"
fi
if [ ! -f "$FUSION" ]; then
  $bin train --config configs/security-fusion.toml --train-records "$OUT/train.jsonl" \
    --test-records "$OUT/test.jsonl" --fusion gated --device "$DEVICE" --out "$OUT/fusion"
fi

measure() { # name, flags...
  local name=$1; shift
  if [ ! -s "$OUT/$name.json" ]; then
    echo "== $name"
    $bin faithfulness --device "$DEVICE" --json "$@" > "$OUT/$name.json.tmp"
    mv "$OUT/$name.json.tmp" "$OUT/$name.json"
  fi
}
img=(--model "$CNN" --limit "$N")
measure cnn-saliency "${img[@]}" --method saliency
measure cnn-gradient-x-input "${img[@]}" --method gradient-x-input
measure cnn-ig "${img[@]}" --method ig
measure cnn-ig-blur "${img[@]}" --method ig --baseline blur
measure cnn-smoothgrad "${img[@]}" --method smoothgrad --samples 25
measure cnn-lime "${img[@]}" --method lime
measure cnn-kernel-shap "${img[@]}" --method kernel-shap
fus=(--model "$FUSION" --records "$OUT/test.jsonl" --limit "$FUSION_N")
measure fusion-network-saliency "${fus[@]}" --method saliency --modality network
measure fusion-network-ig "${fus[@]}" --method ig --modality network
measure fusion-network-lime "${fus[@]}" --method lime --modality network
measure fusion-network-kernel-shap "${fus[@]}" --method kernel-shap --modality network
measure fusion-text-saliency "${fus[@]}" --method saliency --modality text
measure fusion-text-ig "${fus[@]}" --method ig --modality text

# One example of each kind, with its pictures.
mkdir -p "$OUT/examples"
$bin explain --model "$CNN" --index 3 --method ig --compare-adversarial --eps 0.1 \
  --device "$DEVICE" --out "$OUT/examples/cnn-ig" > "$OUT/examples/cnn-ig.txt"
$bin explain --model "$FUSION" --records "$OUT/test.jsonl" --index 1 --method ig \
  --device "$DEVICE" --out "$OUT/examples/fusion-ig" > "$OUT/examples/fusion-ig.txt"
$bin explain --model "$FUSION" --records "$OUT/test.jsonl" --index 1 --method lime \
  --device "$DEVICE" --out "$OUT/examples/fusion-lime" > "$OUT/examples/fusion-lime.txt"

python3 - "$OUT" <<'PY' > "$OUT/results.md.tmp"
import json, os, sys
out = sys.argv[1]
names = sorted(f[:-5] for f in os.listdir(out) if f.endswith(".json"))
order = ["saliency", "gradient-x-input", "ig", "ig-blur", "smoothgrad", "lime", "kernel-shap"]
def key(n):
    for i, m in enumerate(order):
        if n.endswith("-" + m):
            return (n[: -len(m) - 1], i)
    return (n, 99)
def est(e):
    if e is None or e.get("mean") is None:
        return "-"
    return f"{e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"
def mean(e):
    return "-" if e is None or e.get("mean") is None else f"{e['mean']:.3f}"
print("| model, input | method | n | deletion area (random) | insertion area (random) | noise Spearman | seed Spearman | IG mean abs delta at 20 / 50 / 200 steps (mean abs change) |")
print("|---|---|---|---|---|---|---|---|")
for n in sorted(names, key=key):
    r = json.load(open(os.path.join(out, n + ".json")))
    model = "cnn, images" if n.startswith("cnn") else f"gated fusion (SYNTHETIC), {r['input']}"
    seed = est(r.get("seed_spearman"))
    comp = " / ".join(f"{c['mean_abs_delta']['mean']:.4f}" for c in r.get("completeness", []))
    if comp:
        comp += f" ({r['completeness'][0]['mean_abs_change']:.3f})"
    print(f"| {model} | {r['method']} | {r['deletion_area']['n']} | {est(r['deletion_area'])} ({mean(r['deletion_area_random'])}) "
          f"| {est(r['insertion_area'])} ({mean(r['insertion_area_random'])}) | {est(r['noise_spearman'])} | {seed} | {comp or '-'} |")
PY
mv "$OUT/results.md.tmp" "$OUT/results.md"
cat "$OUT/results.md"
