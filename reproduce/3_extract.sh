#!/usr/bin/env bash
# Extract every representation of every dataset's audio, in jukemir's shards (`--batch_size 256
# --batch_idx I`), spread over the GPUs (one worker per GPU; one CPU worker without a GPU).
# The command list is generated now into $TUNEMIR_CACHE_DIR/reproduce/3_extract.commands; shards
# whose files all have their vectors are left out, so a rerun resumes. A failed shard
# does not stop the others: the script lists them at the end (logs in reproduce/logs/) and
# exits 1.
source "$(dirname "$0")/common.sh"

# The audio files as `tunemir extract` lists them: recursive, hidden names skipped, sorted by path
# (byte order, as Python sorts the UTF-8 paths), so shard I is lines I*B .. I*B+B-1.
list_audio() {
  (cd "$1" && find . -name '.?*' -prune -o -type f \( -iname '*.wav' -o -iname '*.flac' -o -iname '*.ogg' -o -iname '*.mp3' \) -print) \
    | sed 's|^\./||' | LC_ALL=C sort
}
sha256() { if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -c1-64; else shasum -a 256 "$1" | cut -c1-64; fi; }

shard_done() {  # OUT CHECKPOINT_SHA256 FILE...: every file of the shard has its vector (written
  local out=$1 digest=$2 file  # atomically), extracted with that checkpoint
  shift 2
  [[ -z $digest ]] || grep -q "$digest" "$out/tunemir-manifest.json" 2>/dev/null || return 1
  for file in "$@"; do [[ -f $out/${file%.*}.npy ]] || return 1; done
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
  mapfile -t files < <(list_audio "$wav")
  n=${#files[@]}
  shards=$(( (n + SHARD_SIZE - 1) / SHARD_SIZE ))
  for spec in $REPRESENTATIONS; do
    out=$CACHE/representations/$audio/$(rep_name "$spec")
    ckpt=$(rep_checkpoint "$spec")
    digest=""
    [[ -z $ckpt ]] || digest=$(sha256 "$ckpt")
    for (( i = 0; i < shards; i++ )); do
      if shard_done "$out" "$digest" "${files[@]:i * SHARD_SIZE:SHARD_SIZE}"; then
        done_shards=$(( done_shards + 1 ))
      else
        echo "$audio $spec $i $shards" >>"$plan.tmp"
      fi
    done
  done
done
mv "$plan.tmp" "$plan"
total=$(wc -l <"$plan")
read -r -a gpus <<<"$(gpu_ids | tr '\n' ' ')"
slots=("${gpus[@]}")
(( ${#slots[@]} )) || slots=(cpu)
say "3_extract: $total shards to run, $done_shards already done; workers: ${slots[*]} ($RUNNER)"

run_shard() {  # SLOT AUDIO SPEC I SHARDS
  local slot=$1 audio=$2 spec=$3 i=$4 shards=$5
  local name model ckpt wav out log args
  name=$(rep_name "$spec"); model=$(rep_model "$spec"); ckpt=$(rep_checkpoint "$spec")
  wav=$CACHE/processed/$audio/wav
  out=$CACHE/representations/$audio/$name
  log=$logs/$audio.$name.$i.log
  args=(--batch_size "$SHARD_SIZE" --batch_idx "$i")
  mkdir -p "$out"
  if [[ $RUNNER == native ]]; then
    [[ -z $ckpt ]] || args+=(--checkpoint "$ckpt")
    if [[ $slot == cpu ]]; then
      "$TUNEMIR" extract "$model" "$wav" "$out" "${args[@]}" >"$log" 2>&1
    else
      CUDA_VISIBLE_DEVICES=$slot "$TUNEMIR" extract "$model" "$wav" "$out" "${args[@]}" >"$log" 2>&1
    fi
  else
    local flags=(--rm -u "$(id -u):$(id -g)" --shm-size 8g -v "$wav:/input:ro" -v "$out:/output")
    [[ $slot == cpu ]] || flags+=(--gpus "device=$slot")
    if [[ -n $ckpt ]]; then
      flags+=(-v "$(cd "$(dirname "$ckpt")" && pwd):/weights:ro")
      args+=(--checkpoint "/weights/$(basename "$ckpt")")
    fi
    if [[ " $MODELS_WITH_IMAGES " == *" $model "* ]]; then
      docker run "${flags[@]}" "$IMAGES/representations_$model" "${args[@]}" >"$log" 2>&1
    else
      docker run "${flags[@]}" "$IMAGES/probe" extract "$model" /input /output "${args[@]}" >"$log" 2>&1
    fi
  fi
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
