#!/usr/bin/env bash
# The main job (`make demo`): the whole system end to end on one machine, on CPU.
#
#   1. preprocess the bundled UniRef50 sample with pipelines/ (Beam, DirectRunner)
#   2. train the tiny Ankh3 model with T5X on the `ankh3_pretrain` mixture (gin/runs/demo_cpu.gin)
#   3. write the loss curves per task (OUT/loss_curves.png, OUT/loss_summary.json)
#   4. evaluate the last checkpoint on every task's validation split (gin/runs/eval.gin)
#   5. generate from two prompts: a completion and masked residues (gin/runs/infer.gin)
#
# Environment: PYTHON (default python3), SAMPLE (FASTA input, default the bundled sample),
# OUT (default out/sample in the repository). Relative paths are taken from the current
# directory. Every run starts from scratch in OUT; the full logs of the T5X steps are in
# OUT/logs/. Without T5X it stops after step 1 and says how to install it.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)

# T5X's checkpointer (orbax) refuses relative checkpoint paths.
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
PYTHON=${PYTHON:-python3}
SAMPLE=$(absolute "${SAMPLE:-$REPO_ROOT/tests/data/uniref50_sample.fasta.gz}")
OUT=$(absolute "${OUT:-$REPO_ROOT/out/sample}")
# T5X's gin search path '.' and `import tasks` need the repository root as working directory.
cd "$REPO_ROOT"
# The demo's feature lengths (gin/runs/demo_cpu.gin); evaluation must crop as training did.
FEATURE_LENGTHS="{'inputs': 128, 'targets': 128}"
START=$(date +%s)

log() { echo "[run_sample +$(( $(date +%s) - START ))s] $*"; }

# run_logged NAME SED_SCRIPT COMMAND...: the full output goes to OUT/logs/NAME.log and the lines
# SED_SCRIPT prints are shown as progress; on failure, the end of the log is shown.
run_logged() {
  local name=$1 progress=$2
  shift 2
  local log_file="$OUT/logs/$name.log"
  set +e
  "$@" 2>&1 | tee "$log_file" | sed -unE "$progress"
  local status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    echo "ERROR: $name failed (exit $status); the last lines of $log_file:" >&2
    tail -n 30 "$log_file" >&2
    exit "$status"
  fi
}

mkdir -p "$OUT/logs"

# A validation fraction of 0.1 puts ~85 of the sample's ~900 clusters in validation: enough for
# the 4 evaluation batches of 16 per task (gin/runs/demo_cpu.gin) without repeating an example,
# while the default (0.005, sized for UniRef50's ~60 M clusters) would leave ~5 sequences.
log "1/5 preprocess $SAMPLE -> $OUT/data"
"$PYTHON" -m pipelines.uniref --input="$SAMPLE" --output_dir="$OUT/data" --release=sample \
  --overwrite --validation_fraction=0.1 --num_train_shards=4 --num_validation_shards=1

if ! missing=$("$PYTHON" -c 'import t5x.train' 2>&1); then
  cat >&2 <<EOF
ERROR: T5X is not importable, so the main job stops before training (the preprocessed data is in
$OUT/data). Python said:
$(echo "$missing" | tail -n 1)
Install T5X and the two libraries it needs that are not on PyPI, pinned to tested commits:
  $PYTHON -m pip install --no-deps -r requirements-t5x.txt
then run this again (make demo).
EOF
  exit 1
fi

log "2/5 train the tiny model with T5X on ankh3_pretrain (gin/runs/demo_cpu.gin; full log: $OUT/logs/train.log)"
rm -rf "$OUT/model"
run_logged train \
  's/.*\[([0-9]*[05]0)\] collection=train .*loss_per_nonpadding_target_token=([0-9.]+).*/  step \1  train loss \2/p;
   s/.*\[([0-9]+)\] collection=training_eval\/([a-z0-9_]+) .*loss_per_nonpadding_target_token=([0-9.]+).*/  step \1  validation loss \3  \2/p' \
  "$PYTHON" -m t5x.train --gin_file=gin/runs/demo_cpu.gin \
    --gin.MODEL_DIR="'$OUT/model'" --gin.DATA_DIR="'$OUT/data'"

log "3/5 loss curves -> $OUT/loss_curves.png"
"$PYTHON" -m scripts.loss_curves --model_dir="$OUT/model" 2> "$OUT/logs/loss_curves.log"

CHECKPOINT=$(ls -d "$OUT"/model/checkpoint_* | sort -t_ -k2 -n | tail -n 1)
log "4/5 evaluate $CHECKPOINT on the validation split of each task (gin/runs/eval.gin)"
rm -rf "$OUT/eval"
run_logged eval 's/.*loggers.py:[0-9]+\] (.* at step [0-9]+: .*)/  \1/p' \
  "$PYTHON" -m t5x.eval --gin_file=gin/models/tiny.gin --gin_file=gin/runs/eval.gin \
    --gin.CHECKPOINT_PATH="'$CHECKPOINT'" --gin.EVAL_OUTPUT_DIR="'$OUT/eval'" \
    --gin.DATA_DIR="'$OUT/data'" --gin.TASK_FEATURE_LENGTHS="$FEATURE_LENGTHS"

log "5/5 generate: a completion of MKAYVL and the masked residues of M_AY_LI_SRG_ (gin/runs/infer.gin)"
rm -rf "$OUT/infer"
"$PYTHON" -m scripts.write_prompts --output="$OUT/prompts.tfrecord" \
  --prefix=MKAYVL --masked=M_AY_LI_SRG_ 2> "$OUT/logs/write_prompts.log"
run_logged infer 's/.*infer.py:[0-9]+\] (DONE)/  \1/p' \
  "$PYTHON" -m t5x.infer --gin_file=gin/models/tiny.gin --gin_file=gin/runs/infer.gin \
    --gin.CHECKPOINT_PATH="'$CHECKPOINT'" --gin.INFER_OUTPUT_DIR="'$OUT/infer'" \
    --gin.TF_EXAMPLE_FILE_PATHS="['$OUT/prompts.tfrecord']" \
    --gin.FEATURE_LENGTHS="$FEATURE_LENGTHS"
cat "$OUT"/infer/*-predict.jsonl-00000-of-00001

log "done in $(( $(date +%s) - START ))s: data $OUT/data, model $OUT/model, curves $OUT/loss_curves.png, eval $OUT/eval/inference_eval, predictions $OUT/infer"
