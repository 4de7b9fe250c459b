#!/usr/bin/env bash
# Adversarial training of the cnn on Fashion-MNIST at L-infinity epsilon 0.1: standard,
# fgsm-rs, pgd (7 steps of 2.5·eps/7), trades and adaptive, then clean accuracy and PGD-20 /
# PGD-100 (5 restarts each) robust accuracy on the test set, AutoAttack (rampart evaluate
# --version standard: APGD-CE, APGD-T, Square; no FAB-T) on the first AA_LIMIT test images,
# and training wall time.
# Writes runs/repro-at/MODE/{model.safetensors,metrics.jsonl,pgd20.json,pgd100.json,
# autoattack.json,autoattack.tsv} and runs/repro-at/results.md. AutoAttack keeps its progress
# in MODE/autoattack.state.json and PGD in MODE/pgdSTEPS.tsv, so an interrupted run continues
# where it stopped; results newer than their model are not recomputed (other EPS, LIMIT or
# AA_LIMIT: use another OUT).
#
# Published anchor for a comparable network (Song, Shokri & Mittal 2019): PGD training
# 90.9% clean / 68.1% PGD-20, TRADES 72.4% PGD-20.
# PGD-7 training costs about 8 training steps per batch: hours on 2 CPU cores. Shrink with
#   EPOCHS=3 TRAIN_LIMIT=12000 LIMIT=500 RAMP=2 scripts/reproduce-fmnist-at.sh
#   AA_LIMIT=200
# (and say so with the figures). BIN=path runs an already built binary instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."

MODES=${MODES:-"standard fgsm-rs pgd trades adaptive"}
EPS=${EPS:-0.1}
EPOCHS=${EPOCHS:-10}
LIMIT=${LIMIT:-10000}
AA_LIMIT=${AA_LIMIT:-1000}
TRAIN_LIMIT=${TRAIN_LIMIT:-60000}
RAMP=${RAMP:-3}
DEVICE=${DEVICE:-auto}
OUT=${OUT:-runs/repro-at}

scripts/fetch-data.sh
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked
fi
bin=${BIN:-target/release/rampart}
mkdir -p "$OUT"

for mode in $MODES; do
  run="$OUT/$mode"
  if [ ! -f "$run/model.safetensors" ]; then
    resume=(); [ -d "$run/checkpoint" ] && resume=(--resume)
    # Each mode takes only its own keys (rampart train --help lists them).
    case $mode in
      standard) flags=() ;;
      adaptive) flags=(--epsilon "$EPS" --steps 7 --ramp-epochs "$RAMP") ;;
      *) flags=(--epsilon "$EPS" --steps 7) ;;
    esac
    echo "== train $mode (epsilon $EPS, $EPOCHS epochs)"
    $bin train --config configs/fmnist-cnn.toml --mode "$mode" "${flags[@]}" \
      --epochs "$EPOCHS" --train-limit "$TRAIN_LIMIT" --device "$DEVICE" --out "$run" "${resume[@]}"
  fi
  for steps in 20 100; do
    [ "$run/pgd$steps.json" -nt "$run/model.safetensors" ] && continue
    echo "== $mode: PGD-$steps, 5 restarts, $LIMIT test images"
    $bin attack --model "$run/model.safetensors" --attack pgd --norm linf --eps "$EPS" \
      --alpha "$(python3 -c "print(2.5 * $EPS / $steps)")" --steps "$steps" --restarts 5 \
      --limit "$LIMIT" --device "$DEVICE" --per-example "$run/pgd$steps.tsv" \
      --json > "$run/pgd$steps.json.partial"
    mv "$run/pgd$steps.json.partial" "$run/pgd$steps.json"
  done
  [ "$run/autoattack.json" -nt "$run/model.safetensors" ] && continue
  echo "== $mode: AutoAttack standard (no FAB-T), $AA_LIMIT test images"
  $bin evaluate --model "$run/model.safetensors" --norm linf --eps "$EPS" --version standard \
    --limit "$AA_LIMIT" --device "$DEVICE" --state "$run/autoattack.state.json" \
    --per-example "$run/autoattack.tsv" --json > "$run/autoattack.json.partial"
  mv "$run/autoattack.json.partial" "$run/autoattack.json"
done

python3 - "$OUT" $MODES <<'PY'
import json, sys
out, modes = sys.argv[1], sys.argv[2:]
rows = ["| mode | clean % | PGD-20 % | PGD-100 % | AutoAttack % (images) | after APGD-CE / APGD-T / Square % | train s | device |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |"]
for m in modes:
    p20 = json.load(open(f"{out}/{m}/pgd20.json"))
    p100 = json.load(open(f"{out}/{m}/pgd100.json"))
    aa = json.load(open(f"{out}/{m}/autoattack.json"))
    each = " / ".join(f"{100 * a['robust_accuracy']:.1f}" for a in aa["after_each"])
    secs = sum(json.loads(l)["seconds"] for l in open(f"{out}/{m}/metrics.jsonl"))
    rows.append(f"| {m} | {100 * p20['clean_accuracy']:.1f} | {100 * p20['robust_accuracy']:.1f} | "
                f"{100 * p100['robust_accuracy']:.1f} | {100 * aa['robust_accuracy']:.1f} ({aa['examples']}) | "
                f"{each} | {secs:.0f} | {p20['device']} |")
open(f"{out}/results.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY
