"""Helpers shared by the tests, the demo and the benchmarks: tiny models and synthetic audio."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from tunemir.models import MUSICNN_WHEEL, MUSICNN_WHEEL_SHA256, MusicnnConfig, SampleCNNConfig, TuneConfig, build_model

#: Same topology as the released models with a few channels, so tests run in milliseconds.
TINY_CONFIGS = {
    "clmr": SampleCNNConfig((4, 4, 4, 8, 8, 8, 8, 8, 8, 16, 16)),
    "tune": TuneConfig(channels=2, out_channels=16),
    "tune_plus": TuneConfig(channels=2, out_channels=16, plus=True),
    "musicnn": MusicnnConfig(midend_filters=8, backend_units=8, timbral_filters=4, temporal_filters=4),
}


def tiny_model(name: str, seed: int = 0):
    """A tiny encoder of `name`'s topology with random weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = build_model(name, TINY_CONFIGS[name])
    randomize_batchnorm(model, seed)
    return model.eval()


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm random affine parameters and running statistics, so eval-mode
    outputs depend on all of a checkpoint's tensors (fresh BN is the identity)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            n = module.num_features
            with torch.no_grad():
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                module.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))


def save_tiny_checkpoint(path: Path, name: str, seed: int = 0) -> torch.nn.Module:
    """Write a tiny model in tunemir's format and return the model."""
    from tunemir.checkpoints import save_checkpoint

    model = tiny_model(name, seed)
    save_checkpoint(path, model.state_dict(), model=name, config=dataclasses.asdict(TINY_CONFIGS[name]))
    return model


