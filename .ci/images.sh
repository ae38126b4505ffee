#!/usr/bin/env bash
# CI's image step (after `make test`, whose .venv it uses for the native side): every image built
# by ./reproduce/0_docker.sh with a real engine, then what users type, checked against native
# tunemir:
#   1. the extractor images' jukemir contract on a folder of mixed files (formats, rates, a
#      corrupt file): the native vectors (1e-5), the same report of the bad file, exit 1,
#      --batch_size/--batch_idx shards, outputs readable by the host, a rerun that skips;
#   2. ./reproduce/1_download.sh .. 6_evaluate.sh in Docker mode on the synthetic corpus;
#   3. `docker compose up trainer` (Docker Compose v2 over the engine's API) with a tiny
#      config, whose checkpoint native `tunemir extract --checkpoint` and step 3 read;
#      `docker compose run --rm probe` (steps 4-6 inside the image) gives step 2's results.
# The extractors get test weights: tiny checkpoints laid out as the releases, served on
# 127.0.0.1 and passed as TUNEMIR_WEIGHTS_URL_<MODEL> + TUNEMIR_WEIGHTS_SHA256_<MODEL>, so the
# build's fetch-verify-convert step runs for real; musicnn's, a folder of TensorFlow checkpoint
# files with random weights, goes into containers/musicnn/ with a pin file of its own (PIN_FILE).
# The engine is .ci/engine.sh's podman; when none can be installed the step is skipped, saying
# so. Needs about 25 GB of free disk.
#
#   bash .ci/images.sh          # from the repository root; TUNEMIR_IMAGES_WORK: scratch folder
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
TUNEMIR=$ROOT/.venv/bin/tunemir
CHECK=("$PY" "$ROOT/.ci/images_check.py")
WORK=${TUNEMIR_IMAGES_WORK:-/var/tmp/tunemir-images-ci}
NEED_GB=25
[[ -x $TUNEMIR ]] || { echo "images: no $TUNEMIR: run make test (or make venv) first" >&2; exit 2; }

# shellcheck source=.ci/engine.sh
source .ci/engine.sh
START=$SECONDS
if ! engine_install; then
  echo "images: SKIPPED: no container engine can be installed on this machine (see the line above);" \
       "the images were NOT built or tested" >&2
  exit 0
fi
mkdir -p "$(dirname "$ENGINE_HOME")"
free_gb=$(df -P -BG "$(dirname "$ENGINE_HOME")" | awk 'NR == 2 {print int($4)}')
(( free_gb >= NEED_GB )) || {
  echo "images: only ${free_gb} GB free under $(dirname "$ENGINE_HOME"); building the images needs" \
       "${NEED_GB} GB (set TUNEMIR_ENGINE_HOME to a bigger disk)" >&2; exit 1; }
engine_setup

TIMES=$WORK/times.tsv
rm -rf "$WORK"; mkdir -p "$WORK"
printf 'engine set-up (podman, compose, stand-in base)\t%d\n' $(( SECONDS - START )) >"$TIMES"
step() {  # NAME COMMAND...: run it, record how long it took
  local name=$1 start=$SECONDS
  shift
  echo "=== images: $name" >&2
  "$@"
  printf '%s\t%d\n' "$name" $(( SECONDS - start )) >>"$TIMES"
}
expect_exit() {  # CODE COMMAND...: run it; its exit code must be CODE
  local want=$1 got=0
  shift
  "$@" || got=$?
  (( got == want )) || { echo "images: exit $got, not $want: $*" >&2; return 1; }
}
EXTRACTORS="tune tune_plus clmr musicnn"
MUSICNN_TEST_FOLDER=$ROOT/containers/musicnn/MSD_musicnn_big MUSICNN_TEST_PINS=$ROOT/containers/musicnn/ci.sha256
cleanup() {
  [[ -z ${SERVER_PID:-} ]] || kill "$SERVER_PID" 2>/dev/null || true
  # The extractors hold test weights: none of them may stay tagged as a release.
  for model in $EXTRACTORS; do podman rmi -f "tunemir/representations_$model" >/dev/null 2>&1 || true; done
  [[ -z ${MUSICNN_WRITTEN:-} ]] || rm -rf "$MUSICNN_TEST_FOLDER" "$MUSICNN_TEST_PINS"
  engine_stop
}
trap cleanup EXIT

# --- the test weights, served on 127.0.0.1 ---------------------------------------------------
mkdir -p "$WORK/served"
"${CHECK[@]}" weights "$WORK/served" >"$WORK/weights.txt"
"$PY" -u -m http.server 0 --bind 127.0.0.1 --directory "$WORK/served" >"$WORK/served.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 50); do grep -q "port" "$WORK/served.log" && break; sleep 0.1; done
PORT=$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$WORK/served.log" | head -n 1)
[[ -n $PORT ]] || { echo "images: the weights server did not start: $(cat "$WORK/served.log")" >&2; exit 1; }
while read -r model file sha _; do
  suffix=$(echo "$model" | tr '[:lower:]' '[:upper:]')
  export "TUNEMIR_WEIGHTS_URL_$suffix=http://127.0.0.1:$PORT/$file" "TUNEMIR_WEIGHTS_SHA256_$suffix=$sha"
