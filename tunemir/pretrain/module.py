"""CLMR contrastive pretraining with PyTorch Lightning: the module, its data and `train()`."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from tunemir import __version__
from tunemir.audio import FRAME_LENGTH
from tunemir.fileio import atomic_path
from tunemir.models import build_model, config_from_dict
from tunemir.pretrain.augment import CLMRAugment
from tunemir.pretrain.config import ConfigError, PretrainConfig, dump_config, load_config
from tunemir.pretrain.contrastive import Projector, nt_xent
from tunemir.pretrain.data import (
    AudioCache, CropPairs, EpochSampler, PretrainDataError, augment_seed, build_cache, data_roots, dataset_sources,
    folder_sources,
)

log = logging.getLogger(__name__)
# Lightning notes that the module's on_after_batch_transfer is used with a datamodule: intended.
warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


class TrainingError(RuntimeError):
    """A run that had to stop (a non-finite loss or weights, an unwritable folder); the message
    says where and what to change. The last good checkpoint, if any, is kept."""


class ResumeError(ValueError):
    """A `--resume` file that is not a checkpoint this run can continue from."""


class ContrastiveModel(nn.Module):
    """Encoder + projector under the names CLMR's SimCLR wrapper uses, so a Lightning module
    holding it as `model` saves `model.encoder.*` and `model.projector.*`."""

    def __init__(self, encoder: nn.Module, projection_dim: int = 64):
        super().__init__()
        self.encoder = encoder
        self.projector = Projector(encoder.layer_dims[0], projection_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (N, 1, T) -> (N, 512)
        return h, self.projector(h)  # (N, 512), (N, projection_dim)


def build_encoder(config: PretrainConfig) -> nn.Module:
    """The registry's encoder, or one with `encoder_config` (JSON of its config fields)."""
    if not config.encoder_config:
        return build_model(config.model)
    return build_model(config.model, config_from_dict(config.model, config.encoder_overrides()))


def build_augment(config: PretrainConfig) -> CLMRAugment:
    """The augmentation chain (its ranges are checked with the rest of the configuration)."""
    return CLMRAugment(config.augment)


class ContrastiveLearning(pl.LightningModule):
    """SimCLR on raw audio as CLMR v2 / TUNe train it: two augmented views per clip, each view
    batch through the encoder and projector separately (as CLMR's wrapper does, so batch norm
    sees one view batch at a time), NT-Xent, Adam."""

    def __init__(self, config: dict):
        super().__init__()
        self.save_hyperparameters()  # {"config": primitives}: checkpoints stay weights_only-loadable
        self.config = load_config(base=config)
        self.model = ContrastiveModel(build_encoder(self.config), self.config.projection_dim)
        self.augment = build_augment(self.config) if self.config.augment_on == "device" else None

    @property
    def learning_rate(self) -> float:
        """The configured learning rate after `lr_scaling` for this run's devices x nodes."""
        return self.config.scaled(self.trainer.num_devices * self.trainer.num_nodes)["learning_rate"]

    def on_train_start(self) -> None:
        # A resumed run restores the optimizer with its old learning rate: the configured one wins.
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self.learning_rate

    def on_after_batch_transfer(self, batch: torch.Tensor, dataloader_idx: int) -> torch.Tensor:
        if self.augment is None or not self.trainer.training:
            return batch
        # Seeded by (seed, step, rank): resumed runs draw the same augmentations.
        gen = torch.Generator(device=batch.device)
        gen.manual_seed(augment_seed(self.config.seed, self.trainer.global_step, self.global_rank))
        views, _ = self.augment(batch.flatten(0, 1).float(), gen)  # (2B, T)
        return views.view_as(batch)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        # batch: (B, 2, T), the two views of each clip
        _, z_i = self.model(batch[:, 0, None])
        _, z_j = self.model(batch[:, 1, None])
        if self.config.gather_negatives and self.trainer.world_size > 1:
            # Every rank computes the loss over all ranks' views; the gathered tensors keep
            # their gradients, and DDP's gradient averaging then yields the global loss's gradient.
            z_i = self.all_gather(z_i, sync_grads=True).flatten(0, 1)
            z_j = self.all_gather(z_j, sync_grads=True).flatten(0, 1)
        loss = nt_xent(z_i, z_j, self.config.temperature)
        # Every rank stops together (a rank raising alone would leave the others waiting).
        if self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss)), all=False):
            c = self.config
            raise TrainingError(
                f"training stopped at epoch {self.current_epoch}, step {self.global_step}: the NT-Xent loss is "
                f"{float(loss.detach())} on at least one device, so the weights are no longer usable and were not "
                f"saved (checkpoints of earlier epochs are kept). Likely causes: --learning_rate {c.learning_rate:g} "
                f"too large, --temperature {c.temperature:g} too small, or --precision {c.precision} "
                f"overflowing; lower the learning rate and resume from the last good checkpoint"
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch.shape[0],
                 sync_dist=True)
        return loss

    def on_train_epoch_end(self) -> None:
        # Runs before ModelCheckpoint saves, on every rank (only rank 0 writes, so only it would see
        # AtomicCheckpointIO's own check, and the other ranks would wait for it forever).
        bad = non_finite(self.state_dict())
        if self.trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            raise _diverged(self.current_epoch, self.global_step, bad or ["(on another device)"], "a checkpoint")

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.learning_rate)


