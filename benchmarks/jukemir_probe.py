"""Run jukemir's own `ProbeExperiment.train()` on the benchmark's synthetic features (benchmarks only).

jukemir is never copied into tunemir: it is imported at run time from a checkout the user names
(a folder holding the `jukemir` package, e.g. `git clone https://github.com/p-lambda/jukemir`).
The features are written in jukemir's on-disk layout under a temporary folder and handed to
`ProbeExperiment(datasets_root_dir=..., representations_root_dir=...)`, so no environment
variable, monkeypatch or stub is needed; jukemir's module-level cache constants are never used.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from tunemir.probe.config import ProbeConfig
from tunemir.probe.data import ProbeData


def import_jukemir_probe(checkout: Path):
    """`jukemir.probe` from `checkout/jukemir`, refusing any other copy already on the path."""
    package = Path(checkout).resolve() / "jukemir"
    if not (package / "probe" / "__init__.py").is_file():
        raise SystemExit(f"--jukemir {checkout}: no jukemir/probe/__init__.py there; pass the folder that "
                         "contains the `jukemir` package (a checkout of github.com/p-lambda/jukemir).")
    sys.path.insert(0, str(package.parent))
    module = importlib.import_module("jukemir.probe")  # needs torch, numpy, scipy, scikit-learn, mir_eval
    if Path(module.__file__).resolve().parent != package / "probe":
        raise SystemExit(f"--jukemir {checkout}: another jukemir was imported ({module.__file__}); "
                         "uninstall it or run from a clean environment.")
    return module


def write_jukemir_layout(data: ProbeData, root: Path) -> tuple[Path, Path]:
    """`data` as `root/processed/<ds>/meta.json` + `root/representations/<ds>/<rep>/<uid>.npy`.

    Labels are decoded from `data`'s targets, so jukemir reads exactly the features, labels
    and splits tunemir trains on. Returns (datasets_root_dir, representations_root_dir).
    """
    task, meta = data.task, {}
    features = root / "representations" / data.dataset / data.representation
    features.mkdir(parents=True)
    for split, part in data.splits.items():
        for uid, vector, target in zip(part.uids, part.features, part.targets):
            meta[uid] = {"split": split, "y": _label(task, target), "extra": {}}
            np.save(features / f"{uid}.npy", vector)
    (root / "processed" / data.dataset).mkdir(parents=True)
    (root / "processed" / data.dataset / "meta.json").write_text(json.dumps(meta))
    return root / "processed", root / "representations"


def _label(task, target):
    if task.output_type == "multiclass":
        return task.labels[int(target)]
    if task.output_type == "multilabel":
        return [task.labels[j] for j in np.flatnonzero(target)]
    return [float(v) for v in target]  # float32 -> float -> float32 is exact


def check_same_data(jm, experiment, data: ProbeData) -> None:
    """jukemir's loaded splits hold the same uids, features and targets as `data` (any row order)."""
    attrs = jm.DATASET_TO_ATTRS[data.dataset]
    labels = tuple(attrs["labels"]) if attrs["labels"] else None
    if attrs["output_type"] != data.task.output_type or (labels and labels != data.task.labels):
        raise SystemExit(f"{data.dataset}: jukemir's task ({attrs['output_type']}, {attrs['labels']}) differs "
                         f"from tunemir's ({data.task.output_type}, {data.task.labels}).")
    for split, part in data.splits.items():
        uids = experiment.split_to_uids[split]
        order = {uid: i for i, uid in enumerate(part.uids)}
        rows = [order[uid] for uid in uids]  # KeyError: a uid tunemir does not have
        targets = experiment.raw_labels_to_targets(experiment.split_to_y[split])
        assert sorted(uids) == part.uids, split
        assert np.array_equal(experiment.split_to_X[split], part.features[rows]), split
        assert np.array_equal(targets.astype(part.targets.dtype), part.targets[rows]), split


def _instrument(experiment) -> dict:
    """Count jukemir's train steps and early-stopping evals through its own methods.

    `train()` calls `self.compute_loss` once per optimiser step and once inside each
    `self.eval("valid")`; instance attributes shadow the methods, jukemir's code is unchanged.
    """
    counts = {"steps": 0, "eval_steps": [], "valid_rows": len(experiment.split_to_uids["valid"]), "best_valid": None}
    compute_loss, evaluate = experiment.compute_loss, experiment.eval
    inside = []

    def counting_loss(logits, y):
        if not inside:
            counts["steps"] += 1
        return compute_loss(logits, y)

    def counting_eval(*args, **kwargs):
        outer = not inside
        if outer:
            counts["eval_steps"].append(counts["steps"])
        inside.append(True)
        try:
            metrics = evaluate(*args, **kwargs)
        finally:
            inside.pop()
        if outer:
            best = counts["best_valid"]
            counts["best_valid"] = metrics["primary"] if best is None else max(best, metrics["primary"])
        return metrics

    experiment.compute_loss, experiment.eval = counting_loss, counting_eval
    return counts


def time_jukemir_cell(jm, config: ProbeConfig, dirs: tuple[Path, Path], data: ProbeData | None = None) -> dict:
    """Build jukemir's config from ours, `load_data()` untimed (checked against `data`), time `train()`."""
    experiment = jm.ProbeExperiment(jm.ProbeExperimentConfig(dict(config)), datasets_root_dir=dirs[0],
                                    representations_root_dir=dirs[1])
    experiment.load_data()
    if data is not None:
        check_same_data(jm, experiment, data)
    counts = _instrument(experiment)
    start = time.perf_counter()
    experiment.train()
    seconds = time.perf_counter() - start
    steps, eval_steps = counts["steps"], counts["eval_steps"]
    return {"steps": steps, "evals": len(eval_steps),
            "evals_every_8_steps": eval_steps == list(range(0, steps, config["early_stopping_eval_frequency"])),
            "valid_rows_per_eval": counts["valid_rows"], "best_valid": counts["best_valid"],
            "device": str(experiment.device), "seconds": seconds}