done <"$WORK/weights.txt"
"${CHECK[@]}" musicnn-folder "$MUSICNN_TEST_FOLDER" "$MUSICNN_TEST_PINS"
MUSICNN_WRITTEN=1
export TUNEMIR_WEIGHTS_PIN_FILE_MUSICNN=ci.sha256
"$TUNEMIR" -q weights fetch musicnn --search-dir containers/musicnn --pin-file "$MUSICNN_TEST_PINS" \
  --output "$WORK/musicnn.safetensors"

# --- build: the reproduce script users run ---------------------------------------------------
export TUNEMIR_RUNNER=docker TUNEMIR_GPUS=none TUNEMIR_PYTORCH_IMAGE=$STAND_IN_BASE
export TUNEMIR_BUILD_FLAGS="--network host"
TUNEMIR_REPRESENTATIONS=$EXTRACTORS step "0_docker.sh (every image)" reproduce/0_docker.sh
while read -r _ file _ _; do  # each build downloaded its weights
  grep -q "GET /$file HTTP/1.[01]\" 200" "$WORK/served.log" || { echo "images: $file was never fetched" >&2; exit 1; }
done <"$WORK/weights.txt"
podman images --format '{{.Repository}}\t{{.Size}}' | grep tunemir >"$WORK/sizes.tsv"
# A wrong pin stops the build: nothing unchecked is converted.
if podman build -q --network host -f containers/tune_plus/Dockerfile --build-arg WEIGHTS_URL="$TUNEMIR_WEIGHTS_URL_TUNE_PLUS" \
    --build-arg WEIGHTS_SHA256="$(printf '0%.0s' {1..64})" -t tunemir-ci/wrong-pin . >"$WORK/wrong-pin.log" 2>&1; then
  echo "images: a build with a wrong sha256 pin succeeded" >&2; exit 1
fi
grep -q "sha256" "$WORK/wrong-pin.log" || { echo "images: the wrong pin's error names no sha256" >&2; exit 1; }
[[ -z $(podman run --rm --entrypoint find tunemir/representations_tune_plus / -xdev -name '*.ckpt') ]] \
  || { echo "images: a checkpoint was left in the tune_plus image" >&2; exit 1; }
[[ -z $(podman run --rm --entrypoint find tunemir/representations_musicnn / -xdev -name '.data-0000*') ]] \
  || { echo "images: the TensorFlow checkpoint was left in the musicnn image" >&2; exit 1; }

# --- 1. the extraction contract ---------------------------------------------------------------
cd "$WORK"
"${CHECK[@]}" inputs wavs
ckpt() {  # MODEL: its checkpoint, for native extraction
  if [[ $1 == musicnn ]]; then echo "$WORK/musicnn.safetensors"; else awk -v m="$1" '$1 == m {print $4}' "$WORK/weights.txt"; fi
}
contract() {
  local model
  mkdir -p out
  for model in $EXTRACTORS; do
    expect_exit 1 "$TUNEMIR" -q extract "$model" wavs "native-$model" --checkpoint "$(ckpt "$model")" --workers 0 --device cpu
    # As the image's own user (uid 1000) into a folder anyone may write, and as the host user.
    mkdir -m 1777 "out/$model"
    expect_exit 1 docker run --rm -v "$WORK/wavs:/input:ro" -v "$WORK/out/$model:/output" "tunemir/representations_$model" --workers 0
    "${CHECK[@]}" same "native-$model" "out/$model" --uid 1000
  done
  mkdir out/as-host
  expect_exit 1 docker run --rm -u "$(id -u):$(id -g)" -v "$WORK/wavs:/input:ro" -v "$WORK/out/as-host:/output" \
    tunemir/representations_tune_plus --workers 0
  "${CHECK[@]}" same native-tune_plus out/as-host --uid "$(id -u)"
  # A second run finds every vector done and writes nothing.
  expect_exit 1 docker run --rm -v "$WORK/wavs:/input:ro" -v "$WORK/out/tune_plus:/output" tunemir/representations_tune_plus --workers 0
  "${CHECK[@]}" same native-tune_plus out/tune_plus --uid 1000 --skipped 7
  # jukemir's shards: 8 audio files in shards of 3; the shards' union is the whole.
  mkdir -m 1777 out/shards
  for i in 0 1 2; do
    docker run --rm -v "$WORK/wavs:/input:ro" -v "$WORK/out/shards:/output" tunemir/representations_tune_plus \
      --workers 0 --batch_size 3 --batch_idx "$i" || true
  done
  docker run --rm -v "$WORK/wavs:/input:ro" -v "$WORK/out/shards:/output" tunemir/representations_tune_plus \
    --batch_size 3 --list-shards >shards.txt
  # Sorted by path, broken.wav falls in shard 0: its failure keeps that shard to do.
  [[ $(cat shards.txt) == $'0 todo\n1 done\n2 done' ]] || { echo "images: shard states: $(cat shards.txt)" >&2; exit 1; }
  "${CHECK[@]}" same native-tune_plus out/shards --uid 1000
}
step "extraction contract (4 images, 8 runs)" contract

