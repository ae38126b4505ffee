"""Model registry: name -> encoder (TUNe, TUNe+, CLMR SampleCNN) or handcrafted baseline.

The registry imports no torch; the encoders and their loading (`tunemir.models.loading`) are
imported on first use of their names here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from tunemir.audio import FRAME_LENGTH, SAMPLE_RATE
from tunemir.lazy import lazy_attributes
from tunemir.models.configs import MusicnnConfig, SampleCNNConfig, TuneConfig
from tunemir.models.handcrafted import HandcraftedFeature
from tunemir.models.release import Release

__all__ = [
    "Encoder", "HandcraftedFeature", "ModelInfo", "ModelSpec", "MusicnnConfig", "Release", "SampleCNN", "SampleCNNConfig", "Tune",
    "TuneConfig", "UnknownModelError", "available_models", "build_model", "config_from_dict",
    "default_weights_path", "get_info", "releases", "infer_model", "load_encoder", "load_model",
]

#: Where `load_model` looks for `<name>.safetensors` when no checkpoint is given.
WEIGHTS_DIR_ENV = "TUNEMIR_WEIGHTS_DIR"
DEFAULT_WEIGHTS_DIR = Path("~/.cache/tunemir/weights")


#: Front ends: what a model takes. "waveform" models take frames of raw samples; "spectrogram" models
#: take the frames their declared `spectrogram` function cuts from the whole file's spectrogram (or,
#: without one, raw frames whose spectrogram the model computes itself); "whole_file" features take
#: the whole signal.
FRONT_ENDS = ("waveform", "spectrogram", "whole_file")
#: How the frame vectors of one file pool into its vector.
POOLINGS = ("mean", "max")


@dataclass(frozen=True)
class ModelSpec:
    """What the extraction pipeline needs to know of a model, declared by the model.

    Audio is decoded to mono at `sample_rate` and cut into frames of `frame_length` samples
    every `hop_length` samples (None: `frame_length`, non-overlapping; the incomplete tail is
    dropped and a file shorter than one frame is zero-padded to one). Each frame becomes a
    vector and the file's vector pools them (`pooling`). A "whole_file" front end skips the
    framing: the model maps the whole signal to one vector. A "spectrogram" front end with a
    `spectrogram` function ("module:function", imported in the decode workers) maps the whole
    decoded signal (float32 mono at `sample_rate`) to the model's input frames, an array (P, ...)
    such as musicnn's log-mel patches (P, 187, 96), since its STFT frames straddle the patch
    boundaries; `frame_length` is then the samples one such frame spans, and short audio is
    padded as that function does. `num_layers` is how many layers `--layer` may tap (0 = the
    final representation).
    """

    sample_rate: int = SAMPLE_RATE
    frame_length: int = FRAME_LENGTH
    hop_length: int | None = None
    front_end: str = "waveform"
    pooling: str = "mean"
    num_layers: int = 1
    spectrogram: str = ""

    def __post_init__(self) -> None:
        problems = []
        for name in ("sample_rate", "frame_length", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive whole number, got {value!r}")
        if self.hop_length not in (None, self.frame_length):
            problems.append(f"hop_length {self.hop_length!r}: only non-overlapping frames (hop_length = "
                            f"frame_length, or None) are supported so far")
        if self.front_end not in FRONT_ENDS:
            problems.append(f"front_end must be one of {', '.join(FRONT_ENDS)}, got {self.front_end!r}")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.spectrogram and (self.front_end != "spectrogram" or not _is_function_name(self.spectrogram)):
            problems.append(f"spectrogram {self.spectrogram!r}: give a 'module:function' name, with front_end "
                            f"'spectrogram'")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def hop(self) -> int:
        """Samples from one frame's start to the next's."""
        return self.hop_length or self.frame_length

    @property
    def framed(self) -> bool:
        """True if the model sees frames (and their vectors are pooled), False for whole-file features."""
        return self.front_end != "whole_file"

    @property
    def framing(self) -> str:
        """How a file becomes model inputs, in words (recorded in the manifest)."""
        # The mean-pooled wording is what manifests have always said (handcrafted features' too), so
        # folders written before the declarations existed still match.
        if self.spectrogram:
            return (f"frames cut by {self.spectrogram} from the whole file's spectrogram; frame vectors pooled by "
                    f"{self.pooling}")
        framing = "non-overlapping; incomplete tail dropped; shorter than one frame: zero-padded to one"
        return framing if self.pooling == "mean" or not self.framed else f"{framing}; frame vectors pooled by max"

    def as_dict(self) -> dict:
        values = {**dataclasses.asdict(self), "hop_length": self.hop}
        if not self.spectrogram:  # as manifests recorded it before the field existed
            del values["spectrogram"]
        return values


def _is_function_name(name: str) -> bool:
    module, _, function = name.partition(":")
    return function.isidentifier() and all(part.isidentifier() for part in module.split("."))


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model: its default configuration, its declarations for the
    pipeline (`spec`), where its released weights are (`weights_url`, in words) and how `tunemir
    weights fetch` finds, checks and converts them (`release`), and its class (`builder`,
    "module:Class", called with the configuration and imported only when a model is built, so the
    registry needs no torch; empty for a whole-file feature, whose configuration is the feature
    itself). `inference` ("module:Class", optional) is the family's opt-in extraction twin, called
    with an eval-mode copy of the model: the BatchNorm-folding `InferenceEncoder` of tunemir's
    encoders, musicnn's per-patch vector; without one the model runs as it is."""

    name: str
    summary: str
    config: SampleCNNConfig | TuneConfig | MusicnnConfig | HandcraftedFeature
    weights_url: str = ""
    spec: ModelSpec = ModelSpec()
    builder: str = ""
    release: Release | None = None
    inference: str = ""

    def __post_init__(self) -> None:
        if self.spec.framed != bool(self.builder):  # an encoder needs its class; a feature has none
            raise ValueError(f"registry entry {self.name!r}: a {self.spec.front_end} model "
                             f"{'needs' if self.spec.framed else 'takes no'} builder (got {self.builder!r})")

    @property
    def needs_weights(self) -> bool:
        """Whether the model has trained weights to find (a neural encoder) or none (a whole-file feature)."""
        return self.spec.framed


