#!/usr/bin/env bash
# Download and verify every dataset's files (`tunemir data download`); the synthetic corpus is
# generated instead (`tunemir data synth`, options in TUNEMIR_SYNTH_ARGS). Interrupted transfers
# resume on the next run; TUNEMIR_DATA_MIRROR and TUNEMIR_URL_<TAG> point at other hosts.
source "$(dirname "$0")/common.sh"

status=0
for source in $(dataset_sources); do
  if [[ $source == synth ]]; then
    say "1_download: generating the synthetic corpus"
    # shellcheck disable=SC2086  # TUNEMIR_SYNTH_ARGS is a list of options
    run_tunemir data synth ${TUNEMIR_SYNTH_ARGS:-} || status=1
  else
    say "1_download: $source"
    run_tunemir data download "$source" || status=1
  fi
done
exit $status