class PretrainData(pl.LightningDataModule):
    """Decodes the training audio into the cache once (rank 0 of each node), then serves crop
    pairs, this rank's share of a seed-and-epoch shuffle."""

    def __init__(self, config: PretrainConfig):
        super().__init__()
        self.config = config
        self.dataset: CropPairs | None = None
        self._sources: tuple[list[tuple[str, Path]], str] | None = None
        self._opened: AudioCache | None = None

    def sources(self) -> tuple[list[tuple[str, Path]], str]:
        """(uid, path) of the training audio and the cache's name; a `PretrainDataError` says
        what is missing. Listed once per process (a stat per file)."""
        if self._sources is None:
            c = self.config
            datasets, _ = data_roots(c.datasets_dir, c.audio_cache_dir)
            if c.audio_dir:
                if not Path(c.audio_dir).is_dir():
                    raise PretrainDataError(f"--audio_dir {c.audio_dir}: no such folder; give a folder of "
                                            f"audio files (WAV/FLAC/OGG/MP3)")
                self._sources = folder_sources(Path(c.audio_dir)), Path(c.audio_dir).name
            else:
                self._sources = dataset_sources(datasets, c.dataset, c.split), f"{c.dataset}-{c.split}"
        return self._sources

    def _cache(self) -> AudioCache:
        """The decoded audio, built on first use in this process."""
        if self._opened is None:
            sources, name = self.sources()
            _, root = data_roots(self.config.datasets_dir, self.config.audio_cache_dir)
            try:
                self._opened = build_cache(sources, root, name.replace(",", "+"))
            except OSError as err:
                raise PretrainDataError(f"cannot write the decoded-audio cache under {root} "
                                        f"({err.strerror or err}): pass a writable --audio_cache_dir") from None
        return self._opened

    def summary(self) -> dict:
        """Clip counts for run.json (computed here: with ddp_spawn, setup ran in other processes)."""
        pairs = CropPairs(self._cache(), self.config.seed)
        return {"clips": len(pairs), "clips_excluded_short": pairs.excluded, "files_failed": pairs.cache.failed}

    def prepare_data(self) -> None:
        self._cache()

    def setup(self, stage: str) -> None:
        cache = self._cache()
        augment = build_augment(self.config) if self.config.augment_on == "cpu" else None
        self.dataset = CropPairs(cache, self.config.seed, FRAME_LENGTH, augment)
        log.info("%d clips for pretraining; %d shorter than one frame (%d samples) excluded; "
                 "%d files failed to decode", len(self.dataset), self.dataset.excluded, FRAME_LENGTH,
                 len(cache.failed))
        if len(self.dataset) < self.config.batch_size * self.trainer.world_size:
            raise PretrainDataError(
                f"{len(self.dataset)} usable clips cannot fill one batch of {self.config.batch_size} "
                f"per device on {self.trainer.world_size} device(s): add audio or lower --batch_size"
            )

    def train_dataloader(self) -> DataLoader:
        c = self.config
        workers = c.num_workers
        if workers is None:
            workers = max(1, (os.cpu_count() or 2) - 1) if c.augment_on == "cpu" else 2
        sampler = EpochSampler(self.dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank,
                               shuffle=True, seed=c.seed)
        return DataLoader(self.dataset, batch_size=c.batch_size, sampler=sampler, drop_last=True,
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=torch.cuda.is_available(), worker_init_fn=_one_thread)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # workers crop (and maybe augment) one clip each; no oversubscription


