"""musicnn in PyTorch against the original TensorFlow musicnn's outputs (benchmarks/musicnn_reference.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tunemir.audio import load_mono
from tunemir.models import musicnn as mn
from tunemir.testing import musicnn_wheel, write_audio
from tunemir.tf_checkpoint import TFCheckpointError

DATA = Path(__file__).parent / "data" / "musicnn"
# Synthetic audio (no real recordings exist on the build machine), regenerated bit for bit
# (integer PCM: libsndfile stamps float WAVs with the time, so their bytes vary).
AUDIO = {
    "a_16k.wav": dict(seconds=10.0, sample_rate=16000, seed=0),
    "b_22k_stereo.wav": dict(seconds=7.0, sample_rate=22050, channels=2, seed=1),
    "c_16k_pcm24.wav": dict(seconds=6.5, sample_rate=16000, subtype="pcm24", seed=2),
}


def write_reference_audio(folder: Path) -> list[Path]:
    """The files benchmarks/musicnn_reference.py was run on."""
    return [write_audio(Path(folder) / name, **kwargs) for name, kwargs in AUDIO.items()]


# The musicnn 0.1.0 wheel from PyPI holds the MSD_musicnn and MTT_musicnn checkpoints.
CASES = [("a_16k", "MSD_musicnn"), ("a_16k", "MTT_musicnn"), ("b_22k_stereo", "MSD_musicnn"),
         ("c_16k_pcm24", "MSD_musicnn")]
# Measured against TF 2.15 (oneDNN) on CPU: every output within 5e-6 of its largest value.
SCALE_TOL = 1e-5


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict[str, Path]:
    return {p.stem: p for p in write_reference_audio(tmp_path_factory.mktemp("audio"))}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, mn.Musicnn]:
    wheel = musicnn_wheel()
    folder = tmp_path_factory.mktemp("weights")
    return {m: mn.musicnn_from_tf_checkpoint(mn.extract_wheel_checkpoint(wheel, m, folder))
            for m in ("MSD_musicnn", "MTT_musicnn")}


def reference(stem: str, model: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{stem}.{model}.npz") as npz:
        return {k: npz[k] for k in npz.files}


def assert_close(got: np.ndarray, want: np.ndarray, name: str) -> None:
    assert got.shape == want.shape, name
    assert np.isfinite(got).all(), name
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= SCALE_TOL, f"{name}: max |diff| / max |ref| = {err:.2e}"


def test_audio_is_what_the_reference_ran_on(audio):
    for stem, path in audio.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == str(reference(stem, "MSD_musicnn")["sha256"])


def test_logmel_equals_the_original_bit_for_bit(audio):
    got = mn.patches(load_mono(audio["a_16k"], mn.SAMPLE_RATE))
    assert got.shape == (3, 187, 96) and got.dtype == np.float32  # 10 s: the partial 4th patch dropped
    np.testing.assert_array_equal(got[0], reference("a_16k", "MSD_musicnn")["logmel_patch0"])


@pytest.mark.parametrize("stem,model", CASES)
def test_outputs_equal_the_original(audio, models, stem, model):
    ref = reference(stem, model)
    out = mn.features(models[model], load_mono(audio[stem], mn.SAMPLE_RATE))
    for name in ("mean_pool", "max_pool", "taggram"):
        assert_close(out[name], ref[name], name)
    # The original repeats patch 0's penultimate for every later patch (an upstream bug).
    assert_close(out["penultimate"][0], ref["penultimate"][0], "penultimate")
    assert (ref["penultimate"] == ref["penultimate"][0]).all()
    for name in ("timbral", "temporal"):
        assert_close(out[name].reshape(-1, out[name].shape[-1]).mean(0), ref[f"{name}_mean"], name)
    vector = mn.embed(models[model], load_mono(audio[stem], mn.SAMPLE_RATE))
    want = np.concatenate([ref["mean_pool"].mean(0), ref["max_pool"].mean(0)])
    assert vector.shape == (1506,) and vector.dtype == np.float32
    assert_close(vector, want, "vector")


def test_batch_size_does_not_change_outputs(audio, models):
    y = load_mono(audio["a_16k"], mn.SAMPLE_RATE)
    one, all_ = mn.features(models["MSD_musicnn"], y, batch_size=1), mn.features(models["MSD_musicnn"], y)
    for name in mn.OUTPUTS:
        assert_close(one[name], all_[name], name)


def test_weights_round_trip_to_the_tf_layout(models, tmp_path):
    from tunemir.tf_checkpoint import read_checkpoint

    variables = read_checkpoint(mn.extract_wheel_checkpoint(musicnn_wheel(), "MSD_musicnn", tmp_path))
    exported = models["MSD_musicnn"].to_tf_variables()
    assert set(exported) == {k for k in variables if not k.endswith(("/Adam", "/Adam_1", "_power"))}
    for name, value in exported.items():
        np.testing.assert_array_equal(value, variables[name], err_msg=name)


def test_short_audio_is_zero_padded_to_one_patch():
    y = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1  # 1 s
    got = mn.patches(y)
    assert got.shape == (1, 187, 96)
    np.testing.assert_array_equal(got, mn.patches(np.pad(y, (0, mn.MIN_SAMPLES - len(y)))))
    assert mn.patches(y[:100]).shape == (1, 187, 96)
    assert mn.patches(np.zeros(mn.MIN_SAMPLES + mn.PATCH_FRAMES * mn.HOP - 1, np.float32)).shape[0] == 1
    assert mn.patches(np.zeros(mn.MIN_SAMPLES + mn.PATCH_FRAMES * mn.HOP, np.float32)).shape[0] == 2
    vector = mn.embed(mn.Musicnn().eval(), y)
    assert vector.shape == (1506,) and np.isfinite(vector).all()
    with pytest.raises(ValueError, match="non-empty 1-D"):
        mn.patches(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="patches"):
        mn.logmel(np.zeros(100, np.float32))


def test_big_variant_builds_and_loads_its_layout():
    config = mn.PRESETS["MSD_musicnn_big"]
    assert config.embedding_dim == 4194 and config.pool_channels == 2097  # jukemir's vector
    torch.manual_seed(0)
    source = mn.Musicnn(config)
    for module in source.modules():  # non-trivial BN statistics, so their mapping is tested
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    variables = source.to_tf_variables()
    # The released MSD_musicnn_big index (musicnn@516acb2) as TF lists it: same names and shapes.
    listing = json.loads((DATA.parent / "tf_checkpoint" / "musicnn_variables.json").read_text())["MSD_musicnn_big"]
    weights = {k: v for k, v in listing.items() if not k.endswith(("/Adam", "/Adam_1", "_power"))}
    assert sorted(variables) == sorted(weights)
    for name, info in weights.items():
        assert list(variables[name].shape) == info["shape"] and info["dtype"] == "float32", name
    loaded = mn.Musicnn(mn.config_from_tf_variables(variables))
    assert loaded.config == config
    loaded.load_tf_variables(variables)
    x = torch.randn(2, 187, 96)
    with torch.no_grad():
        a, b = source.eval()(x), loaded.eval()(x)
    assert a["mean_pool"].shape == (2, 2097)
    for name in mn.OUTPUTS:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_wrong_variables_are_refused():
    variables = mn.Musicnn().to_tf_variables()
    bad = dict(variables, **{"dense/kernel": np.zeros((3, 3), np.float32)})
    with pytest.raises(TFCheckpointError, match=r"dense/kernel has shape \(3, 3\)"):
        mn.Musicnn().load_tf_variables(bad)
    missing = {k: v for k, v in variables.items() if k != "conv2d_3/bias"}
    with pytest.raises(TFCheckpointError, match="no variable 'conv2d_3/bias'"):
        mn.Musicnn().load_tf_variables(missing)
    with pytest.raises(TFCheckpointError, match="not part of musicnn"):
        mn.Musicnn().load_tf_variables(dict(variables, **{"vgg/1CNN/kernel": np.zeros(1)}))
    with pytest.raises(TFCheckpointError, match="not a musicnn checkpoint"):
        mn.config_from_tf_variables({})


def test_tf_checkpoint_error_names_the_file(tmp_path):
    with pytest.raises(TFCheckpointError, match=r"nothing\.index"):
        mn.musicnn_from_tf_checkpoint(tmp_path / "nothing")
    with pytest.raises(TFCheckpointError, match="not-a-wheel.whl.*musicnn-0.1.0"):
        (tmp_path / "not-a-wheel.whl").write_text("x")
        mn.extract_wheel_checkpoint(tmp_path / "not-a-wheel.whl", "MSD_musicnn", tmp_path)




def test_mel_filterbank_and_window_equal_librosa():
    librosa = pytest.importorskip("librosa")
    scipy_signal = pytest.importorskip("scipy.signal")
    want = librosa.filters.mel(sr=16000, n_fft=512, n_mels=96)
    np.testing.assert_array_equal(mn.mel_filterbank(), want)
    np.testing.assert_array_equal(mn._WINDOW, scipy_signal.get_window("hann", 512, fftbins=True))
