#!/usr/bin/env bash
# Write the probe configs of every dataset x representation: jukemir's 216-config paper grid,
# or TUNEMIR_GRID=smoke's 8. Configs already written or trained are kept. A grid folder holds one
# grid: switching TUNEMIR_GRID over a cache that holds the other grid is refused (use another
# TUNEMIR_CACHE_DIR, or delete its probes/ folder).
source "$(dirname "$0")/common.sh"

for dataset in $DATASETS; do
  for spec in $REPRESENTATIONS; do
    run_tunemir probe grid "$dataset" "$(rep_name "$spec")" --grid "$GRID"
  done
done
