#!/usr/bin/env bash
# The multimodal fusion model on the SYNTHETIC security task (benign / phishing / malware /
# exfiltration): single-modality models against concat and gated fusion, then attacks on the
# network features (L-infinity PGD-20, epsilon 0.1 of each feature's range) and on the text
# embeddings (also for a model adversarially trained on its embeddings), and randomized-smoothing certification over the network features of a model
# trained with Gaussian noise. Writes runs/repro-multimodal/{results.md,...}.
# The data are SYNTHETIC (rampart data synth-security): no real security set ships here.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-auto}
OUT=${OUT:-runs/repro-multimodal}
TRAIN_N=${TRAIN_N:-8000}
TEST_N=${TEST_N:-2000}
EPOCHS=${EPOCHS:-8}
CERT_N=${CERT_N:-100000}
CERT_LIMIT=${CERT_LIMIT:-200}

if [ -z "${BIN:-}" ]; then
  cargo build --release --locked
fi
bin=${BIN:-target/release/rampart}
mkdir -p "$OUT"
$bin data synth-security --n "$TRAIN_N" --seed 1 --out "$OUT/train.jsonl"
$bin data synth-security --n "$TEST_N" --seed 2 --out "$OUT/test.jsonl"

train() { # name, extra flags...
  local name=$1; shift
  if [ ! -f "$OUT/$name/model.safetensors" ]; then
    echo "== train $name"
    $bin train --config configs/security-fusion.toml --train-records "$OUT/train.jsonl" \
      --test-records "$OUT/test.jsonl" --epochs "$EPOCHS" --device "$DEVICE" --out "$OUT/$name" "$@"
  fi
}
train text --modalities text
train bytes --modalities bytes
train network --modalities network
train concat --fusion concat
train gated --fusion gated
train gated-pgd --fusion gated --mode pgd --epsilon 0.1
train gated-gaussian --fusion gated --mode gaussian --sigma 0.25
train gated-pgd-embeddings --fusion gated --mode pgd-embeddings --epsilon 1.0

for name in text bytes network concat gated gated-pgd gated-gaussian gated-pgd-embeddings; do
  m="$OUT/$name/model.safetensors"
  $bin eval --model "$m" --records "$OUT/test.jsonl" --device "$DEVICE" --json > "$OUT/$name/eval.json"
  if [[ $name != text && $name != bytes ]]; then
    $bin attack --model "$m" --records "$OUT/test.jsonl" --device "$DEVICE" --modality network \
      --eps 0.1 --steps 20 --restarts 3 --json > "$OUT/$name/pgd-network.json"
  fi
  if [[ $name != network && $name != bytes ]]; then
    $bin attack --model "$m" --records "$OUT/test.jsonl" --device "$DEVICE" --modality text \
      --norm l2 --eps 1.0 --steps 20 --json > "$OUT/$name/pgd-text.json"
  fi
done
$bin certify --model "$OUT/gated-gaussian/model.safetensors" --records "$OUT/test.jsonl" \
  --device "$DEVICE" --n0 100 --n "$CERT_N" --alpha 0.001 --skip 5 --limit "$CERT_LIMIT" \
  --out "$OUT/gated-gaussian/cert.tsv" --json > "$OUT/gated-gaussian/cert.json"

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def get(name, file, key):
    p = f"{out}/{name}/{file}"
    return json.load(open(p))[key] if os.path.exists(p) else None
pct = lambda v: "–" if v is None else f"{100 * v:.1f}"
rows = ["| model (SYNTHETIC data) | clean % | network PGD-20 ε 0.1 % | text-embedding PGD-20 L2 1.0 % |",
        "| --- | --- | --- | --- |"]
for name in ["text", "bytes", "network", "concat", "gated", "gated-pgd", "gated-gaussian", "gated-pgd-embeddings"]:
    rows.append(f"| {name} | {pct(get(name, 'eval.json', 'accuracy'))} | "
                f"{pct(get(name, 'pgd-network.json', 'robust_accuracy'))} | "
                f"{pct(get(name, 'pgd-text.json', 'robust_accuracy'))} |")
alone = json.load(open(f"{out}/gated/eval.json"))
rows += ["", "gated fusion model, one modality alone (others withheld): " +
         ", ".join(f"{k} {pct(v['alone'])}%" for k, v in alone["modalities"].items())]
cert = json.load(open(f"{out}/gated-gaussian/cert.json"))["summary"]
rows += ["", "gated-gaussian certified accuracy over the network features (σ 0.25, n "
         f"{cert['n']}, {cert['images']} records): " +
         ", ".join(f"r={r:g}: {pct(a)}%" for r, a in cert["certified_accuracy"]) +
         f"; abstain {pct(cert['abstain_rate'])}%"]
open(f"{out}/results.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY
