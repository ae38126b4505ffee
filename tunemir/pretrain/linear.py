"""CLMR's linear evaluation (Spijkervet & Burgoyne 2021, section 4 of our spec) and its
supervised SampleCNN baseline: train a head on frozen features of one fixed random crop per
clip, then score each test clip by the mean prediction over all its full frames."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tunemir import __version__
from tunemir.audio import FRAME_LENGTH, frame_signal
from tunemir.checkpoints import write_safetensors
from tunemir.fileio import atomic_path
from tunemir.pretrain.data import AudioCache, build_cache, data_roots, dataset_sources, load_meta

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
#: Which trained weights are tested: the last, early-stopped ones (CLMR) or the best valid epoch's.
HEADS = ("last", "best")


class LinearEvalError(RuntimeError):
    """An evaluation that cannot give a result (non-finite features or loss); the message says why."""


class LinearEvalUsageError(ValueError):
    """Options that do not fit the dataset or each other."""


@dataclasses.dataclass(frozen=True)
class LinearEvalSettings:
    """CLMR's defaults: Adam 1e-3 with weight decay 1e-6, batch 48, ReduceLROnPlateau (x0.1
    after 5 epochs without a 1e-4 relative improvement), early stopping on valid loss after
    10 epochs without improvement, at most 200 epochs, the last (early-stopped) weights tested.
    The supervised baseline uses SGD (Nesterov momentum 0.9, lr 3e-4, weight decay 1e-6) and
    x0.2 plateau steps, as CLMR. `head="best"` tests the weights of the best valid epoch instead."""

    mlp: bool = False
    supervised: bool = False
    learning_rate: float | None = None  # None: 1e-3 for heads, 3e-4 for the supervised model
    weight_decay: float = 1e-6
    batch_size: int = 48
    max_epochs: int = 200
    patience: int = 10
    seed: int = 42
    head: str = "last"


def fixed_crop_starts(lengths: np.ndarray, seed: int, frame_length: int = FRAME_LENGTH) -> np.ndarray:
    """One random crop start per clip, drawn once: the frozen train/valid crops of CLMR's
    protocol. Clips shorter than a frame start at 0 (and are zero-padded)."""
    rng = np.random.default_rng(seed)
    return np.array([rng.integers(0, max(int(n) - frame_length, 0) + 1) for n in lengths], np.int64)


def crop(cache: AudioCache, index: int, start: int, frame_length: int = FRAME_LENGTH) -> np.ndarray:
    """`frame_length` samples of a clip from `start`, zero-padded when the clip is shorter."""
    return frame_signal(cache.clip(index, start, min(frame_length, int(cache.lengths[index]) - start)),
                        frame_length)[0]


def full_frames(cache: AudioCache, indices: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every full frame of each clip (all, or `indices`), stacked (M, frame_length), and each
    frame's clip index.

    Only an incomplete tail is dropped (CLMR drops the last frame even when it is complete,
    and fails on clips of fewer than two frames); a clip shorter than a frame is zero-padded
    to one frame, so every clip is scored with its own label.
    """
    frames, owners = [], []
    for index in range(len(cache)) if indices is None else indices:
        clip_frames = frame_signal(cache.clip(index))
        frames.append(clip_frames)
        owners.append(np.full(len(clip_frames), index))
    return np.concatenate(frames), np.concatenate(owners)


@torch.no_grad()
def run_frames(model: Callable[[torch.Tensor], torch.Tensor], frames: np.ndarray, device: torch.device,
               batch_size: int = 32) -> np.ndarray:
    """An eval-mode model (encoder, one of its layers, or encoder + classifier) over frames (M, T) -> (M, K)."""
    return torch.cat([model(torch.from_numpy(frames[i: i + batch_size]).to(device)[:, None]).float().cpu()
                      for i in range(0, len(frames), batch_size)]).numpy()


def fixed_crops(cache: AudioCache, starts: np.ndarray, begin: int = 0, end: int | None = None) -> np.ndarray:
    """The crops of clips `begin:end`, stacked (n, frame_length)."""
    end = len(starts) if end is None else min(end, len(starts))
    return np.stack([crop(cache, i, int(starts[i])) for i in range(begin, end)])