def write_released_weights(folder: Path, name: str, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """A tiny `name` encoder saved in `folder` as its released file is (`tunemir.weights`): a
    Lightning `.ckpt` named like the release, inside the release zip for CLMR. Returns the file
    and the encoder."""
    import io
    import zipfile

    from tunemir.weights import release

    rel = release(name)
    if rel.is_folder:
        return write_musicnn_folder(folder / rel.filename, seed=seed)
    model = tiny_model(name, seed)
    checkpoint = {"pytorch-lightning_version": "1.8.6", "epoch": 9999, "global_step": 10,
                  "state_dict": {f"model.encoder.{k}": v for k, v in model.state_dict().items()}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / rel.filename
    if rel.member is None:
        torch.save(checkpoint, path)
    else:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(rel.member, buffer.getvalue())
    return path, model


def write_musicnn_folder(folder: Path, seed: int = 0, config: MusicnnConfig | None = None) -> tuple[Path, torch.nn.Module]:
    """A random-weight musicnn (default MSD_musicnn_big's size, as `tunemir weights fetch musicnn`
    requires) written as TensorFlow checkpoint files laid out as the release's folder
    (`folder/.index`, `folder/.data-00000-of-00001`). Returns the folder and the model."""
    from tunemir.models import get_info
    from tunemir.models.musicnn import Musicnn
    from tunemir.testing.tf_writer import write_checkpoint

    torch.manual_seed(seed)
    model = Musicnn(config or get_info("musicnn").config)
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():  # non-trivial BN statistics, so every tensor's mapping counts
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.rand(module.num_features, generator=gen) - 0.5)
            module.running_var.copy_(0.5 + 1.5 * torch.rand(module.num_features, generator=gen))
    write_checkpoint(f"{folder}/", model.to_tf_variables())
    return folder, model.eval()


#: hearvalidator 2021.0.2 (PyPI), HEAR 2021's own API checker; `.ci/run` downloads it (no deps).
HEAR_VALIDATOR_WHEEL = "hearvalidator-2021.0.2-py3-none-any.whl"
HEAR_VALIDATOR_SHA256 = "33db60b5d543dac684f77de3939e5b47997c58c030b57457736681c00d3c81f0"


def hear_validator_wheel() -> Path:
    """The hearvalidator wheel for the tests: $TUNEMIR_HEAR_VALIDATOR_WHEEL. Without it the calling
    test skips, or fails when $CI is set; a file that is not the release fails."""
    return _ci_wheel("TUNEMIR_HEAR_VALIDATOR_WHEEL", HEAR_VALIDATOR_WHEEL, HEAR_VALIDATOR_SHA256, "hearvalidator==2021.0.2")


def _ci_wheel(variable: str, name: str, sha256: str, requirement: str) -> Path:
    import hashlib
    import os

    import pytest

    path = Path(os.environ.get(variable) or Path("~/.cache/tunemir").expanduser() / name)
    if not path.is_file():
        message = f"{path} not found: `pip download --no-deps {requirement}` and set {variable} to the wheel"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run these tests, never skip")
        pytest.skip(message)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == sha256, f"{path} is not the released {name} (sha256 {digest})"
    return path


def musicnn_wheel() -> Path:
    """The released musicnn wheel for the tests: $TUNEMIR_MUSICNN_WHEEL (`.ci/run` downloads it
    from PyPI). Without it the calling test skips, or fails when $CI is set; a file that is not
    the release fails."""
    return _ci_wheel("TUNEMIR_MUSICNN_WHEEL", MUSICNN_WHEEL, MUSICNN_WHEEL_SHA256, "musicnn==0.1.0")


def dev_tool(name: str) -> str | None:
    """A console script of the `[dev]` extra (hadolint, check-jsonschema, shellcheck): beside this
    interpreter, else on PATH; None when it is not installed."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def synthetic_signal(seconds: float, sample_rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A (samples, channels) float32 test signal: a few harmonic tones with vibrato plus noise,
    different per channel, peaking near 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    out = np.empty((len(t), channels), np.float32)
    for ch in range(channels):
        f0 = rng.uniform(110, 440)
        tone = sum(np.sin(2 * np.pi * k * f0 * t + 3 * np.sin(2 * np.pi * 5 * t)) / k for k in (1, 2, 3))
        out[:, ch] = 0.3 * tone / 1.83 + 0.05 * rng.standard_normal(len(t))
    return out


#: soundfile subtype per test encoding.
SUBTYPES = {"pcm16": "PCM_16", "pcm24": "PCM_24", "pcm32": "PCM_32", "pcm8": "PCM_U8", "float": "FLOAT"}


def write_audio(
    path: Path, seconds: float, sample_rate: int = 22050, channels: int = 1, subtype: str = "pcm16",
    seed: int = 0,
) -> Path:
    """Write a synthetic file; the format follows the suffix (.wav, .flac, .ogg, .mp3)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signal = synthetic_signal(seconds, sample_rate, channels, seed)
    suffix = path.suffix.lower()
    if suffix in (".wav", ".wave"):
        sf.write(path, signal, sample_rate, subtype=SUBTYPES[subtype], format="WAV")
    elif suffix == ".flac":
        sf.write(path, signal, sample_rate, subtype="PCM_24" if subtype == "pcm24" else "PCM_16")
    elif suffix in (".ogg", ".oga"):
        sf.write(path, signal, sample_rate, format="OGG", subtype="VORBIS")
    elif suffix == ".mp3":
        sf.write(path, signal, sample_rate, format="MP3", subtype="MPEG_LAYER_III")
    else:
        raise ValueError(f"no synthetic writer for {suffix}")
    return path



def synthetic_probe_arrays(task, sizes: dict[str, int], dim: int, seed: int = 0, noise: float = 1.0):
    """Features with a learnable linear signal and meta.json labels for `task`, per split.

    Returns {split: (uids, features (N, dim) float32, labels as meta.json holds them)}. Uids
    of key-score tasks are `<song>-<clip>` with 1 to 4 clips per song sharing a key.
    """
    rng = np.random.default_rng(seed)
    projection = rng.normal(size=(dim, task.num_outputs)) / np.sqrt(dim)
    out, offset = {}, 0
    for split, n in sizes.items():
        x = rng.normal(size=(n, dim))
        scores = x @ projection * 3 + noise * rng.normal(size=(n, task.num_outputs))
        if task.key_score:
            uids, labels, song = [], [], offset
            while len(uids) < n:
                key = task.labels[int(scores[len(uids)].argmax())]
                for clip in range(min(int(rng.integers(1, 5)), n - len(uids))):
                    uids.append(f"{song:07d}-{clip}")
                    labels.append(key)
                song += 1
        else:
            uids = [f"{offset + i:05d}" for i in range(n)]
            if task.output_type == "multiclass":
                labels = [task.labels[int(i)] for i in scores.argmax(1)]
            elif task.output_type == "multilabel":
                # Each tag on for roughly 10-30 % of clips, driven by its score.
                rates = rng.uniform(0.1, 0.3, task.num_outputs)
                cut = np.array([np.quantile(scores[:, j], 1 - rates[j]) for j in range(task.num_outputs)])
                labels = [[t for t, on in zip(task.labels, row) if on] for row in scores > cut]
            else:
                labels = [[float(v) for v in row] for row in scores / 3]
        out[split] = (uids, x.astype(np.float32), labels)
        offset += n + 1000
    return out


def write_probe_dataset(root: Path, dataset: str, representation: str, task, sizes: dict[str, int],
                        dim: int = 16, seed: int = 0, write_task_json: bool = False, noise: float = 1.0) -> None:
    """Write `root/processed/<dataset>/meta.json` and `root/representations/<dataset>/<rep>/<uid>.npy`
    in jukemir's layout (plus task.json when asked), from `synthetic_probe_arrays`."""
    import json

    meta = {}
    features_dir = Path(root) / "representations" / dataset / representation
    features_dir.mkdir(parents=True, exist_ok=True)
    for split, (uids, x, labels) in synthetic_probe_arrays(task, sizes, dim, seed, noise).items():
        for uid, vector, label in zip(uids, x, labels):
            meta[uid] = {"split": split, "y": label, "extra": {}}
            np.save(features_dir / f"{uid}.npy", vector)
    dataset_dir = Path(root) / "processed" / dataset
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    if write_task_json:
        spec = {"output_type": task.output_type, "labels": list(task.labels) if task.labels else None,
                "num_outputs": task.num_outputs, "key_score": task.key_score}
        (dataset_dir / "task.json").write_text(json.dumps(spec, indent=2))


def synthetic_probe_data(task, sizes: dict[str, int], dim: int, seed: int = 0, noise: float = 1.0,
                         representation: str = "synthetic"):
    """`synthetic_probe_arrays` as an in-memory `ProbeData` (no files), for benchmarks."""
    from tunemir.probe.data import ProbeData, Split

    splits = {}
    for split, (uids, x, labels) in synthetic_probe_arrays(task, sizes, dim, seed, noise).items():
        targets = np.stack([task.encode(uid, y) for uid, y in zip(uids, labels)])
        splits[split] = Split(uids, x, targets)
    return ProbeData(task.name, representation, task, splits)


def write_processed_audio(root: Path, dataset: str, task, sizes: dict[str, int], seconds=(3.0, 8.0),
                          sample_rate: int = 16000, seed: int = 0) -> dict:
    """A processed dataset with audio, in jukemir's layout: `root/<dataset>/meta.json` and
    `root/<dataset>/wav/<uid>.wav`. Clip lengths are drawn from `seconds`; labels are random
    but every label occurs in every split (multilabel: 1-3 tags per clip). Returns meta."""
    import json

    rng = np.random.default_rng(seed)
    folder = Path(root) / dataset
    meta, index = {}, 0
    for split, n in sizes.items():
        for i in range(n):
            uid = f"{index:05d}"
            if task.output_type == "multilabel":
                extra = rng.choice(task.num_outputs, size=int(rng.integers(0, 3)), replace=False)
                y = sorted({task.labels[i % task.num_outputs], *(task.labels[j] for j in extra)},
                           key=task.labels.index)
            else:
                y = task.labels[i % task.num_outputs]
            meta[uid] = {"split": split, "y": y, "extra": {}}
            length = float(rng.uniform(*seconds))
            write_audio(folder / "wav" / f"{uid}.wav", length, sample_rate, seed=seed * 100000 + index)
            index += 1
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta
