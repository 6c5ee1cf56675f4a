#!/usr/bin/env bash
# Profile prediction end to end on one machine, on CPU (`make demo-profile`):
#
#   1. alignments -> profiles: pipelines.profiles on the bundled Pfam seed alignments (HMMs built
#      with HMMER through pyhmmer) and FAMSA's hemopexin alignment
#   2. train the tiny model with T5X on the `ankh3_profile` mixture: the Ankh3 tasks plus the
#      joint profile task (gin/runs/profile_demo_cpu.gin), validation every 50 steps
#   3. evaluate the last checkpoint with t5x.eval (gin/runs/profile_eval.gin): the profile KL
#      per residue and argmax agreement of the profile task, and every task's accuracy, on
#      EVAL_EXAMPLES validation examples per task, into OUT/eval
#   4. curves: OUT/loss_curves.png (losses per task, accuracies, the profile KL) and
#      OUT/loss_summary.json
#
# Environment: PYTHON (default python3), OUT (default out/profile), STEPS (default 200),
# EVAL_EXAMPLES (default 64). The Ankh3 tasks read the profiles job's records too (they have
# `id` and `sequence`).
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
PYTHON=${PYTHON:-python3}
OUT=$(absolute "${OUT:-$REPO_ROOT/out/profile}")
STEPS=${STEPS:-200}
EVAL_EXAMPLES=${EVAL_EXAMPLES:-64}
cd "$REPO_ROOT"
START=$(date +%s)
log() { echo "[run_profile_demo +$(( $(date +%s) - START ))s] $*"; }
mkdir -p "$OUT/logs"

log "1/4 alignments -> profiles in $OUT/data"
"$PYTHON" -m pipelines.profiles --input=tests/data/profiles/pfam_seeds.sto.gz \
  --input=tests/data/profiles/hemopexin.afa.gz --output_dir="$OUT/data" --overwrite \
  --validation_fraction=0.3 --num_train_shards=4 --num_validation_shards=1 \
  2> "$OUT/logs/profiles.log"

log "2/4 train the tiny profile model for $STEPS steps (full log: $OUT/logs/train.log)"
rm -rf "$OUT/model"
set +e
"$PYTHON" -m t5x.train --gin_file=gin/runs/profile_demo_cpu.gin \
  --gin.MODEL_DIR="'$OUT/model'" --gin.DATA_DIR="'$OUT/data'" \
  --gin.PROFILE_DATA_DIR="'$OUT/data'" --gin.TRAIN_STEPS="$STEPS" \
  --gin.utils.create_learning_rate_scheduler.decay_factor="$(
    "$PYTHON" -c "print(1 / ($STEPS - 40))")" 2>&1 | tee "$OUT/logs/train.log" | sed -unE \
  's/.*\[([0-9]*[05]0)\] collection=training_eval\/ankh3_profile_joint .*profile\/kl_per_residue=([0-9.]+).*/  step \1  validation profile KL per residue \2/p'
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then tail -n 30 "$OUT/logs/train.log" >&2; exit "$status"; fi

log "3/4 t5x.eval of checkpoint_$STEPS -> $OUT/eval (full log: $OUT/logs/eval.log)"
rm -rf "$OUT/eval"
"$PYTHON" -m t5x.eval --gin_file=gin/models/tiny.gin --gin_file=gin/runs/profile_eval.gin \
  --gin.CHECKPOINT_PATH="'$OUT/model/checkpoint_$STEPS'" --gin.EVAL_OUTPUT_DIR="'$OUT/eval'" \
  --gin.DATA_DIR="'$OUT/data'" --gin.PROFILE_DATA_DIR="'$OUT/data'" \
  --gin.TASK_FEATURE_LENGTHS="{'inputs': 128, 'targets': 128}" \
  --gin.Evaluator.num_examples="$EVAL_EXAMPLES" > "$OUT/logs/eval.log" 2>&1 \
  || { tail -n 30 "$OUT/logs/eval.log" >&2; exit 1; }
for metrics in "$OUT"/eval/inference_eval/*-metrics.jsonl; do
  echo "  $(basename "$metrics" -metrics.jsonl): $(cat "$metrics")"
done

log "4/4 curves -> $OUT/loss_curves.png"
"$PYTHON" -m scripts.loss_curves --model_dir="$OUT/model" 2> "$OUT/logs/loss_curves.log"
log "done in $(( $(date +%s) - START ))s"
