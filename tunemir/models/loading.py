"""Building and loading encoders: fresh models, checkpoints recognised by their tensors, strict loading."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import os
import shutil
import zipfile
from pathlib import Path

import torch
from torch import nn

from tunemir import checkpoints
from tunemir.models import WEIGHTS_DIR_ENV, available_models, default_weights_path, get_info
from tunemir.models.base import Encoder
from tunemir.models.configs import MusicnnConfig, SampleCNNConfig, TuneConfig
from tunemir.models.handcrafted import HandcraftedFeature
from tunemir.models.release import Release, ReleaseFormatError


def build_model(name: str, config=None) -> Encoder | HandcraftedFeature:
    """A freshly initialised model: the registry entry's class (`ModelInfo.builder`) called with
    `config` (default: the entry's). A whole-file feature is its own configuration."""
    info = get_info(name)
    config = config if config is not None else info.config
    if not info.builder:
        return config
    module, _, cls = info.builder.partition(":")
    return getattr(importlib.import_module(module), cls)(config)


def infer_model(state: dict[str, torch.Tensor], prefer: tuple[str | None, ...] = ()
                ) -> tuple[str, SampleCNNConfig | TuneConfig | MusicnnConfig]:
    """Recognise an encoder state_dict by its key layout and shapes: (registry name, config).

    TUNe and TUNe+ share key names; TUNe+'s convDown1 takes 3C input channels instead of C.
    musicnn's variants (MSD, MTT) share a layout, so the name is the first of `prefer` (the
    name a checkpoint's metadata records, the name asked for) that is a musicnn of that shape.
    """
    if all(key in state for key in _MUSICNN_KEYS):
        return _infer_musicnn(state, prefer)
    tune_keys = ("conv1.layers.0.weight", "convDown1.layers.0.weight", "convDown9.layers.0.weight")
    if all(key in state for key in tune_keys):
        channels = state[tune_keys[0]].shape[0]
        plus = state[tune_keys[1]].shape[1] == 3 * channels
        config = TuneConfig(channels, state[tune_keys[2]].shape[0], plus)
        return ("tune_plus" if plus else "tune"), config
    widths = []
    while f"sequential.{len(widths)}.0.weight" in state:
        widths.append(state[f"sequential.{len(widths)}.0.weight"].shape[0])
    if len(widths) >= 2:  # SampleCNN needs a first and a last block; fewer is a damaged file
        return "clmr", SampleCNNConfig(tuple(widths))
    sample = ", ".join(sorted(state)[:5])
    raise checkpoints.CheckpointError(
        f"the weights are neither a SampleCNN (sequential.N.*), a TUNe (conv1.*, convDown1.*) nor a musicnn "
        f"(timbral.*, midend.*) encoder; first keys: {sample}"
    )


_MUSICNN_KEYS = ("timbral.0.conv.weight", "temporal.0.conv.weight", "midend.0.weight", "dense.weight", "logits.weight")


def _infer_musicnn(state: dict[str, torch.Tensor], prefer: tuple[str | None, ...]) -> tuple[str, MusicnnConfig]:
    config = dataclasses.replace(MusicnnConfig(), midend_filters=state["midend.0.weight"].shape[0],
                                 timbral_filters=state["timbral.0.conv.weight"].shape[0],
                                 temporal_filters=state["temporal.0.conv.weight"].shape[0],
                                 backend_units=state["dense.weight"].shape[0],
                                 num_classes=state["logits.weight"].shape[0])
    names = [n for n in available_models() if isinstance(get_info(n).config, MusicnnConfig)]
    shaped = [n for n in names if get_info(n).config == config]  # the variants of this shape
    for name in prefer:
        if name in (shaped or names):
            return name, config
    if len(shaped) == 1:
        return shaped[0], config
    raise checkpoints.CheckpointError(
        f"the weights are a musicnn, whose variants {', '.join(shaped or names)} share this layout; name the model "
        f"(e.g. --model {(shaped or names)[0]})")


def load_model(
    name: str, checkpoint: str | os.PathLike | None = None, *, random_init: bool = False
) -> Encoder | HandcraftedFeature:
    """An eval-mode model ready for extraction.

    Weights come from `checkpoint` (any format `tunemir.checkpoints` reads), else from the
    baked-in file at `default_weights_path(name)`. Without either, a model that needs weights
    refuses to run unless `random_init` (tests and smoke runs only) is set.
    """
    info = get_info(name)
    if not info.needs_weights:
        return info.config
    if random_init:
        if checkpoint is not None:
            raise ValueError("give either a checkpoint or random_init, not both")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same untrained weights every run, so reruns can resume
            return build_model(name).eval()
    path = Path(checkpoint) if checkpoint is not None else default_weights_path(name)
    if checkpoint is None and not path.is_file():
        raise checkpoints.MissingWeightsError(
            f"no weights for {name!r}: none are baked in at {path}. `tunemir weights fetch {name}` "
            f"checks and converts the released weights (from {info.weights_url}) into place; or pass "
            f"--checkpoint PATH (or convert one with `tunemir convert-checkpoint IN {path}`; "
            f"${WEIGHTS_DIR_ENV} sets the folder). "
            f"--random-init runs with untrained weights, for tests only."
        )
    model, _, _ = _read_checked(path, name)
    return model.eval()


def load_encoder(checkpoint: str | os.PathLike, name: str | None = None) -> tuple[Encoder, str]:
    """An eval-mode encoder from any supported checkpoint and its registry name, recognised from
    the tensors (`name`, if given, must agree)."""
    model, detected, _ = _read_checked(checkpoint, name)
    return model.eval(), detected


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, name: str | None = None,
                       release: dict | None = None) -> dict:
    """Convert any supported checkpoint to tunemir's safetensors format; returns its metadata.

    The model is recognised from the tensor shapes; `name`, if given, must agree. `release`
    (the released file's name and pinned sha256) is recorded in the metadata's source.
    """
    model, detected, weights = _read_checked(src, name)
    source = {"file": Path(src).name, "sha256": weights.file_sha256, "format": weights.format,
              **{f"original_{k}": v for k, v in weights.metadata.items()}}
    if release:
        source["release"] = release
    return checkpoints.save_checkpoint(
        dst, weights.state_dict, model=detected, config=dataclasses.asdict(model.config), source=source
    )