def non_finite(state: dict) -> list[str]:
    """Names of the floating-point tensors of `state` holding a NaN or an infinity."""
    return [key for key, value in state.items()
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]


def _diverged(epoch, step, bad: list[str], target: str) -> TrainingError:
    return TrainingError(
        f"training stopped at epoch {epoch}, step {step}: {len(bad)} weight tensors are not finite (first: "
        f"{bad[0]}), so {target} was not written (earlier checkpoints are kept). Likely causes: --learning_rate "
        f"too large, --temperature too small or --precision overflowing; lower the learning rate and resume "
        f"from the last good checkpoint"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed (`atomic_path`): a killed run
    never leaves a truncated `.ckpt`. One whose weights are not finite is never written."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        bad = non_finite(checkpoint.get("state_dict", {}))
        if bad:
            raise _diverged(checkpoint.get("epoch"), checkpoint.get("global_step"), bad, Path(path).name)
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class Throughput(Callback):
    """Clips per second of each epoch, logged and kept for run.json."""

    def __init__(self):
        self.epochs: list[dict] = []
        self._start = 0.0
        self._steps = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start, self._steps = time.perf_counter(), trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = time.perf_counter() - self._start
        clips = (trainer.global_step - self._steps) * pl_module.config.batch_size * trainer.world_size
        rate = clips / max(seconds, 1e-9)
        self.epochs.append({"epoch": trainer.current_epoch, "seconds": seconds, "clips_per_s": rate})
        pl_module.log("train/clips_per_s", rate, on_epoch=True, sync_dist=False, rank_zero_only=True)


def resolve_resume(config: PretrainConfig, resume: str | Path | None) -> Path | None:
    """`last` means this run's `checkpoints/last.ckpt`; anything else is a path."""
    if resume is None:
        return None
    path = run_dir(config) / "checkpoints" / "last.ckpt" if str(resume) == "last" else Path(resume)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        where = (f"this run's checkpoints are in {run_dir(config) / 'checkpoints'}; --output_dir and --name "
                 f"select the run" if str(resume) == "last" else "give a run's checkpoints/*.ckpt or --resume last")
        raise ConfigError(f"--resume: {path} {what} ({where})")
    return path


def run_dir(config: PretrainConfig) -> Path:
    return Path(config.output_dir) / config.run_name


def read_checkpoint(checkpoint: Path) -> dict:
    """A `tunemir train` checkpoint, loaded with `weights_only=True` (no arbitrary objects); a
    `ResumeError` names the file when it is something else."""
    path = Path(checkpoint)
    fix = "resume from a run's checkpoints/*.ckpt (or --resume last)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - arbitrary bytes make torch's safe unpickler fail in many ways

        kind = (" (a .safetensors holds only an encoder's weights, not the optimizer state a resumed run needs)"
                if path.suffix == ".safetensors" else "")
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Weights only load failed" in reason:  # torch's hint to load unsafely must not be ours
            reason = "not a PyTorch file of tensors and plain values"
        raise ResumeError(f"--resume: {path} is not a readable tunemir train checkpoint{kind} ({reason[:200]}); "
                          f"{fix}") from None
    config = state.get("hyper_parameters", {}).get("config") if isinstance(state, dict) else None
    if not isinstance(config, dict) or not isinstance(state.get("state_dict"), dict) \
            or "optimizer_states" not in state:
        raise ResumeError(f"--resume: {path} is not a checkpoint of `tunemir train` (it holds no stored training "
                          f"configuration and optimizer state; its weights can still be used with `tunemir extract "
                          f"--checkpoint`); {fix}")
    return state


def stored_config(checkpoint: Path) -> dict:
    """The configuration a tunemir pretraining checkpoint was trained with."""
    return read_checkpoint(checkpoint)["hyper_parameters"]["config"]


def check_resumable(module: ContrastiveLearning, checkpoint: Path) -> None:
    """The checkpoint's tensors have the names and shapes of `module`'s (a `ResumeError` otherwise)."""
    saved = read_checkpoint(checkpoint)["state_dict"]
    mine = module.state_dict()
    wrong = sorted(set(saved) ^ set(mine)) or sorted(k for k in mine if tuple(saved[k].shape) != tuple(mine[k].shape))
    if wrong:
        raise ResumeError(f"--resume: {checkpoint} holds another network than --model {module.config.model} "
                          f"with this --encoder_config/--projection_dim (first differing tensor: {wrong[0]}); resume "
                          f"it with the options it was trained with, or start a new run with another --name")


def train(config: PretrainConfig, resume: str | Path | None = None, progress: bool = True) -> Path:
    """Pretrain `config.model` contrastively; returns the run folder, which holds config.yaml,
    checkpoints/ (every N epochs + last.ckpt), csv/version_*/metrics.csv (one version per start or
    resume), tensorboard/, loss.png and run.json.

    `resume` (a checkpoint path or `last`) continues at the saved epoch and step with the
    saved optimizer state; crops, shuffles and augmentations depend only on (seed, epoch,
    step), so a resumed run repeats what the uninterrupted run would have done.
    """
    folder = run_dir(config)
    ckpt_path = resolve_resume(config, resume)
    data = PretrainData(config)
    data.sources()  # missing audio is reported before anything is built or written
    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = ContrastiveLearning(config.to_dict())
    if ckpt_path is not None:
        check_resumable(module, ckpt_path)
    throughput = Throughput()
    checkpoints = ModelCheckpoint(
        dirpath=folder / "checkpoints", filename="epoch={epoch:05d}", auto_insert_metric_name=False,
        every_n_epochs=config.checkpoint_every_n_epochs, save_top_k=-1, save_last=True,
        save_on_train_epoch_end=True,
    )
    sync_batchnorm = config.sync_batchnorm and _uses_gpu(config.accelerator)
    if config.sync_batchnorm and not sync_batchnorm:
        log.debug("sync_batchnorm is off on CPU (PyTorch's SyncBatchNorm needs GPUs)")
    try:
        trainer = pl.Trainer(
            default_root_dir=folder, max_epochs=config.max_epochs, max_steps=config.max_steps,
            accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
            strategy=config.strategy, precision=config.precision, sync_batchnorm=sync_batchnorm,
            log_every_n_steps=config.log_every_n_steps, use_distributed_sampler=False,
            # A resumed run logs to a new version folder (Lightning would delete an existing metrics.csv).
            logger=[CSVLogger(folder, name="csv"), TensorBoardLogger(folder, name="tensorboard")],
            callbacks=[checkpoints, throughput], plugins=[AtomicCheckpointIO()], enable_progress_bar=progress,
            enable_model_summary=progress, num_sanity_val_steps=0,
        )
    except (ValueError, TypeError, ImportError, MisconfigurationException) as err:
        raise ConfigError(
            f"--accelerator {config.accelerator} --devices {config.devices} --strategy {config.strategy} "
            f"--precision {config.precision} --num_nodes {config.num_nodes}: Lightning cannot set these up on "
            f"this machine ({str(err).strip().splitlines()[0]}); change them (e.g. --accelerator cpu --devices 1)"
        ) from None
    scaled = config.scaled(trainer.num_devices * trainer.num_nodes)
    log_setup(scaled, trainer.num_devices, trainer.num_nodes)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "config.yaml") as tmp:
            tmp.write_text(dump_config(config))
    except OSError as err:
        raise TrainingError(f"--output_dir {config.output_dir}: cannot write the run folder {folder} "
                            f"({err.strerror or err}); choose a writable folder") from None
    started = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    if trainer.is_global_zero:
        last = folder / "checkpoints" / "last.ckpt"
        # With ddp_spawn the training state lives in the workers: read it back from last.ckpt.
        state = torch.load(last, map_location="cpu", weights_only=True) if last.is_file() else {}
        plot_loss(folder / "csv", folder / "loss.png")
        report = {
            "tunemir_version": __version__, "torch": torch.__version__, "lightning": pl.__version__,
            "python": platform.python_version(), "device": _device_name(trainer),
            **scaled, "resumed_from": str(ckpt_path) if ckpt_path else None,
            "epochs_completed": state.get("epoch", -1) + 1, "global_step": state.get("global_step", 0),
            "seconds": time.perf_counter() - started, "epochs": throughput.epochs,
            **data.summary(),
            "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        }
        with atomic_path(folder / "run.json") as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    return folder


def log_setup(scaled: dict, devices: int, nodes: int) -> None:
    """The run's effective scale, before anything trains (`PretrainConfig.scaled`)."""
    s = scaled
    rule = ("linear: --learning_rate x devices x nodes, TUNe's rule" if s["lr_scaling"] == "linear"
            else "none: as given, CLMR's choice; --lr_scaling linear multiplies it by devices x nodes, as TUNe")
    log.info("training on %d device(s) x %d node(s): global batch %d clips (%d per device, %d views), "
             "learning rate %g (lr_scaling %s), %d negatives per view (%s)", devices, nodes, s["global_batch"],
             s["batch_size_per_device"], 2 * s["global_batch"], s["learning_rate"], rule, s["negatives_per_view"],
             "gathered from every device" if s["negatives"] == "global" else "within each device's batch")


def _uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _device_name(trainer: pl.Trainer) -> str:
    device = trainer.strategy.root_device
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def read_loss(csv_dir: Path) -> tuple[list[int], list[float], list[int], list[float]]:
    """(steps, step losses, epochs, epoch-mean losses) from every version of Lightning's
    metrics.csv under `csv_dir`; steps that a resumed run repeated keep the later value."""
    import csv

    steps, epochs = {}, {}
    versions = sorted(Path(csv_dir).glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    for metrics_csv in versions:
        with open(metrics_csv, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("train/loss_step"):
                    steps[int(row["step"])] = float(row["train/loss_step"])
                if row.get("train/loss_epoch"):
                    epochs[int(row["epoch"])] = float(row["train/loss_epoch"])
    return sorted(steps), [steps[k] for k in sorted(steps)], sorted(epochs), [epochs[k] for k in sorted(epochs)]


def plot_loss(csv_dir: Path, target: Path) -> None:
    """The loss curve (per logged step and per epoch) of all logged versions as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, step_loss, epochs, epoch_loss = read_loss(csv_dir)
    if not steps:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(steps, step_loss, lw=0.8)
    axes[0].set(xlabel="step", ylabel="NT-Xent loss", title="per logged step")
    axes[1].plot(epochs, epoch_loss, marker="." if len(epochs) < 50 else None)
    axes[1].set(xlabel="epoch", ylabel="NT-Xent loss", title="epoch mean")
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
