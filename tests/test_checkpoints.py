"""Reading CLMR/TUNe checkpoints in every published layout, tunemir's format, and refusing unsafe files."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import io
import json
import os
import pickle
import pickletools
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from click.testing import CliRunner
from safetensors.torch import save_file
from torch import nn

import tunemir
from tunemir import safe_pickle
from tunemir.checkpoints import CheckpointError, read_encoder_weights, save_checkpoint
from tunemir.cli import main as cli_main
from tunemir.models import config_from_dict, convert_checkpoint, infer_model, load_model
from tunemir.testing import TINY_CONFIGS, tiny_model, write_audio
from tunemir.testing.legacy_pickles import (
    HPARAMS_KINDS, LIGHTNING_VERSIONS, adam_state, as_torch1_archive, lightning_names, save_lightning,
    write_clmr_release,
)
from tunemir.testing.legacy_pickles import lightning_checkpoint as lightning_layout
from tunemir.weights import RELEASES

ENCODERS = ["clmr", "tune", "tune_plus"]
FRAME = 59049
#: `model` as the TUNe / CLMR argparse configs name it.
UPSTREAM_NAMES = {"clmr": "SampleCNN", "tune": "Tune5Tail", "tune_plus": "TunePlus"}


# --- helpers: checkpoints with the original key layouts (spec §2.1), built from tiny models ---

def encoder_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def rep_dim(name: str) -> int:
    return TINY_CONFIGS[name].channels[-1] if name == "clmr" else TINY_CONFIGS[name].out_channels


def lightning_checkpoint(model: nn.Module, name: str, *, encoder_copy: dict | None = None) -> dict:
    """What CLMR v2 / TUNe `ContrastiveLearning` + `trainer.save_checkpoint` write."""
    state = encoder_state(model)
    d = rep_dim(name)
    gen = torch.Generator().manual_seed(11)
    state_dict = {f"encoder.{k}": v for k, v in (encoder_copy or state).items()}
    state_dict |= {f"model.encoder.{k}": v.clone() for k, v in state.items()}
    state_dict["model.projector.0.weight"] = torch.randn(d, d, generator=gen)
    state_dict["model.projector.2.weight"] = torch.randn(d // 2, d, generator=gen)
    hparams = argparse.Namespace(
        model=UPSTREAM_NAMES[name], eval_layer=0, projection_dim=d // 2, batch_size=48,
        learning_rate=3e-4, dataset="magnatagatune", sample_rate=22050, audio_length=FRAME,
        transforms_polarity=0.8, checkpoint_path="", accelerator="gpu",
    )
    checkpoint_cb = "ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0}"
    return {
        "epoch": 9999,
        "global_step": 123456,
        "pytorch-lightning_version": "1.8.6",
        "state_dict": state_dict,
        "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 10000, "completed": 9999}}}},
        "callbacks": {
            checkpoint_cb: {
                "monitor": None, "best_model_score": torch.tensor(0.25), "best_model_path": "/ckpt/last.ckpt",
                "current_score": None, "dirpath": "/ckpt",
                "best_k_models": {"/ckpt/last.ckpt": torch.tensor(0.25)},
                "kth_best_model_path": "", "kth_value": torch.tensor(float("inf")), "last_model_path": "",
            }
        },
        "optimizer_states": [adam_state(model)],
        "lr_schedulers": [],
        "hparams_name": "args",
        "hyper_parameters": hparams,
    }


def v1_checkpoint(model: nn.Module, name: str) -> dict:
    """CLMR v1 SimCLR `state_dict()`: `encoder.sequential.*` plus the bias-free 512->512->128 projector."""
    d = rep_dim(name)
    gen = torch.Generator().manual_seed(12)
    state = {f"encoder.{k}": v for k, v in encoder_state(model).items()}
    state["projector.0.weight"] = torch.randn(d, d, generator=gen)
    state["projector.2.weight"] = torch.randn(d // 4, d, generator=gen)
    return state


def release_1_0_checkpoint(model: nn.Module, name: str) -> dict:
    """CLMR release 1.0 (SampleCNN59049): block i is named `conv{i+1}` instead of `sequential.{i}`."""
    state = {}
    for key, value in v1_checkpoint(model, name).items():
        match = re.fullmatch(r"encoder\.sequential\.(\d+)\.(\d+)\.(\w+)", key)
        state[f"encoder.conv{int(match.group(1)) + 1}.{match.group(2)}.{match.group(3)}" if match else key] = value
    assert "encoder.conv11.1.running_var" in state and not any("sequential" in k for k in state)
    return state


def bare_checkpoint(model: nn.Module, name: str) -> dict:
    """An upstream class's `state_dict()`: the encoder plus its 50-way `fc`."""
    state = encoder_state(model)
    gen = torch.Generator().manual_seed(13)
    state["fc.weight"] = torch.randn(50, rep_dim(name), generator=gen)
    state["fc.bias"] = torch.randn(50, generator=gen)
    return state