#: Where the released weights are (`tunemir.weights` fetches them from here).
CLMR_RELEASE_URL = "https://github.com/Spijkervet/CLMR/releases/download/2.1/clmr_magnatagatune_mlp.zip"
TUNE_RELEASE_FOLDER = "https://drive.google.com/drive/folders/1MZZs-CRVibaLuW_zmV9KB8sPy495qERJ"
_TUNE_WEIGHTS = (
    f"the TUNe authors' Google Drive folder {TUNE_RELEASE_FOLDER} "
    "(tune_5_tail_epoch_10000.ckpt / tune_plus_epoch_10000.ckpt)"
)
#: musicnn 0.1.0's wheel on PyPI ships the MSD_musicnn and MTT_musicnn TensorFlow checkpoints.
MUSICNN_WHEEL = "musicnn-0.1.0-py3-none-any.whl"
MUSICNN_WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"  # as PyPI lists it
MUSICNN_WHEEL_PAGE = "https://pypi.org/project/musicnn/0.1.0/"
MUSICNN_WHEEL_URL = (  # PyPI's file, as its simple index lists it
    f"https://files.pythonhosted.org/packages/1b/6f/38229e7d99c438e11114bbfa39c8c39185458c398011d0b6d7d7c7401617/"
    f"{MUSICNN_WHEEL}")
#: Registry name -> the TensorFlow checkpoint in the wheel (`musicnn/<variant>/`) its weights come from.
MUSICNN_WHEEL_VARIANTS = {"musicnn_msd": "MSD_musicnn", "musicnn_mtt": "MTT_musicnn"}
#: MSD_musicnn_big, the variant jukemir used, is only in musicnn's GitHub repository (not in the
#: wheel); the user brings the folder. Its files are pinned by their git blob ids at that commit
#: (`git ls-tree 516acb2 musicnn/MSD_musicnn_big/`), the only digests its publisher gives.
MUSICNN_REPO_COMMIT = "516acb2a0ff5ef73f64547898e018e793152c506"
MUSICNN_BIG_PAGE = f"https://github.com/jordipons/musicnn/tree/{MUSICNN_REPO_COMMIT}/musicnn/MSD_musicnn_big"
MUSICNN_BIG_FILES = ((".index", "git:879aed424637e59e5928e8395070778494d3d304"),
                     (".data-00000-of-00001", "git:8797b12a184750ac483685d294a715259922b1b4"))
# musicnn's input: 16 kHz log-mel patches of 187 STFT frames (hop 256) cut from the whole file by
# `tunemir.models.musicnn:patches` (its STFT frames straddle the 3-s patch boundaries, so the patches
# cannot be computed from waveform frames); a patch spans 187 * 256 samples.
_MUSICNN_SPEC = ModelSpec(sample_rate=16000, frame_length=187 * 256, front_end="spectrogram",
                          spectrogram="tunemir.models.musicnn:patches", num_layers=MusicnnConfig().num_layers)
