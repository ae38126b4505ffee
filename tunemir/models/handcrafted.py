"""Handcrafted baselines with jukemir's recipe: moments of chroma_cqt (72-d) and MFCC (120-d)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from tunemir.audio import FRAME_LENGTH, SAMPLE_RATE

#: librosa hop length jukemir uses for both features.
HOP_LENGTH = 512


@dataclass(frozen=True)
class HandcraftedFeature:
    """A whole-file feature (Castellon et al., ISMIR 2021, section 3.1 "Handcrafted"):
    peak-normalise the 22.05 kHz mono signal, compute `kind` ("chroma" = librosa.chroma_cqt,
    12 rows; "mfcc" = librosa.mfcc, 20 rows) with hop 512, then concatenate per-row mean and
    standard deviation of the feature and of its first and second time differences.

    A signal shorter than one model frame is zero-padded to one frame (the same rule as the
    neural encoders), so even very short clips get finite moments.
    """

    kind: str

    @property
    def dim(self) -> int:
        return 6 * (12 if self.kind == "chroma" else 20)

    def __call__(self, signal: np.ndarray) -> np.ndarray:
        """Map a float32 mono signal at 22.05 kHz to the `dim`-sized moment vector."""
        import librosa  # heavy import (numba); only workers computing these features pay it

        if len(signal) < FRAME_LENGTH:
            signal = np.pad(signal, (0, FRAME_LENGTH - len(signal)))
        peak = np.abs(signal).max()
        if peak > 0:
            signal = signal / peak
        with warnings.catch_warnings():
            # The CQT's lowest octaves see a heavily downsampled short clip; harmless here.
            warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large")
            if self.kind == "chroma":
                feature = librosa.feature.chroma_cqt(y=signal, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
            else:
                feature = librosa.feature.mfcc(y=signal, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
        return moments(feature).astype(np.float32)


def moments(feature: np.ndarray) -> np.ndarray:
    """[mean, std] of a (rows, time) feature and of its 1st and 2nd time differences."""
    parts = []
    for order in range(3):
        delta = np.diff(feature, n=order, axis=1)
        parts += [delta.mean(axis=1), delta.std(axis=1)]
    return np.concatenate(parts)