def encode_crops(model: Callable[[torch.Tensor], torch.Tensor], cache: AudioCache, starts: np.ndarray,
                 device: torch.device, chunk: int = 256) -> np.ndarray:
    """Representations of each clip's crop, cut `chunk` clips at a time (MTT's train crops
    would take 4.4 GB at once)."""
    return np.concatenate([run_frames(model, fixed_crops(cache, starts, i, i + chunk), device)
                           for i in range(0, len(starts), chunk)])


def map_test_frames(fn: Callable[[np.ndarray], np.ndarray], cache: AudioCache,
                    chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """`fn` (frames (M, T) -> (M, K)) over every full frame of every clip, `chunk` clips at a
    time (MTT's test frames would take 12 GB at once): (outputs, each row's clip index)."""
    outputs, owners = [], []
    for begin in range(0, len(cache), chunk):
        frames, clips = full_frames(cache, range(begin, min(begin + chunk, len(cache))))
        outputs.append(fn(frames))
        owners.append(clips)
    return np.concatenate(outputs), np.concatenate(owners)


def clip_predictions(frame_logits: np.ndarray, owners: np.ndarray, n_clips: int, multilabel: bool) -> np.ndarray:
    """Per-clip predictions: sigmoid (multi-label) or softmax of each frame's logits, averaged
    over the clip's frames. (M, C) -> (n_clips, C)."""
    logits = torch.from_numpy(np.asarray(frame_logits, np.float64))
    probs = (torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)).numpy()
    sums = np.zeros((n_clips, probs.shape[1]))
    np.add.at(sums, owners, probs)
    counts = np.bincount(owners, minlength=n_clips)[:, None]
    return sums / counts


def clip_metrics(targets: np.ndarray, predictions: np.ndarray, multilabel: bool) -> dict[str, float]:
    """Macro (tag-wise, averaged) ROC-AUC and PR-AUC (average precision) for tagging, as CLMR's
    `evaluate()`; accuracy of the argmax for single-label tasks."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if multilabel:
        return {"roc_auc": float(roc_auc_score(targets, predictions, average="macro")),
                "pr_auc": float(average_precision_score(targets, predictions, average="macro"))}
    return {"accuracy": float(np.mean(predictions.argmax(1) == targets))}


def fit(model: nn.Module, train_batches: Callable[[int], Iterable], valid_batches: Callable[[], Iterable],
        loss_fn: nn.Module, optimizer: torch.optim.Optimizer, factor: float, settings: LinearEvalSettings,
        device: torch.device) -> list[dict]:
    """Train with ReduceLROnPlateau and early stopping on the valid loss. The model keeps the
    last (early-stopped) weights, as CLMR, or with `settings.head == "best"` gets those of the
    best valid epoch back (`tested_epoch` says which epoch that is)."""
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=5,
                                                           threshold=1e-4)
    best, best_state, waited, history = float("inf"), copy.deepcopy(model.state_dict()), 0, []
    for epoch in range(settings.max_epochs):
        model.train()
        train_loss, seen = 0.0, 0
        for x, y in train_batches(epoch):
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y)
            if not bool(torch.isfinite(loss)):
                raise LinearEvalError(f"training stopped at epoch {epoch}: the loss is {loss.item()}; the "
                                      f"learning rate ({optimizer.param_groups[0]['lr']:g}) is likely too large: "
                                      f"lower --learning-rate")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_loss, seen = train_loss + float(loss.detach()) * len(x), seen + len(x)
        model.eval()
        with torch.no_grad():
            total, count = 0.0, 0
            for x, y in valid_batches():
                total += float(loss_fn(model(x.to(device)), y.to(device))) * len(x)
                count += len(x)
        valid_loss = total / count
        scheduler.step(valid_loss)
        history.append({"epoch": epoch, "train_loss": train_loss / max(seen, 1), "valid_loss": valid_loss,
                        "lr": optimizer.param_groups[0]["lr"]})
        log.info("epoch %d: train loss %.4f, valid loss %.4f", epoch, history[-1]["train_loss"], valid_loss)
        if valid_loss < best:
            best, best_state, waited = valid_loss, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited >= settings.patience:
                break
    if settings.head == "best":
        model.load_state_dict(best_state)
    return history


def tested_epoch(history: list[dict], head: str) -> int:
    """The epoch whose weights `fit` left in the model: the last, or the first of least valid loss."""
    if head == "last":
        return len(history) - 1
    return int(np.argmin([h["valid_loss"] for h in history]))


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator | None):
    order = torch.randperm(len(x), generator=gen) if gen is not None else torch.arange(len(x))
    for i in range(0, len(x), batch_size):
        rows = order[i: i + batch_size]
        yield x[rows], y[rows]


class SupervisedModel(nn.Module):
    """CLMR's supervised baseline: the encoder, dropout 0.5 and a linear classifier, end to end."""

    def __init__(self, encoder: nn.Module, num_outputs: int):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(encoder.layer_dims[0], num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.encoder(x)))  # (B, 1, T) -> (B, C)


