"""What a probe predicts for each dataset: output type, label order, metrics (jukemir's tasks)."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
_TONICS = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
#: jukemir's key label order: the 12 major keys, then the 12 minor keys, tonics spelled with flats.
KEY_LABELS = tuple(f"{t} major" for t in _TONICS) + tuple(f"{t} minor" for t in _TONICS)
#: jukemir's MagnaTagATune top-50 tags in its index order.
MTT_TAGS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing",
    "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop",
    "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice",
    "female vocal", "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)
OUTPUT_TYPES = ("multiclass", "multilabel", "regression")
#: GiantSteps clip-to-song strategies, in the order jukemir tries them (ties keep the earlier).
STRATEGIES = ("vote", "max", "gmean", "mean")
TASK_FILE = "task.json"


class TaskError(ValueError):
    """A dataset's task is unknown or its task.json is malformed."""


@dataclasses.dataclass(frozen=True)
class Task:
    """One dataset's prediction problem.

    `key_score` (multiclass over `KEY_LABELS` only) turns on jukemir's GiantSteps metrics:
    clips are grouped into songs by the uid prefix before the first "-", and songs are scored
    with mir_eval's weighted key score. `audio_from` names the dataset whose features the
    task reads, for several tasks over the same audio (the synthetic corpus's three tasks).
    """

    name: str
    output_type: str
    num_outputs: int
    labels: tuple[str, ...] | None = None
    key_score: bool = False
    #: Another dataset whose audio (and so whose extracted features) this task labels.
    audio_from: str | None = None

    def __post_init__(self):
        where = f"task {self.name!r}"
        if self.output_type not in OUTPUT_TYPES:
            raise TaskError(f"{where}: output_type {self.output_type!r} is not one of {', '.join(OUTPUT_TYPES)}")
        if self.num_outputs < 1:
            raise TaskError(f"{where}: num_outputs must be >= 1")
        if self.labels is not None and len(self.labels) != self.num_outputs:
            raise TaskError(f"{where}: {len(self.labels)} labels but num_outputs is {self.num_outputs}")
        if self.output_type != "regression" and self.labels is None:
            raise TaskError(f"{where}: a {self.output_type} task needs its list of labels")
        if self.key_score and (self.output_type != "multiclass" or tuple(self.labels) != KEY_LABELS):
            raise TaskError(f"{where}: key_score needs a multiclass task whose labels are the 24 keys "
                            f"in this order: {', '.join(KEY_LABELS)}")

    @property
    def primary(self) -> str:
        """The metric that early stopping and model selection maximise."""
        if self.key_score:
            return "score"
        return {"multiclass": "accuracy", "multilabel": "auc_roc", "regression": "r2"}[self.output_type]

    def encode(self, uid: str, y) -> np.ndarray:
        """One label from meta.json as the training target (class index, multi-hot or floats).

        Raises `ValueError` naming the uid when the label does not fit the task.
        """
        if self.output_type == "multiclass":
            if y not in self.labels:
                raise ValueError(f"uid {uid}: label {y!r} is not one of the task's labels")
            return np.int64(self.labels.index(y))
        if self.output_type == "multilabel":
            if not isinstance(y, list):
                raise ValueError(f"uid {uid}: a multilabel target must be a list of tags, got {y!r}")
            target = np.zeros(self.num_outputs, np.float32)
            for tag in y:
                if tag not in self.labels:
                    raise ValueError(f"uid {uid}: tag {tag!r} is not one of the task's labels")
                target[self.labels.index(tag)] = 1.0
            return target
        values = np.atleast_1d(np.asarray(y, dtype=np.float64)) if _is_numeric(y) else None
        if values is None or values.shape != (self.num_outputs,) or not np.isfinite(values).all():
            raise ValueError(f"uid {uid}: expected {self.num_outputs} finite number(s) as target, got {y!r}")
        return values.astype(np.float32)


def _parse_task(dataset: str, spec) -> Task:
    """A task.json's object as a Task; every field checked for its type (a string where a list
    belongs must not become a list of its characters)."""
    if not isinstance(spec, dict):
        raise TaskError(f"it holds a JSON {type(spec).__name__}, not an object like "
                        '{"output_type": "multiclass", "labels": ["a", "b"], "num_outputs": 2}')
    unknown = set(spec) - {"output_type", "labels", "num_outputs", "key_score", "audio_from"}
    if unknown:
        raise TaskError(f"unknown field(s) {', '.join(sorted(unknown))}; the fields are output_type, labels, "
                        "num_outputs, key_score, audio_from")
    if "output_type" not in spec:
        raise TaskError(f"output_type is missing; set it to one of {', '.join(OUTPUT_TYPES)}")
    labels = spec.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise TaskError(f"labels must be a list of strings (or null for a regression task), got {labels!r}")
    if labels is not None and len(set(labels)) != len(labels):
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        raise TaskError(f"labels repeat {', '.join(map(repr, repeated))}; each label must appear once")
    num_outputs = spec.get("num_outputs", len(labels) if labels else None)
    if num_outputs is None:
        raise TaskError("num_outputs is required when labels is null")
    if not isinstance(num_outputs, int) or isinstance(num_outputs, bool):
        raise TaskError(f"num_outputs must be a whole number, got {num_outputs!r}")
    key_score = spec.get("key_score", False)
    if not isinstance(key_score, bool):
        raise TaskError(f"key_score must be true or false, got {key_score!r}")
    audio_from = spec.get("audio_from")
    if audio_from is not None and not (isinstance(audio_from, str) and audio_from):
        raise TaskError(f"audio_from must be the name of another dataset, got {audio_from!r}")
    return Task(dataset, spec["output_type"], num_outputs, tuple(labels) if labels is not None else None,
                key_score, audio_from)


def _is_numeric(y) -> bool:
    items = y if isinstance(y, list) else [y]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)


BUILTIN_TASKS = {
    "gtzan_ff": Task("gtzan_ff", "multiclass", 10, GTZAN_GENRES),
    "giantsteps_clips": Task("giantsteps_clips", "multiclass", 24, KEY_LABELS, key_score=True),
    "magnatagatune": Task("magnatagatune", "multilabel", 50, MTT_TAGS),
    "emomusic": Task("emomusic", "regression", 2, ("arousal", "valence")),
}


def load_task(dataset: str, dataset_dir: Path | None = None) -> Task:
    """The task of `dataset`: its `task.json` beside meta.json if present, else a built-in task.

    task.json: `{"output_type": "multiclass"|"multilabel"|"regression", "labels": [...] or null,
    "num_outputs": N, "key_score": false, "audio_from": "other_dataset"}` (the last two optional).
    """
    path = Path(dataset_dir) / TASK_FILE if dataset_dir is not None else None
    if path is not None and path.exists():
        try:
            return _parse_task(dataset, json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TaskError) as err:
            reason = f"cannot be read ({err.strerror or err})" if isinstance(err, OSError) else str(err)
            raise TaskError(f"{path}: {reason}. Fix the file; its format is described in the README "
                            "(section 'Probing your own dataset').") from None
    if dataset in BUILTIN_TASKS:
        return BUILTIN_TASKS[dataset]
    raise TaskError(f"dataset {dataset!r} has no task: it is not one of the built-in tasks "
                    f"({', '.join(BUILTIN_TASKS)}) and {path or TASK_FILE} does not exist. Write a "
                    f"{TASK_FILE} beside its meta.json (format in the README).")


def song_groups(uids) -> tuple[np.ndarray, int]:
    """Song index of each clip (uid prefix before the first "-"), numbered in order of appearance."""
    index: dict[str, int] = {}
    songs = np.array([index.setdefault(uid.split("-")[0], len(index)) for uid in uids], dtype=np.int64)
    return songs, len(index)


def song_estimates(uids, logits: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """jukemir's clip-to-song key estimates: the song of each clip, the first clip of each song,
    and per strategy of STRATEGIES one estimated key per song (`vote`: the most frequent clip
    argmax, smallest key on ties; `max`, `gmean`: argmax of the clips' max / mean logit;
    `mean`: argmax of the clips' mean probability, `probs` being the softmax of `logits`)."""
    songs, num_songs = song_groups(uids)
    members = [np.flatnonzero(songs == s) for s in range(num_songs)]
    clip_est = logits.argmax(axis=1)
    estimates = {
        "vote": np.array([np.bincount(clip_est[m], minlength=len(KEY_LABELS)).argmax() for m in members]),
        "max": np.array([logits[m].max(axis=0).argmax() for m in members]),
        "gmean": np.array([logits[m].mean(axis=0).argmax() for m in members]),
        "mean": np.array([probs[m].mean(axis=0).argmax() for m in members]),
    }
    return songs, np.array([m[0] for m in members]), estimates


@functools.cache
def key_score_matrix() -> np.ndarray:
    """`W[ref, est]` = mir_eval's weighted key score for every pair of the 24 key labels."""
    import mir_eval

    return np.array([[mir_eval.key.weighted_score(ref, est) for est in KEY_LABELS] for ref in KEY_LABELS])
