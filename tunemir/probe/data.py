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
        return next(iter(self.splits.values())).features.shape[1]


@dataclasses.dataclass
class Scaler:
    """A fitted `StandardScaler` as plain arrays (identity when `standardize` is False)."""

    standardize: bool
    mean: np.ndarray   # (D,) float64
    scale: np.ndarray  # (D,) float64

    @classmethod
    def fit(cls, features: np.ndarray, standardize: bool) -> Scaler:
        from sklearn.preprocessing import StandardScaler

        if not standardize:
            return cls(False, np.zeros(features.shape[1]), np.ones(features.shape[1]))
        fitted = StandardScaler().fit(features)
        return cls(True, fitted.mean_.astype(np.float64), fitted.scale_.astype(np.float64))

    @classmethod
    def load(cls, path: Path) -> Scaler:
        """A result folder's `scaler.npz`, read without unpickling anything."""
        with np.load(path, allow_pickle=False) as arrays:
            return cls(bool(arrays["standardize"]), arrays["mean"], arrays["scale"])

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, scale=self.scale, standardize=np.array(self.standardize))

    def transform(self, features: np.ndarray) -> np.ndarray:
        """As sklearn on float32 input: subtract and divide in float64, store float32."""
        if not self.standardize:
            return features
        centred = (features - self.mean).astype(np.float32)
        return (centred / self.scale).astype(np.float32)


def layer_names(num_hidden: int) -> list[str]:
    """jukemir's SimpleMLP parameter prefixes: hidden_0 ... hidden_{k-1}, then output."""
    return [f"hidden_{i}" for i in range(num_hidden)] + ["output"]


def load_probe_data(dataset: str, representation: str, dirs: ProbeDirs,
                    splits: tuple[str, ...] = SPLITS) -> ProbeData:
    """Read meta.json and every `<uid>.npy` of the train/valid/test splits (only of `splits`,
    when given: the report scores saved probes on test alone), checking all of it.

    Uids stay in sorted order (jukemir sorts, then shuffles with the config seed; every metric
    is order-independent and minibatches are drawn at random, so the shuffle is left out).
    All problems of one kind are collected and raised together as one `ProbeDataError`.
    """
    meta_path = dirs.dataset(dataset) / "meta.json"
    meta = read_meta(dataset, meta_path)
    task = load_task(dataset, dirs.dataset(dataset))
    audio = task.audio_from or dataset
    feature_dir = dirs.features(audio, representation)
    fix_features = (f"extract them into {feature_dir} (tunemir extract MODEL {dirs.dataset(audio) / 'wav'} "
                    f"{feature_dir}) or pass --representations-dir")
    split_uids = {name: uids for name, uids in _split_uids(dataset, meta_path, meta).items() if name in splits}
    _check_feature_dir(dataset, representation, dirs, feature_dir, fix_features)
    missing = [uid for uids in split_uids.values() for uid in uids if not (feature_dir / f"{uid}.npy").is_file()]
    if missing:
        raise ProbeDataError(f"{dataset}/{representation}: {len(missing)} uid(s) in meta.json have no features, "
                             f"e.g. {_examples(missing, feature_dir)}; {fix_features}. Nothing was trained.")
    loaded, bad_labels = {}, []
    for name, uids in split_uids.items():
        uids = sorted(uids)
        targets = []
        for uid in uids:
            try:
                targets.append(task.encode(uid, meta[uid].get("y")))
            except ValueError as err:
                bad_labels.append(str(err))
        loaded[name] = Split(uids, _read_features(dataset, representation, feature_dir, uids),
                             np.stack(targets) if not bad_labels else np.empty(0))
    if bad_labels:
        raise ProbeDataError(f"{dataset}: {len(bad_labels)} label(s) in {meta_path} do not fit the task "
                             f"({task.output_type}, labels {_short(task.labels)}): {'; '.join(bad_labels[:3])}. "
                             "Fix meta.json or the dataset's task.json.")
    dims = {name: s.features.shape[1] for name, s in loaded.items()}
    if len(set(dims.values())) > 1:
        raise ProbeDataError(f"{dataset}/{representation}: feature sizes differ between splits {dims}; "
                             f"re-extract {feature_dir} with one model and layer.")
    if task.output_type == "multilabel":
        _check_tags(dataset, task, loaded)
    if task.output_type == "regression":
        _check_targets_vary(dataset, task, loaded)
    return ProbeData(dataset, representation, task, loaded)


