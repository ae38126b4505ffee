"""Reference fixtures from the ORIGINAL musicnn (TensorFlow) for tunemir's tests.

Runs in a separate venv that has tensorflow-cpu 2.15, librosa and the musicnn 0.1.0 wheel
(never in tunemir's own environment):

    python3 -m venv /var/tmp/musicnn-tf
    /var/tmp/musicnn-tf/bin/pip install tensorflow_cpu-2.15.1-*.whl librosa
    /var/tmp/musicnn-tf/bin/pip install --no-deps musicnn-0.1.0-py3-none-any.whl
    /var/tmp/musicnn-tf/bin/python benchmarks/musicnn_reference.py tf-checkpoint tests/data/tf_checkpoint \
        [BIG/MSD_musicnn_big/]   # optional: a folder with musicnn@516acb2's MSD_musicnn_big/.index
    /var/tmp/musicnn-tf/bin/python benchmarks/musicnn_reference.py musicnn tests/data/musicnn AUDIO...

`tf-checkpoint` writes a tiny checkpoint with tf.compat.v1.train.Saver plus the values TF
holds, and lists the MSD_musicnn and MTT_musicnn checkpoints as TF reads them (and, given
its prefix, the MSD_musicnn_big index: names, shapes, dtypes; its .data is not needed). `musicnn` runs musicnn's own
`extractor()` on each audio file (the audio is written by tests/test_musicnn.py's
`write_reference_audio`, so the test can regenerate it bit for bit) and saves per file the
sha256, the per-patch `mean_pool`, `max_pool`, `penultimate` and taggram (and for one file
the first patch's log-mel), plus the frame-mean of `timbral` and `temporal`. musicnn's
extractor fills `cnn1..3` and `penultimate` of every patch after the first with the first
patch's values (it unpacks later batches under other names): `cnn1..3` are not kept and only
`penultimate[0]` is meaningful.

Shims, applied at run time (nothing installed is edited):
1. librosa >= 0.10 pads the STFT with zeros (`pad_mode="constant"`); jukemir's image had
   librosa 0.7.0, whose default was `"reflect"`: melspectrogram is wrapped to pass "reflect".
2. musicnn's extractor restores weights inside a bare `except:` (a failed restore would run
   random weights silently): `Saver.restore` is wrapped to record that it ran and succeeded.
Not shimmed: librosa 0.7 resampled with resampy's kaiser_best, librosa 0.11 (here) and tunemir
with soxr HQ, so a file not at 16 kHz matches this reference, not jukemir's image, exactly.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np


def tf_checkpoint(out: Path, big_prefix: str | None = None) -> None:
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    values = {
        "dense/kernel": rng.standard_normal((3, 5)).astype(np.float32),
        "dense/bias": np.float64(np.pi),
        "counts": np.array([1, -2, 2**31 - 1, -(2**31)], np.int32),
        "big/int64": np.array([[2**40, -7], [0, 2**62]], np.int64),
        "half": np.array([0.5, -65504.0, 1e-4], np.float16),
        "flags": np.array([True, False, True]),
        "bytes": np.array([0, 7, 255, 128, 1], np.uint8),
        "conv/kernel": rng.standard_normal((2, 3, 1, 4)).astype(np.float32),
    }
    # 20 names with shared prefixes: exercises prefix compression and the restart array (every 16).
    for i in range(20):
        values[f"layer_with_a_long_shared_prefix/var_{i:02d}"] = np.full((i % 3 + 1,), i, np.float32)
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(v, name=k) for k, v in values.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(out / "tiny"), write_meta_graph=False, write_state=False)
    prefix = str(out / "tiny")
    stored = {name: tf.train.load_variable(prefix, name) for name, _ in tf.train.list_variables(prefix)}
    np.savez(out / "tiny_expected.npz", **{k.replace("/", "__"): np.asarray(v) for k, v in stored.items()})

    import musicnn

    listing = {}
    for model in ("MSD_musicnn", "MTT_musicnn"):
        prefix = str(Path(musicnn.__file__).parent / model) + "/"
        # A prefix ending in "/" reads as a folder to tf.train.list_variables: use the reader.
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)
        listing[model] = {
            name: {"shape": list(shape), "dtype": str(reader.get_tensor(name).dtype),
                   "sum": float(np.sum(reader.get_tensor(name), dtype=np.float64))}
            for name, shape in sorted(reader.get_variable_to_shape_map().items())
        }
    if big_prefix:  # the index alone: the big variant's .data is not stored in the git mirror
        reader = tf.compat.v1.train.NewCheckpointReader(big_prefix)
        dtypes = reader.get_variable_to_dtype_map()
        listing["MSD_musicnn_big"] = {
            name: {"shape": list(shape), "dtype": dtypes[name].name}
            for name, shape in sorted(reader.get_variable_to_shape_map().items())
        }
    (out / "musicnn_variables.json").write_text(json.dumps(listing, indent=1, sort_keys=True))


def musicnn_features(out: Path, audio: list[Path]) -> None:
    import librosa
    import tensorflow as tf

    reflect = librosa.feature.melspectrogram

    def melspectrogram(*args, **kwargs):  # shim 1
        kwargs.setdefault("pad_mode", "reflect")
        return reflect(*args, **kwargs)

    librosa.feature.melspectrogram = melspectrogram
    restored = []
    original_restore = tf.compat.v1.train.Saver.restore

    def restore(self, sess, save_path):  # shim 2
        result = original_restore(self, sess, save_path)
        restored.append(save_path)
        return result

    tf.compat.v1.train.Saver.restore = restore

    from musicnn import extractor

    out.mkdir(parents=True, exist_ok=True)
    for path in audio:
        models = ("MSD_musicnn", "MTT_musicnn") if path.stem == "a_16k" else ("MSD_musicnn",)
        for model in models:
            restored.clear()
            taggram, _, features = extractor.extractor(str(path), model=model, extract_features=True)
            if not restored:
                raise SystemExit(f"musicnn did not restore {model}")
            batch, _ = extractor.batch_data(str(path), 187, 187)
            arrays = {
                "sha256": np.array(hashlib.sha256(path.read_bytes()).hexdigest()),
                "mean_pool": features["mean_pool"].astype(np.float32),
                "max_pool": features["max_pool"].astype(np.float32),
                "penultimate": features["penultimate"].astype(np.float32),
                "taggram": taggram.astype(np.float32),
                "timbral_mean": features["timbral"].reshape(-1, features["timbral"].shape[-1]).mean(0),
                "temporal_mean": features["temporal"].reshape(-1, features["temporal"].shape[-1]).mean(0),
            }
            if path.stem == "a_16k" and model == "MSD_musicnn":  # one log-mel keeps the fixtures small
                # float32: with numpy 1.x, 10000 * (float16 array) promotes to float32.
                arrays["logmel_patch0"] = batch[0].astype(np.float32)
            np.savez_compressed(out / f"{path.stem}.{model}.npz", **arrays)
            print(path.name, model, {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    command, target = sys.argv[1], Path(sys.argv[2])
    if command == "tf-checkpoint":
        tf_checkpoint(target, sys.argv[3] if len(sys.argv) > 3 else None)
    elif command == "musicnn":
        musicnn_features(target, [Path(p) for p in sys.argv[3:]])
    else:
        raise SystemExit("usage: musicnn_reference.py tf-checkpoint DIR [BIG_PREFIX] | musicnn DIR AUDIO...")
