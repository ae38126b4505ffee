"""`tunemir weights fetch musicnn_*` from the PyPI wheel and `tunemir extract musicnn_*` end to end:
vectors equal `musicnn.embed` and the original TF extractor's (tests/data/musicnn)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tunemir.audio import load_mono
from tunemir.checkpoints import CheckpointError, read_encoder_weights
from tunemir.cli import main
from tunemir.models import get_info, load_model
from tunemir.models import musicnn as mn
from tunemir.testing import MUSICNN_WHEEL, musicnn_wheel, write_audio

from test_musicnn import DATA, SCALE_TOL, reference, write_reference_audio

MODELS = {"musicnn_msd": "MSD_musicnn", "musicnn_mtt": "MTT_musicnn"}


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """$TUNEMIR_WEIGHTS_DIR filled by `tunemir weights fetch` from a folder holding the wheel."""
    wheel = musicnn_wheel()
    shop = tmp_path_factory.mktemp("downloads")
    (shop / MUSICNN_WHEEL).symlink_to(wheel.resolve())
    folder = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEMIR_WEIGHTS_DIR", str(folder))
        for model in MODELS:
            result = invoke("weights", "fetch", model, "--search-dir", shop)
            assert result.exit_code == 0, result.output
            assert result.output.strip() == f"{model}: {folder / model}.safetensors"
    return folder


@pytest.fixture
def weights_env(weights, monkeypatch) -> Path:
    monkeypatch.setenv("TUNEMIR_WEIGHTS_DIR", str(weights))
    return weights


@pytest.fixture(scope="module")
def tf_models(tmp_path_factory) -> dict[str, mn.Musicnn]:
    folder = tmp_path_factory.mktemp("tf")
    return {name: mn.musicnn_from_tf_checkpoint(mn.extract_wheel_checkpoint(musicnn_wheel(), variant, folder))
            for name, variant in MODELS.items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The reference audio of tests/test_musicnn.py, plus a file shorter than one 3-s patch."""
    folder = tmp_path_factory.mktemp("wavs")
    write_reference_audio(folder)
    write_audio(folder / "short_22k.wav", seconds=1.2, sample_rate=22050, seed=5)
    return folder


