#!/usr/bin/env bash
# AutoAttack parity: Rampart's `evaluate --version standard` against torchattacks on one model.
# Trains an mlp in PyTorch with PGD adversarial training (scripts/train-torch-at.py, L-inf
# eps 0.1, 2 epochs) into runs/parity/torch-mlp-at.safetensors if it is missing, evaluates the
# first $LIMIT Fashion-MNIST test images at $EPS with torchattacks (scripts/parity-autoattack.py:
# APGD-CE, APGD-T with 9 targets, FAB-T, Square with 5000 queries, 100 steps each, chained as
# torchattacks' MultiAttack chains them; and torchattacks.AutoAttack as it is) into
# runs/parity/torchattacks.json, and with Rampart into runs/parity/rampart.json, then prints
# both side by side; then runs the original AutoAttack package (fra31/auto-attack,
# scripts/parity-original-autoattack.py: its standard version, and APGD-CE + APGD-T + Square)
# into runs/parity/autoattack.json. Rampart has no FAB-T, so its robust accuracy is compared
# with each reference's worst case without FAB-T (the full standard is shown beside it); it
# exits 1 when either differs by more than $TOLERANCE points (default 1.5).
#
# Time on 2 CPU cores (defaults, EPS=0.1 LIMIT=1000), measured with THREADS=1 beside other
# work: training 20 s, torchattacks 3.5 minutes (FAB-T 1.5 of them), rampart evaluate 1 minute;
# about 4.5 minutes in all. PyTorch with 2 threads on a busy machine (a cargo build running) is
# up to 50 times slower (the 100-image check took 18 minutes instead of 20 s); THREADS=1 then.
#   scripts/parity-autoattack.sh
#   EPS=0.1 LIMIT=200 BIN=target/release/rampart THREADS=1 scripts/parity-autoattack.sh
# BIN=path runs that binary instead of building; DATA=dir picks the Fashion-MNIST directory;
# RAMPART_ARGS adds flags to `rampart evaluate` (e.g. --no-checks).
set -euo pipefail
cd "$(dirname "$0")/.."

EPS=${EPS:-0.1}
LIMIT=${LIMIT:-1000}
NORM=${NORM:-linf}
THREADS=${THREADS:-2}
TOLERANCE=${TOLERANCE:-1.5}
OUT=${OUT:-runs/parity}
MODEL=$OUT/torch-mlp-at.safetensors

py=$(scripts/pytorch-venv.sh)
scripts/fetch-data.sh
data_py=(); data_rampart=()
if [ -n "${DATA:-}" ]; then data_py=(--data "$DATA"); data_rampart=(--data-dir "$DATA"); fi
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked
fi
bin=${BIN:-target/release/rampart}
mkdir -p "$OUT"

if [ ! -f "$MODEL" ]; then
  echo "== train $MODEL (PyTorch, PGD-7 adversarial training, L-inf eps 0.1)"
  "$py" scripts/train-torch-at.py --out "$MODEL" --threads "$THREADS" "${data_py[@]}"
fi

echo "== torchattacks: $NORM eps $EPS, first $LIMIT test images"
"$py" scripts/parity-autoattack.py --model "$MODEL" --norm "$NORM" --eps "$EPS" --limit "$LIMIT" \
  --threads "$THREADS" --out "$OUT/torchattacks.json" "${data_py[@]}"

echo "== original AutoAttack package: $NORM eps $EPS, first $LIMIT test images"
aa_norm=$([ "$NORM" = l2 ] && echo L2 || echo Linf)
"$py" scripts/parity-original-autoattack.py --model "$MODEL" --norm "$aa_norm" --eps "$EPS" \
  --limit "$LIMIT" --threads "$THREADS" --out "$OUT/autoattack.json" "${data_py[@]}" > /dev/null

echo "== rampart evaluate: $NORM eps $EPS, first $LIMIT test images"
# shellcheck disable=SC2086  # RAMPART_ARGS is a list of flags
"$bin" evaluate --model "$MODEL" --norm "$NORM" --eps "$EPS" --version standard --limit "$LIMIT" \
  "${data_rampart[@]}" ${RAMPART_ARGS:-} --json > "$OUT/rampart.json.partial"
