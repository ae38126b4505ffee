#!/usr/bin/env bash
# For every dataset x representation: the config best on valid and its test metrics (JSON in
# reproduce/results/), then the results table beside the TUNe paper's numbers and the plots
# (reproduce/report/: results.md, results.csv, test_scores.png, valid_scores.png).
# Each grid must be exactly $TUNEMIR_GRID's configs, all trained (the CLI knows the grids);
# TUNEMIR_EXPECTED_RUNS=N checks only the number of trained configs instead, as jukemir does.
source "$(dirname "$0")/common.sh"

if [ -n "${TUNEMIR_EXPECTED_RUNS:-}" ]; then
  expect=(--expected-num-runs "$TUNEMIR_EXPECTED_RUNS")
else
  expect=(--grid "$GRID")
fi
mkdir -p "$STATE/results"
filters=()
for dataset in $DATASETS; do
  filters+=(--dataset "$dataset")
  for spec in $REPRESENTATIONS; do
    name=$(rep_name "$spec")
    run_tunemir probe evaluate "$dataset" "$name" "${expect[@]}" \
      --output "$IN_CACHE/reproduce/results/$dataset.$name.json" >/dev/null
  done
done
for spec in $REPRESENTATIONS; do filters+=(--representation "$(rep_name "$spec")"); done
run_tunemir probe report --output-dir "$IN_CACHE/reproduce/report" "${filters[@]}"
