#!/usr/bin/env bash
# A sharded certification on Slurm: an array of SHARDS tasks, each certifying its stripe of
# the test set (`rampart certify` reads $SLURM_ARRAY_TASK_ID as its shard index), then one job,
# run after the whole array succeeds, that merges the shards into results/certify.tsv.
# A requeued task resumes its shard from its .partial file.
#   bash deploy/slurm/certify-array.sh   (submits the array, then the merge after it)
#SBATCH --job-name=rampart-certify
#SBATCH --array=0-7
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --output=results/slurm-%A_%a.out   # the default; submitting through this script uses $RESULTS
set -euo pipefail
SHARDS=${SHARDS:-8}            # = the array's size
MODEL=${MODEL:-models/fmnist-cnn.safetensors}
RESULTS=${RESULTS:-results}
BIN=${BIN:-target/release/rampart}
mkdir -p "$RESULTS"

if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
  # Not inside the array: submit it, and the merge to run once every task has succeeded.
  array=$(sbatch --parsable --array="0-$((SHARDS - 1))" --output="$RESULTS/slurm-%A_%a.out" "$0")
  sbatch --dependency="afterok:$array" --job-name=rampart-merge \
    --output="$RESULTS/slurm-merge-%j.out" --wrap \
    "$BIN merge --out $RESULTS/certify.tsv $RESULTS/shard-*.tsv --json > $RESULTS/certify.json"
  exit 0
fi

"$BIN" certify --model "$MODEL" --sigma 0.25 --n 100000 --alpha 0.001 --skip 20 \
  --shard-count "$SHARDS" --out "$RESULTS/shard-$SLURM_ARRAY_TASK_ID.tsv" --json \
  > "$RESULTS/shard-$SLURM_ARRAY_TASK_ID.json"
