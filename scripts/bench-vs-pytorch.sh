#!/usr/bin/env bash
# Rampart against PyTorch, side by side, on the same workloads: whole processes (start-up,
# data loading and model loading included), the same model, images and settings, run
# alternately, REPS times each (default 3); prints the median wall times, their ratio
# (Rampart / PyTorch; below 1 is faster) and each side's median peak memory, as a Markdown
# table with the date and machine. PyTorch runs with THREADS threads (default 2).
#
#   scripts/bench-vs-pytorch.sh                 # every workload
#   ONLY="pgd train-mlp" REPS=5 scripts/bench-vs-pytorch.sh
#   ONLY=certify-early CERT_N=100000 CERT_SKIP=100 KEEP=runs/bench scripts/bench-vs-pytorch.sh
#
# Workloads (PyTorch's side is scripts/bench_torch.py):
#   certify        cnn, sigma 0.25, n0 100 + n 10,000 (CERT_N), 4 test images (every
#                  CERT_SKIP-th, default every one), batch 128
#   certify-early  the same images with --early-stop (Cohen's radius-agnostic protocol,
#                  stopping each image once decided, same alpha) against PyTorch's fixed n
#   pgd            L-inf PGD-40 (eps 0.1, random start) on 200 test images, batch 128
#   train-cnn      one epoch of cnn training on 10,000 images, then the 10,000 test images
#   train-mlp      two epochs of mlp training on 20,000 images, then the test images
#   train-pgd      one epoch of PGD-7 (eps 0.1) adversarial training of the cnn on 2,000
#                  images, then 1,000 test images
# Batches are the same on both sides: 128, the CPU default of `rampart certify` and `attack`
# (PyTorch's time hardly changes with the batch: 18.5 s at 128, 19.0 s at 1024 for certify).
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
THREADS=${THREADS:-2}
ONLY=${ONLY:-"certify certify-early pgd train-cnn train-mlp train-pgd"}
CERT_N=${CERT_N:-10000}
CERT_SKIP=${CERT_SKIP:-1}
# KEEP=dir keeps every run's folder and logs there (Rampart's cert.tsv, for instance).
KEEP=${KEEP:-}
MODEL=models/fmnist-cnn.safetensors

scripts/fetch-data.sh >/dev/null
data=""
for d in "${RAMPART_DATA:-}" datasets/fashion-mnist /usr/share/datasets/fashion-mnist; do
  if [ -n "$d" ] && ls "$d"/t10k-images-idx3-ubyte* >/dev/null 2>&1; then data=$d; break; fi
done
[ -n "$data" ] || { echo "bench-vs-pytorch: Fashion-MNIST not found" >&2; exit 1; }

if [ ! -x .venv-bench/bin/python ] || ! .venv-bench/bin/python -c "import torch, numpy, scipy, safetensors" 2>/dev/null; then
  echo "bench-vs-pytorch: making .venv-bench (torch, numpy, scipy, safetensors)" >&2
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet torch numpy scipy safetensors
fi
py=.venv-bench/bin/python
cargo build --release --locked --quiet
bin=target/release/rampart

tmp=$(mktemp -d)
trap 'if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp -r "$tmp"/. "$KEEP"/; fi; rm -rf "$tmp"' EXIT

# The two commands of a workload, Rampart's then PyTorch's; $run is a fresh folder.
commands() {
  local w=$1 run=$2
  case $w in
    certify)
      echo "$bin certify --model $MODEL --device flex --sigma 0.25 --n0 100 --n $CERT_N --skip $CERT_SKIP --limit 4 --batch 128 --out $run/cert.tsv"
      echo "$py scripts/bench_torch.py certify --data $data --threads $THREADS --sigma 0.25 --n0 100 --n $CERT_N --skip $CERT_SKIP --limit 4 --batch 128" ;;
    certify-early)
      echo "$bin certify --model $MODEL --device flex --sigma 0.25 --n0 100 --n $CERT_N --skip $CERT_SKIP --limit 4 --batch 128 --early-stop --out $run/cert.tsv"
      echo "$py scripts/bench_torch.py certify --data $data --threads $THREADS --sigma 0.25 --n0 100 --n $CERT_N --skip $CERT_SKIP --limit 4 --batch 128" ;;
    pgd)
      echo "$bin attack --model $MODEL --device flex --attack pgd --eps 0.1 --steps 40 --limit 200 --batch 128"
      echo "$py scripts/bench_torch.py pgd --data $data --threads $THREADS --eps 0.1 --steps 40 --limit 200 --batch 128" ;;
    train-cnn)
      echo "$bin train --config configs/fmnist-cnn.toml --device flex --epochs 1 --train-limit 10000 --out $run/t"
      echo "$py scripts/bench_torch.py train-cnn --data $data --threads $THREADS --epochs 1 --train-limit 10000 --eval-limit 10000" ;;
    train-mlp)
      echo "$bin train --config configs/fmnist-mlp.toml --device flex --epochs 2 --train-limit 20000 --out $run/t"
      echo "$py scripts/bench_torch.py train-mlp --data $data --threads $THREADS --epochs 2 --train-limit 20000 --eval-limit 10000" ;;
    train-pgd)
      echo "$bin train --config configs/fmnist-cnn.toml --device flex --mode pgd --epsilon 0.1 --steps 7 --robust-eval-size 0 --epochs 1 --train-limit 2000 --eval-limit 1000 --out $run/t"
      echo "$py scripts/bench_torch.py train-pgd --data $data --threads $THREADS --eps 0.1 --steps 7 --epochs 1 --train-limit 2000 --eval-limit 1000" ;;
    *) echo "bench-vs-pytorch: unknown workload $w" >&2; exit 2 ;;
  esac
}

# Runs one command, appending "seconds peak_kib" to $3.
timed() {
  local cmd=$1 log=$2 out=$3
  /usr/bin/time -f "%e %M" -o "$tmp/time" $cmd >"$log" 2>&1 || { echo "bench-vs-pytorch: failed: $cmd" >&2; cat "$log" >&2; exit 1; }
  cat "$tmp/time" >>"$out"
}

for rep in $(seq "$REPS"); do
  for w in $ONLY; do
    run=$tmp/$w-$rep; mkdir -p "$run"
    mapfile -t cmds < <(commands "$w" "$run")
    echo "bench-vs-pytorch: $w, run $rep of $REPS" >&2
    timed "${cmds[0]}" "$run/rampart.log" "$tmp/$w.rampart"
    timed "${cmds[1]}" "$run/torch.log" "$tmp/$w.torch"
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
torch_version=$($py -c "import torch; print(torch.__version__)")
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), Rampart flex vs PyTorch $torch_version with $THREADS threads, medians of $REPS alternated runs"
echo
echo "| workload | Rampart s | PyTorch s | ratio | Rampart peak MiB | PyTorch peak MiB |"
echo "| --- | --- | --- | --- | --- | --- |"
for w in $ONLY; do
  rs=$(cut -d' ' -f1 "$tmp/$w.rampart" | median); ts=$(cut -d' ' -f1 "$tmp/$w.torch" | median)
  rm_=$(cut -d' ' -f2 "$tmp/$w.rampart" | median); tm=$(cut -d' ' -f2 "$tmp/$w.torch" | median)
  awk -v w="$w" -v rs="$rs" -v ts="$ts" -v rm="$rm_" -v tm="$tm" \
    'BEGIN { printf "| %s | %.2f | %.2f | **%.2f** | %.0f | %.0f |\n", w, rs, ts, rs / ts, rm / 1024, tm / 1024 }'
done
