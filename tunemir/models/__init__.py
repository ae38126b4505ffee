"""Model registry: name -> encoder (TUNe, TUNe+, CLMR SampleCNN) or handcrafted baseline.

The registry imports no torch; the encoders and their loading (`tunemir.models.loading`) are
imported on first use of their names here.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from tunemir.models.configs import SampleCNNConfig, TuneConfig
from tunemir.models.handcrafted import HandcraftedFeature

__all__ = [
    "Encoder", "HandcraftedFeature", "ModelInfo", "SampleCNN", "SampleCNNConfig", "Tune",
    "TuneConfig", "UnknownModelError", "available_models", "build_model", "config_from_dict",
    "default_weights_path", "get_info", "infer_model", "load_encoder", "load_model",
]

#: Where `load_model` looks for `<name>.safetensors` when no checkpoint is given.
WEIGHTS_DIR_ENV = "TUNEMIR_WEIGHTS_DIR"
DEFAULT_WEIGHTS_DIR = Path("~/.cache/tunemir/weights")


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model: its default configuration and its released weights."""

    name: str
    summary: str
    config: SampleCNNConfig | TuneConfig | HandcraftedFeature
    weights_url: str = ""

    @property
    def needs_weights(self) -> bool:
        return not isinstance(self.config, HandcraftedFeature)


#: Where the released weights are (`tunemir.weights` fetches them from here).
CLMR_RELEASE_URL = "https://github.com/Spijkervet/CLMR/releases/download/2.1/clmr_magnatagatune_mlp.zip"
TUNE_RELEASE_FOLDER = "https://drive.google.com/drive/folders/1MZZs-CRVibaLuW_zmV9KB8sPy495qERJ"
_TUNE_WEIGHTS = (
    f"the TUNe authors' Google Drive folder {TUNE_RELEASE_FOLDER} "
    "(tune_5_tail_epoch_10000.ckpt / tune_plus_epoch_10000.ckpt)"
)
_REGISTRY = {
    info.name: info
    for info in [
        ModelInfo(
            "clmr", "CLMR SampleCNN (Spijkervet & Burgoyne 2021), 512-d", SampleCNNConfig(),
            f"{CLMR_RELEASE_URL} (clmr_magnatagatune_mlp/clmr_epoch=10000.ckpt, the checkpoint jukemir uses)",
        ),
        ModelInfo("tune", "TUNe, Tailed U-Net Tail+5 (Velez Vasquez & Burgoyne 2022), 512-d",
                  TuneConfig(), _TUNE_WEIGHTS),
        ModelInfo("tune_plus", "TUNe+, Tailed U-Net with pink links, 512-d",
                  TuneConfig(plus=True), _TUNE_WEIGHTS),
        ModelInfo("chroma", "jukemir handcrafted: moments of chroma_cqt, 72-d", HandcraftedFeature("chroma")),
        ModelInfo("mfcc", "jukemir handcrafted: moments of MFCC, 120-d", HandcraftedFeature("mfcc")),
    ]
}


class UnknownModelError(ValueError):
    """A model name that is not in the registry."""


def available_models() -> list[str]:
    """Names accepted by `build_model`, `load_model` and `tunemir extract`."""
    return sorted(_REGISTRY)


def get_info(name: str) -> ModelInfo:
    """Registry entry for `name`; an unknown name raises an error listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; available: {', '.join(available_models())}"
        ) from None


def config_from_dict(name: str, values: dict) -> SampleCNNConfig | TuneConfig:
    """The registry's configuration of `name` with the fields in `values` replaced (the
    primitives stored in a tunemir checkpoint, or a partial override such as smaller widths)."""
    default = get_info(name).config
    fields = [f.name for f in dataclasses.fields(default)]
    unknown = sorted(set(values) - set(fields))
    if unknown:  # a dropped key would silently build another model than the one asked for
        raise ValueError(f"{name} has no configuration field {', '.join(map(repr, unknown))}; "
                         f"its fields are {', '.join(fields)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return dataclasses.replace(default, **kwargs)


def default_weights_path(name: str) -> Path:
    """Where baked-in weights for `name` live: $TUNEMIR_WEIGHTS_DIR/<name>.safetensors."""
    root = Path(os.environ.get(WEIGHTS_DIR_ENV) or DEFAULT_WEIGHTS_DIR).expanduser()
    return root / f"{name}.safetensors"


#: What needs torch, imported on first use (PEP 562), so that the registry (`tunemir models`, the
#: CLI's choices of model names) reads without importing torch: name -> module defining it.
_TORCH_ATTRIBUTES = {
    "Encoder": "tunemir.models.base", "SampleCNN": "tunemir.models.samplecnn", "Tune": "tunemir.models.tune",
    **{name: "tunemir.models.loading" for name in
       ("build_model", "convert_checkpoint", "infer_model", "load_encoder", "load_model")},
}


def __getattr__(name: str):
    if name in _TORCH_ATTRIBUTES:
        return getattr(importlib.import_module(_TORCH_ATTRIBUTES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_TORCH_ATTRIBUTES})