def read_meta(dataset: str, meta_path: Path) -> dict:
    """meta.json as `{uid: {"split": ..., "y": ...}}`, refusing any other shape with the fix."""
    if not meta_path.exists():
        raise ProbeDataError(f"{dataset}: {meta_path} does not exist. Put the dataset's meta.json there "
                             f"(jukemir's format, e.g. its metadata/{dataset}.json.gz decompressed) "
                             "or pass --datasets-dir.")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except IsADirectoryError:
        raise ProbeDataError(f"{dataset}: {meta_path} is a folder; it must be the dataset's meta.json file. "
                             "Check --datasets-dir.") from None
    except OSError as err:
        raise ProbeDataError(f"{dataset}: cannot read {meta_path} ({err.strerror}); fix its permissions "
                             "or pass --datasets-dir.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ProbeDataError(f"{dataset}: {meta_path} is not valid JSON ({err}); re-process the dataset.") from None
    if not isinstance(meta, dict):
        raise ProbeDataError(f"{dataset}: {meta_path} holds a JSON {type(meta).__name__}; it must be an object "
                             '{uid: {"split": "train"|"valid"|"test"|null, "y": label}} (jukemir\'s meta.json). '
                             "Re-process the dataset or fix the file.")
    bad = [uid for uid, entry in meta.items() if not isinstance(entry, dict) or "split" not in entry]
    if bad:
        raise ProbeDataError(f"{dataset}: {len(bad)} entr(y/ies) of {meta_path} are not objects with a \"split\" "
                             f"key, e.g. uid {bad[0]}: {meta[bad[0]]!r}; each uid maps to "
                             '{"split": "train"|"valid"|"test"|null, "y": label}. Fix meta.json.')
    return meta


def _split_uids(dataset: str, meta_path: Path, meta: dict) -> dict[str, list[str]]:
    # jukemir ignores splits other than train/valid/test, so "Train" or "validation" would drop
    # their clips without a word; only null (no split, as MTT's clips without audio) is skipped.
    split_uids: dict[str, list[str]] = {s: [] for s in SPLITS}
    unknown: dict[str, list[str]] = {}
    no_label = []
    for uid, entry in meta.items():
        split = entry["split"]
        if split is None:
            continue
        if split not in split_uids:
            unknown.setdefault(repr(split), []).append(uid)
            continue
        if "y" not in entry:
            no_label.append(uid)
        split_uids[split].append(uid)
    if unknown:
        found = "; ".join(f"{name}: {len(uids)} uid(s), e.g. {uids[0]}" for name, uids in sorted(unknown.items()))
        raise ProbeDataError(f"{dataset}: {meta_path} has split names that are not train, valid, test or null "
                             f"({found}). Rename them (lower case, \"valid\" not \"validation\") or set "
                             "\"split\": null to leave clips out.")
    if no_label:
        raise ProbeDataError(f"{dataset}: {len(no_label)} entr(y/ies) of {meta_path} in a split have no \"y\" "
                             f"label, e.g. uid {no_label[0]}. Add the labels, or set \"split\": null to leave "
                             "those clips out.")
    for name, uids in split_uids.items():
        if not uids:
            raise ProbeDataError(f"{dataset}: the {name} split of {meta_path} is empty; every probe needs "
                                 "train, valid and test examples. Check the meta.json splits.")
    return split_uids


def _check_feature_dir(dataset, representation, dirs: ProbeDirs, feature_dir: Path, fix: str) -> None:
    """A missing or empty features folder is one mistake (a typo, extraction not run), not N missing uids."""
    if feature_dir.is_dir() and any(feature_dir.glob("*.npy")):
        return
    parent = feature_dir.parent
    others = sorted(p.name for p in parent.iterdir()
                    if p.is_dir() and not p.name.startswith(".") and p != feature_dir) if parent.is_dir() else []
    found = f" (representations there: {', '.join(others)})" if others else ""
    state = "holds no .npy features" if feature_dir.is_dir() else "does not exist"
    raise ProbeDataError(f"{dataset}/{representation}: the features folder {feature_dir} {state}{found}; {fix}.")


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
    for name in (n for n in ("valid", "test") if n in splits):
        positives = splits[name].targets.sum(0)
        single = [task.labels[i] for i in np.flatnonzero((positives == 0) | (positives == len(splits[name].uids)))]
        if single:
            raise ProbeDataError(f"{dataset}: in the {name} split, tag(s) {', '.join(map(repr, single[:5]))} are "
                                 "never (or always) present, so their ROC-AUC is undefined. Drop those tags from "
                                 "the task's labels or rebalance the split.")


def _check_targets_vary(dataset: str, task: Task, splits: dict[str, Split]) -> None:
    # R2 divides by the target's variance: with a constant target it is undefined (scikit-learn
    # forces 0 or 1), so early stopping would never see an improvement and every probe would
    # keep its first weights. Refuse before training.
    for name in (n for n in ("valid", "test") if n in splits):
        targets = splits[name].targets
        constant = np.flatnonzero(np.ptp(targets, axis=0) == 0)
        if len(constant):
            labels = task.labels or tuple(f"output {i}" for i in range(task.num_outputs))
            which = ", ".join(f"{labels[i]!r} (= {float(targets[0, i]):g})" for i in constant)
            raise ProbeDataError(f"{dataset}: in the {name} split the regression target {which} is the same for "
                                 f"all {len(targets)} clips, so its R2 is undefined and no probe could be selected "
                                 "or scored. Check the labels in meta.json or rebalance the split.")


def _examples(uids: list[str], folder: Path) -> str:
    return ", ".join(f"uid {u} ({folder / (u + '.npy')})" for u in uids[:3]) + (" ..." if len(uids) > 3 else "")


def _short(labels) -> str:
    if labels is None:
        return "none"
    return ", ".join(labels[:4]) + (", ..." if len(labels) > 4 else "")