def _head(dim: int, num_outputs: int, mlp: bool) -> nn.Module:
    if mlp:
        return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, num_outputs))
    return nn.Sequential(nn.Linear(dim, num_outputs))


def linear_evaluation(
    output_dir: Path | str, *, checkpoint: Path | str | None = None, model: str | None = None,
    dataset: str = "magnatagatune", datasets_dir: Path | str | None = None,
    audio_cache_dir: Path | str | None = None, settings: LinearEvalSettings = LinearEvalSettings(),
    device: str = "auto", encoder_config: dict | None = None, layer: int = 0,
) -> dict:
    """Run CLMR's evaluation of an encoder on a processed tagging/classification dataset and
    write `linear_evaluation.json` (test metrics, settings, per-epoch history) and the trained
    weights to `output_dir`. Returns the JSON's content.

    Without `settings.supervised`, `checkpoint` gives the frozen encoder (any format
    `tunemir extract` reads) and `layer` which of its layers gives the features (0: the final
    representation; k counts blocks back from the output, as `tunemir extract --layer`). With
    it, `model` is trained from scratch (random init, or `encoder_config` for small test models)
    and no checkpoint is used.
    """
    from tunemir.extract import resolve_device
    from tunemir.models import build_model, config_from_dict, load_encoder
    from tunemir.models.base import InferenceEncoder
    from tunemir.probe.tasks import load_task

    started = time.perf_counter()
    dev = resolve_device(device)
    datasets, caches_root = data_roots(datasets_dir, audio_cache_dir)
    task = load_task(dataset, datasets / dataset)
    if task.output_type == "regression":
        raise LinearEvalUsageError(f"--dataset {dataset} is a regression task; the CLMR protocol covers tagging "
                                   f"and classification (use `tunemir probe` for it)")
    multilabel = task.output_type == "multilabel"
    if settings.head not in HEADS:
        raise LinearEvalUsageError(f"--head {settings.head}: choose last (the early-stopped weights, as CLMR) or best "
                                   f"(the best valid epoch's)")
    torch.manual_seed(settings.seed)
    if settings.supervised:
        if model is None:
            raise LinearEvalUsageError("the supervised baseline needs a model name: --model clmr, tune or tune_plus")
        if layer != 0:
            raise LinearEvalUsageError(f"--layer {layer} selects a layer of a frozen --checkpoint encoder; the "
                                       f"supervised baseline trains the whole model: leave --layer out")
        config = config_from_dict(model, encoder_config) if encoder_config else None
        encoder = build_model(model, config)
    else:
        if checkpoint is None:
            raise LinearEvalUsageError("linear evaluation needs the encoder's --checkpoint")
        encoder, model = load_encoder(checkpoint, model)
        try:
            encoder.check_layer(layer)
        except ValueError as err:
            raise LinearEvalUsageError(f"--layer {layer}: {err}; `tunemir models` lists each model's "
                                       f"layers") from None
    meta = load_meta(datasets, dataset)
    caches, targets = {}, {}
    for split in SPLITS:
        caches[split] = build_cache(dataset_sources(datasets, dataset, split, meta), caches_root, f"{dataset}-{split}")
        targets[split] = np.stack([task.encode(uid, meta[uid]["y"]) for uid in caches[split].uids])
    loss_fn = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    y = {s: torch.from_numpy(targets[s]) for s in SPLITS}
    starts = {s: fixed_crop_starts(caches[s].lengths, settings.seed + i) for i, s in enumerate(("train", "valid"))}
    gen = torch.Generator().manual_seed(settings.seed)
    if settings.supervised:
        net = SupervisedModel(encoder, task.num_outputs).to(dev)
        lr = settings.learning_rate or 3e-4
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                    weight_decay=settings.weight_decay)
        train_cache = caches["train"]

        def train_batches(epoch):  # a fresh random crop of every clip each epoch, cut batch by batch
            crops = fixed_crop_starts(train_cache.lengths, settings.seed * 1000 + epoch + 1)
            order = torch.randperm(len(crops), generator=gen)
            for i in range(0, len(order), settings.batch_size):
                rows = order[i: i + settings.batch_size]
                if len(rows) < 2:  # batch norm cannot train on a last batch of one clip
                    continue
                audio = np.stack([crop(train_cache, int(r), int(crops[r])) for r in rows])
                yield torch.from_numpy(audio)[:, None], y["train"][rows]

        valid_x = torch.from_numpy(fixed_crops(caches["valid"], starts["valid"]))[:, None]
        history = fit(net, train_batches, lambda: _batches(valid_x, y["valid"], settings.batch_size, None),
                      loss_fn, optimizer, 0.2, settings, dev)
        net.eval()
        logits, owners = map_test_frames(lambda frames: run_frames(net, frames, dev), caches["test"])
        weights, head_dim = net.state_dict(), encoder.layer_dims[0]
    else:
        # built once: BN folded, channels-last; (B, 1, T) -> (B, layer_dims[layer])
        frozen = functools.partial(InferenceEncoder(encoder).to(dev).eval(), layer=layer)
        features = {s: torch.from_numpy(encode_crops(frozen, caches[s], starts[s], dev)) for s in ("train", "valid")}
        test_features, owners = map_test_frames(lambda frames: run_frames(frozen, frames, dev), caches["test"])
        if not all(bool(torch.isfinite(f).all()) for f in features.values()) or not np.isfinite(test_features).all():
            raise LinearEvalError(f"the encoder of {checkpoint} gives non-finite features (NaN or inf) at layer "
                                  f"{layer}: its weights are damaged or come from a diverged training run; use an "
                                  f"earlier checkpoint")
        head_dim = features["train"].shape[1]
        head = _head(head_dim, task.num_outputs, settings.mlp).to(dev)
        lr = settings.learning_rate or 1e-3
        optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=settings.weight_decay)
        history = fit(head, lambda epoch: _batches(features["train"], y["train"], settings.batch_size, gen),
                      lambda: _batches(features["valid"], y["valid"], settings.batch_size, None),
                      loss_fn, optimizer, 0.1, settings, dev)
        head.eval()
        with torch.no_grad():
            logits = head(torch.from_numpy(test_features).to(dev)).float().cpu().numpy()
        weights = head.state_dict()
    if not np.isfinite(logits).all() or not all(bool(torch.isfinite(v).all()) for v in weights.values()
                                                  if v.is_floating_point()):
        raise LinearEvalError("the trained weights give non-finite predictions (NaN or inf); nothing was written. "
                              "Lower --learning-rate")
    tested = tested_epoch(history, settings.head)
    predictions = clip_predictions(logits, owners, len(caches["test"]), multilabel)
    metrics = clip_metrics(targets["test"], predictions, multilabel)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = "supervised.safetensors" if settings.supervised else "head.safetensors"
    with atomic_path(out / name) as tmp:
        write_safetensors(tmp, weights)
    result = {
        "protocol": "clmr-linear-evaluation", "dataset": dataset, "checkpoint": str(checkpoint) if checkpoint else None,
        "model": model, "layer": layer, "feature_dim": int(head_dim),
        "settings": {**dataclasses.asdict(settings), "learning_rate": lr},
        "test": metrics, "test_clips": len(caches["test"]), "test_frames": len(owners),
        "clips": {s: len(caches[s]) for s in SPLITS},
        "clips_shorter_than_a_frame": {s: int((caches[s].lengths < FRAME_LENGTH).sum()) for s in SPLITS},
        "files_failed": {s: caches[s].failed for s in SPLITS}, "epochs": len(history),
        "best_valid_loss": min(h["valid_loss"] for h in history), "head": settings.head,
        "tested_epoch": tested, "tested_valid_loss": history[tested]["valid_loss"], "history": history,
        "device": str(dev), "seconds": time.perf_counter() - started, "tunemir_version": __version__,
    }
    with atomic_path(out / "linear_evaluation.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return result
