"""Audio decoding, mono mixdown, resampling to 22.05 kHz and framing into 59,049-sample frames."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

log = logging.getLogger(__name__)

#: Sample rate every tunemir model works at (CLMR v2 and TUNe pretrain at 22.05 kHz).
SAMPLE_RATE = 22050
#: One model input: 3**10 samples, the SampleCNN receptive field (2.678 s at 22.05 kHz).
FRAME_LENGTH = 3**10
#: Suffixes decoded by libsndfile (>= 1.1 for MP3) that `tunemir extract` picks up.
AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3"})
#: soxr quality preset; "HQ" is what librosa's default `soxr_hq` resampler uses.
RESAMPLE_QUALITY = "HQ"
#: Input samples decoded per read when streaming a file (about 6 s at 44.1 kHz).
READ_BLOCK = 1 << 18


class AudioDecodeError(Exception):
    """A file could not be decoded into usable audio; the message names the file and the fix."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"{self.path}: {reason}. Check that the file is a complete WAV/FLAC/OGG/MP3 "
            f"(e.g. `soxi` or `ffprobe` it) or re-encode it, e.g. "
            f"`ffmpeg -i {self.path.name} fixed.wav`."
        )


def is_audio_path(path: Path) -> bool:
    """True if `path` has one of the suffixes tunemir decodes."""
    return path.suffix.lower() in AUDIO_SUFFIXES


def _open(path: Path) -> sf.SoundFile:
    try:
        if path.stat().st_size == 0:
            raise AudioDecodeError(path, "is empty (0 bytes)")
        handle = sf.SoundFile(str(path))
    except sf.LibsndfileError as err:
        raise AudioDecodeError(path, f"cannot be decoded ({err.error_string})") from None
    except (RuntimeError, OSError) as err:
        raise AudioDecodeError(path, f"cannot be read ({err})") from None
    if handle.samplerate <= 0 or handle.channels <= 0:
        handle.close()
        raise AudioDecodeError(path, "has no valid sample rate or channel count")
    return handle


def iter_mono(path: Path | str, sample_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Stream a file as float32 mono blocks at `sample_rate`.

    Channels are averaged before resampling (as `librosa.load(mono=True)` does), and the
    resampler is soxr's streaming HQ filter, so memory stays bounded for hour-long files.
    Raises AudioDecodeError for unreadable, empty or non-finite audio.
    """
    path = Path(path)

    def fail(why: str):
        raise AudioDecodeError(path, why)

    with _open(path) as handle:
        yield from _mono(_file_blocks(handle, path), handle.samplerate, sample_rate, fail)


def iter_mono_array(audio: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """`iter_mono` of audio in memory, (samples,) or (samples, channels) float at `rate`: the
    same blocks, channel mean and streaming resampler as a file of these samples gives, so the
    output is bit for bit what `iter_mono` gives for that audio written as a float WAV.
    Raises ValueError for empty or non-finite audio."""
    def fail(why: str):
        raise ValueError(f"the audio {why}")

    blocks = np.asarray(audio, dtype=np.float32)
    blocks = blocks[:, None] if blocks.ndim == 1 else blocks
    yield from _mono((blocks[start:start + READ_BLOCK] for start in range(0, len(blocks) + 1, READ_BLOCK)),
                     rate, sample_rate, fail)


def _file_blocks(handle: sf.SoundFile, path: Path) -> Iterator[np.ndarray]:
    """(n, channels) float32 blocks of READ_BLOCK samples; the last one is shorter (maybe empty)."""
    total = 0
    while True:
        try:
            block = handle.read(READ_BLOCK, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioDecodeError(path, f"is corrupt after {total} samples ({err})") from None
        total += len(block)
        yield block
        if len(block) < READ_BLOCK:
            return


def _mono(blocks: Iterator[np.ndarray], rate: int, sample_rate: int, fail) -> Iterator[np.ndarray]:
    """Blocks (n, channels) of READ_BLOCK samples, the last shorter, -> float32 mono at `sample_rate`."""
    resampler = None
    if rate != sample_rate:
        resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    total = 0
    for block in blocks:
        last = len(block) < READ_BLOCK
        if not np.isfinite(block).all():
            fail("contains NaN or infinite samples")
        total += len(block)
        mono = block.mean(axis=1, dtype=np.float32)
        if resampler is not None:
            mono = resampler.resample_chunk(mono, last=last)
        if len(mono):
            yield mono
        if last:
            break
    if total == 0:
        fail("contains no audio samples")


def load_mono(path: Path | str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a whole file to one float32 mono array at `sample_rate`."""
    blocks = list(iter_mono(path, sample_rate))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def iter_frames(
    path: Path | str, max_frames: int = 16, frame_length: int = FRAME_LENGTH, sample_rate: int = SAMPLE_RATE
) -> Iterator[np.ndarray]:
    """Stream a file as chunks of at most `max_frames` non-overlapping frames, (n, frame_length).

    Only an incomplete tail is dropped; a file shorter than one frame is zero-padded to one
    frame, so every decodable file yields at least one frame.
    """
    return frames_of(iter_mono(path, sample_rate), max_frames, frame_length)


def frames_of(monos: Iterator[np.ndarray], max_frames: int = 16, frame_length: int = FRAME_LENGTH
              ) -> Iterator[np.ndarray]:
    """`iter_frames` of a stream of mono blocks (from `iter_mono` or `iter_mono_array`)."""
    pending = np.zeros(0, np.float32)
    emitted = False
    chunk = max_frames * frame_length
    for mono in monos:
        pending = np.concatenate([pending, mono]) if len(pending) else mono
        while len(pending) >= chunk:
            yield pending[:chunk].reshape(max_frames, frame_length)
            pending = pending[chunk:]
            emitted = True
    if len(pending) >= frame_length or not emitted:
        yield frame_signal(pending, frame_length)


def frame_signal(signal: np.ndarray, frame_length: int = FRAME_LENGTH) -> np.ndarray:
    """Cut a 1-D signal into (n, frame_length) frames with the same rule as `iter_frames`."""
    n = len(signal) // frame_length
    if n == 0:
        frame = np.zeros((1, frame_length), np.float32)
        frame[0, : len(signal)] = signal
        return frame
    return np.ascontiguousarray(signal[: n * frame_length].reshape(n, frame_length))
