"""Lightning checkpoints as Lightning 1.2 to 2.x wrote them, written without Lightning installed.

`torch.save` records a class by its module and name. Stand-in modules registered in
`sys.modules` while saving (`lightning_names`) make it write the GLOBALs real files hold
(`pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint` as a `callbacks` key, Lightning's
`AttributeDict`); they are removed again, so a loader under test never sees them.

Layouts (per `pytorch_lightning` release; spec §2.1 and Lightning's `dump_checkpoint`):
- 1.2-1.4: `callbacks` keyed by callback class; `native_amp_scaling_state`.
- 1.5-1.9: `callbacks` keyed by `state_key` strings such as "ModelCheckpoint{'monitor': ...}"; `loops`.
- 2.x (tunemir's own trainer): as 1.5-1.9 with Lightning 2's loop state and precision plugin key.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

LIGHTNING_VERSIONS = ("1.2.10", "1.3.8", "1.4.9", "1.5.10", "1.9.5", "2.6.0")
HPARAMS_KINDS = ("dict", "AttributeDict", "Namespace")

#: module -> class names, as each Lightning generation defines them.
_MODULES = {
    "pytorch_lightning.callbacks.model_checkpoint": ("ModelCheckpoint",),
    "pytorch_lightning.callbacks.early_stopping": ("EarlyStopping",),
    "pytorch_lightning.utilities.parsing": ("AttributeDict",),
    "lightning_fabric.utilities.data": ("AttributeDict",),
}


class _AttributeDictBase(dict):
    """Lightning's AttributeDict: a dict whose items are also attributes (pickled as a dict subclass)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(key) from err

    def __setattr__(self, key, value):
        self[key] = value


@contextlib.contextmanager
def lightning_names() -> Iterator[dict[str, type]]:
    """Stand-in Lightning modules in `sys.modules` for the duration: yields "module.Class" -> class."""
    made: dict[str, types.ModuleType] = {}
    classes: dict[str, type] = {}
    for module_name, names in _MODULES.items():
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):  # pickle imports the top package first
            made.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        for name in names:
            base = (_AttributeDictBase,) if name == "AttributeDict" else ()
            cls = type(name, base, {"__module__": module_name, "__qualname__": name})
            setattr(made[module_name], name, cls)
            classes[f"{module_name}.{name}"] = cls
    saved = {name: sys.modules.get(name) for name in made}
    sys.modules.update(made)
    try:
        yield classes
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def adam_state(model: nn.Module) -> dict:
    """A real Adam state_dict (tensors for step, exp_avg, exp_avg_sq) after one step on a copy."""
    params = list(copy.deepcopy(model).parameters())
    optimizer = torch.optim.Adam(params, lr=3e-4)
    sum(p.square().sum() for p in params).backward()
    optimizer.step()
    return optimizer.state_dict()


def _hparams(kind: str, values: dict, classes: dict[str, type], version: str):
    if kind == "Namespace":
        return argparse.Namespace(**values)
    if kind == "AttributeDict":
        module = ("lightning_fabric.utilities.data" if version.startswith("2.")
                  else "pytorch_lightning.utilities.parsing")
        return classes[f"{module}.AttributeDict"](values)
    return dict(values)


def _callbacks(version: str, classes: dict[str, type]) -> dict:
    checkpoint_state = {"monitor": "Valid/loss", "best_model_score": torch.tensor(0.3125),
                        "best_model_path": "/runs/CLMRv2/checkpoints/epoch=9999.ckpt",
                        "current_score": torch.tensor(0.5),
                        "dirpath": "/runs/CLMRv2/checkpoints"}
    stopping_state = {"wait_count": 3, "stopped_epoch": 0, "best_score": torch.tensor(0.3125), "patience": 10}
    if _release(version) < (1, 5):  # the class itself is the key
        return {classes["pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"]: checkpoint_state,
                classes["pytorch_lightning.callbacks.early_stopping.EarlyStopping"]: stopping_state}
    checkpoint_state |= {"best_k_models": {checkpoint_state["best_model_path"]: torch.tensor(0.3125)},
                         "kth_best_model_path": checkpoint_state["best_model_path"],
                         "kth_value": torch.tensor(float("inf")), "last_model_path": ""}
    return {
        "ModelCheckpoint{'monitor': 'Valid/loss', 'mode': 'min', 'every_n_train_steps': 0, "
        "'every_n_epochs': 1, 'train_time_interval': None}": checkpoint_state,
        "EarlyStopping{'monitor': 'Valid/loss', 'mode': 'min'}": stopping_state,
    }


