"""Shared fixtures: tiny checkpoints and folders of synthetic audio written under tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from tunemir.audio import FRAME_LENGTH, SAMPLE_RATE
from tunemir.testing import save_tiny_checkpoint


def pytest_collection_modifyitems(config, items):
    """GPU-only tests carry the `gpu` marker and are skipped where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_checkpoint(tmp_path: Path):
    """(path, model) of a tiny TUNe+ saved in tunemir's format."""
    path = tmp_path / "tiny_tune_plus.safetensors"
    model = save_tiny_checkpoint(path, "tune_plus", seed=3)
    return path, model


def reference_vector(model: torch.nn.Module, path: Path, layer: int = 0) -> np.ndarray:
    """The extraction contract computed the plain way: whole-file decode with soundfile,
    channel mean, one-shot soxr HQ resampling, non-overlapping frames (incomplete tail dropped,
    short files zero-padded), encode, mean over frames."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    n = len(mono) // FRAME_LENGTH
    if n == 0:
        frames = np.zeros((1, FRAME_LENGTH), np.float32)
        frames[0, : len(mono)] = mono
    else:
        frames = mono[: n * FRAME_LENGTH].reshape(n, FRAME_LENGTH)
    with torch.no_grad():
        reps = model(torch.from_numpy(np.ascontiguousarray(frames)).unsqueeze(1), layer=layer)
    return reps.mean(dim=0).numpy()
