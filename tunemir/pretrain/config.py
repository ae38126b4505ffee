"""The pretraining configuration: one typed dataclass, filled from defaults, a YAML file and
command-line options, in that order (the only configuration mechanism of `tunemir train`)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from pathlib import Path

import yaml

from tunemir.audio import SAMPLE_RATE
from tunemir.pretrain.augment import AugmentConfig

AUGMENT_ON = ("device", "cpu", "none")
#: How the learning rate follows the number of devices: CLMR keeps it fixed, TUNe multiplies it by the GPUs.
LR_SCALING = ("none", "linear")
#: Lightning accelerators tunemir trains on (TPUs would need torch_xla, which tunemir does not support).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
#: Lightning's precision names (its `_PRECISION_INPUT`, less Transformer Engine's).
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16", "bf16", "64")
MAX_SEED = 2**32 - 1  # Lightning's seed_everything replaces larger or negative seeds by a random one


def _field(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """CLMR contrastive pretraining; the defaults are the TUNe paper's recipe (TUNe+ on the
    MagnaTagATune train split, batch 48 clips = 96 views, Adam 3e-4, tau 0.5, seed 42, one device).
    Every value is checked on construction (`check_config`): a `ConfigError` names the first bad one."""

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
    batch_size: int = _field(48, "Clips per step and device; each gives two views (at least 2).")
    max_epochs: int = _field(10000, "Epochs (one random crop pair per clip each).")
    max_steps: int = _field(-1, "Stop after this many optimizer steps (-1: no limit).")
    learning_rate: float = _field(3e-4, "Adam learning rate, on one device (see lr_scaling for several).")
    lr_scaling: str = _field("none", "Learning rate on several devices: none (--learning_rate as given, as CLMR) "
                             "or linear (times devices x nodes, TUNe's rule).")
    temperature: float = _field(0.5, "NT-Xent temperature (> 0).")
    projection_dim: int = _field(64, "Output size of the projector.")
    seed: int = _field(42, f"Seed of weights, shuffling, crops and augmentations (0 to {MAX_SEED}).")
    augment_on: str = _field("device", "Where the augmentation chain runs: device (batched, after the "
                             "transfer), cpu (per clip in DataLoader workers) or none.")
    num_workers: int | None = _field(None, "DataLoader workers [default: 2, or all cores with augment_on=cpu].")
    checkpoint_every_n_epochs: int = _field(200, "Keep a checkpoint every N epochs (last.ckpt is "
                                            "rewritten every epoch).")
    accelerator: str = _field("auto", "Lightning accelerator: auto, cpu, gpu (= cuda) or mps.")
    devices: str = _field("1", "Lightning devices: 1 (the paper's single device), a count, -1 or auto (all), "
                          "or a list such as 0,1.")
    num_nodes: int = _field(1, "Machines (Lightning num_nodes).")
    strategy: str = _field("auto", "Lightning strategy: auto, ddp, ddp_spawn, ...")
    precision: str = _field("32-true", "Lightning precision: 32-true, bf16-mixed, 16-mixed.")
    sync_batchnorm: bool = _field(True, "Synchronise batch norm statistics across devices (DDP).")
    gather_negatives: bool = _field(False, "Use every device's views as negatives (CLMR/TUNe: "
                                    "per-device negatives only).")
    log_every_n_steps: int = _field(10, "Logging interval in steps.")
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)

    def __post_init__(self):
        check_config(self)

    @property
    def run_name(self) -> str:
        source = Path(self.audio_dir).name if self.audio_dir else self.dataset
        return self.name or f"{self.model}-{source}"

    def scaled(self, world_size: int) -> dict:
        """What a step is on `world_size` devices (devices x nodes): the global batch, the
        learning rate after `lr_scaling`, and the negatives each view is contrasted with
        (2B - 2 within a device's batch B, or over the global batch with `gather_negatives`)."""
        global_batch = self.batch_size * world_size
        contrasted = global_batch if self.gather_negatives and world_size > 1 else self.batch_size
        factor = world_size if self.lr_scaling == "linear" else 1
        return {"world_size": world_size, "batch_size_per_device": self.batch_size, "global_batch": global_batch,
                "lr_scaling": self.lr_scaling, "learning_rate": self.learning_rate * factor,
                "negatives": "global" if contrasted > self.batch_size else "per device",
                "negatives_per_view": 2 * contrasted - 2}

    def encoder_overrides(self) -> dict:
        """`encoder_config` parsed (already checked against the model's fields), {} if not given."""
        return json.loads(self.encoder_config) if self.encoder_config else {}

    def to_dict(self) -> dict:
        """Primitives only (lists for tuples), as YAML files and checkpoints store them."""
        def plain(value):
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return list(value) if isinstance(value, tuple) else value
        return plain(dataclasses.asdict(self))


class ConfigError(ValueError):
    """A configuration value or key that cannot work; the message names it and what would.

    `key` (dotted, e.g. `augment.p_pitch`) and `detail` (the message after the name) let
    `load_config` name the value as the user gave it: `--temperature` or `file.yaml: temperature`.
    """

    def __init__(self, message: str, key: str | None = None, detail: str = ""):
        super().__init__(message)
        self.key, self.detail = key, detail


def _bad(key: str, value, expected: str):
    detail = f"={value!r}: {expected}"
    raise ConfigError(key + detail, key, detail)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


_DEVICES = re.compile(r"auto|-1|[1-9][0-9]*|[0-9]+(,[0-9]+)*,|[0-9]+(,[0-9]+)+")


def check_config(c: PretrainConfig) -> None:
    """Raise a `ConfigError` naming the first value of `c` that cannot train."""
    if c.model not in trainable_models():
        _bad("model", c.model, f"choose one of {', '.join(trainable_models())}")
    if c.encoder_config is not None:
        parse_encoder_config(c.model, c.encoder_config, "encoder_config")
    for key in ("dataset", "split", "output_dir"):
        if not getattr(c, key).strip(" ,"):
            _bad(key, getattr(c, key), "give a non-empty value")
    if "/" in c.dataset or c.dataset in (".", ".."):
        _bad("dataset", c.dataset, "a dataset name (a folder of --datasets_dir), not a path; "
             "to train on a folder of audio use --audio_dir")
    for key in ("audio_dir", "datasets_dir", "audio_cache_dir"):
        if getattr(c, key) is not None and not getattr(c, key).strip():
            _bad(key, getattr(c, key), "give a folder (or leave the option out)")
    if c.name is not None and (not c.name.strip() or "/" in c.name or c.name in (".", "..")):
        _bad("name", c.name, "a folder name without '/' (the run goes to OUTPUT_DIR/NAME)")
    minimum = 1 if c.gather_negatives else 2
    for key, low in (("batch_size", minimum), ("max_epochs", 1), ("projection_dim", 1),
                     ("checkpoint_every_n_epochs", 1), ("num_nodes", 1), ("log_every_n_steps", 1)):
        if getattr(c, key) < low:
            why = " (NT-Xent needs the other clips of the batch as negatives)" if key == "batch_size" else ""
            _bad(key, getattr(c, key), f"must be an integer of at least {low}{why}")
    if c.max_steps != -1 and c.max_steps < 1:
        _bad("max_steps", c.max_steps, "must be -1 (no limit) or at least 1")
    for key in ("learning_rate", "temperature"):
        if not (_finite(getattr(c, key)) and getattr(c, key) > 0):
            _bad(key, getattr(c, key), "must be a finite number greater than 0")
    if not 0 <= c.seed <= MAX_SEED:
        _bad("seed", c.seed, f"must be between 0 and {MAX_SEED}")
    if c.lr_scaling not in LR_SCALING:
        _bad("lr_scaling", c.lr_scaling, f"choose one of {', '.join(LR_SCALING)} (none: the same learning rate on "
             f"any number of devices, as CLMR; linear: times the number of devices, as TUNe)")
    if c.augment_on not in AUGMENT_ON:
        _bad("augment_on", c.augment_on, f"choose one of {', '.join(AUGMENT_ON)}")
    if c.num_workers is not None and c.num_workers < 0:
        _bad("num_workers", c.num_workers, "must be 0 (load in the main process) or more")
    if c.accelerator not in ACCELERATORS:
        extra = " (TPUs are not supported)" if c.accelerator == "tpu" else ""
        _bad("accelerator", c.accelerator, f"choose one of {', '.join(ACCELERATORS)}{extra}")
    if not _DEVICES.fullmatch(c.devices.replace(" ", "")):
        _bad("devices", c.devices, "auto, a count such as 2, -1 (all), or device indices such as 0,1 "
             "(a single index with a trailing comma: 1,)")
    if not c.strategy.strip():
        _bad("strategy", c.strategy, "a Lightning strategy such as auto, ddp or ddp_spawn")
    if c.precision not in PRECISIONS:
        _bad("precision", c.precision, f"choose one of {', '.join(PRECISIONS)}")
    _check_augment(c.augment)


def _check_augment(a: AugmentConfig) -> None:
    if a.sample_rate != SAMPLE_RATE:
        _bad("augment.sample_rate", a.sample_rate, f"must be {SAMPLE_RATE}: the training audio is decoded "
             f"at {SAMPLE_RATE} Hz")
    for f in dataclasses.fields(a):
        value = getattr(a, f.name)
        if f.name.startswith("p_") and not (_finite(value) and 0 <= value <= 1):
            _bad(f"augment.{f.name}", value, "a probability: a number from 0 to 1")
    nyquist = SAMPLE_RATE / 2
    # (LOW's least value, whether LOW may equal it, HIGH's largest value, how to say it)
    for key, least, closed, most, rule in (
        ("noise_snr", 0, True, math.inf, "0 <= LOW <= HIGH"),
        ("gain_db", -math.inf, True, math.inf, "LOW <= HIGH (dB)"),
        ("highpass_hz", 0, False, nyquist, f"0 < LOW <= HIGH <= {nyquist:g} Hz"),
        ("lowpass_hz", 0, False, nyquist, f"0 < LOW <= HIGH <= {nyquist:g} Hz"),
    ):
        low, high = getattr(a, key)
        if not (_finite(low) and _finite(high) and (low >= least if closed else low > least)
                and low <= high <= most):
            _bad(f"augment.{key}", [low, high], f"two finite numbers LOW HIGH with {rule}")
    if not (_finite(a.delay_volume) and 0 <= a.delay_volume <= 1):
        _bad("augment.delay_volume", a.delay_volume, "a number from 0 to 1")
    if not (_finite(a.max_semitones) and 0.01 <= a.max_semitones <= 24):  # shifts are whole cents (0.2.4)
        _bad("augment.max_semitones", a.max_semitones,
             "a number of semitones greater than 0 and at most 24, and at least 0.01 (shifts are whole cents)")


def trainable_models() -> list[str]:
    """Registry models with weights to learn on raw frames (the handcrafted features have none;
    musicnn's spectrogram front end is not trained here)."""
    from tunemir.models import available_models, get_info

    return [name for name in available_models()
            if get_info(name).needs_weights and get_info(name).spec.front_end == "waveform"]


def parse_encoder_config(model: str, text: str, option: str = "encoder_config") -> dict:
    """`text`, JSON of fields of `model`'s encoder configuration, checked field by field; a
    `ConfigError` names `option`, the bad field and the valid ones."""
    from tunemir.models import get_info

    default = get_info(model).config
    types_ = {f.name: type(getattr(default, f.name)) for f in dataclasses.fields(default)}
    example = {name: list(v) if isinstance(v, tuple) else v for name, v in dataclasses.asdict(default).items()
               if not isinstance(v, bool)}
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        _bad(option, text, f"not JSON ({err.msg} at character {err.pos}); give an object such as "
             f"'{json.dumps(example)}'")
    if not isinstance(values, dict):
        _bad(option, text, f"give a JSON object of {model} encoder fields such as '{json.dumps(example)}'")
    for key, value in values.items():
        if key not in types_:
            _bad(option, text, f"unknown field {key!r} for {model}; valid fields: {', '.join(types_)}")
        if types_[key] is tuple:  # a list of layer widths, as many as the default's
            n = len(getattr(default, key))
            if not (isinstance(value, list) and len(value) == n
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
                _bad(option, text, f"{key} must be a list of {n} positive integers (one per block), "
                     f"e.g. {example[key]}")
        elif types_[key] is bool:
            if value is not getattr(default, key):
                right = "tune_plus" if value else "tune"
                _bad(option, text, f"{key}={json.dumps(value)} describes another model: use --model {right}")
        elif not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            _bad(option, text, f"{key} must be a positive integer, e.g. {example[key]}")
    return values


def _base_type(annotation):
    """`int | None` -> int; `tuple[float, float]` stays a tuple type."""
    if isinstance(annotation, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def _optional(annotation) -> bool:
    return isinstance(annotation, types.UnionType) and type(None) in typing.get_args(annotation)


def _unknown(cls, key, where: str):
    names = [f.name for f in dataclasses.fields(cls)]
    hint = ""
    if cls is PretrainConfig:
        other, section = AugmentConfig, "under `augment:`"
    else:
        other, section = PretrainConfig, "at the top level"
    if isinstance(key, str) and key in {f.name for f in dataclasses.fields(other)}:
        hint = f" ({key} belongs {section})"
    elif isinstance(key, str) and (close := difflib.get_close_matches(key, names, n=1)):
        hint = f" (did you mean {close[0]!r}?)"
    raise ConfigError(f"{where}: unknown option {key!r}{hint}; valid options: {', '.join(names)}")


def _coerce(cls, key, value, label):
    """`value` as the type of field `key` of `cls`; `label(dotted key)` names it in errors."""
    hints = typing.get_type_hints(cls)
    prefix = "augment." if cls is AugmentConfig else ""
    if key not in hints:
        _unknown(cls, key, label(prefix + str(key), origin_only=True))
    kind = _base_type(hints[key])
    if value is None:
        if _optional(hints[key]):
            return None
        raise ConfigError(f"{label(prefix + key)} is empty: give a value or leave the option out")
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{label(prefix + key)} must be a mapping of {kind.__name__} options "
                              f"(indented key: value lines)")
        return _build(kind, value, label)
    name = getattr(kind, "__name__", "pair of numbers")
    try:
        if typing.get_origin(kind) is tuple:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError
            items = tuple(float(v) for v in value)
            if len(items) != len(typing.get_args(kind)):
                raise ValueError
            return items
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is str:
            if key == "encoder_config" and isinstance(value, dict):
                return json.dumps(value)  # YAML may spell it as a mapping
            if key == "devices" and isinstance(value, list) and all(isinstance(v, int) for v in value):
                return ",".join(map(str, value)) + ("," if len(value) == 1 else "")
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError
            return str(value)
        if kind is float and isinstance(value, str):
            return float(value)  # YAML reads 3e-4 as a string
        if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError
        if kind is int and (not math.isfinite(value) or float(value) != int(value)):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{label(prefix + key)}={value!r} is not a valid {name}") from None


def _build(cls, values: dict, label):
    # Fields not given keep their defaults, in nested configurations too.
    kwargs = {key: _coerce(cls, key, value, label) for key, value in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if err.key is None:
            raise
        raise ConfigError(label(err.key) + err.detail) from None


def load_config(path: Path | str | None = None, overrides: dict | None = None,
                base: dict | None = None, base_name: str = "stored configuration") -> PretrainConfig:
    """Defaults, then `base` (e.g. a checkpoint's stored config, named `base_name` in errors),
    then the YAML file at `path`, then `overrides` (dotted keys such as `augment.p_pitch` reach
    the nested augmentation config). Errors name each value where it came from."""
    values: dict = {}
    origins: dict[str, str] = {}

    def merge(source, where: str):
        if not isinstance(source, dict):
            raise ConfigError(f"{where} must hold a mapping of options (key: value lines, as "
                              f"`tunemir train --print-config` writes), not a {type(source).__name__}")
        for key, value in source.items():
            if key == "augment" and isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key].update(value)
                origins.update({f"augment.{k}": where for k in value})
            else:
                values[key] = dict(value) if key == "augment" and isinstance(value, dict) else value
                origins[str(key)] = where
                if key == "augment" and isinstance(value, dict):
                    origins.update({f"augment.{k}": where for k in value})

    def label(dotted: str, origin_only: bool = False) -> str:
        """How the user gave `dotted`: `--augment.p_pitch`, `my.yaml: augment.p_pitch`, ..."""
        where = origins.get(dotted, origins.get(dotted.partition(".")[0]))
        if origin_only:
            return where or "configuration"
        if where == "command line":
            return f"--{dotted}"
        return f"{where}: {dotted}" if where else dotted

    if base:
        merge(base, base_name)
    if path is not None:
        merge(read_yaml(path), str(path))
    for key, value in (overrides or {}).items():
        head, _, tail = key.partition(".")
        merge({head: {tail: value}} if tail else {head: value}, "command line")
    return _build(PretrainConfig, values, label)


def read_yaml(path: Path | str):
    """A YAML file's content; a `ConfigError` naming the file (and line) when it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder: give a YAML file (`tunemir train --print-config > my.yaml` "
                          f"writes one)") from None
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: give a YAML file (`tunemir train --print-config > "
                          f"my.yaml` writes one)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text file: give a YAML file of options") from None
    except OSError as err:
        raise ConfigError(f"{path} cannot be read ({err.strerror}): check its permissions") from None
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the file (`tunemir train "
                          f"--print-config` writes a valid one)") from None
    return {} if content is None else content


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
