#!/usr/bin/env bash
# jukemir's step "123": instead of downloading audio and extracting (steps 1-3), fetch jukemir's
# pre-computed representations of the datasets (`tunemir data download-representations`), each
# archive checked against jukemir's sha256 and unpacked into $TUNEMIR_CACHE_DIR/representations/;
# processed/<dataset>/meta.json comes from jukemir's canonical metadata when no audio was
# processed. Then run 4_grid_config.sh .. 6_evaluate.sh with TUNEMIR_REPRESENTATIONS set to them.
#   TUNEMIR_PRECOMPUTED   which of jukemir's six (default: chroma mfcc choi musicnn clmr jukebox)
#   TUNEMIR_PRECOMPUTED_PREFIX  unpack as <prefix><rep> (e.g. jukemir-, beside your own extractions)
# jukemir's host is gone (since late 2023): set TUNEMIR_DATA_MIRROR (a folder served as
# <mirror>/precomputed/<dataset>-<rep>.tar.gz) or TUNEMIR_URL_PRECOMPUTED_<DATASET>_<REP>.
source "$(dirname "$0")/common.sh"

read -r -a reps <<<"${TUNEMIR_PRECOMPUTED:-chroma mfcc choi musicnn clmr jukebox}"
prefix=()
[[ -z ${TUNEMIR_PRECOMPUTED_PREFIX:-} ]] || prefix=(--prefix "$TUNEMIR_PRECOMPUTED_PREFIX")
status=0
for dataset in $DATASETS; do
  if [[ $(source_of "$dataset") == synth ]]; then
    say "123_precomputed: $dataset is tunemir's synthetic corpus; jukemir published nothing for it, skipped"
    continue
  fi
  say "123_precomputed: $dataset (${reps[*]})"
  run_tunemir data download-representations "$dataset" "${reps[@]}" "${prefix[@]}" || status=1
done
exit $status
