"""Encoders against the CLMR/TUNe spec: sizes, a functional reference forward, taps, registry, handcrafted."""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tunemir.checkpoints import CheckpointError, MissingWeightsError, save_checkpoint
from tunemir.models import (
    Encoder,
    HandcraftedFeature,
    SampleCNNConfig,
    TuneConfig,
    UnknownModelError,
    available_models,
    build_model,
    get_info,
    infer_model,
    load_model,
)
from tunemir.models.base import InferenceEncoder
from tunemir.testing import TINY_CONFIGS, randomize_batchnorm, synthetic_signal, tiny_model

ENCODERS = ["clmr", "tune", "tune_plus"]
FRAME = 59049  # 3**10, written out so the tests do not trust the package's constant
SR = 22050

# Spec §1.9: encoder parameters (fc removed), state_dict keys without fc, BN buffer elements.
PARAMS = {"clmr": 2_368_512, "tune": 2_096_970, "tune_plus": 2_220_390}
KEYS = {"clmr": 77, "tune": 134, "tune_plus": 134}
BN_BUFFER_ELEMENTS = {"clmr": 5_899, "tune": 5_530, "tune_plus": 5_530}

# Spec §1.6: representation size of TUNe layer 0..17 (C = 11).
TUNE_LAYER_DIMS = (512, 352, 352, 352, 352, 176, 88, 44, 22, 11, 22, 44, 88, 176, 88, 44, 22, 11)
# Spec §1.2: SampleCNN block widths 0..10; layer k is block 10 - k.
CLMR_BLOCK_WIDTHS = (128, 128, 128, 256, 256, 256, 256, 256, 256, 512, 512)

# Spec §1.2 / §1.4 / §1.5 per-module parameter counts.
CLMR_MODULE_PARAMS = {
    "sequential.0": 768, "sequential.1": 49_536, "sequential.2": 49_536, "sequential.3": 99_072,
    **{f"sequential.{i}": 197_376 for i in range(4, 9)},
    "sequential.9": 394_752, "sequential.10": 787_968,
}
TUNE_MODULE_PARAMS = {
    "conv1": 66, "conv2": 792, "conv3": 3_036, "conv4": 11_880, "conv5": 46_992,
    "transposedConv6": 46_552, "conv6": 46_728, "transposedConv7": 11_660, "conv7": 11_748,
    "transposedConv8": 2_926, "conv8": 2_970, "transposedConv9": 737, "conv9": 759,
    "convDown1": 792, "convDown2": 3_036, "convDown3": 11_880, "convDown4": 46_992,
    "convDown5": 186_912, "convDown6": 372_768, "convDown7": 372_768, "convDown8": 372_768,
    "convDown9": 542_208,
}
TUNE_PLUS_MODULE_PARAMS = {
    **TUNE_MODULE_PARAMS, "convDown1": 2_244, "convDown2": 8_844, "convDown3": 35_112, "convDown4": 139_920,
}

CLMR_URL = "https://github.com/Spijkervet/CLMR/releases/download/2.1/clmr_magnatagatune_mlp.zip"
TUNE_URL = "https://drive.google.com/drive/folders/1MZZs-CRVibaLuW_zmV9KB8sPy495qERJ"
RELEASE_URLS = {"clmr": CLMR_URL, "tune": TUNE_URL, "tune_plus": TUNE_URL}


# --- independent functional reference (spec §1.2-§1.5, tensors read by published key names) ---

def _conv_bn_relu(
    x: torch.Tensor, sd: dict[str, torch.Tensor], conv: str, bn: str, stride: int = 1, padding: int = 1
) -> torch.Tensor:
    y = F.conv1d(x, sd[f"{conv}.weight"], sd[f"{conv}.bias"], stride=stride, padding=padding)
    y = F.batch_norm(
        y, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"], sd[f"{bn}.bias"],
        training=False, eps=1e-5,
    )
    return F.relu(y)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool1d(x, kernel_size=3, stride=3)


