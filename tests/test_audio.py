"""Decoding, mixdown, resampling and framing (tunemir.audio)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from tunemir.audio import FRAME_LENGTH, SAMPLE_RATE, AudioDecodeError, frame_signal, iter_frames, iter_mono, load_mono
from tunemir.testing import write_audio

CASES = [
    ("a.wav", 44100, 2, "pcm16"),
    ("b.wav", 48000, 1, "pcm24"),
    ("c.wav", 16000, 3, "float"),
    ("d.wav", 8000, 1, "pcm8"),
    ("e.wav", 22050, 2, "pcm32"),
    ("f.flac", 44100, 2, "pcm16"),
    ("g.ogg", 32000, 2, "pcm16"),
    ("h.mp3", 44100, 1, "pcm16"),
]


@pytest.mark.parametrize("name, rate, channels, subtype", CASES)
def test_load_mono_matches_whole_file_soxr(tmp_path: Path, name: str, rate: int, channels: int, subtype: str):
    path = write_audio(tmp_path / name, 13.3, rate, channels, subtype)
    audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
    expected = audio.mean(axis=1)
    if file_rate != SAMPLE_RATE:
        expected = soxr.resample(expected, file_rate, SAMPLE_RATE, quality="HQ")
    got = load_mono(path)
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("length, n_frames", [(FRAME_LENGTH * 2, 2), (FRAME_LENGTH * 3 - 1, 2), (FRAME_LENGTH + 1, 1)])
def test_frames_drop_only_incomplete_tail(tmp_path: Path, length: int, n_frames: int):
    signal = np.random.default_rng(0).uniform(-0.5, 0.5, length).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, signal, SAMPLE_RATE, subtype="FLOAT")
    chunks = list(iter_frames(path, max_frames=1))
    assert [c.shape for c in chunks] == [(1, FRAME_LENGTH)] * n_frames
    np.testing.assert_array_equal(np.concatenate(chunks), signal[: n_frames * FRAME_LENGTH].reshape(n_frames, -1))
    np.testing.assert_array_equal(frame_signal(signal), np.concatenate(chunks))


def test_short_file_is_zero_padded_to_one_frame(tmp_path: Path):
    signal = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)
    path = tmp_path / "short.wav"
    sf.write(path, signal, SAMPLE_RATE, subtype="FLOAT")
    (frame,) = list(iter_frames(path))
    assert frame.shape == (1, FRAME_LENGTH)
    np.testing.assert_array_equal(frame[0, :1000], signal)
    assert not frame[0, 1000:].any()


def test_chunks_respect_max_frames(tmp_path: Path):
    path = write_audio(tmp_path / "long.wav", 60, 44100, 2)
    sizes = [len(c) for c in iter_frames(path, max_frames=4)]
    assert max(sizes) <= 4
    assert sum(sizes) == len(load_mono(path)) // FRAME_LENGTH


@pytest.mark.slow
def test_memory_stays_bounded_for_long_files(tmp_path: Path):
    # 5 minutes of 44.1 kHz stereo: decoding it whole to float32 would take 106 MB.
    path = write_audio(tmp_path / "long.wav", 300, 44100, 2)
    tracemalloc.start()
    n = sum(len(chunk) for chunk in iter_frames(path, max_frames=8))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 300 * SAMPLE_RATE // FRAME_LENGTH
    assert peak < 25 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_decode_errors_name_the_file_and_the_fix(tmp_path: Path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 20)
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan, 0.2] * 100, np.float32), SAMPLE_RATE, subtype="FLOAT")
    silent = tmp_path / "zero_frames.wav"
    sf.write(silent, np.zeros(0, np.float32), SAMPLE_RATE)
    for path, reason in [(corrupt, "cannot be decoded"), (empty, "empty"), (nan, "NaN"),
                         (silent, "no audio samples"), (tmp_path / "missing.wav", "cannot be read")]:
        with pytest.raises(AudioDecodeError) as info:
            list(iter_mono(path))
        message = str(info.value)
        assert str(path) in message and reason in message and "ffmpeg" in message


def test_one_sample_file_is_one_zero_padded_frame(tmp_path: Path):
    path = tmp_path / "one.wav"
    sf.write(path, np.array([[0.25]], np.float32), SAMPLE_RATE, subtype="FLOAT")
    frames = np.concatenate(list(iter_frames(path)))
    assert frames.shape == (1, FRAME_LENGTH) and frames[0, 0] == 0.25 and not frames[0, 1:].any()
