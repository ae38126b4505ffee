#!/usr/bin/env bash
# Build each dataset's meta.json and WAVs from the downloads (`tunemir data process`), checked
# against jukemir's canonical metadata. Extra options (e.g. --jobs 8) go in TUNEMIR_PROCESS_ARGS.
source "$(dirname "$0")/common.sh"

status=0
for source in $(dataset_sources); do
  [[ $source != synth ]] || continue  # written processed by 1_download.sh
  say "2_process: $source"
  # shellcheck disable=SC2086  # TUNEMIR_PROCESS_ARGS is a list of options
  run_tunemir data process "$source" ${TUNEMIR_PROCESS_ARGS:-} || status=1
done
exit $status
