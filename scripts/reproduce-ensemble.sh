#!/usr/bin/env bash
# An ensemble of three Fashion-MNIST cnns (standard, fgsm-rs and pgd training, from
# scripts/reproduce-fmnist-at.sh) against each member: clean accuracy, PGD-20 robust accuracy
# (L-infinity epsilon 0.1; the ensemble is attacked through its mean-probability surrogate and
# judged on its own decision rule) and certified accuracy with randomized smoothing.
# Writes runs/repro-ensemble/{ensemble-*.toml,results.md}.
#   MEMBERS=runs/repro-at LIMIT=500 CERT_N=1000 CERT_SKIP=100 scripts/reproduce-ensemble.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MEMBERS=${MEMBERS:-runs/repro-at}
OUT=${OUT:-runs/repro-ensemble}
DEVICE=${DEVICE:-auto}
LIMIT=${LIMIT:-1000}
EPS=${EPS:-0.1}
SIGMA=${SIGMA:-0.12}
CERT_N=${CERT_N:-10000}
CERT_SKIP=${CERT_SKIP:-100}

scripts/fetch-data.sh
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked
fi
bin=${BIN:-target/release/rampart}
for mode in standard fgsm-rs pgd; do
  if [ ! -f "$MEMBERS/$mode/model.safetensors" ]; then
    MODES="standard fgsm-rs pgd" OUT="$MEMBERS" scripts/reproduce-fmnist-at.sh
    break
  fi
done
mkdir -p "$OUT"
models=("$MEMBERS/standard/model.safetensors" "$MEMBERS/fgsm-rs/model.safetensors" "$MEMBERS/pgd/model.safetensors")
for strategy in weighted_majority unanimous mean_probs; do
  $bin ensemble create --strategy "$strategy" --fit-weights --device "$DEVICE" \
    --out "$OUT/ensemble-$strategy.toml" "${models[@]}"
done

measure() { # name, model
  local name=$1 model=$2
  $bin eval --model "$model" --limit "$LIMIT" --device "$DEVICE" --json > "$OUT/$name.eval.json"
  $bin attack --model "$model" --attack pgd --eps "$EPS" --steps 20 --limit "$LIMIT" \
    --device "$DEVICE" --json > "$OUT/$name.pgd20.json"
  $bin certify --model "$model" --sigma "$SIGMA" --n0 100 --n "$CERT_N" --skip "$CERT_SKIP" \
    --device "$DEVICE" --out "$OUT/$name.cert.tsv" --json > "$OUT/$name.cert.json"
}
for mode in standard fgsm-rs pgd; do measure "$mode" "$MEMBERS/$mode/model.safetensors"; done
for strategy in weighted_majority unanimous mean_probs; do
  measure "ensemble-$strategy" "$OUT/ensemble-$strategy.toml"
done

python3 - "$OUT" "$EPS" "$SIGMA" <<'PY'
import json, sys
out, eps, sigma = sys.argv[1], sys.argv[2], sys.argv[3]
names = ["standard", "fgsm-rs", "pgd", "ensemble-weighted_majority", "ensemble-unanimous", "ensemble-mean_probs"]
rows = [f"| model | clean % | no decision % | PGD-20 ε {eps} % | certified σ {sigma} r=0 % | r=0.25 % | r=0.5 % | device |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |"]
for n in names:
    e = json.load(open(f"{out}/{n}.eval.json"))
    p = json.load(open(f"{out}/{n}.pgd20.json"))
    c = json.load(open(f"{out}/{n}.cert.json"))["summary"]
    acc = dict(c["certified_accuracy"])
    r = e
    rows.append(f"| {n} | {100 * r['accuracy']:.1f} | {100 * r['no_decision'] / r['examples']:.1f} | "
                f"{100 * p['robust_accuracy']:.1f} | {100 * acc[0.0]:.1f} | {100 * acc[0.25]:.1f} | "
                f"{100 * acc[0.5]:.1f} | {e['device']} |")
open(f"{out}/results.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY
