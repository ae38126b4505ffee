#!/usr/bin/env bash
# Optional: pretrain an encoder with CLMR's contrastive learning (`tunemir train`; the TUNe
# paper's recipe unless options say otherwise), natively or in the trainer image (what
# `docker compose up trainer` runs). Options are passed on: ./reproduce/pretrain.sh --max_epochs 1000
# Runs go to $TUNEMIR_RUNS_DIR (./runs); then extract with your weights:
#   TUNEMIR_CHECKPOINT_TUNE_PLUS=runs/pretrain/tune_plus-magnatagatune/checkpoints/last.ckpt ./reproduce/3_extract.sh
source "$(dirname "$0")/common.sh"

runs=${TUNEMIR_RUNS_DIR:-runs}
mkdir -p "$runs"
if [[ $RUNNER == native ]]; then
  "$TUNEMIR" train --output_dir "$runs/pretrain" "$@"
else
  flags=(--rm -u "$(id -u):$(id -g)" --shm-size 16g -v "$CACHE:/cache" -v "$(cd "$runs" && pwd):/workspace/runs")
  [[ -z $(gpu_ids) ]] || flags+=(--gpus all)
  docker run "${flags[@]}" "$IMAGES/trainer" --output_dir runs/pretrain "$@"
fi
