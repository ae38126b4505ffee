#!/usr/bin/env bash
# Build every image with podman and check the extraction contract against the native CLI
# (`make test`'s .venv must exist). Run from the repository root: bash .ci/images.sh
# Groundwork for issue 15: not yet run by .ci/run. Measured from an empty podman storage:
# 231 s (stand-in base 55 s, tunemir/base 137 s, the rest seconds); disk peak +21 GB, +5.5 GB after.
set -euo pipefail
t() { local s; s=$(date +%s); "$@"; echo "TIME $(( $(date +%s)-s ))s: $*" >&2; }
ROOT=$PWD; WORK=${IMAGES_WORK:-/var/tmp/images-ci}; rm -rf "$WORK"; mkdir -p "$WORK"
# shellcheck source=/dev/null
t source "$ROOT/../shared/tools/podman-here.sh"
t podman build -q -f containers/base/Dockerfile --build-arg PYTORCH_IMAGE="$PODMAN_PYBASE" -t tunemir/base .
t podman build -q -f containers/trainer/Dockerfile -t tunemir/trainer .
t podman build -q -f probe/Dockerfile -t tunemir/probe .
# An extractor image from a tiny checkpoint named as the release, in a copy of the context.
git ls-files -z | tar --null -T - -cf - | tar -C "$WORK" -xf - 2>/dev/null || (cd "$ROOT" && tar --exclude=./.venv --exclude=./.git -cf - .) | tar -C "$WORK" -xf -
CKPT=$(.venv/bin/python -c "from pathlib import Path; from tunemir.testing import write_released_weights; print(write_released_weights(Path('$WORK/containers/tune_plus'), 'tune_plus')[0])")
SHA=$(sha256sum "$CKPT" | cut -d' ' -f1)
(cd "$WORK" && t podman build -q -f containers/tune_plus/Dockerfile --build-arg WEIGHTS_SHA256="$SHA" -t tunemir/representations_tune_plus .)
podman run --rm tunemir/base --help >/dev/null; podman run --rm tunemir/base models
podman run --rm tunemir/trainer --help >/dev/null; podman run --rm tunemir/probe >/dev/null
.venv/bin/python -c "
from pathlib import Path; from tunemir.testing import write_audio
p = Path('$WORK/wavs'); (p / 'sub').mkdir(parents=True)
write_audio(p / 'a.wav', 3.0, seed=1); write_audio(p / 'b.wav', 5.0, sample_rate=44100, channels=2, seed=2)
write_audio(p / 'sub' / 'c.wav', 2.5, seed=3)"
cd "$WORK"; mkdir out-base out-chroma out-w out-other; chown 1000:1000 out-base out-chroma out-w; chmod 1777 out-other
t podman run --rm -v "$WORK"/wavs:/input:ro -v "$WORK"/out-base:/output tunemir/base extract tune_plus /input /output --random-init --workers 0
t podman run --rm -v "$WORK"/wavs:/input:ro -v "$WORK"/out-chroma:/output tunemir/base extract chroma /input /output --workers 0
t podman run --rm -v "$WORK"/wavs:/input:ro -v "$WORK"/out-w:/output tunemir/representations_tune_plus --workers 0
t podman run --rm -u 4321:4321 -v "$WORK"/wavs:/input:ro -v "$WORK"/out-other:/output tunemir/representations_tune_plus --workers 0
"$ROOT/.venv/bin/tunemir" -q extract tune_plus wavs native-base --random-init --workers 0 --device cpu
"$ROOT/.venv/bin/tunemir" -q extract chroma wavs native-chroma --workers 0
"$ROOT/.venv/bin/tunemir" -q extract tune_plus wavs native-w --checkpoint "$CKPT" --workers 0 --device cpu
"$ROOT/.venv/bin/python" - <<'PY'
import numpy as np
from pathlib import Path
for native, image in [("native-base", "out-base"), ("native-chroma", "out-chroma"), ("native-w", "out-w"), ("native-w", "out-other")]:
    for f in sorted(Path(native).rglob("*.npy")):
        if ".tunemir" in str(f): continue
        x, y = np.load(f), np.load(Path(image) / f.relative_to(native))
        assert np.isfinite(y).all() and np.allclose(x, y, rtol=1e-5, atol=1e-5), (image, f)
        print("same", image, f.relative_to(native), y.shape)
PY
podman image ls
