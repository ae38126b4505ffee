#!/usr/bin/env bash
# Build the images: the shared base (tunemir and its dependencies on the official PyTorch CUDA
# runtime), then the extractors of the representations in use (weights fetched, checked against
# containers/<model>/weights.sha256 and converted at build time), the trainer and the probe image.
# Natively (TUNEMIR_RUNNER=native) the same weights are fetched into $TUNEMIR_WEIGHTS_DIR instead.
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
    "$TUNEMIR" weights fetch "$model" --pin-file "$REPO_DIR/containers/$model/weights.sha256" \
      --search-dir "$REPO_DIR/containers/$model"
  done
  exit 0
fi

cd "$REPO_DIR"
build() {  # IMAGE DOCKERFILE [ARGS...]
  local image=$1 dockerfile=$2
  shift 2
  say "0_docker: building $image ($dockerfile)"
  DOCKER_BUILDKIT=1 docker build -t "$image" -f "$dockerfile" --build-arg "BASE_IMAGE=$IMAGES/base" "$@" .
}
build "$IMAGES/base" containers/base/Dockerfile
for model in "${models[@]}"; do
  build "$IMAGES/representations_$model" "containers/$model/Dockerfile"
done
build "$IMAGES/trainer" containers/trainer/Dockerfile
build "$IMAGES/probe" probe/Dockerfile
say "0_docker: images built"
