"""Helpers shared by the tests, the demo and the benchmarks: tiny models and synthetic audio."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from tunemir.models import SampleCNNConfig, TuneConfig, build_model

#: Same topology as the released models with a few channels, so tests run in milliseconds.
TINY_CONFIGS = {
    "clmr": SampleCNNConfig((4, 4, 4, 8, 8, 8, 8, 8, 8, 16, 16)),
    "tune": TuneConfig(channels=2, out_channels=16),
    "tune_plus": TuneConfig(channels=2, out_channels=16, plus=True),
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

