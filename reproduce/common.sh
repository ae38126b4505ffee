# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file
# Sourced by the numbered scripts: settings from the environment, and how one step runs
# (in the tunemir images by default, or natively with TUNEMIR_RUNNER=native).
#
#   TUNEMIR_RUNNER           docker (default) or native (the `tunemir` on PATH, or TUNEMIR_BIN)
#   TUNEMIR_CACHE_DIR        cache root: datasets/, processed/, representations/, probes/ (~/.tunemir)
#   TUNEMIR_DATASETS         probe datasets (default: gtzan_ff magnatagatune giantsteps_clips emomusic)
#   TUNEMIR_REPRESENTATIONS  NAME or NAME=MODEL entries (default: tune tune_plus clmr)
#   TUNEMIR_CHECKPOINT_<NAME> weights for representation NAME (upper case, - and . as _), e.g.
#                            TUNEMIR_CHECKPOINT_TUNE_PLUS=runs/pretrain/tune_plus-magnatagatune/checkpoints/last.ckpt
#   TUNEMIR_GRID             paper (216 configs, default) or smoke (8)
#   TUNEMIR_SHARD_SIZE       files per extraction shard (256, jukemir's --batch_size)
#   TUNEMIR_GPUS             GPU ids to spread shards over ("0 1 3"; "none" for CPU); default: nvidia-smi's list
#   TUNEMIR_IMAGE_PREFIX     image names are <prefix>/representations_<model>, <prefix>/probe (tunemir)

set -euo pipefail

REPRO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$REPRO_DIR")
RUNNER=${TUNEMIR_RUNNER:-docker}
DATASETS=${TUNEMIR_DATASETS:-gtzan_ff magnatagatune giantsteps_clips emomusic}
REPRESENTATIONS=${TUNEMIR_REPRESENTATIONS:-tune tune_plus clmr}
GRID=${TUNEMIR_GRID:-paper}
SHARD_SIZE=${TUNEMIR_SHARD_SIZE:-256}
TUNEMIR=${TUNEMIR_BIN:-tunemir}
IMAGES=${TUNEMIR_IMAGE_PREFIX:-tunemir}
# The extractor images: each containers/<model>/ folder that pins its model's weights (weights.sha256)
# builds tunemir/representations_<model>; other models run in the probe image.
MODELS_WITH_IMAGES=$(for pin in "$REPO_DIR"/containers/*/weights.sha256; do basename "$(dirname "$pin")"; done | tr '\n' ' ')

die() { echo "error: $*" >&2; exit 2; }
say() { echo "[$(date +%H:%M:%S)] $*"; }

case $RUNNER in
  docker) command -v docker >/dev/null || die "TUNEMIR_RUNNER=docker but docker is not installed; set TUNEMIR_RUNNER=native to use the tunemir on PATH" ;;
  native) command -v "$TUNEMIR" >/dev/null || die "TUNEMIR_RUNNER=native but '$TUNEMIR' is not on PATH: pip install -e '.[handcrafted,train,probe]' (or set TUNEMIR_BIN)" ;;
  *) die "TUNEMIR_RUNNER must be docker or native, not '$RUNNER'" ;;
esac
[[ $SHARD_SIZE =~ ^[1-9][0-9]*$ ]] || die "TUNEMIR_SHARD_SIZE must be a positive integer, not '$SHARD_SIZE'"
case $GRID in paper|smoke) ;; *) die "TUNEMIR_GRID must be paper or smoke, not '$GRID'" ;; esac

CACHE=${TUNEMIR_CACHE_DIR:-$HOME/.tunemir}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
export TUNEMIR_CACHE_DIR=$CACHE
STATE=$CACHE/reproduce  # command lists generated at run time, logs, results
mkdir -p "$STATE"
if [[ $RUNNER == docker ]]; then IN_CACHE=/cache; else IN_CACHE=$CACHE; fi

# Representation entries: NAME or NAME=MODEL (a name of your own for a model's weights).
rep_name() { echo "${1%%=*}"; }
rep_model() { if [[ $1 == *=* ]]; then echo "${1#*=}"; else echo "$1"; fi; }
rep_checkpoint() {  # the TUNEMIR_CHECKPOINT_<NAME> setting of a representation, if any
  local var
  var=TUNEMIR_CHECKPOINT_$(rep_name "$1" | tr '[:lower:].-' '[:upper:]__')
  echo "${!var:-}"
}
for spec in $REPRESENTATIONS; do
  ckpt=$(rep_checkpoint "$spec")
  [[ -z $ckpt || -f $ckpt ]] || die "checkpoint for representation $(rep_name "$spec") not found: $ckpt"
done
# check_models: each representation's model is one of the registry's, as `tunemir models --names`
# lists them (natively, or in the probe image once 0_docker.sh has built it); a model file of your
# own (FILE.py:FUNCTION) is checked by tunemir extract itself.
check_models() {
  local known="" spec model
  if [[ $RUNNER == native ]]; then
    known=$("$TUNEMIR" models --names | tr '\n' ' ')
  elif docker image inspect "$IMAGES/probe" >/dev/null 2>&1; then
    known=$(docker run --rm "$IMAGES/probe" models --names | tr '\n' ' ')
  fi
  [[ -n ${known// /} ]] || return 0
  for spec in $REPRESENTATIONS; do
    model=$(rep_model "$spec")
    if [[ $model != *.py:* && " $known " != *" $model "* ]]; then
      die "representation '$spec': the model must be one of ${known% } (write NAME=MODEL for other names)"
    fi
  done
}

# The synthetic corpus's tasks share one audio set, written by `tunemir data synth`.
source_of() { case $1 in synth|synth_*) echo synth ;; *) echo "$1" ;; esac; }
audio_of() {  # the dataset whose audio a task reads (task.json "audio_from"), else itself
  local task=$CACHE/processed/$1/task.json from=""
  [[ -f $task ]] && from=$(sed -n 's/.*"audio_from": *"\([^"]*\)".*/\1/p' "$task")
  echo "${from:-$1}"
}

first_seen() { awk '!seen[$0]++'; }  # the lines of stdin, repeats dropped, in order
dataset_sources() { for d in $DATASETS; do source_of "$d"; done | first_seen; }
audio_datasets() { for d in $DATASETS; do audio_of "$d"; done | first_seen; }

gpu_ids() {  # the GPUs to use, one id per word; none on a machine without nvidia-smi
  local gpus=${TUNEMIR_GPUS-auto}
  if [[ $gpus == auto ]]; then
    if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true; fi
  elif [[ $gpus != none ]]; then
    echo "$gpus"
  fi
}

docker_env() {  # download overrides travel into the container
  local name
  for name in $(compgen -e | grep -E '^TUNEMIR_(URL_|DATA_MIRROR$)' || true); do printf -- '-e\n%s\n' "$name"; done
}

# run_tunemir [--gpu] ARGS...: one tunemir command, natively or in the probe image (cache at /cache).
run_tunemir() {
  local gpu=0
  if [[ ${1:-} == --gpu ]]; then gpu=1; shift; fi
  if [[ $RUNNER == native ]]; then
    "$TUNEMIR" "$@"
    return
  fi
  local flags=(--rm -u "$(id -u):$(id -g)" -v "$CACHE:/cache" -e TUNEMIR_CACHE_DIR=/cache)
  mapfile -t extra < <(docker_env)
  flags+=("${extra[@]}")
  if (( gpu )) && [[ -n $(gpu_ids) ]]; then flags+=(--gpus all); fi
  docker run "${flags[@]}" "$IMAGES/probe" "$@"
}
