"""`tunemir.load_model` / `tunemir.embed` on audio in memory against `tunemir extract` on the same
samples written to a float WAV, for every kind of model (waveform encoders, musicnn's spectrogram
front end, the whole-file features, a model file of one's own)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import tunemir
from tunemir.cli import main
from tunemir.testing import save_tiny_checkpoint

from test_custom_model import MODEL_FILE

KINDS = ["tune_plus", "clmr", "musicnn", "chroma", "mfcc", "custom"]


def clip(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    """A chord with noise, (samples, channels) float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 4
    return (tone[:, None] + 0.05 * rng.standard_normal((len(t), channels))).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[str, Path | None]]:
    """kind -> (model name or reference, checkpoint or None)."""
    folder = tmp_path_factory.mktemp("models")
    out = {}
    for name in ("tune_plus", "clmr", "musicnn"):
        save_tiny_checkpoint(folder / f"{name}.safetensors", name, seed=3)
        out[name] = (name, folder / f"{name}.safetensors")
    (folder / "bands.py").write_text(MODEL_FILE)
    out["custom"] = (f"{folder / 'bands.py'}:build", None)
    out["chroma"], out["mfcc"] = ("chroma", None), ("mfcc", None)
    return out


def extract(tmp_path: Path, audio: np.ndarray, rate: int, name: str, checkpoint: Path | None, *extra) -> np.ndarray:
    wavs, out = tmp_path / "wavs", tmp_path / "out"
    wavs.mkdir(parents=True, exist_ok=True)
    sf.write(wavs / "clip.wav", audio, rate, subtype="FLOAT")  # the samples exactly
    args = ["extract", name, str(wavs), str(out), "--device", "cpu", "--workers", "0", *extra]
    result = CliRunner().invoke(main, args + (["--checkpoint", str(checkpoint)] if checkpoint else []))
    assert result.exit_code == 0, result.output
    return np.load(out / "clip.npy")


@pytest.mark.parametrize("kind", KINDS)
def test_embed_equals_extract_on_the_same_audio(kind, models, tmp_path):
    name, checkpoint = models[kind]
    audio = clip(7.3, 44100, 2, seed=1)  # stereo at another rate: mixed and resampled as a file is
    want = extract(tmp_path, audio, 44100, name, checkpoint)
    model = tunemir.load_model(name, checkpoint, device="cpu")
    got = tunemir.embed(audio, 44100, model)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    # A tensor as torchaudio loads it, (channels, samples), is the same audio.
    np.testing.assert_array_equal(tunemir.embed(torch.from_numpy(audio.T.copy()), 44100, model), want)
    # Per frame: each frame's vector, at its centre; their mean (in float64) is the vector.
    frames, seconds = tunemir.embed(audio, 44100, model, pooling=None)
    assert frames.ndim == 2 and frames.shape[1] == want.shape[0] and len(seconds) == len(frames)
    np.testing.assert_allclose(frames.astype(np.float64).mean(0), want, rtol=1e-5, atol=1e-6)
    spec = model.spec
    if spec.framed:
        expected_frames = max(1, int(7.3 * spec.sample_rate) // spec.frame_length)
        assert len(frames) == expected_frames
        np.testing.assert_allclose(np.diff(seconds), spec.hop / spec.sample_rate)
        assert seconds[0] == pytest.approx(spec.frame_length / 2 / spec.sample_rate)
    else:
        assert len(frames) == 1 and seconds[0] == pytest.approx(7.3 / 2, abs=1e-3)


def test_every_layer_equals_extract_of_that_layer(models, tmp_path):
    name, checkpoint = models["tune_plus"]
    audio = clip(3.0, 22050, 1, seed=2)[:, 0]  # mono, at the model's rate
    model = tunemir.load_model(name, checkpoint, device="cpu")
    layers = tunemir.embed(audio, 22050, model, layers="all")
    assert sorted(layers) == list(range(model.num_layers)) == list(range(18))
    for layer in (0, 5, 17):
        want = extract(tmp_path / str(layer), audio, 22050, name, checkpoint, "--layer", str(layer))
        np.testing.assert_array_equal(layers[layer], want)
    picked = tunemir.embed(audio, 22050, model, layers=[5, 17], pooling=None)
    assert sorted(picked) == [5, 17] and picked[5][0].shape == (1, model.layer_dims[5])


def test_short_and_bad_inputs(models):
    name, checkpoint = models["clmr"]
    model = tunemir.load_model(name, checkpoint, device="cpu")
    short = tunemir.embed(np.zeros(100, np.float32) + 0.1, 8000, model)  # under one frame: padded to one
    assert short.shape == (model.layer_dims[0],) and np.isfinite(short).all()
    cases = [
        (lambda: tunemir.embed(np.zeros(1000, np.int16), 22050, model), "x / 32768"),
        (lambda: tunemir.embed(np.zeros((2, 3, 4)), 22050, model), "(samples,) or (samples, channels)"),
        (lambda: tunemir.embed(np.zeros((500, 500)), 22050, model), "neither axis looks like channels"),
        (lambda: tunemir.embed(np.zeros(0), 22050, model), "contains no audio samples"),
        (lambda: tunemir.embed(np.full(1000, np.nan), 22050, model), "NaN or infinite samples"),
        (lambda: tunemir.embed(np.zeros(1000), 0, model), "sample_rate must be a positive whole number"),
        (lambda: tunemir.embed(np.zeros(1000), 22050.0, model), "sample_rate must be a positive whole number"),
        (lambda: tunemir.embed(np.zeros(1000), 22050, model, layers=11), "layers 0-10"),
        (lambda: tunemir.embed(np.zeros(1000), 22050, model, layers="every"), "'all'"),
        (lambda: tunemir.embed(np.zeros(1000), 22050, model, pooling="median"), "pooling must be"),
        (lambda: tunemir.load_model("tune_pluss"), "unknown model 'tune_pluss'"),
        (lambda: tunemir.load_model("clmr", "/nonexistent.ckpt"), "/nonexistent.ckpt"),
        (lambda: tunemir.load_model("clmr", checkpoint, device="tpu"), "device 'tpu' is not a device"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=None) as caught:
            call()
        assert message in str(caught.value), (message, str(caught.value))
