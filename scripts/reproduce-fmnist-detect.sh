#!/usr/bin/env bash
# Adversarial-input detectors on Fashion-MNIST with a model (default: the reference cnn,
# models/fmnist-cnn.safetensors): fit (Mahalanobis on the first FIT_LIMIT training images),
# calibrate at FPR on the first CALIBRATION test images, then evaluate on the next LIMIT test
# images: false positives, detection of FGSM, PGD-STEPS (L-inf EPS and L2 EPS_L2) and
# APGD-CE, ROC areas, and the adaptive attack on each differentiable detector.
# Writes OUT/{detector.safetensors,fit.json,evaluate.json,evaluate.txt,roc.png}.
# Shrink with LIMIT=500 STEPS=10 APGD_STEPS=20 (and say so with the figures).
# BIN=path runs an already built binary instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/fmnist-cnn.safetensors}
FIT_LIMIT=${FIT_LIMIT:-10000}
CALIBRATION=${CALIBRATION:-2000}
LIMIT=${LIMIT:-2000}
FPR=${FPR:-0.05}
EPS=${EPS:-0.1}
EPS_L2=${EPS_L2:-1.5}
STEPS=${STEPS:-40}
APGD_STEPS=${APGD_STEPS:-100}
DEVICE=${DEVICE:-auto}
OUT=${OUT:-runs/repro-detect}

scripts/fetch-data.sh
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked
fi
bin=${BIN:-target/release/rampart}
mkdir -p "$OUT"

"$bin" detect fit --model "$MODEL" --device "$DEVICE" --fit-limit "$FIT_LIMIT" \
  --limit "$CALIBRATION" --fpr "$FPR" --out "$OUT/detector.safetensors" --json > "$OUT/fit.json"
"$bin" detect evaluate --model "$MODEL" --device "$DEVICE" --detector "$OUT/detector.safetensors" \
  --offset "$CALIBRATION" --limit "$LIMIT" --eps "$EPS" --eps-l2 "$EPS_L2" --steps "$STEPS" \
  --apgd-steps "$APGD_STEPS" --roc "$OUT/roc.png" --json > "$OUT/evaluate.json"
python3 - "$OUT/evaluate.json" > "$OUT/results.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
pct = lambda x: f"{100 * x['rate']:.1f}"
names = [n for n, _ in r["false_positives"]]
print(f"{r['data']['examples']} test images, target false-positive rate {r['target_fpr']}, "
      f"clean accuracy {100 * r['clean_accuracy']:.2f}%\n")
print("| | " + " | ".join(names) + " |")
print("|---" * (len(names) + 1) + "|")
print("| false positives % | " + " | ".join(pct(rate) for _, rate in r["false_positives"]) + " |")
for a in r["attacks"]:
    cells = [f"{pct(d['detection'])} ({d['auc']:.2f})" if d["auc"] is not None else pct(d["detection"])
             for d in a["detectors"]]
    print(f"| {a['attack']} (fools {pct(a['success'])}%) | " + " | ".join(cells) + " |")
for a in r["adaptive"]:
    print(f"| adaptive vs {a['detector']}: fools {pct(a['fooled'])}%, unflagged by it {pct(a['evaded'])}% | "
          + " | ".join(pct(d["detection"]) for d in a["detectors"]) + " |")
PY
cat "$OUT/results.md"