def convert_release(source: Path, output: Path, *, model: str, release: Release, pin: dict, workdir: Path) -> None:
    """The converter of PyTorch releases (`Release.converter`): the checkpoint `source` (or the
    `release.member` inside the zip `source`) -> tunemir's checkpoint `output`, recording `pin`."""
    checkpoint = Path(source)
    if release.member is not None:
        try:
            with zipfile.ZipFile(source) as archive:
                checkpoint = Path(workdir) / Path(release.member).name
                with archive.open(release.member) as src, open(checkpoint, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, KeyError) as err:
            raise ReleaseFormatError(f"does not hold {release.member} ({err})") from None
    convert_checkpoint(checkpoint, output, model, release=pin)


def _read_checked(path, name: str | None) -> tuple[Encoder, str, checkpoints.EncoderWeights]:
    """Read a checkpoint, recognise its model (which must be `name` if given) and load it strictly."""
    weights = checkpoints.read_encoder_weights(path)
    detected, config = infer_model(weights.state_dict, prefer=(weights.metadata.get("model"), name))
    if name is not None and detected != name:
        raise checkpoints.CheckpointError(
            f"{path} holds a {detected!r} encoder, but {name!r} was requested; "
            f"ask for {detected!r} or pass the matching checkpoint"
        )
    model = build_model(detected, config)
    try:
        model.load_state_dict(weights.state_dict, strict=True)
    except RuntimeError as err:
        raise checkpoints.CheckpointError(f"{path} does not fit {detected!r}: {err}") from None
    return model, detected, weights


def inference_module(model: nn.Module) -> nn.Module:
    """What extraction runs for `model`: the inference twin its registry family declares
    (`ModelInfo.inference`: tunemir's encoders fold BatchNorm, musicnn gives its per-patch vector),
    built from an eval-mode copy; any other module (a custom model) runs as it is."""
    twin = copy.deepcopy(model).eval()
    wrapper = _declared_inference(type(model))
    return wrapper(twin) if wrapper else twin


def _declared_inference(cls: type) -> type | None:
    """The `inference` class declared by the registry families whose builder is `cls`."""
    for name in available_models():
        info = get_info(name)
        if info.builder and info.inference and _import(info.builder) is cls:
            return _import(info.inference)
    return None


def _import(reference: str):
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