# --- 2 and 3: the reproduce scripts in Docker mode, compose -----------------------------------
export TUNEMIR_CACHE_DIR=$WORK/cache TUNEMIR_RUNS_DIR=$WORK/runs TUNEMIR_GRID=smoke TUNEMIR_SHARD_SIZE=32
export TUNEMIR_DATASETS="synth_key synth_tags synth_tempo" TUNEMIR_SYNTH_ARGS="--clips 60 --seconds 4"
export TUNEMIR_REPRESENTATIONS="chroma tune_plus"
compose=(docker compose -f "$ROOT/docker-compose.yml" -f "$ROOT/.ci/compose/ci.yml" --project-directory "$ROOT")
step "docker compose config" "${compose[@]}" --profile '*' config --quiet
step "1_download.sh (synthetic corpus)" "$ROOT/reproduce/1_download.sh"
step "2_process.sh" "$ROOT/reproduce/2_process.sh"
# The services run as TUNEMIR_USER (1000:1000 unless set): here, as the host user, like the scripts.
TUNEMIR_USER="$(id -u):$(id -g)"
export TUNEMIR_USER
mkdir -p runs
# Compose builds through the engine's API (the classic builder: podman has no BuildKit) on the base
# 0_docker.sh built, then starts the trainer from that image.
step "docker compose build trainer probe" "${compose[@]}" --profile probe build trainer probe
step "docker compose up trainer (2 epochs)" "${compose[@]}" up --abort-on-container-exit trainer
"${compose[@]}" down >/dev/null 2>&1
# Up again (as after a crash): --resume auto finds the run finished and writes nothing over it.
trained=$(sha256sum runs/pretrain/ci-small/checkpoints/last.ckpt)
step "docker compose up trainer again (resumes: nothing to do)" "${compose[@]}" up --abort-on-container-exit trainer
"${compose[@]}" down >/dev/null 2>&1
[[ $(sha256sum runs/pretrain/ci-small/checkpoints/last.ckpt) == "$trained" ]] \
  || { echo "images: the second docker compose up trainer changed the first run's checkpoint" >&2; exit 1; }
# From here on, a third representation: the weights just trained, extracted by the tune_plus image.
export TUNEMIR_REPRESENTATIONS="chroma tune_plus ci=tune_plus"
export TUNEMIR_CHECKPOINT_CI=$WORK/runs/pretrain/ci-small/checkpoints/last.ckpt
[[ -f $TUNEMIR_CHECKPOINT_CI ]] || { echo "images: the trainer left no $TUNEMIR_CHECKPOINT_CI" >&2; exit 1; }
"$TUNEMIR" -q extract tune_plus cache/processed/synth/wav native-ci --checkpoint "$TUNEMIR_CHECKPOINT_CI" \
  --workers 0 --device cpu --batch_size 4 --batch_idx 0
for script in 3_extract.sh 4_grid_config.sh 5_grid_train_serial.sh 6_evaluate.sh; do
  step "$script" "$ROOT/reproduce/$script"
done
"${CHECK[@]}" same native-ci cache/representations/synth/ci --uid "$(id -u)" --subset
grep -q "| ci |" cache/reproduce/report/results.md || { echo "images: no ci row in the report" >&2; exit 1; }

# An extractor service: the same outputs and report as `docker run`. Not its exit code: over
# podman 4.3's API, Compose's `run` exits 0 whatever the container's (the API's wait answers it;
# README, "Compose"), so every compose step here is judged by what it wrote.
mkdir -m 1777 out/compose
TUNEMIR_INPUT="$WORK/wavs" TUNEMIR_OUTPUT="$WORK/out/compose" "${compose[@]}" --profile extract run --rm tune_plus --workers 0
"${CHECK[@]}" same native-tune_plus out/compose --uid "$(id -u)"

# The probe service: steps 4-6 inside the image, over a copy of the features, on one task (torch
# runs 20-30x slower in containers that podman's API creates here: BENCHMARKS.md).
mkdir -p cache2
cp -a cache/processed cache/representations cache2/
step "docker compose run --rm probe (4-6, one task)" env TUNEMIR_CACHE_DIR="$WORK/cache2" \
  TUNEMIR_DATASETS=synth_key TUNEMIR_REPRESENTATIONS="tune_plus ci=tune_plus" "${compose[@]}" --profile probe run --rm probe
"${CHECK[@]}" results cache/reproduce/results cache2/reproduce/results
cat cache2/reproduce/report/results.md

printf 'all of .ci/images.sh\t%d\n' $(( SECONDS - START )) >>"$TIMES"
echo "=== images: times (s)"; cat "$TIMES"
echo "=== images: sizes"; cat "$WORK/sizes.tsv"
echo "images: all checks passed"
