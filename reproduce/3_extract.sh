#!/usr/bin/env bash
# Extract every representation of every dataset's audio, in jukemir's shards (`--batch_size 256
# --batch_idx I`), spread over the GPUs (one worker per GPU; one CPU worker without a GPU).
# The command list is generated now into $TUNEMIR_CACHE_DIR/reproduce/3_extract.commands; shards
# that `tunemir extract --list-shards` calls done (every file has its vector, computed from the
# audio as it is now, with these settings) are left out, so a rerun resumes. A failed shard
# does not stop the others: the script lists them at the end (logs in reproduce/logs/) and
# exits 1.
source "$(dirname "$0")/common.sh"
check_models

# tunemir_extract SLOT AUDIO SPEC ARGS...: `tunemir extract` of one representation of a dataset's
# audio, natively or in its image (on GPU SLOT, or "cpu"), with extra ARGS (shard, --list-shards).
tunemir_extract() {
  local slot=$1 audio=$2 spec=$3
  shift 3
  local model ckpt wav out args=("$@")
  model=$(rep_model "$spec"); ckpt=$(rep_checkpoint "$spec")
  wav=$CACHE/processed/$audio/wav
  out=$CACHE/representations/$audio/$(rep_name "$spec")
  mkdir -p "$out"
  if [[ $RUNNER == native ]]; then
    [[ -z $ckpt ]] || args+=(--checkpoint "$ckpt")
    if [[ $slot == cpu ]]; then
      "$TUNEMIR" extract "$model" "$wav" "$out" "${args[@]}"
    else
      CUDA_VISIBLE_DEVICES=$slot "$TUNEMIR" extract "$model" "$wav" "$out" "${args[@]}"
    fi
  else
    local flags=(--rm -u "$(id -u):$(id -g)" --shm-size 8g -v "$wav:/input:ro" -v "$out:/output")
    [[ $slot == cpu ]] || flags+=(--gpus "device=$slot")
    if [[ -n $ckpt ]]; then
      flags+=(-v "$(cd "$(dirname "$ckpt")" && pwd):/weights:ro")
      args+=(--checkpoint "/weights/$(basename "$ckpt")")
    fi
    if [[ " $MODELS_WITH_IMAGES " == *" $model "* ]]; then
      docker run "${flags[@]}" "$IMAGES/representations_$model" "${args[@]}"
    else
      # librosa's numba code, compiled by the first container (about 13 s) and cached for the
      # others; numba keys its cache by CPU, so a cache moved to another machine recompiles.
      mkdir -p "$STATE/numba"
      flags+=(-v "$STATE/numba:/numba" -e NUMBA_CACHE_DIR=/numba)
      docker run "${flags[@]}" "$IMAGES/probe" extract "$model" /input /output "${args[@]}"
    fi
  fi
}

plan=$STATE/3_extract.commands
failed=$STATE/3_extract.failed
logs=$STATE/logs/3_extract
mkdir -p "$logs"
: >"$plan.tmp"
: >"$failed"
done_shards=0
for audio in $(audio_datasets); do
  wav=$CACHE/processed/$audio/wav
  [[ -d $wav ]] || die "no audio for $audio in $wav: run ./reproduce/2_process.sh first"
  for spec in $REPRESENTATIONS; do
    # Which shards are done is the CLI's call (the files it lists, their vectors and sources).
    listing=$logs/$audio.$(rep_name "$spec").shards
    tunemir_extract cpu "$audio" "$spec" --batch_size "$SHARD_SIZE" --list-shards >"$listing" 2>"$listing.log" \
      || die "cannot plan the shards of $audio $(rep_name "$spec"): $(tail -n 3 "$listing.log")"
    shards=$(grep -c . "$listing" || true)
    while read -r i state; do
      if [[ $state == "done" ]]; then
        done_shards=$(( done_shards + 1 ))
      else
        echo "$audio $spec $i $shards" >>"$plan.tmp"
      fi
    done <"$listing"
  done
done
mv "$plan.tmp" "$plan"
total=$(wc -l <"$plan")
read -r -a gpus <<<"$(gpu_ids | tr '\n' ' ')"
slots=("${gpus[@]}")
(( ${#slots[@]} )) || slots=(cpu)
say "3_extract: $total shards to run, $done_shards already done; workers: ${slots[*]} ($RUNNER)"

run_shard() {  # SLOT AUDIO SPEC I SHARDS
  local slot=$1 audio=$2 spec=$3 i=$4
  tunemir_extract "$slot" "$audio" "$spec" --batch_size "$SHARD_SIZE" --batch_idx "$i" \
    >"$logs/$audio.$(rep_name "$spec").$i.log" 2>&1
}

worker() {  # SLOT INDEX COUNT: every COUNT-th line of the plan, from line INDEX
  local slot=$1 index=$2 count=$3 k=0 audio spec i shards
  while read -r audio spec i shards; do
    if (( k++ % count == index )); then
      if run_shard "$slot" "$audio" "$spec" "$i" "$shards"; then
        say "$audio $(rep_name "$spec") shard $((i + 1))/$shards on $slot: done"
      else
        say "$audio $(rep_name "$spec") shard $((i + 1))/$shards on $slot: FAILED, see $logs/$audio.$(rep_name "$spec").$i.log"
        echo "$audio $spec $i" >>"$failed"
      fi
    fi
  done <"$plan"
}

for k in "${!slots[@]}"; do
  worker "${slots[$k]}" "$k" "${#slots[@]}" &
done
wait
if [[ -s $failed ]]; then
  say "3_extract: $(wc -l <"$failed") of $total shards failed (listed in $failed); the rest are done. Fix the files named in the logs and rerun this script: finished shards are skipped."
  exit 1
fi
say "3_extract: all shards done; features in $CACHE/representations"