BUILDERS = {
    "lightning": lightning_checkpoint, "clmr-v1": v1_checkpoint,
    "clmr-release-1.0": release_1_0_checkpoint, "bare": bare_checkpoint,
}
#: (layout, model) pairs that exist upstream: v1 and release 1.0 are CLMR-only.
FOREIGN = [("lightning", n) for n in ENCODERS] + [
    ("clmr-v1", "clmr"), ("clmr-release-1.0", "clmr"), ("bare", "clmr"), ("bare", "tune"), ("bare", "tune_plus"),
]


def write_foreign(tmp_path: Path, layout: str, name: str, seed: int = 0) -> tuple[Path, nn.Module]:
    model = tiny_model(name, seed)
    path = tmp_path / f"{layout}-{name}-{seed}.ckpt"
    torch.save(BUILDERS[layout](model, name), path)
    return path, model


def assert_same_tensors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key


def probe_length(name: str) -> int:
    """Shortest input giving every layer a non-empty output: SampleCNN needs 3**10, TUNe 3**9."""
    return FRAME if name == "clmr" else FRAME // 3


def assert_same_outputs(model: nn.Module, reference: nn.Module, name: str) -> None:
    x = torch.randn(1, 1, probe_length(name), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for layer in (0, reference.num_layers - 1):
            assert torch.equal(model(x, layer=layer), reference(x, layer=layer)), layer


def tunemir_config(name: str) -> dict:
    return dataclasses.asdict(TINY_CONFIGS[name])


# --- foreign layouts load bit-exactly ---

@pytest.mark.parametrize("layout, name", FOREIGN)
def test_foreign_layout_loads_exact_tensors(tmp_path: Path, layout: str, name: str) -> None:
    path, model = write_foreign(tmp_path, layout, name)
    weights = read_encoder_weights(path)
    assert_same_tensors(weights.state_dict, model.state_dict())
    assert weights.format == ("state_dict" if layout == "bare" else layout)
    assert weights.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_model(name, path)
    assert not any(m.training for m in loaded.modules())
    assert_same_tensors(loaded.state_dict(), model.state_dict())
    assert_same_outputs(loaded, model, name)


def test_lightning_layout_is_the_published_one(tmp_path: Path) -> None:
    path, model = write_foreign(tmp_path, "lightning", "tune_plus")
    raw = torch.load(path, weights_only=False)
    assert {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "optimizer_states",
            "lr_schedulers", "callbacks", "hyper_parameters"} <= raw.keys()
    assert isinstance(raw["hyper_parameters"], argparse.Namespace)
    assert len(raw["state_dict"]) == 2 * 134 + 2  # spec §2.1: 270 for TUNe
    weights = read_encoder_weights(path)
    assert weights.metadata["model"] == "TunePlus"
    assert weights.metadata["epoch"] == 9999 and weights.metadata["global_step"] == 123456


def test_lightning_prefers_model_encoder_keys(tmp_path: Path) -> None:
    # Spec §2.1/§2.3: the loader takes `model.encoder.*`; make the `encoder.*` copy differ to see which.
    model, other = tiny_model("tune", 0), tiny_model("tune", 1)
    path = tmp_path / "two.ckpt"
    torch.save(lightning_checkpoint(model, "tune", encoder_copy=encoder_state(other)), path)
    assert_same_tensors(read_encoder_weights(path).state_dict, model.state_dict())


def test_release_1_0_is_remapped_to_sequential(tmp_path: Path) -> None:
    path, model = write_foreign(tmp_path, "clmr-release-1.0", "clmr")
    state, raw = read_encoder_weights(path).state_dict, torch.load(path, weights_only=True)
    for k in range(1, 12):
        for param in ("0.weight", "0.bias", "1.weight", "1.running_mean"):
            assert torch.equal(state[f"sequential.{k - 1}.{param}"], raw[f"encoder.conv{k}.{param}"])
    assert not any(key.startswith("conv") for key in state)


class _Projector(nn.Sequential):
    def __init__(self, d: int) -> None:
        super().__init__(nn.Linear(d, d, bias=False), nn.ReLU(), nn.Linear(d, d // 2, bias=False))


class _SimCLR(nn.Module):
    def __init__(self, encoder: nn.Module, d: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = _Projector(d)


def _lightning_module(encoder: nn.Module, d: int, hparams: argparse.Namespace) -> nn.Module:
    """A `pytorch_lightning.LightningModule` laid out like CLMR v2's `ContrastiveLearning`."""
    import pytorch_lightning as pl

    class ContrastiveLearning(pl.LightningModule):
        """Holds the encoder twice, as CLMR v2's `ContrastiveLearning` does."""

        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters(hparams)
            self.encoder = encoder
            self.model = _SimCLR(encoder, d)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            z = self.model.projector(self.model.encoder(batch[0]))
            return (z - 1).square().mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    return ContrastiveLearning()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's advice on workers, loggers, ...
@pytest.mark.filterwarnings("ignore::FutureWarning")  # its torch pytree deprecation
def test_real_lightning_checkpoint(tmp_path: Path) -> None:
    pl = pytest.importorskip("pytorch_lightning")
    name = "tune_plus"
    torch.manual_seed(0)
    encoder = tiny_model(name).train()
    initial = encoder_state(encoder)
    module = _lightning_module(encoder, rep_dim(name), argparse.Namespace(model="TunePlus", eval_layer=0))
    data = torch.utils.data.TensorDataset(torch.randn(4, 1, probe_length(name)))
    trainer = pl.Trainer(
        max_epochs=1, max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, default_root_dir=tmp_path,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2))
    path = tmp_path / "real.ckpt"
    trainer.save_checkpoint(path)
    encoder.eval()
    trained = encoder.state_dict()
    assert not torch.equal(trained["conv1.layers.0.weight"], initial["conv1.layers.0.weight"])
    assert not torch.equal(trained["convDown9.layers.1.running_mean"], initial["convDown9.layers.1.running_mean"])

    raw = torch.load(path, weights_only=False)
    assert "pytorch-lightning_version" in raw
    assert {"model.projector.0.weight", "model.projector.2.weight"} <= raw["state_dict"].keys()
    assert len(raw["state_dict"]) == 2 * len(trained) + 2

    weights = read_encoder_weights(path)
    assert weights.format == "lightning"
    assert weights.metadata["model"] == "TunePlus"
    assert_same_tensors(weights.state_dict, trained)
    assert_same_outputs(load_model(name, path), encoder, name)


# --- tunemir format ---

@pytest.mark.parametrize("name", ENCODERS)
def test_tunemir_round_trip(tmp_path: Path, name: str) -> None:
    model = tiny_model(name)
    path = tmp_path / "model.safetensors"
    written = save_checkpoint(path, model.state_dict(), model=name, config=tunemir_config(name))
    weights = read_encoder_weights(path)
    assert weights.format == "tunemir"
    assert_same_tensors(weights.state_dict, model.state_dict())
    assert weights.metadata == json.loads(json.dumps(written))  # the returned tuples are JSON lists
    assert weights.metadata["model"] == name
    assert weights.metadata["tunemir_version"] == tunemir.__version__
    assert config_from_dict(name, weights.metadata["config"]) == TINY_CONFIGS[name]
    assert re.fullmatch(r"[0-9a-f]{64}", weights.metadata["weights_sha256"])
    assert_same_outputs(load_model(name, path), model, name)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_weights_sha256_ignores_the_container(tmp_path: Path) -> None:
    digests = set()
    for layout in BUILDERS:
        path, model = write_foreign(tmp_path, layout, "clmr")
        digests.add(read_encoder_weights(path).weights_sha256)
    written = save_checkpoint(
        tmp_path / "t.safetensors", model.state_dict(), model="clmr", config=tunemir_config("clmr")
    )
    digests.add(written["weights_sha256"])
    digests.add(read_encoder_weights(tmp_path / "t.safetensors").weights_sha256)
    assert len(digests) == 1

    other = read_encoder_weights(write_foreign(tmp_path, "bare", "clmr", seed=1)[0]).weights_sha256
    assert other not in digests
    state = encoder_state(model)
    state["sequential.4.1.running_var"][0] += 1e-3
    changed = save_checkpoint(tmp_path / "c.safetensors", state, model="clmr", config=tunemir_config("clmr"))
    assert changed["weights_sha256"] not in digests


def _rewrite(path: Path, flip_byte: bool) -> None:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k).clone() for k in handle.keys()}
    if flip_byte:
        before = tensors["conv6.layers.0.weight"].clone()
        tensors["conv6.layers.0.weight"].reshape(-1).view(torch.uint8)[5] ^= 0x01
        assert not torch.equal(before, tensors["conv6.layers.0.weight"])
    save_file(tensors, str(path), metadata=metadata)


def test_tampered_tensor_is_reported_corrupt(tmp_path: Path) -> None:
    model = tiny_model("tune")
    intact, tampered = tmp_path / "intact.safetensors", tmp_path / "tampered.safetensors"
    for path in (intact, tampered):
        save_checkpoint(path, model.state_dict(), model="tune", config=tunemir_config("tune"))
    _rewrite(intact, flip_byte=False)  # the same rewrite without the change still reads
    assert_same_tensors(read_encoder_weights(intact).state_dict, model.state_dict())
    _rewrite(tampered, flip_byte=True)
    for load in (read_encoder_weights, lambda p: load_model("tune", p)):
        with pytest.raises(CheckpointError, match="corrupt") as info:
            load(tampered)
        assert str(tampered) in str(info.value)


@pytest.mark.parametrize("layout, name", FOREIGN)
def test_convert_checkpoint(tmp_path: Path, layout: str, name: str) -> None:
    src, model = write_foreign(tmp_path, layout, name)
    dst = tmp_path / "out" / "converted.safetensors"
    metadata = convert_checkpoint(src, dst)
    weights = read_encoder_weights(dst)
    assert weights.format == "tunemir"
    assert weights.metadata == json.loads(json.dumps(metadata))  # the returned tuples are JSON lists
    assert_same_tensors(weights.state_dict, model.state_dict())
    assert metadata["model"] == name
    assert config_from_dict(name, metadata["config"]) == TINY_CONFIGS[name]
    assert metadata["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert metadata["source"]["format"] == read_encoder_weights(src).format
    assert metadata["source"]["format"] == ("state_dict" if layout == "bare" else layout)
    assert metadata["weights_sha256"] == read_encoder_weights(src).weights_sha256
    assert_same_outputs(load_model(name, dst), model, name)


def test_convert_checkpoint_checks_the_name(tmp_path: Path) -> None:
    src, _ = write_foreign(tmp_path, "lightning", "tune_plus")
    with pytest.raises(CheckpointError, match="tune_plus"):
        convert_checkpoint(src, tmp_path / "x.safetensors", name="tune")
    assert not (tmp_path / "x.safetensors").exists()


# --- safety ---

class _FileCreator:
    """Unpickling this calls open(marker, "w"): harmless, but code execution all the same."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def _malicious_checkpoint(tmp_path: Path, tag: str) -> tuple[Path, Path]:
    marker = tmp_path / f"pwned-{tag}"
    checkpoint = lightning_checkpoint(tiny_model("tune"), "tune")
    checkpoint["hyper_parameters"] = {"model": "Tune5Tail", "payload": _FileCreator(marker)}
    path = tmp_path / f"evil-{tag}.ckpt"
    torch.save(checkpoint, path)
    assert not marker.exists()
    return path, marker


def test_pickle_payload_is_live(tmp_path: Path) -> None:
    # Control for the refusal test: an unrestricted load of the same construction runs the payload.
    path, marker = _malicious_checkpoint(tmp_path, "control")
    loaded = torch.load(path, weights_only=False)
    loaded["hyper_parameters"]["payload"].close()
    assert marker.exists()


def test_code_executing_pickle_is_refused(tmp_path: Path) -> None:
    path, marker = _malicious_checkpoint(tmp_path, "refused")
    refused = f"{open.__module__}.{open.__name__}"  # io.open, as pickle records it
    loaders = [
        read_encoder_weights,
        lambda p: load_model("tune", p),
        lambda p: convert_checkpoint(p, tmp_path / "o.safetensors"),
    ]
    for load in loaders:
        with pytest.raises(CheckpointError) as info:
            load(path)
        message = str(info.value)
        assert refused in message
        assert str(path) in message
        assert "convert-checkpoint" in message
        assert not marker.exists()
    assert not (tmp_path / "o.safetensors").exists()


def _garbage_files(tmp_path: Path) -> list[Path]:
    files = [tmp_path / "empty.ckpt", tmp_path / "text.pt"]
    files[0].write_bytes(b"")
    files[1].write_text("this is not a checkpoint\n")
    for seed in range(40):
        rng = np.random.default_rng(seed)
        path = tmp_path / f"random-{seed}.ckpt"
        path.write_bytes(rng.integers(0, 256, size=int(rng.integers(1, 5000)), dtype=np.uint8).tobytes())
        files.append(path)
    good = tmp_path / "good.pt"
    torch.save(bare_checkpoint(tiny_model("clmr"), "clmr"), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return files + [truncated]


def test_non_checkpoint_files_are_refused(tmp_path: Path) -> None:
    for path in _garbage_files(tmp_path):
        with pytest.raises(CheckpointError) as info:
            read_encoder_weights(path)
        message = str(info.value)
        assert str(path) in message
        # Damaged data is not a file that "needs Python objects": the fix is a new download.
        assert "refused" not in message, message
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError, match=re.escape(str(missing))):
        load_model("clmr", missing)


# --- variants and strict loading ---

@pytest.mark.parametrize(
    "saved, asked", [("tune_plus", "tune"), ("tune", "tune_plus"), ("clmr", "tune"), ("tune", "clmr")]
)
def test_wrong_variant_is_named(tmp_path: Path, saved: str, asked: str) -> None:
    path, _ = write_foreign(tmp_path, "lightning", saved)
    with pytest.raises(CheckpointError) as info:
        load_model(asked, path)
    message = str(info.value)
    for name in (saved, asked):
        assert re.search(rf"\b{name}\b(?!_plus)", message), (name, message)


def test_infer_distinguishes_tune_from_tune_plus_by_convdown1(tmp_path: Path) -> None:
    for name in ("tune", "tune_plus"):
        path, _ = write_foreign(tmp_path, "lightning", name)
        state = read_encoder_weights(path).state_dict
        c = TINY_CONFIGS[name].channels
        assert tuple(state["convDown1.layers.0.weight"].shape) == (2 * c, 3 * c if name == "tune_plus" else c, 3)
        assert infer_model(state) == (name, TINY_CONFIGS[name])


@pytest.mark.parametrize("name", ENCODERS)
def test_every_missing_key_is_refused(tmp_path: Path, name: str) -> None:
    state = encoder_state(tiny_model(name))
    path = tmp_path / "partial.pt"
    # BatchNorm itself fills a missing num_batches_tracked (pre-0.4.1 checkpoints lack it), and
    # the counter does not affect eval-mode outputs, so those keys are not required.
    for key in [k for k in state if not k.endswith("num_batches_tracked")]:
        torch.save({k: v for k, v in state.items() if k != key}, path)
        with pytest.raises(CheckpointError):
            load_model(name, path)


@pytest.mark.parametrize(
    "name, extra",
    [("clmr", "sequential.4.2.weight"), ("clmr", "sequential.11.0.weight"), ("tune", "convDown10.layers.0.weight"),
     ("tune_plus", "conv6.layers.1.extra"), ("tune", "transposedConv5.weight")],
)
def test_extra_key_is_refused(tmp_path: Path, name: str, extra: str) -> None:
    checkpoint = lightning_checkpoint(tiny_model(name), name)
    checkpoint["state_dict"][f"model.encoder.{extra}"] = torch.zeros(4, 4, 3)
    path = tmp_path / "extra.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError):
        load_model(name, path)


def test_wrong_shape_is_refused(tmp_path: Path) -> None:
    state = encoder_state(tiny_model("tune"))
    state["conv3.layers.0.weight"] = torch.zeros(8, 4, 5)
    path = tmp_path / "shape.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="conv3"):
        load_model("tune", path)


# --- checkpoints as each Lightning generation wrote them (stand-in modules give the real GLOBALs) ---

LIGHTNING_MATRIX = [(v, h) for v in LIGHTNING_VERSIONS for h in HPARAMS_KINDS]


def _matrix_model(version: str, hparams: str) -> str:
    return ENCODERS[LIGHTNING_MATRIX.index((version, hparams)) % len(ENCODERS)]


def _pickle_globals(path: Path) -> set[str]:
    """Every GLOBAL the file's pickle names, read with pickletools (nothing is built)."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


@pytest.mark.parametrize("version, hparams", LIGHTNING_MATRIX)
def test_lightning_generations_load(tmp_path: Path, version: str, hparams: str) -> None:
    name = _matrix_model(version, hparams)
    model = tiny_model(name, seed=3)
    # CLMR v2 / TUNe argparse configs name the class; tunemir's trainer config names the registry entry.
    expected_model = name if version.startswith("2.") else UPSTREAM_NAMES[name]
    path = save_lightning(tmp_path / "epoch=9999.ckpt", model, version=version, hparams=hparams,
                          hparams_model=expected_model, epoch=9999, global_step=4321)
    assert not any(m.split(".")[0] in ("pytorch_lightning", "lightning_fabric") and
                   getattr(sys.modules[m], "__file__", None) is None for m in sys.modules)  # stand-ins gone
    named = _pickle_globals(path)
    old = version < "1.5"
    assert ("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint" in named) == old
    assert ("pytorch_lightning.callbacks.early_stopping.EarlyStopping" in named) == old
    assert any(g.endswith(".AttributeDict") for g in named) == (hparams == "AttributeDict")
    assert ("argparse.Namespace" in named) == (hparams == "Namespace")
    weights = read_encoder_weights(path)
    assert weights.format == "lightning"
    assert_same_tensors(weights.state_dict, model.state_dict())
    assert weights.metadata == {"model": expected_model, "epoch": 9999, "global_step": 4321,
                                "pytorch-lightning_version": version}


def test_lightning_generations_refused_by_torch_weights_only(tmp_path: Path) -> None:
    # The reason for tunemir.safe_pickle: torch's own safe loader cannot read these files.
    model = tiny_model("clmr")
    for version, hparams in [("1.2.10", "dict"), ("1.9.5", "AttributeDict")]:
        path = save_lightning(tmp_path / f"{version}.ckpt", model, version=version, hparams=hparams,
                              hparams_model="SampleCNN")
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path, weights_only=True)
        assert_same_tensors(read_encoder_weights(path).state_dict, model.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize("version", LIGHTNING_VERSIONS)
def test_lightning_generations_extract_like_the_bare_state_dict(tmp_path: Path, version: str) -> None:
    hparams = HPARAMS_KINDS[LIGHTNING_VERSIONS.index(version) % len(HPARAMS_KINDS)]
    name = "clmr" if version < "1.5" else "tune"
    model = tiny_model(name, seed=7)
    ckpt = save_lightning(tmp_path / "run.ckpt", model, version=version, hparams=hparams,
                          hparams_model=UPSTREAM_NAMES[name])
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    write_audio(tmp_path / "in" / "x.wav", 4.0, 22050)
    for out, path in [("a", ckpt), ("b", bare)]:
        result = CliRunner().invoke(cli_main, ["extract", name, str(tmp_path / "in"), str(tmp_path / out),
                                               "--checkpoint", str(path), "--workers", "0"])
        assert result.exit_code == 0, result.output
    vectors = np.load(tmp_path / "a" / "x.npy")
    assert vectors.shape == (rep_dim(name),) and np.isfinite(vectors).all()
    np.testing.assert_array_equal(vectors, np.load(tmp_path / "b" / "x.npy"))


def test_torch_1_archive_layout(tmp_path: Path) -> None:
    # torch 1.6-1.12 wrote no byteorder record; a zip written from a buffer names its folder `archive`.
    model = tiny_model("tune")
    path = save_lightning(tmp_path / "old.ckpt", model, version="1.3.8", hparams="Namespace",
                          hparams_model="Tune5Tail")
    as_torch1_archive(path)
    assert not any(n.endswith("byteorder") for n in zipfile.ZipFile(path).namelist())
    assert_same_tensors(read_encoder_weights(path).state_dict, model.state_dict())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    (tmp_path / "buffer.pt").write_bytes(buffer.getvalue())
    assert zipfile.ZipFile(tmp_path / "buffer.pt").namelist()[0].startswith("archive/")
    assert_same_tensors(read_encoder_weights(tmp_path / "buffer.pt").state_dict, model.state_dict())


def test_pre_zip_torch_format(tmp_path: Path) -> None:
    # torch < 1.6 (and _use_new_zipfile_serialization=False): CLMR v1's plain state_dicts, and a
    # Lightning 1.2 run on such a torch.
    model = tiny_model("clmr")
    path = tmp_path / "v1.pt"
    torch.save(v1_checkpoint(model, "clmr"), path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] != b"PK"
    assert_same_tensors(read_encoder_weights(path).state_dict, model.state_dict())
    with lightning_names() as classes:
        checkpoint = lightning_layout(classes, model, version="1.2.10", hparams="AttributeDict",
                                          hparams_model="SampleCNN")
        torch.save(checkpoint, tmp_path / "pl.ckpt", _use_new_zipfile_serialization=False)
    weights = read_encoder_weights(tmp_path / "pl.ckpt")
    assert_same_tensors(weights.state_dict, model.state_dict())
    assert weights.metadata["model"] == "SampleCNN" and weights.metadata["global_step"] == 123456
    base = torch.arange(60, dtype=torch.float64).reshape(6, 10)
    torch.save({"a": base, "b": base[2:4], "c": base.t()}, tmp_path / "views.pt", _use_new_zipfile_serialization=False)
    loaded = safe_pickle.load(tmp_path / "views.pt")
    assert torch.equal(loaded["b"], base[2:4]) and torch.equal(loaded["c"], base.t())
    assert loaded["b"].untyped_storage().data_ptr() == loaded["a"].untyped_storage().data_ptr()


def test_shared_and_offset_storages(tmp_path: Path) -> None:
    # Views into one storage (a slice, a transpose) come back as the same values and layout.
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    state = {"a": base, "b": base[2:4], "c": base.t(), "d": torch.tensor(3, dtype=torch.int64)}
    path = tmp_path / "views.pt"
    torch.save(state, path)
    loaded = safe_pickle.load(path)
    for key, value in state.items():
        assert torch.equal(loaded[key], value) and loaded[key].stride() == value.stride(), key
    assert loaded["b"].untyped_storage().data_ptr() == loaded["a"].untyped_storage().data_ptr()


def test_clmr_release_2_1_shaped_zip(tmp_path: Path) -> None:
    # The file the clmr image bakes in: clmr_magnatagatune_mlp.zip -> clmr_epoch=10000.ckpt, from
    # Lightning 1.2-1.4 (class-keyed callbacks, argparse hparams).
    zipped, model = write_clmr_release(tmp_path / "ctx", seed=2)
    digest = hashlib.sha256(zipped.read_bytes()).hexdigest()
    out = tmp_path / "clmr.safetensors"
    result = CliRunner().invoke(cli_main, ["weights", "fetch", "clmr", "--sha256", digest,
                                           "--search-dir", str(zipped.parent), "--output", str(out)])
    assert result.exit_code == 0, result.output
    weights = read_encoder_weights(out)
    assert_same_tensors(weights.state_dict, model.state_dict())
    assert weights.metadata["source"]["original_epoch"] == 10000 - 1
    assert weights.metadata["source"]["original_model"] == "SampleCNN"

    with zipfile.ZipFile(zipped) as archive:
        (tmp_path / "clmr_epoch=10000.ckpt").write_bytes(archive.read(RELEASES["clmr"].member))
    result = CliRunner().invoke(cli_main, ["convert-checkpoint", str(tmp_path / "clmr_epoch=10000.ckpt"),
                                           str(tmp_path / "c.safetensors"), "--model", "clmr"])
    assert result.exit_code == 0, result.output
    assert read_encoder_weights(tmp_path / "c.safetensors").weights_sha256 == weights.weights_sha256


# --- hostile pickles: named objects stay inert; calling or building one is refused ---

def torch_zip_with_pickle(path: Path, data: bytes) -> Path:
    """A torch.save zip whose data.pkl is `data` (a hand-written pickle program)."""
    torch.save({}, path)
    with zipfile.ZipFile(path) as archive:
        records = {n: archive.read(n) for n in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in records.items():
            archive.writestr(name, data if name.endswith("/data.pkl") else value)
    return path


class _Payload:
    """Pickles as a call of `func(*args)`: what a malicious checkpoint holds."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return (self.func, self.args)


def _evil_checkpoint(tmp_path: Path, payload: object) -> Path:
    checkpoint = lightning_checkpoint_dict(tiny_model("clmr"))
    checkpoint["hyper_parameters"] = {"model": "SampleCNN", "payload": payload}
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    return path


def lightning_checkpoint_dict(model: nn.Module) -> dict:
    return {"pytorch-lightning_version": "1.9.5", "epoch": 1, "global_step": 1,
            "state_dict": {f"model.encoder.{k}": v for k, v in model.state_dict().items()}}


@pytest.mark.parametrize("how", ["os.system", "subprocess", "eval", "exec"])
def test_code_running_reduce_is_refused(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    payload = {
        "os.system": _Payload(os.system, command),
        "subprocess": _Payload(subprocess.call, ["touch", str(marker)]),
        "eval": _Payload(eval, f"open({str(marker)!r}, 'w')"),
        "exec": _Payload(exec, f"open({str(marker)!r}, 'w').close()"),
    }[how]
    func = payload.func
    path = _evil_checkpoint(tmp_path, payload)
    if how == "os.system":  # control: an unrestricted load runs it
        torch.load(path, weights_only=False)
        assert marker.exists()
        marker.unlink()
    with pytest.raises(CheckpointError) as info:
        read_encoder_weights(path)
    assert f"{func.__module__}.{func.__qualname__}" in str(info.value)
    assert "convert-checkpoint" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


def _global(name: str) -> bytes:
    module, _, attr = name.rpartition(".")
    return b"c" + module.encode() + b"\n" + attr.encode() + b"\n"


#: Hand-written pickle programs that try each way of running a named object (protocol 2 opcodes),
#: and the object the refusal must name.
HOSTILE_PROGRAMS = {
    "REDUCE": (_global("os.system") + b"X\x04\x00\x00\x00true\x85R.", "os.system"),
    "NEWOBJ": (b"\x80\x02" + _global("pytorch_lightning.callbacks.early_stopping.EarlyStopping") + b")\x81.",
               "pytorch_lightning.callbacks.early_stopping.EarlyStopping"),
    "NEWOBJ_EX": (b"\x80\x04" + _global("subprocess.Popen") + b"]\x85}\x92.", "subprocess.Popen"),
    "BUILD on a class": (b"\x80\x02" + _global("subprocess.Popen") + b"}b.", "subprocess.Popen"),
    "BUILD with a code state": (b"\x80\x02" + _global("argparse.Namespace") + b")\x81" + _global("os.system")
                                + b"b.", "argparse.Namespace"),
    "INST": (b"(X\x04\x00\x00\x00trueios\nsystem\n.", "os.system"),
    "OBJ": (b"(" + _global("os.system") + b"X\x04\x00\x00\x00trueo.", "os.system"),
    "callback key called": (b"\x80\x02" + _global("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint")
                            + b")R.", "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    "dict subclass with a code state": (b"\x80\x02" + _global("pytorch_lightning.utilities.parsing.AttributeDict")
                                        + b")\x81" + _global("os.system") + b"b.", "AttributeDict"),
    "py2 name": (b"\x80\x02" + _global("__builtin__.eval") + b"X\x01\x00\x00\x001\x85R.", "builtins.eval"),
    "copyreg reconstructor": (b"\x80\x02" + _global("copy_reg._reconstructor") + _global("os.system")
                              + _global("__builtin__.object") + b"N\x87R.", "copyreg._reconstructor"),
}


@pytest.mark.parametrize("how", HOSTILE_PROGRAMS)
def test_hostile_pickle_programs_are_refused(tmp_path: Path, how: str) -> None:
    program, refused = HOSTILE_PROGRAMS[how]
    pickletools.dis(program, out=io.StringIO())  # a well-formed program: the refusal is the loader's doing
    path = torch_zip_with_pickle(tmp_path / "hostile.pt", program)
    with pytest.raises(CheckpointError, match="refused") as info:
        read_encoder_weights(path)
    assert f"object {refused}" in str(info.value)


def test_named_but_unused_objects_stay_inert(tmp_path: Path) -> None:
    # A GLOBAL that is only a value (Lightning 1.x `hparams_type`, a class used as a key) loads as a marker.
    model = tiny_model("clmr")
    checkpoint = lightning_checkpoint_dict(model)
    checkpoint |= {"hparams_type": os.system, "callbacks": {subprocess.Popen: {"x": torch.ones(2)}}}
    path = tmp_path / "inert.ckpt"
    torch.save(checkpoint, path)
    loaded = safe_pickle.load(path)
    assert loaded["hparams_type"] is not os.system
    assert safe_pickle.opaque_name(loaded["hparams_type"]) == f"{os.system.__module__}.system"
    (key,) = loaded["callbacks"]
    assert safe_pickle.opaque_name(key) == "subprocess.Popen"
    assert torch.equal(loaded["callbacks"][key]["x"], torch.ones(2))
    with pytest.raises(safe_pickle.RefusedObject):
        key(["true"])
    assert_same_tensors(read_encoder_weights(path).state_dict, model.state_dict())


def test_legacy_format_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.pt"
    torch.save({"x": _Payload(os.system, f"touch {marker}")}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="system"):
        read_encoder_weights(path)
    assert not marker.exists()


def test_damaged_storages_are_not_read_past(tmp_path: Path) -> None:
    # A tensor that points past its storage, or a missing storage record: a damaged file, not a crash.
    path = tmp_path / "t.pt"
    torch.save({"w": torch.ones(4, 4)}, path)
    with zipfile.ZipFile(path) as archive:
        records = {n: archive.read(n) for n in archive.namelist()}
    for tag, change in [("short", lambda n, v: v[:8] if "/data/" in n else v),
                        ("missing", lambda n, v: None if "/data/" in n else v)]:
        bad = tmp_path / f"{tag}.pt"
        with zipfile.ZipFile(bad, "w") as archive:
            for name, value in records.items():
                if change(name, value) is not None:
                    archive.writestr(name, change(name, value))
        with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as info:
            read_encoder_weights(bad)
        assert "storage" in str(info.value) and str(bad) in str(info.value)


def test_plain_values_of_every_kind_load(tmp_path: Path) -> None:
    # Protocol 2 writes sets as `__builtin__.set`, bytes through `_codecs.encode`, paths by REDUCE.
    values = {
        "set": {1, 2}, "frozenset": frozenset({"a"}), "bytes": b"\x00\xffabc", "bytearray": bytearray(b"xy"),
        "complex": 1 + 2j, "tuple": (1, "a", None), "floats": [float("inf"), -0.0], "size": torch.Size([2, 3]),
        "device": torch.device("cpu"), "dtype": torch.bfloat16, "path": Path("/runs/x.ckpt"),
        "ordered": collections.OrderedDict(a=1), "namespace": argparse.Namespace(lr=0.1, model="SampleCNN"),
        "half": torch.arange(6, dtype=torch.float16), "bf16": torch.ones(3, dtype=torch.bfloat16),
        "bool": torch.tensor([True, False]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "values.pt"
    torch.save(values, path)
    assert "__builtin__.set" in _pickle_globals(path)
    loaded = safe_pickle.load(path)
    assert loaded.keys() == values.keys()
    for key, value in values.items():
        got = loaded[key]
        if isinstance(value, torch.Tensor):
            assert got.dtype == value.dtype and torch.equal(got, value), key
        elif isinstance(value, argparse.Namespace):
            assert vars(got) == vars(value), key
        elif isinstance(value, Path):
            assert str(got) == str(value), key
        else:
            assert got == value and type(got) is type(value), key


def test_hand_saved_state_dict_wrapper(tmp_path: Path) -> None:
    # torch.save({"state_dict": ..., "epoch": ...}) without Lightning: the wrapped dict is the state.
    model = tiny_model("tune")
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": v1_checkpoint(model, "tune"), "epoch": 3, "optimizer": adam_state(model)}, path)
    weights = read_encoder_weights(path)
    assert weights.format == "clmr-v1"
    assert_same_tensors(weights.state_dict, model.state_dict())


def test_no_module_writes_safetensors_owner_only(tmp_path):
    """safetensors' save_file creates 0600 files; tunemir writes them through write_safetensors."""
    from tunemir.checkpoints import write_safetensors

    package = Path(__file__).resolve().parents[1] / "tunemir"
    users = [p.relative_to(package).as_posix() for p in package.rglob("*.py") if "save_file(" in p.read_text()]
    assert users == []
    old = os.umask(0o002)
    try:
        write_safetensors(tmp_path / "w.safetensors", {"x": torch.ones(3)}, {"k": "v"})
    finally:
        os.umask(old)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o664
    assert read_encoder_weights(tmp_path / "w.safetensors").state_dict["x"].tolist() == [1.0, 1.0, 1.0]