def _loops(version: str, global_step: int) -> dict:
    progress = {"total": {"ready": 10000, "started": 10000, "processed": 10000, "completed": 9999},
                "current": {"ready": 1, "started": 1, "processed": 1, "completed": 0}}
    fit = {"state_dict": {}, "epoch_progress": progress,
           "epoch_loop.state_dict": {"_batches_that_stepped": global_step},
           "epoch_loop.batch_progress": progress, "epoch_loop.scheduler_progress": progress,
           "epoch_loop.batch_loop.optimizer_loop.optim_progress": {
               "optimizer": {"step": progress, "zero_grad": progress}, "optimizer_position": 0}}
    if version.startswith("2."):
        fit = {"state_dict": {}, "epoch_progress": progress,
               "epoch_loop.state_dict": {"_batches_that_stepped": global_step},
               "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {"step": progress}}}
    return {"fit_loop": fit, "validate_loop": {"state_dict": {}}, "test_loop": {"state_dict": {}},
            "predict_loop": {"state_dict": {}}}


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def lightning_checkpoint(classes: dict[str, type], model: nn.Module, *, version: str, hparams: str,
                         hparams_model: str, epoch: int = 9999, global_step: int = 123456) -> dict:
    """A `trainer.save_checkpoint` dict of CLMR v2 / TUNe's `ContrastiveLearning` holding the
    encoder `model`, as Lightning `version` laid it out, hyper_parameters as `hparams` (dict,
    AttributeDict or Namespace). `classes` come from `lightning_names()`, which must still be
    active when the dict is pickled."""
    encoder_state = {k: v.clone() for k, v in model.state_dict().items()}
    d = next(v for k, v in encoder_state.items() if k.endswith("weight") and v.dim() == 3).shape[0]
    gen = torch.Generator().manual_seed(11)
    state_dict = {f"encoder.{k}": v for k, v in encoder_state.items()}
    state_dict |= {f"model.encoder.{k}": v for k, v in encoder_state.items()}
    state_dict["model.projector.0.weight"] = torch.randn(d, d, generator=gen)
    state_dict["model.projector.2.weight"] = torch.randn(d // 2, d, generator=gen)
    values = {"model": hparams_model, "eval_layer": 0, "projection_dim": 64, "batch_size": 48,
              "learning_rate": 3e-4, "dataset": "magnatagatune", "audio_length": 59049}
    if version.startswith("2."):  # tunemir's trainer: save_hyperparameters() of {"config": ...}
        values = {"config": {"model": hparams_model, "projection_dim": 64, "max_epochs": 10000}}
    checkpoint = {
        "epoch": epoch, "global_step": global_step, "pytorch-lightning_version": version,
        "state_dict": state_dict, "callbacks": _callbacks(version, classes),
        "optimizer_states": [adam_state(model)], "lr_schedulers": [],
        "hparams_name": "args" if not version.startswith("2.") else "kwargs",
        "hyper_parameters": _hparams(hparams, values, classes, version),
    }
    if _release(version) < (1, 5):
        checkpoint["native_amp_scaling_state"] = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                                  "growth_interval": 2000, "_growth_tracker": 17}
    else:
        checkpoint["loops"] = _loops(version, global_step)
    if version.startswith("2."):
        checkpoint["MixedPrecision"] = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                        "growth_interval": 2000, "_growth_tracker": 17}
    return checkpoint


def save_lightning(path: Path, model: nn.Module, **kwargs) -> Path:
    """`torch.save` of `lightning_checkpoint(model, **kwargs)` with Lightning's GLOBAL names."""
    with lightning_names() as classes:
        torch.save(lightning_checkpoint(classes, model, **kwargs), path)
    return path


def as_torch1_archive(path: Path) -> None:
    """Rewrite a `torch.save` zip as torch 1.6-1.12 laid it out: records under the file's stem
    rather than `archive/`, no byteorder or alignment records."""
    with zipfile.ZipFile(path) as archive:
        records = {name: archive.read(name) for name in archive.namelist()}
    stem = path.stem
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records.items():
            _, _, rest = name.partition("/")
            if rest in ("byteorder", ".format_version", ".storage_alignment", ".data/serialization_id"):
                continue
            archive.writestr(f"{stem}/{rest}", data)


def write_clmr_release(folder: Path, seed: int = 0, version: str = "1.2.10") -> tuple[Path, nn.Module]:
    """CLMR release 2.1's `clmr_magnatagatune_mlp.zip` in `folder`, holding a tiny SampleCNN as
    `clmr_epoch=10000.ckpt` from a Lightning 1.2-1.4 run (class-keyed callbacks, argparse
    hyper_parameters). Returns the zip and the encoder."""
    from tunemir.testing import tiny_model
    from tunemir.weights import release

    rel = release("clmr")
    model = tiny_model("clmr", seed)
    folder.mkdir(parents=True, exist_ok=True)
    inner = save_lightning(folder / Path(rel.member).name, model, version=version, hparams="Namespace",
                           hparams_model="SampleCNN", epoch=9999, global_step=10000 * 52)
    path = folder / rel.filename
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(inner, rel.member)
    inner.unlink()
    return path, model
