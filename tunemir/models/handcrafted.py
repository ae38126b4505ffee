"""Handcrafted baselines with jukemir's recipe: moments of chroma_cqt (72-d) and MFCC (120-d)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from tunemir.audio import FRAME_LENGTH, SAMPLE_RATE
from tunemir.extras import require

log = logging.getLogger(__name__)

#: librosa hop length jukemir uses for both features.
HOP_LENGTH = 512
#: Where librosa's numba-compiled code is cached unless $NUMBA_CACHE_DIR names a folder: tunemir's
#: own, never the `__pycache__` beside librosa's sources in site-packages (see `load_librosa`).
NUMBA_CACHE_DIR = Path("~/.cache/tunemir/numba")

_librosa = None  # the module, once imported and compiled in this process


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

    def prepare(self) -> None:
        """Import librosa and compile its numba code in this process (call before starting decode
        workers, which then inherit the compiled code); raises `MissingExtraError` without librosa."""
        load_librosa()

    def __call__(self, signal: np.ndarray) -> np.ndarray:
        """Map a float32 mono signal at 22.05 kHz to the `dim`-sized moment vector."""
        return _compute(load_librosa(), self.kind, signal)


def load_librosa() -> ModuleType:
    """librosa, imported once per process with its numba code compiled, under an exclusive lock.

    numba's on-disk cache is not safe with concurrent writers: two processes compiling different
    signatures of one function each pick the same free file name for their code, and the index
    can end up pointing at the other's machine code; every later run then loads it and crashes
    (the segfaults of `make demo`, until the cache files were deleted). So the cache is tunemir's
    own folder (`numba_cache_dir`), and all compiling happens here: at import (librosa's
    vectorized functions) and in one warm-up of each feature, while holding a lock on that
    folder. The extraction pipeline calls this before forking its decode workers, which inherit
    the compiled code and never write the cache; other tunemir processes wait for the lock and
    then read what this one wrote.
    """
    global _librosa
    if _librosa is None:
        require("handcrafted", "The chroma/mfcc extraction")
        folder = numba_cache_dir()
        os.environ["NUMBA_CACHE_DIR"] = str(folder)  # read when numba is imported, and on its config reloads
        if "numba" in sys.modules:
            sys.modules["numba"].config.CACHE_DIR = str(folder)
        if "librosa" in sys.modules:
            log.debug("librosa was imported before tunemir set numba's cache folder; its cache stays where it was")
        with _locked(folder):
            import librosa

            warm_up = np.sin(np.arange(FRAME_LENGTH, dtype=np.float32) * np.float32(0.05))
            for kind in ("chroma", "mfcc"):
                _compute(librosa, kind, warm_up)
        _librosa = librosa
    return _librosa


def numba_cache_dir() -> Path:
    """$NUMBA_CACHE_DIR, else ~/.cache/tunemir/numba; a private temporary folder (removed at exit)
    when that cannot be written."""
    folder = Path(os.environ.get("NUMBA_CACHE_DIR") or NUMBA_CACHE_DIR).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return folder
    except OSError as err:
        private = Path(tempfile.mkdtemp(prefix="tunemir-numba-"))
        log.warning("numba cache folder %s is not writable (%s); compiling into %s for this run only",
                    folder, err.strerror or err, private)
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(private, ignore_errors=True))
        return private


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no flock; tunemir's runs there are not sharded in parallel
        yield
        return
    with open(folder / "tunemir.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _compute(librosa: ModuleType, kind: str, signal: np.ndarray) -> np.ndarray:
    if len(signal) < FRAME_LENGTH:
        signal = np.pad(signal, (0, FRAME_LENGTH - len(signal)))
    peak = np.abs(signal).max()
    if peak > 0:
        signal = signal / peak
    with warnings.catch_warnings():
        # The CQT's lowest octaves see a heavily downsampled short clip; harmless here.
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large")
        if kind == "chroma":
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