def close_to(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape and np.isfinite(got).all()
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_fetch_converts_the_wheel_checkpoint(weights_env, tf_models, tmp_path):
    weights = weights_env
    for model in MODELS:
        stored = read_encoder_weights(weights / f"{model}.safetensors")
        assert stored.metadata["model"] == model
        assert stored.metadata["source"]["release"] == {
            "file": MUSICNN_WHEEL, "sha256": "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"}
        want = tf_models[model].state_dict()
        assert stored.state_dict.keys() == want.keys()
        for key, tensor in want.items():
            torch.testing.assert_close(stored.state_dict[key], tensor, rtol=0, atol=0)
    # MSD and MTT share a layout: the metadata tells them apart, and a mix-up is refused.
    msd, mtt = load_model("musicnn_msd", weights / "musicnn_msd.safetensors"), load_model("musicnn_mtt")
    assert not torch.equal(msd.dense.weight, mtt.dense.weight)
    with pytest.raises(CheckpointError, match="holds a 'musicnn_msd' encoder, but 'musicnn_mtt' was requested"):
        load_model("musicnn_mtt", weights / "musicnn_msd.safetensors")
    # A second fetch keeps the converted file (and needs no wheel for it).
    before = (weights / "musicnn_msd.safetensors").stat().st_mtime_ns
    assert invoke("weights", "fetch", "musicnn_msd", "--search-dir", tmp_path).exit_code == 0
    assert (weights / "musicnn_msd.safetensors").stat().st_mtime_ns == before


def test_a_wheel_that_is_not_the_release_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEMIR_WEIGHTS_DIR", str(tmp_path / "weights"))
    fake = tmp_path / MUSICNN_WHEEL
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("musicnn/__init__.py", "")
    result = invoke("weights", "fetch", "musicnn_msd", "--search-dir", tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    digest = hashlib.sha256(fake.read_bytes()).hexdigest()
    assert f"has sha256 {digest}, but f38a4890c648c1dd" in result.output
    assert "replace the file with the released one from https://pypi.org/project/musicnn/0.1.0/" in result.output
    # Pinned by hand but holding no checkpoint: named, not a traceback.
    result = invoke("weights", "fetch", "musicnn_msd", "--search-dir", tmp_path, "--sha256", digest)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "matches the pin but" in result.output and "cannot take MSD_musicnn out of the musicnn wheel" in result.output
    assert "get that from https://pypi.org/project/musicnn/0.1.0/" in result.output
    assert not (tmp_path / "weights" / "musicnn_msd.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_extract_writes_jukemirs_vector(weights_env, tf_models, corpus, tmp_path, model):
    out, compared = tmp_path / "out", []
    result = invoke("extract", model, corpus, out, "--device", "cpu", "--workers", "1")
    assert result.exit_code == 0, result.output
    for wav in sorted(corpus.glob("*.wav")):
        vector = np.load(out / f"{wav.stem}.npy")
        assert vector.shape == (1506,) and vector.dtype == np.float32
        want = mn.embed(tf_models[model], load_mono(wav, mn.SAMPLE_RATE))
        assert close_to(vector, want) <= 2e-6, wav.name  # batching differs: float rounding only
        if (DATA / f"{wav.stem}.{MODELS[model]}.npz").is_file():  # the original TF extractor's outputs
            ref = reference(wav.stem, MODELS[model])
            tf_vector = np.concatenate([ref["mean_pool"].mean(0), ref["max_pool"].mean(0)])
            assert close_to(vector, tf_vector) <= SCALE_TOL, wav.name
            compared.append(wav.stem)
    assert compared == (["a_16k", "b_22k_stereo", "c_16k_pcm24"] if model == "musicnn_msd" else ["a_16k"])
    manifest = json.loads((out / "tunemir-manifest.json").read_text())
    assert manifest["sample_rate"] == 16000 and manifest["dim"] == 1506
    assert manifest["spec"]["front_end"] == "spectrogram"
    assert manifest["spec"]["spectrogram"] == "tunemir.models.musicnn:patches"
    assert manifest["frame_length"] == mn.PATCH_FRAMES * mn.HOP
    assert manifest["checkpoint"] == str(weights_env / f"{model}.safetensors")
    # A rerun finds everything done.
    assert invoke("extract", model, corpus, out, "--device", "cpu", "--list-shards", "--batch_size", "10"
                  ).output == "0 done\n"


def test_short_file_gets_a_vector_and_layers_are_refused(weights_env, tf_models, tmp_path):
    wavs = tmp_path / "wavs"
    write_audio(wavs / "clip.wav", seconds=0.5, sample_rate=16000, seed=7)  # under one 2.98-s patch
    result = invoke("extract", "musicnn_msd", wavs, tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    want = mn.embed(tf_models["musicnn_msd"], load_mono(wavs / "clip.wav", mn.SAMPLE_RATE))
    assert close_to(np.load(tmp_path / "out" / "clip.npy"), want) <= 2e-6
    result = invoke("extract", "musicnn_msd", wavs, tmp_path / "out2", "--layer", "1")
    assert result.exit_code == 2 and "only 0" in result.output and "drop --layer" in result.output


def test_the_declaration_is_musicnns_own():
    for model, variant in MODELS.items():  # what `weights fetch` takes out of the wheel for each entry
        assert get_info(model).release.member == f"musicnn/{variant}/"
    assert get_info("musicnn").release.filename == "MSD_musicnn_big"
    for model in [*MODELS, "musicnn"]:
        spec = get_info(model).spec
        assert (spec.sample_rate, spec.frame_length) == (mn.SAMPLE_RATE, mn.PATCH_FRAMES * mn.HOP)
        assert spec.front_end == "spectrogram" and spec.num_layers == 1 and spec.pooling == "mean"
        assert get_info(model).config == mn.PRESETS[MODELS.get(model, "MSD_musicnn_big")]


def test_without_weights_the_message_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEMIR_WEIGHTS_DIR", str(tmp_path / "none"))
    write_audio(tmp_path / "wavs" / "a.wav", seconds=1.0, sample_rate=16000)
    result = invoke("extract", "musicnn_mtt", tmp_path / "wavs", tmp_path / "out")
    assert result.exit_code == 1 and "no weights for 'musicnn_mtt'" in result.output
    assert "`tunemir weights fetch musicnn_mtt`" in result.output
    assert "https://pypi.org/project/musicnn/0.1.0/" in result.output
