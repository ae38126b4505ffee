"""What a probed representation scores, with its uncertainty: the protocol's result under each seed,
the mean and spread over seeds, a bootstrap interval over test items, and paired comparisons.

Per seed the config best on valid is selected (`grid.select_seeds`); its test metrics are the
exact ones in `test_metrics.json`. The bootstrap resamples the test set's units with replacement
(clips; songs for GiantSteps, Emomusic's clips are songs) `n_boot` times with one fixed random
draw per dataset, so every representation of a dataset is scored on the same resamples and two
of them can be compared pairwise. Under each draw the score is the mean over seeds of the
selected probes' scores, so the interval is that of the seed-averaged result; the selection
itself is not redone per draw (valid is not resampled). Needs the test features, not torch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from tunemir.probe import bootstrap
from tunemir.probe.data import ProbeDataError, ProbeDirs, Scaler, layer_names, load_probe_data
from tunemir.probe.grid import select_seeds
from tunemir.probe.tasks import Task

N_BOOT = 1000
LEVEL = 0.95
#: The seed of the test-set resampling: fixed, so a report is reproducible and its draws shared.
RESAMPLING_SEED = 0


@dataclasses.dataclass
class Scored:
    """One dataset x representation: the per-seed selections and, when the features are there,
    each selected probe's test logits."""

    dataset: str
    representation: str
    selections: list[dict]
    task: Task | None = None
    uids: list[str] | None = None
    targets: np.ndarray | None = None
    logits: list[np.ndarray] | None = None
    why_no_interval: str | None = None
    _draws: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def seeds(self) -> list[int]:
        return [s["seed"] for s in self.selections]

    def values(self, metric: str) -> list[float]:
        """The exact test metric of each seed's selected config."""
        return [float(s["metrics"][metric]) for s in self.selections if metric in s["metrics"]]

    def summary(self, metric: str, weights: np.ndarray | None) -> dict:
        """mean, std (over seeds; 0 for one seed), seeds, and the bootstrap interval (low, high)."""
        values = self.values(metric)
        if not values:
            return {}
        out = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
               "seeds": len(values), "low": None, "high": None}
        draws = self.draws(metric, weights)
        if draws is not None:
            out["low"], out["high"] = bootstrap.bootstrap_interval(draws, LEVEL)
        return out

    def draws(self, metric: str, weights: np.ndarray | None) -> np.ndarray | None:
        """(n_boot,) seed-averaged metric under each resample, or None without features."""
        if weights is None or self.logits is None:
            return None
        key = (metric, len(weights))  # a dataset's weights are one draw per resample count
        if key not in self._draws:
            strategies = [s["metrics"].get("strategy") for s in self.selections]
            self._draws[key] = bootstrap.bootstrap_scores(self.task, self.uids, self.targets, self.logits,
                                                          strategies, metric, weights)
        return self._draws[key]


def score(dataset: str, representation: str, dirs: ProbeDirs, with_logits: bool = True) -> Scored:
    """The selections of every seed and, if `with_logits` and the features load, their test logits."""
    scored = Scored(dataset, representation, select_seeds(dataset, representation, dirs))
    if not with_logits:
        return scored
    try:
        test = _test_split(dataset, representation, dirs)
    except ProbeDataError as err:
        scored.why_no_interval = str(err)
        return scored
    scored.task, (scored.uids, features, scored.targets) = test
    folder = dirs.runs(dataset, representation)
    scored.logits = [saved_probe_logits(folder / s["uid"], features) for s in scored.selections]
    return scored


def _test_split(dataset: str, representation: str, dirs: ProbeDirs):
    data = load_probe_data(dataset, representation, dirs, splits=("test",))
    test = data.splits["test"]
    return data.task, (test.uids, test.features, test.targets)


def saved_probe_logits(result: Path, features: np.ndarray) -> np.ndarray:
    """(N, C) eval-mode logits of a saved probe (`probe.safetensors`, `scaler.npz`), in numpy."""
    from safetensors.numpy import load_file

    state = load_file(str(result / "probe.safetensors"))
    x = Scaler.load(result / "scaler.npz").transform(features)
    names = layer_names(len(state) // 2 - 1)
    for i, name in enumerate(names):
        x = x @ state[f"{name}.weight"].T + state[f"{name}.bias"]
        if i < len(names) - 1:
            x = np.maximum(x, 0)
    return x.astype(np.float32)


def resampling_weights(scored: Scored, n_boot: int = N_BOOT) -> np.ndarray | None:
    """The (n_boot, N) resampling weights of `scored`'s test set, which every representation of
    its dataset shares (the draw is fixed; None without features or with n_boot 0)."""
    if scored.logits is None or n_boot <= 0:
        return None
    units, count = bootstrap.resampling_units(scored.task, scored.uids)
    return bootstrap.draw_weights(count, units, n_boot, RESAMPLING_SEED)


def compare(a: Scored, b: Scored, metric: str, n_boot: int = N_BOOT, weights: np.ndarray | None = None) -> dict:
    """Paired bootstrap of A - B on the same test items: the difference of the seed means, its
    interval, and the share of resamples in which A is not better. `weights`: the dataset's
    resampling weights when already drawn (they set the resample count)."""
    if a.dataset != b.dataset:
        raise ValueError(f"compare representations on one dataset, not {a.dataset} and {b.dataset}")
    for side in (a, b):
        if side.logits is None:
            raise ProbeDataError(f"{side.dataset}/{side.representation}: no test features to resample "
                                 f"({side.why_no_interval})")
    if a.uids != b.uids:
        raise ProbeDataError(f"{a.dataset}: {a.representation} and {b.representation} were tested on different "
                             "clips; a paired comparison needs the same test items")
    weights = resampling_weights(a, n_boot) if weights is None else weights
    paired = bootstrap.paired_difference(a.draws(metric, weights), b.draws(metric, weights), LEVEL)
    mean_a, mean_b = float(np.mean(a.values(metric))), float(np.mean(b.values(metric)))
    return {"dataset": a.dataset, "metric": metric, "a": a.representation, "b": b.representation,
            "a_mean": mean_a, "b_mean": mean_b, "a_seeds": len(a.seeds), "b_seeds": len(b.seeds),
            "difference": mean_a - mean_b, "low": paired["low"], "high": paired["high"],
            "p_a_not_better": paired["p_a_not_better"], "level": LEVEL, "resamples": len(weights),
            "test_items": len(a.uids)}


def to_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