_MUSICNN_BIG = MusicnnConfig(midend_filters=512, backend_units=500)
_PYTORCH_RELEASE = "tunemir.models.loading:convert_release"  # a PyTorch / Lightning checkpoint (in a zip)
_FOLDED = "tunemir.models.base:InferenceEncoder"  # BatchNorm folded, channels-last 2-D layers


def _musicnn(name: str, variant: str, config: MusicnnConfig, where: str, release: Release) -> ModelInfo:
    return ModelInfo(name, f"musicnn {variant} (Pons & Serra 2019), jukemir's mean_pool + max_pool, "
                     f"{config.embedding_dim}-d", config, where, _MUSICNN_SPEC, "tunemir.models.musicnn:Musicnn",
                     release, "tunemir.models.musicnn:MusicnnEmbedding")


_REGISTRY = {
    info.name: info
    for info in [
        ModelInfo(
            "clmr", "CLMR SampleCNN (Spijkervet & Burgoyne 2021), 512-d", SampleCNNConfig(),
            f"{CLMR_RELEASE_URL} (clmr_magnatagatune_mlp/clmr_epoch=10000.ckpt, the checkpoint jukemir uses)",
            ModelSpec(num_layers=SampleCNNConfig().num_layers), "tunemir.models.samplecnn:SampleCNN",
            Release("clmr_magnatagatune_mlp.zip", CLMR_RELEASE_URL, _PYTORCH_RELEASE, (CLMR_RELEASE_URL,),
                    member="clmr_magnatagatune_mlp/clmr_epoch=10000.ckpt"), _FOLDED,
        ),
        ModelInfo("tune", "TUNe, Tailed U-Net Tail+5 (Velez Vasquez & Burgoyne 2022), 512-d",
                  TuneConfig(), _TUNE_WEIGHTS, ModelSpec(num_layers=TuneConfig().num_layers), "tunemir.models.tune:Tune",
                  Release("tune_5_tail_epoch_10000.ckpt", TUNE_RELEASE_FOLDER, _PYTORCH_RELEASE), _FOLDED),
        ModelInfo("tune_plus", "TUNe+, Tailed U-Net with pink links, 512-d", TuneConfig(plus=True), _TUNE_WEIGHTS,
                  ModelSpec(num_layers=TuneConfig(plus=True).num_layers), "tunemir.models.tune:Tune",
                  Release("tune_plus_epoch_10000.ckpt", TUNE_RELEASE_FOLDER, _PYTORCH_RELEASE), _FOLDED),
        *(_musicnn(name, variant, MusicnnConfig(), f"{MUSICNN_WHEEL_PAGE} ({MUSICNN_WHEEL}, musicnn/{variant}/)",
                   Release(MUSICNN_WHEEL, MUSICNN_WHEEL_PAGE, "tunemir.models.musicnn:convert_wheel_release",
                           (MUSICNN_WHEEL_URL,), sha256=MUSICNN_WHEEL_SHA256, member=f"musicnn/{variant}/"))
          for name, variant in MUSICNN_WHEEL_VARIANTS.items()),
        _musicnn("musicnn", "MSD_musicnn_big", _MUSICNN_BIG,
                 f"the MSD_musicnn_big folder of musicnn's GitHub repository at {MUSICNN_REPO_COMMIT[:7]} "
                 f"({MUSICNN_BIG_PAGE}; not in the PyPI wheel)",
                 Release("MSD_musicnn_big", MUSICNN_BIG_PAGE, "tunemir.models.musicnn:convert_folder_release",
                         files=MUSICNN_BIG_FILES)),
        ModelInfo("chroma", "jukemir handcrafted: moments of chroma_cqt, 72-d", HandcraftedFeature("chroma"),
                  spec=ModelSpec(front_end="whole_file")),
        ModelInfo("mfcc", "jukemir handcrafted: moments of MFCC, 120-d", HandcraftedFeature("mfcc"),
                  spec=ModelSpec(front_end="whole_file")),
    ]
}


class UnknownModelError(ValueError):
    """A model name that is not in the registry."""


def available_models() -> list[str]:
    """Names accepted by `build_model`, `load_model` and `tunemir extract`."""
    return sorted(_REGISTRY)


def releases() -> dict[str, Release]:
    """Models with published weights (`tunemir weights fetch` takes these names) -> their release."""
    return {name: info.release for name, info in sorted(_REGISTRY.items()) if info.release is not None}


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
       ("build_model", "convert_checkpoint", "infer_model", "inference_module", "load_encoder", "load_model")},
}

__getattr__, __dir__ = lazy_attributes(__name__, _TORCH_ATTRIBUTES, globals)