mv "$OUT/rampart.json.partial" "$OUT/rampart.json"

python3 - "$OUT/torchattacks.json" "$OUT/rampart.json" "$TOLERANCE" "$OUT/autoattack.json" <<'PY'
import json, sys
ta, ra = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
tol = float(sys.argv[3])
aa = json.load(open(sys.argv[4]))
pct = lambda v: "-" if v is None else f"{100 * v:6.2f}"
ta_full = {a["attack"]: a["robust_accuracy"] for a in ta["after_each"]}
ta_nf = {a["attack"]: a["robust_accuracy"] for a in ta["after_each_without_fab"]}
ta_aa = {a["attack"]: a["robust_accuracy"] for a in ta.get("torchattacks_autoattack", {}).get("after_each", [])}
ra_after = {a["attack"]: a["robust_accuracy"] for a in ra["after_each"]}
print(f"{ta['examples']} examples, {ta['norm']} eps {ta['epsilon']}; torchattacks {ta['torchattacks']} "
      f"(torch {ta['torch']}), {ta['steps']} steps, {ta['queries']} queries; rampart: {ra.get('device', '?')}")
print(f"{'accuracy %':<18}{'rampart':>9}{'ta no FAB-T':>13}{'ta standard':>13}{'ta AutoAttack()':>17}")
print(f"{'clean':<18}{pct(ra['clean_accuracy']):>9}{pct(ta['clean_accuracy']):>13}{pct(ta['clean_accuracy']):>13}"
      f"{pct(ta['clean_accuracy'] if ta_aa else None):>17}")
for a in ["apgd-ce", "apgd-t", "fab-t", "square"]:
    print(f"{'after ' + a:<18}{pct(ra_after.get(a)):>9}{pct(ta_nf.get(a)):>13}{pct(ta_full.get(a)):>13}"
          f"{pct(ta_aa.get(a)):>17}")
print(f"{'robust':<18}{pct(ra['robust_accuracy']):>9}{pct(ta['robust_accuracy_without_fab']):>13}"
      f"{pct(ta['robust_accuracy']):>13}{pct(ta.get('torchattacks_autoattack', {}).get('robust_accuracy')):>17}")
if ta.get("torchattacks_autoattack"):
    print("(ta AutoAttack(): torchattacks.AutoAttack as it is, APGD/APGD-T/FAB at its default 10 steps)")
print(f"original AutoAttack package: APGD-CE + APGD-T + Square {pct(aa['custom']['robust_accuracy'])}% "
      f"({aa['custom']['seconds']:.1f} s), standard with FAB-T {pct(aa['standard']['robust_accuracy'])}% "
      f"({aa['standard']['seconds']:.1f} s); rampart {ra['seconds']:.1f} s")
aa_gap = 100 * (ra["robust_accuracy"] - aa["custom"]["robust_accuracy"])
print(f"rampart - original AutoAttack without FAB-T: {aa_gap:+.2f} points; against its standard: "
      f"{100 * (ra['robust_accuracy'] - aa['standard']['robust_accuracy']):+.2f} points")
ref_name = "square" if "square" in ra_after else "apgd-t"
ref = ta_nf[ref_name]
gap = 100 * (ra["robust_accuracy"] - ref)
print(f"rampart - torchattacks without FAB-T (after {ref_name}): {gap:+.2f} points; "
      f"against the full standard: {100 * (ra['robust_accuracy'] - ta['robust_accuracy']):+.2f} points; "
      f"clean: {100 * (ra['clean_accuracy'] - ta['clean_accuracy']):+.2f} points")
if abs(ra["clean_accuracy"] - ta["clean_accuracy"]) > 0.005:
    print("warning: the clean accuracies differ: not the same model, data or examples")
if max(abs(gap), abs(aa_gap)) > tol:
    print(f"FAIL: |{gap:.2f}| or |{aa_gap:.2f}| > {tol} points")
    sys.exit(1)
print(f"ok: within {tol} points")
PY