def reference_samplecnn_blocks(sd: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of SampleCNN blocks 0..10."""
    h = _conv_bn_relu(x, sd, "sequential.0.0", "sequential.0.1", stride=3, padding=0)
    outs = [h]
    for i in range(1, 10):
        h = _pool(_conv_bn_relu(h, sd, f"sequential.{i}.0", f"sequential.{i}.1"))
        outs.append(h)
    outs.append(_conv_bn_relu(h, sd, "sequential.10.0", "sequential.10.1"))
    return outs


def _block(x: torch.Tensor, sd: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return _conv_bn_relu(x, sd, f"{name}.layers.0", f"{name}.layers.1")


def _up(x: torch.Tensor, sd: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.conv_transpose1d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], stride=3, padding=0)


def reference_tune_blocks(sd: dict[str, torch.Tensor], x: torch.Tensor, plus: bool) -> list[torch.Tensor]:
    """c1..c18 of Tune5Tail, or of TunePlus with `plus`."""
    c1 = _block(x, sd, "conv1")
    c2 = _block(_pool(c1), sd, "conv2")
    c3 = _block(_pool(c2), sd, "conv3")
    c4 = _block(_pool(c3), sd, "conv4")
    c5 = _block(_pool(c4), sd, "conv5")
    c6 = _block(torch.cat((_up(c5, sd, "transposedConv6"), c4), dim=1), sd, "conv6")
    c7 = _block(torch.cat((_up(c6, sd, "transposedConv7"), c3), dim=1), sd, "conv7")
    c8 = _block(torch.cat((_up(c7, sd, "transposedConv8"), c2), dim=1), sd, "conv8")
    c9 = _block(torch.cat((_up(c8, sd, "transposedConv9"), c1), dim=1), sd, "conv9")
    if plus:  # [pooled tail, link]
        c10 = _block(torch.cat((_pool(c9), c8), dim=1), sd, "convDown1")
        c11 = _block(torch.cat((_pool(c10), c7), dim=1), sd, "convDown2")
        c12 = _block(torch.cat((_pool(c11), c6), dim=1), sd, "convDown3")
        c13 = _block(torch.cat((_pool(c12), c5), dim=1), sd, "convDown4")
    else:
        c10 = _block(_pool(c9), sd, "convDown1")
        c11 = _block(_pool(c10), sd, "convDown2")
        c12 = _block(_pool(c11), sd, "convDown3")
        c13 = _block(_pool(c12), sd, "convDown4")
    c14 = _block(_pool(c13), sd, "convDown5")
    c15 = _block(_pool(c14), sd, "convDown6")
    c16 = _block(_pool(c15), sd, "convDown7")
    c17 = _block(_pool(c16), sd, "convDown8")
    c18 = _block(_pool(c17), sd, "convDown9")
    return [c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18]


def reference_layers(name: str, model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Reference representation of every layer k (index k): time-mean of the tapped block."""
    sd = model.state_dict()
    with torch.no_grad():
        if name == "clmr":
            blocks = reference_samplecnn_blocks(sd, x)
        else:
            blocks = reference_tune_blocks(sd, x, plus=name == "tune_plus")
    return [b.mean(dim=-1) for b in reversed(blocks)]  # layer k = last block minus k


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --- sizes ---

@pytest.mark.parametrize("name", ENCODERS)
def test_full_size_counts_match_spec(name: str) -> None:
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    state = model.state_dict()
    assert len(state) == KEYS[name]
    assert not any(k.startswith("fc.") for k in state)
    bn_buffers = sum(
        t.numel() for k, t in state.items()
        if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert bn_buffers == BN_BUFFER_ELEMENTS[name]


@pytest.mark.parametrize("name", ENCODERS)
def test_full_size_per_module_params_match_spec(name: str) -> None:
    model = build_model(name)
    expected = {"clmr": CLMR_MODULE_PARAMS, "tune": TUNE_MODULE_PARAMS, "tune_plus": TUNE_PLUS_MODULE_PARAMS}[name]
    modules = dict(model.named_modules())
    got = {m: sum(p.numel() for p in modules[m].parameters()) for m in expected}
    assert got == expected


@pytest.mark.parametrize("name", ["tune", "tune_plus"])
def test_tune_layer_dims_match_spec(name: str) -> None:
    model = build_model(name)
    assert tuple(model.layer_dims) == TUNE_LAYER_DIMS
    assert model.num_layers == 18


def test_clmr_layer_dims_are_blocks_reversed() -> None:
    model = build_model("clmr")
    assert tuple(model.layer_dims) == tuple(reversed(CLMR_BLOCK_WIDTHS))
    assert model.num_layers == 11


@pytest.mark.parametrize("name, expected", [("tune", (22, 11, 3)), ("tune_plus", (22, 33, 3))])
def test_convdown1_shape_distinguishes_variants(name: str, expected: tuple[int, ...]) -> None:
    assert tuple(build_model(name).state_dict()["convDown1.layers.0.weight"].shape) == expected


# --- forward against the functional reference ---

@pytest.mark.parametrize(
    "name, length",
    [("clmr", FRAME), ("clmr", FRAME + 1000), ("tune", FRAME), ("tune_plus", FRAME),
     ("tune_plus", FRAME + 81 * 7)],
)
def test_tiny_every_layer_matches_reference(name: str, length: int) -> None:
    model = tiny_model(name, seed=3)
    x = torch.randn(2, 1, length, generator=torch.Generator().manual_seed(1))
    reference = reference_layers(name, model, x)
    assert len(reference) == model.num_layers == (11 if name == "clmr" else 18)
    with torch.no_grad():
        for k, ref in enumerate(reference):
            out = model(x, layer=k)
            assert out.shape == (2, model.layer_dims[k]) == ref.shape, k
            assert _max_abs(out, ref) <= 1e-5, k


@pytest.mark.parametrize("name", ENCODERS)
def test_full_size_layer0_matches_reference(name: str) -> None:
    torch.manual_seed(7)
    model = build_model(name)
    randomize_batchnorm(model, seed=7)
    model.eval()
    x = torch.randn(1, 1, FRAME, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(x)
        ref = reference_layers(name, model, x)[0]
    assert out.shape == (1, 512)
    assert _max_abs(out, ref) <= 1e-5
    assert ref.abs().max() > 1e-3  # the comparison is not between two zero vectors


@pytest.mark.parametrize("name", ENCODERS)
def test_inference_twin_matches_reference(name: str) -> None:
    # Folded BN and channels-last 2-D layers only change float rounding: a looser tolerance.
    model = tiny_model(name, seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = InferenceEncoder(model)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in fused.modules())
    x = torch.randn(2, 1, FRAME, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for k, ref in enumerate(reference_layers(name, model, x)):
            assert _max_abs(fused(x, layer=k), ref) <= 5e-5, k
    after = model.state_dict()  # the original is left as it was
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)

    torch.manual_seed(7)
    full = build_model(name)
    randomize_batchnorm(full, seed=7)
    full.eval()
    x = x[:1]
    with torch.no_grad():
        assert _max_abs(InferenceEncoder(full)(x), reference_layers(name, full, x)[0]) <= 1e-4


def test_reference_depends_on_batchnorm_statistics() -> None:
    # Guards the reference itself: BN stats must matter, or the parity test would be weak.
    model = tiny_model("tune_plus")
    x = torch.randn(1, 1, FRAME, generator=torch.Generator().manual_seed(0))
    before = reference_layers("tune_plus", model, x)[0]
    with torch.no_grad():
        model.convDown9.layers[1].running_mean.add_(1.0)
        after_model = model(x)
    after = reference_layers("tune_plus", model, x)[0]
    assert _max_abs(before, after) > 1e-3
    assert _max_abs(after_model, after) <= 1e-5


# --- early exit ---

def _block_names(name: str) -> list[str]:
    if name == "clmr":
        return [f"sequential.{i}" for i in range(11)]
    return [f"conv{i}" for i in range(1, 10)] + [f"convDown{i}" for i in range(1, 10)]


@pytest.mark.parametrize("name", ENCODERS)
def test_layer_k_runs_only_the_blocks_up_to_its_tap(name: str) -> None:
    model = tiny_model(name)
    modules = dict(model.named_modules())
    order = _block_names(name)
    called: list[str] = []
    for block in order:
        modules[block].register_forward_hook(lambda *_, block=block: called.append(block))
    x = torch.randn(1, 1, FRAME)
    with torch.no_grad():
        for k in range(model.num_layers):
            called.clear()
            model(x, layer=k)
            assert called == order[: len(order) - k], k
    # The cases the spec singles out: layer 1 never runs the last block.
    called.clear()
    with torch.no_grad():
        model(x, layer=1)
    assert order[-1] not in called and order[-2] in called


# --- registry ---

def test_available_models() -> None:
    assert available_models() == ["chroma", "clmr", "mfcc", "musicnn", "musicnn_msd", "musicnn_mtt", "tune", "tune_plus"]


@pytest.mark.parametrize("call", [build_model, load_model, get_info])
def test_unknown_model_lists_valid_names(call: Callable) -> None:
    with pytest.raises(UnknownModelError) as info:
        call("wav2vec")
    message = str(info.value)
    assert "wav2vec" in message
    for valid in ["chroma", "clmr", "mfcc", "tune", "tune_plus"]:
        assert valid in message


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("bad", [-1, "too_deep"])
def test_invalid_layer_names_valid_range(name: str, bad: int | str) -> None:
    model = tiny_model(name)
    layer = model.num_layers if bad == "too_deep" else bad
    with pytest.raises(ValueError) as info:
        model(torch.zeros(1, 1, FRAME), layer=layer)
    message = str(info.value)
    assert str(layer) in message
    assert re.search(rf"\b0\b.*\b{model.num_layers - 1}\b", message)


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("size", ["tiny", "full"])
def test_infer_model_round_trip(name: str, size: str) -> None:
    config = TINY_CONFIGS[name] if size == "tiny" else get_info(name).config
    model = build_model(name, config)
    assert isinstance(model, Encoder)
    assert model.config == config
    assert infer_model(model.state_dict()) == (name, config)


def test_infer_model_configs_are_the_spec_defaults() -> None:
    assert infer_model(build_model("clmr").state_dict()) == ("clmr", SampleCNNConfig(CLMR_BLOCK_WIDTHS))
    assert infer_model(build_model("tune").state_dict()) == ("tune", TuneConfig(11, 512, False))
    assert infer_model(build_model("tune_plus").state_dict()) == ("tune_plus", TuneConfig(11, 512, True))


@pytest.mark.parametrize("name", ENCODERS)
def test_load_model_without_weights_explains_where_to_get_them(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEMIR_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(MissingWeightsError) as info:
        load_model(name)
    assert isinstance(info.value, CheckpointError)
    message = str(info.value)
    assert RELEASE_URLS[name] in message
    assert "--checkpoint" in message


@pytest.mark.parametrize("name", ENCODERS)
def test_load_model_uses_weights_dir(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tiny_model(name, seed=5)
    save_checkpoint(
        tmp_path / f"{name}.safetensors", source.state_dict(), model=name,
        config=dataclasses.asdict(TINY_CONFIGS[name]),
    )
    monkeypatch.setenv("TUNEMIR_WEIGHTS_DIR", str(tmp_path))
    model = load_model(name)
    assert not any(m.training for m in model.modules())
    loaded, expected = model.state_dict(), source.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    x = torch.randn(1, 1, FRAME)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


@pytest.mark.parametrize("name", ENCODERS)
def test_random_init_is_eval_mode(name: str) -> None:
    model = load_model(name, random_init=True)
    assert isinstance(model, Encoder)
    assert not any(m.training for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_random_init_refuses_a_checkpoint_too(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_model("tune", tmp_path / "x.safetensors", random_init=True)


# --- handcrafted features ---

def reference_moments(signal: np.ndarray, kind: str) -> np.ndarray:
    """jukemir's recipe, written out: peak-normalise, feature at hop 512, moments of d0, d1, d2."""
    import librosa

    y = signal / np.abs(signal).max()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large")  # CQT's low octaves
        if kind == "chroma":
            feature = librosa.feature.chroma_cqt(y=y, sr=SR, hop_length=512)
        else:
            feature = librosa.feature.mfcc(y=y, sr=SR, hop_length=512)
    d1 = np.diff(feature, axis=1)
    d2 = np.diff(d1, axis=1)
    return np.concatenate([
        feature.mean(axis=1), feature.std(axis=1, ddof=0),
        d1.mean(axis=1), d1.std(axis=1, ddof=0),
        d2.mean(axis=1), d2.std(axis=1, ddof=0),
    ])


def _assert_close_relative(out: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("kind, dim", [("chroma", 72), ("mfcc", 120)])
def test_handcrafted_matches_reference(kind: str, dim: int) -> None:
    feature = build_model(kind)
    assert isinstance(feature, HandcraftedFeature)
    assert load_model(kind) == feature  # needs no weights
    assert feature.dim == dim
    signal = synthetic_signal(3.0, SR, seed=4)[:, 0]
    out = feature(signal)
    assert out.shape == (dim,) and out.dtype == np.float32
    _assert_close_relative(out, reference_moments(signal, kind))
    # Scale invariance follows from the peak normalisation.
    _assert_close_relative(feature(0.25 * signal), out)


@pytest.mark.parametrize("kind", ["chroma", "mfcc"])
def test_handcrafted_short_signal_is_zero_padded(kind: str) -> None:
    signal = synthetic_signal(1.0, SR, seed=6)[:, 0]
    assert len(signal) < FRAME
    out = build_model(kind)(signal)
    assert np.isfinite(out).all()
    padded = np.pad(signal, (0, FRAME - len(signal)))
    _assert_close_relative(out, reference_moments(padded, kind))


def test_config_from_dict_refuses_unknown_fields():
    """A dropped key would build the full-size model instead of the one asked for."""
    from tunemir.models import config_from_dict

    assert config_from_dict("tune", {"channels": 2}).channels == 2
    with pytest.raises(ValueError, match="'chanels'.*fields are channels"):
        config_from_dict("tune", {"chanels": 2})


def test_inference_twins_are_the_families_declarations():
    from tunemir.models import inference_module
    from tunemir.models.base import InferenceEncoder
    from tunemir.models.musicnn import MusicnnEmbedding
    from tunemir.testing import tiny_model

    for name in ("clmr", "tune", "tune_plus", "musicnn"):
        assert get_info(name).inference, name  # each of these families opts in
    assert isinstance(inference_module(tiny_model("tune_plus")), InferenceEncoder)
    assert isinstance(inference_module(tiny_model("musicnn")), MusicnnEmbedding)
    plain = torch.nn.Linear(3, 2).train()  # a module of no family (a custom model) runs as it is, in eval mode
    twin = inference_module(plain)
    assert type(twin) is torch.nn.Linear and not twin.training and plain.training
