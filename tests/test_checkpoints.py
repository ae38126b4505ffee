"""Reading CLMR/TUNe checkpoints in every published layout, tunemir's format, and refusing unsafe files."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import tunemir
from tunemir.checkpoints import CheckpointError, read_encoder_weights, save_checkpoint
from tunemir.models import config_from_dict, convert_checkpoint, infer_model, load_model
from tunemir.testing import TINY_CONFIGS, tiny_model

ENCODERS = ["clmr", "tune", "tune_plus"]
FRAME = 59049
#: `model` as the TUNe / CLMR argparse configs name it.
UPSTREAM_NAMES = {"clmr": "SampleCNN", "tune": "Tune5Tail", "tune_plus": "TunePlus"}


# --- helpers: checkpoints with the original key layouts (spec §2.1), built from tiny models ---

def encoder_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def rep_dim(name: str) -> int:
    return TINY_CONFIGS[name].channels[-1] if name == "clmr" else TINY_CONFIGS[name].out_channels


def adam_state(model: nn.Module) -> dict:
    """A real Adam state_dict (tensors for step, exp_avg, exp_avg_sq) after one step on a copy."""
    params = list(copy.deepcopy(model).parameters())
    optimizer = torch.optim.Adam(params, lr=3e-4)
    sum(p.square().sum() for p in params).backward()
    optimizer.step()
    return optimizer.state_dict()


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
