"""The pretraining configuration: one typed dataclass, filled from defaults, a YAML file and
command-line options, in that order (the only configuration mechanism of `tunemir train`)."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

from tunemir.pretrain.augment import AugmentConfig

AUGMENT_ON = ("device", "cpu", "none")


def _field(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """CLMR contrastive pretraining; the defaults are the TUNe paper's recipe (TUNe+ on the
    MagnaTagATune train split, batch 48 clips = 96 views, Adam 3e-4, tau 0.5, seed 42)."""

    model: str = _field("tune_plus", "Encoder to pretrain (tune, tune_plus or clmr).")
    encoder_config: str | None = _field(None, "JSON of encoder configuration fields overriding the "
                                        "registry's (e.g. '{\"channels\": 4}' for a small TUNe).")
    dataset: str = _field("magnatagatune", "Processed dataset to train on (ignored with audio_dir).")
    split: str = _field("train", "Split(s) of the dataset, comma-separated.")
    audio_dir: str | None = _field(None, "Train on every audio file under this folder instead of a dataset split.")
    datasets_dir: str | None = _field(None, "Processed datasets [default: $TUNEMIR_CACHE_DIR/processed].")
    audio_cache_dir: str | None = _field(None, "Decoded-audio caches [default: $TUNEMIR_CACHE_DIR/audio-cache].")
    output_dir: str = _field("runs/pretrain", "Runs are written under OUTPUT_DIR/NAME.")
    name: str | None = _field(None, "Run name [default: <model>-<dataset or folder name>].")
    batch_size: int = _field(48, "Clips per step and device; each gives two views.")
    max_epochs: int = _field(10000, "Epochs (one random crop pair per clip each).")
    max_steps: int = _field(-1, "Stop after this many optimizer steps (-1: no limit).")
    learning_rate: float = _field(3e-4, "Adam learning rate (not scaled by the number of devices).")
    temperature: float = _field(0.5, "NT-Xent temperature.")
    projection_dim: int = _field(64, "Output size of the projector.")
    seed: int = _field(42, "Seed of weights, shuffling, crops and augmentations.")
    augment_on: str = _field("device", "Where the augmentation chain runs: device (batched, after the "
                             "transfer), cpu (per clip in DataLoader workers) or none.")
    num_workers: int | None = _field(None, "DataLoader workers [default: 2, or all cores with augment_on=cpu].")
    checkpoint_every_n_epochs: int = _field(200, "Keep a checkpoint every N epochs (last.ckpt is "
                                            "rewritten every epoch).")
    accelerator: str = _field("auto", "Lightning accelerator: auto, cpu, gpu.")
    devices: str = _field("auto", "Lightning devices: auto, a count, or a list such as 0,1.")
    num_nodes: int = _field(1, "Machines (Lightning num_nodes).")
    strategy: str = _field("auto", "Lightning strategy: auto, ddp, ddp_spawn, ...")
    precision: str = _field("32-true", "Lightning precision: 32-true, bf16-mixed, 16-mixed.")
    sync_batchnorm: bool = _field(True, "Synchronise batch norm statistics across devices (DDP).")
    gather_negatives: bool = _field(False, "Use every device's views as negatives (CLMR/TUNe: "
                                    "per-device negatives only).")
    log_every_n_steps: int = _field(10, "Logging interval in steps.")
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)

    def __post_init__(self):
        if self.augment_on not in AUGMENT_ON:
            raise ConfigError(f"augment_on={self.augment_on!r}: choose one of {', '.join(AUGMENT_ON)}")
        for key in ("batch_size", "max_epochs", "projection_dim", "checkpoint_every_n_epochs", "num_nodes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, not {getattr(self, key)}")
        if self.batch_size < 2 and not self.gather_negatives:
            raise ConfigError("batch_size must be at least 2: NT-Xent needs negatives")

    @property
    def run_name(self) -> str:
        source = Path(self.audio_dir).name if self.audio_dir else self.dataset
        return self.name or f"{self.model}-{source}"

    def to_dict(self) -> dict:
        """Primitives only (lists for tuples), as YAML files and checkpoints store them."""
        def plain(value):
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return list(value) if isinstance(value, tuple) else value
        return plain(dataclasses.asdict(self))


class ConfigError(ValueError):
    """A configuration value or key that cannot work; the message names it."""


def _base_type(annotation):
    """`int | None` -> int; `tuple[float, float]` stays a tuple type."""
    if isinstance(annotation, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def _coerce(cls, key: str, value, where: str):
    hints = typing.get_type_hints(cls)
    if key not in hints:
        valid = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(f"{where}: unknown option {key!r}; valid options: {valid}")
    kind = _base_type(hints[key])
    if value is None:
        return None
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping of {kind.__name__} options")
        return _build(kind, value, f"{where}: {key}")
    try:
        if typing.get_origin(kind) is tuple:
            items = tuple(float(v) for v in value)
            if len(items) != len(typing.get_args(kind)):
                raise ValueError
            return items
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is float and isinstance(value, str):
            return float(value)  # YAML reads 3e-4 as a string
        if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError
        if kind is int and float(value) != int(value):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key}={value!r} is not a valid {getattr(kind, '__name__', kind)}") from None


def _build(cls, values: dict, where: str):
    # Fields not given keep their defaults, in nested configurations too.
    return cls(**{key: _coerce(cls, key, value, where) for key, value in values.items()})


def load_config(path: Path | str | None = None, overrides: dict | None = None,
                base: dict | None = None) -> PretrainConfig:
    """Defaults, then `base` (e.g. a checkpoint's stored config), then the YAML file at `path`,
    then `overrides` (dotted keys such as `augment.p_pitch` reach the nested augmentation config)."""
    values: dict = {}

    def merge(source: dict, where: str):
        if not isinstance(source, dict):
            raise ConfigError(f"{where} must hold a mapping of options, not {type(source).__name__}")
        for key, value in source.items():
            if isinstance(value, dict):
                values.setdefault(key, {}).update(value)
            else:
                values[key] = value

    if base:
        merge(base, "stored configuration")
    if path is not None:
        merge(yaml.safe_load(Path(path).read_text()) or {}, str(path))
    for key, value in (overrides or {}).items():
        head, _, tail = key.partition(".")
        merge({head: {tail: value}} if tail else {head: value}, "command line")
    return _build(PretrainConfig, values, str(path or "configuration"))


def dump_config(config: PretrainConfig) -> str:
    """The configuration as YAML that `load_config` reads back to an equal config."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def option_fields() -> list[tuple[str, object, str]]:
    """(dotted name, base type, help) of every option, nested augmentation options included;
    `tunemir train` builds its command-line options from this list."""
    out = []
    for cls, prefix in ((PretrainConfig, ""), (AugmentConfig, "augment.")):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = _base_type(hints[f.name])
            if dataclasses.is_dataclass(kind):
                continue
            help_text = f.metadata.get("help", "")
            default = f.default if f.default is not dataclasses.MISSING else None
            shown = "" if default is None else f" [default: {default}]"
            out.append((prefix + f.name, kind, f"{help_text}{shown}".strip()))
    return out
