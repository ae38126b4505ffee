#!/usr/bin/env bash
# `make demo`: the reproduce pipeline natively, end to end, on small data. The synthetic corpus
# (120 clips of 6 s: key, instrument-tag and tempo tasks) -> a small TUNe+ pretrained on its train
# split for a few epochs -> chroma and that TUNe+ extracted in shards -> the smoke probe grid of
# each task -> the results table and its plots. Usage: reproduce/demo.sh [OUTPUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-demo-output}
mkdir -p "$out"
out=$(cd "$out" && pwd)

export TUNEMIR_RUNNER=native
export TUNEMIR_CACHE_DIR=$out/cache
export TUNEMIR_RUNS_DIR=$out/runs
export TUNEMIR_DATASETS="synth_key synth_tags synth_tempo"
export TUNEMIR_REPRESENTATIONS="chroma tune_plus-small=tune_plus"
export TUNEMIR_GRID=smoke
export TUNEMIR_SHARD_SIZE=${TUNEMIR_SHARD_SIZE:-64}
export TUNEMIR_SYNTH_ARGS=${TUNEMIR_SYNTH_ARGS:---clips 120 --seconds 6}
epochs=${TUNEMIR_DEMO_EPOCHS:-6}

timings=()
step() {  # SCRIPT ARGS...: run one script, remember how long it took
  local start=$SECONDS
  "$here/$1" "${@:2}"
  timings+=("$(printf '%-24s %4d s' "$1" $(( SECONDS - start )))")
}

step 1_download.sh
step 2_process.sh
echo "pretraining: a small TUNe+ (2 base channels), $epochs epochs on the synthetic train split"
# shellcheck disable=SC2086  # TUNEMIR_DEMO_TRAIN_ARGS is a list of options
step pretrain.sh --model tune_plus --encoder_config '{"channels": 2, "out_channels": 16}' \
  --dataset synth --name tune_plus-small --batch_size 8 --max_epochs "$epochs" \
  --checkpoint_every_n_epochs 2 --learning_rate 1e-3 --num_workers 0 --log_every_n_steps 1 --no-progress \
  ${TUNEMIR_DEMO_TRAIN_ARGS:-}
export TUNEMIR_CHECKPOINT_TUNE_PLUS_SMALL=$TUNEMIR_RUNS_DIR/pretrain/tune_plus-small/checkpoints/last.ckpt
step 3_extract.sh
step 4_grid_config.sh
step 5_grid_train_serial.sh
step 6_evaluate.sh
printf '%s\n' "${timings[@]}"
echo "demo done: $out (table and plots in $TUNEMIR_CACHE_DIR/reproduce/report)"
