#!/usr/bin/env bash
# Build the images: the shared base (tunemir and its dependencies on the official PyTorch CUDA
# runtime), then the extractors of the representations in use (weights fetched, checked against
# containers/<model>/weights.sha256 and converted at build time), the trainer and the probe image.
# Natively (TUNEMIR_RUNNER=native) the same weights are fetched into $TUNEMIR_WEIGHTS_DIR instead.
# Build settings, from the environment:
#   TUNEMIR_PYTORCH_IMAGE           the image tunemir/base starts from (the Dockerfile's pytorch/pytorch tag)
#   TUNEMIR_WEIGHTS_URL_<MODEL>     where a model's checkpoint is downloaded from (e.g. _TUNE_PLUS; a mirror)
#   TUNEMIR_WEIGHTS_SHA256_<MODEL>  its sha256, instead of the one pinned in containers/<model>/weights.sha256
#   TUNEMIR_WEIGHTS_PIN_FILE_<MODEL> a pin file inside containers/<model>/ read instead of weights.sha256
#                                   (musicnn, whose released folder has a pin per file)
#   TUNEMIR_BUILD_FLAGS             more `docker build` options for every image (--network host, --no-cache)
source "$(dirname "$0")/common.sh"

models=()
for spec in $REPRESENTATIONS; do
  model=$(rep_model "$spec")
  # A representation with its own checkpoint (TUNEMIR_CHECKPOINT_<NAME>) needs no released weights.
  if [[ -z $(rep_checkpoint "$spec") && " $MODELS_WITH_IMAGES " == *" $model "* && " ${models[*]} " != *" $model "* ]]; then
    models+=("$model")
  fi
done

if [[ $RUNNER == native ]]; then
  for model in "${models[@]}"; do
    say "0_docker: released $model weights -> ${TUNEMIR_WEIGHTS_DIR:-~/.cache/tunemir/weights}/$model.safetensors"
    pins=TUNEMIR_WEIGHTS_PIN_FILE_$(echo "$model" | tr '[:lower:]' '[:upper:]')
    "$TUNEMIR" weights fetch "$model" --pin-file "$REPO_DIR/containers/$model/${!pins:-weights.sha256}" \
      --search-dir "$REPO_DIR/containers/$model"
  done
  exit 0
fi

cd "$REPO_DIR"
read -r -a flags <<<"${TUNEMIR_BUILD_FLAGS:-}"
build() {  # IMAGE DOCKERFILE [ARGS...]
  local image=$1 dockerfile=$2 start=$SECONDS
  shift 2
  say "0_docker: building $image ($dockerfile)"
  DOCKER_BUILDKIT=1 docker build -t "$image" -f "$dockerfile" --build-arg "BASE_IMAGE=$IMAGES/base" \
    "${flags[@]}" "$@" .
  say "0_docker: built $image in $(( SECONDS - start )) s"
}
weights_args() {  # MODEL: the --build-arg options of its TUNEMIR_WEIGHTS_URL_/_SHA256_/_PIN_FILE_ settings
  local suffix url sha pins
  suffix=$(echo "$1" | tr '[:lower:]' '[:upper:]')
  url=TUNEMIR_WEIGHTS_URL_$suffix; sha=TUNEMIR_WEIGHTS_SHA256_$suffix; pins=TUNEMIR_WEIGHTS_PIN_FILE_$suffix
  [[ -z ${!url:-} ]] || echo "--build-arg=WEIGHTS_URL=${!url}"
  [[ -z ${!sha:-} ]] || echo "--build-arg=WEIGHTS_SHA256=${!sha}"
  [[ -z ${!pins:-} ]] || echo "--build-arg=PIN_FILE=${!pins}"
}
base_args=()
[[ -z ${TUNEMIR_PYTORCH_IMAGE:-} ]] || base_args=(--build-arg "PYTORCH_IMAGE=$TUNEMIR_PYTORCH_IMAGE")
build "$IMAGES/base" containers/base/Dockerfile "${base_args[@]}"
for model in "${models[@]}"; do
  mapfile -t args < <(weights_args "$model")
  build "$IMAGES/representations_$model" "containers/$model/Dockerfile" "${args[@]}"
done
build "$IMAGES/trainer" containers/trainer/Dockerfile
build "$IMAGES/probe" probe/Dockerfile
say "0_docker: images built"
