#!/usr/bin/env bash
# Train the probe grids, dataset by dataset: one process per dataset x representation trains all
# its pending configs at once on the GPU (CPU without one). A killed run loses only the configs
# still training; rerunning trains exactly those.
source "$(dirname "$0")/common.sh"

for dataset in $DATASETS; do
  for spec in $REPRESENTATIONS; do
    say "5_grid_train: $dataset x $(rep_name "$spec")"
    run_tunemir --gpu probe train "$dataset" "$(rep_name "$spec")"
  done
done
