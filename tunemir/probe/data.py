"""Where probe inputs and outputs live, and loading one dataset's features with its labels."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np

from tunemir.probe.tasks import Task, load_task

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")


class ProbeDataError(ValueError):
    """Features or labels that cannot be probed; the message names the dataset, uid and fix."""


def cache_dir() -> Path:
    """`$TUNEMIR_CACHE_DIR`, else `~/.tunemir` (jukemir's layout inside)."""
    return Path(os.environ.get("TUNEMIR_CACHE_DIR") or Path.home() / ".tunemir").expanduser()


@dataclasses.dataclass(frozen=True)
class ProbeDirs:
    """The three roots a probe run reads and writes; by default inside the cache."""

    datasets: Path
    representations: Path
    probes: Path

    @classmethod
    def resolve(cls, datasets: Path | None = None, representations: Path | None = None,
                probes: Path | None = None) -> ProbeDirs:
        root = cache_dir()
        return cls(Path(datasets or root / "processed"), Path(representations or root / "representations"),
                   Path(probes or root / "probes"))

    def dataset(self, dataset: str) -> Path:
        return self.datasets / dataset

    def features(self, dataset: str, representation: str) -> Path:
        return self.representations / dataset / representation

    def runs(self, dataset: str, representation: str) -> Path:
        return self.probes / dataset / representation


@dataclasses.dataclass
class Split:
    uids: list[str]
    features: np.ndarray  # (N, D) float32
    targets: np.ndarray   # (N,) int64 or (N, C) float32


@dataclasses.dataclass
class ProbeData:
    """One dataset's features and targets per split, uids in sorted order."""

    dataset: str
    representation: str
    task: Task
    splits: dict[str, Split]

    @property
    def dim(self) -> int:
        return self.splits["train"].features.shape[1]


def load_probe_data(dataset: str, representation: str, dirs: ProbeDirs) -> ProbeData:
    """Read meta.json and every `<uid>.npy` of the train/valid/test splits, checking all of it.

    Uids stay in sorted order (jukemir sorts, then shuffles with the config seed; every metric
    is order-independent and minibatches are drawn at random, so the shuffle is left out).
    All problems of one kind are collected and raised together as one `ProbeDataError`.
    """
    meta_path = dirs.dataset(dataset) / "meta.json"
    if not meta_path.is_file():
        raise ProbeDataError(f"{dataset}: {meta_path} does not exist. Put the dataset's meta.json there "
                             f"(jukemir's format, e.g. its metadata/{dataset}.json.gz decompressed) "
                             "or pass --datasets-dir.")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ProbeDataError(f"{dataset}: {meta_path} is not valid JSON ({err}); re-process the dataset.") from None
    task = load_task(dataset, dirs.dataset(dataset))
    audio = task.audio_from or dataset
    feature_dir = dirs.features(audio, representation)
    fix_features = (f"extract them into {feature_dir} (tunemir extract MODEL {dirs.dataset(audio) / 'wav'} "
                    f"{feature_dir}) or pass --representations-dir")
    split_uids: dict[str, list[str]] = {s: [] for s in SPLITS}
    for uid, entry in meta.items():
        if isinstance(entry, dict) and entry.get("split") in split_uids:
            split_uids[entry["split"]].append(uid)
    for name, uids in split_uids.items():
        if not uids:
            raise ProbeDataError(f"{dataset}: the {name} split of {meta_path} is empty; every probe needs "
                                 "train, valid and test examples. Check the meta.json splits.")
    missing = [uid for uids in split_uids.values() for uid in uids if not (feature_dir / f"{uid}.npy").is_file()]
    if missing:
        raise ProbeDataError(f"{dataset}/{representation}: {len(missing)} uid(s) in meta.json have no features, "
                             f"e.g. {_examples(missing, feature_dir)}; {fix_features}. Nothing was trained.")
    splits, bad_labels = {}, []
    for name, uids in split_uids.items():
        uids = sorted(uids)
        targets = []
        for uid in uids:
            try:
                targets.append(task.encode(uid, meta[uid].get("y")))
            except ValueError as err:
                bad_labels.append(str(err))
        splits[name] = Split(uids, _read_features(dataset, representation, feature_dir, uids),
                             np.stack(targets) if not bad_labels else np.empty(0))
    if bad_labels:
        raise ProbeDataError(f"{dataset}: {len(bad_labels)} label(s) in {meta_path} do not fit the task "
                             f"({task.output_type}, labels {_short(task.labels)}): {'; '.join(bad_labels[:3])}. "
                             "Fix meta.json or the dataset's task.json.")
    dims = {name: s.features.shape[1] for name, s in splits.items()}
    if len(set(dims.values())) > 1:
        raise ProbeDataError(f"{dataset}/{representation}: feature sizes differ between splits {dims}; "
                             f"re-extract {feature_dir} with one model and layer.")
    if task.output_type == "multilabel":
        _check_tags(dataset, task, splits)
    return ProbeData(dataset, representation, task, splits)


def _read_features(dataset, representation, folder: Path, uids: list[str]) -> np.ndarray:
    vectors, shapes, broken, nonfinite = [], {}, [], []
    for uid in uids:
        path = folder / f"{uid}.npy"
        try:
            vector = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            broken.append(f"{path} ({err})")
            continue
        if vector.ndim != 1:
            broken.append(f"{path} (shape {vector.shape}, expected one vector)")
            continue
        if not np.isfinite(vector).all():
            nonfinite.append(uid)
        shapes.setdefault(vector.shape[0], []).append(uid)
        vectors.append(vector)
    if broken:
        raise ProbeDataError(f"{dataset}/{representation}: {len(broken)} feature file(s) cannot be used: "
                             f"{'; '.join(broken[:3])}. Delete them and extract again.")
    if len(shapes) > 1:
        sizes = ", ".join(f"{dim}-d: {len(u)} (e.g. uid {u[0]})" for dim, u in sorted(shapes.items()))
        raise ProbeDataError(f"{dataset}/{representation}: feature vectors have different lengths ({sizes}); "
                             f"the folder mixes models or layers. Re-extract {folder} with one model and layer.")
    if nonfinite:
        raise ProbeDataError(f"{dataset}/{representation}: {len(nonfinite)} feature vector(s) contain NaN or "
                             f"infinite values, e.g. {_examples(nonfinite, folder)}. Check the audio and the "
                             "weights that produced them, delete those files and extract again.")
    return np.stack(vectors).astype(np.float32, copy=False)


def _check_tags(dataset: str, task: Task, splits: dict[str, Split]) -> None:
    # A tag with one class in valid or test makes its ROC-AUC undefined (NaN), which would stop
    # every probe (jukemir raises "NaN score"): refuse before training instead.
    for name in ("valid", "test"):
        positives = splits[name].targets.sum(0)
        single = [task.labels[i] for i in np.flatnonzero((positives == 0) | (positives == len(splits[name].uids)))]
        if single:
            raise ProbeDataError(f"{dataset}: in the {name} split, tag(s) {', '.join(map(repr, single[:5]))} are "
                                 "never (or always) present, so their ROC-AUC is undefined. Drop those tags from "
                                 "the task's labels or rebalance the split.")


def _examples(uids: list[str], folder: Path) -> str:
    return ", ".join(f"uid {u} ({folder / (u + '.npy')})" for u in uids[:3]) + (" ..." if len(uids) > 3 else "")


def _short(labels) -> str:
    if labels is None:
        return "none"
    return ", ".join(labels[:4]) + (", ..." if len(labels) > 4 else "")
