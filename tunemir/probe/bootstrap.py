"""Bootstrap confidence intervals for probe test metrics, as metrics weighted by resample counts.

Drawing n units with replacement is the same as weighting each unit by how many times it was
drawn, so one bootstrap draw is one row of weights, and every metric is computed for all rows
at once instead of on copied arrays.

Nothing here imports torch or scikit-learn, even when scoring: `tunemir probe report` runs
without either. So the three torch-free helpers of `metrics` (which imports torch) are
restated here; the tests check that they agree with the originals.
"""

from __future__ import annotations


import numpy as np

from tunemir.probe.tasks import STRATEGIES, Task, key_score_matrix, song_estimates, song_groups

#: Elements of float64 work arrays per chunk of bootstrap rows (~16 MB each).
_CHUNK_ELEMENTS = 2_000_000


def resampling_units(task: Task, uids) -> tuple[np.ndarray, int]:
    """Unit index of each test clip and the number of units.

    Songs (uid prefix before the first "-", `song_groups`) for key-score tasks (GiantSteps),
    whose clips of one song are not independent and are scored as one; clips otherwise, which
    for Emomusic (one clip per song) are its songs.
    """
    if task.key_score:
        return song_groups(uids)
    return np.arange(len(uids)), len(uids)


def draw_weights(num_units: int, unit_of_item: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_items) float64 bootstrap weights.

    Each row holds how often each unit was drawn in `num_units` draws with replacement
    (multinomial counts, from `np.random.default_rng(seed)`), given to every item of the unit.
    """
    unit_of_item = np.asarray(unit_of_item)
    if num_units < 1 or unit_of_item.min(initial=0) < 0 or unit_of_item.max(initial=0) >= num_units:
        raise ValueError(f"unit indices must lie in [0, {num_units}) with num_units >= 1")
    draws = np.random.default_rng(seed).integers(0, num_units, size=(n_boot, num_units))
    draws += num_units * np.arange(n_boot)[:, None]  # one bincount for all rows: row r's bins follow r - 1's
    counts = np.bincount(draws.ravel(), minlength=n_boot * num_units).reshape(n_boot, num_units)
    del draws
    return counts.astype(np.float64)[:, unit_of_item]


class WeightedScorer:
    """One probe's test metrics under many weightings of the test items.

    Built once per (task, split, logits, strategy): targets, per-song estimates and per-tag
    score orders are prepared here, so each call only sums weights. Probabilities are computed
    in float64 and rounded to float32, the precision `metrics.evaluate` ranks by; torch's float32
    sigmoid, which evaluate uses, can be an ulp off and even give one logit two values in two
    places of an array, so with ties in the scores the two can differ slightly.
    """

    def __init__(self, task: Task, uids, targets: np.ndarray, logits: np.ndarray, strategy: str | None = None):
        self.task = task
        logits = np.asarray(logits, dtype=np.float32)  # as metrics.evaluate
        self.num_items = len(logits)
        if len(uids) != self.num_items or len(targets) != self.num_items:
            raise ValueError(f"{len(uids)} uids, {len(targets)} targets and {self.num_items} rows of logits; "
                             "they must be the same test items")
        if task.key_score:
            self._prepare_songs(uids, np.asarray(targets), logits, strategy)
            self.metrics = ("score", "accuracy")
        elif task.output_type == "multiclass":
            self._correct = (logits.argmax(axis=1) == np.asarray(targets)).astype(np.float64)
            self.metrics = ("accuracy",)
        elif task.output_type == "multilabel":
            probs = (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
            self._tags = [_tag_order(probs[:, c], np.asarray(targets)[:, c] > 0.5) for c in range(probs.shape[1])]
            self.metrics = ("auc_roc", "ap")
        else:
            self._targets = np.asarray(targets, dtype=np.float64).reshape(self.num_items, -1)
            self._preds = logits.astype(np.float64).reshape(self.num_items, -1)
            self._output_of = {f"{label}_r2": i for i, label in enumerate(task.labels or ())}
            self.metrics = ("r2", *self._output_of)
        self.metrics += ("primary",)

    def _prepare_songs(self, uids, targets, logits, strategy):
        """Per-song estimate of each strategy as `metrics._key_metrics`, and the strategy to score."""
        exp = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
        probs = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        self._songs, self._first_clip, estimates = song_estimates(uids, logits, probs)
        refs = targets[self._first_clip]
        weights = key_score_matrix()
        if strategy is None:  # the best on this split, the earlier on ties, as _key_metrics
            strategy = STRATEGIES[0]
            for name in STRATEGIES[1:]:
                if np.mean(weights[refs, estimates[name]]) > np.mean(weights[refs, estimates[strategy]]):
                    strategy = name
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        self.strategy = strategy
        est = estimates[strategy]
        self._song_values = {"score": weights[refs, est], "accuracy": (est == refs).astype(np.float64)}

    def __call__(self, weights: np.ndarray, metric: str) -> np.ndarray:
        """`metric` (a name `metrics.evaluate` returns, or "primary") per row of `weights`.

        `weights` (n_boot, N) gives (n_boot,) float64; a single (N,) row gives a 0-d array.
        """
        weights = np.asarray(weights, dtype=np.float64)
        rows = np.atleast_2d(weights)
        if rows.ndim != 2 or rows.shape[1] != self.num_items:
            raise ValueError(f"weights must have shape (n_boot, {self.num_items}), got {weights.shape}")
        if rows.min(initial=0) < 0:
            raise ValueError("weights must be non-negative")
        if metric not in self.metrics:
            raise ValueError(f"metric {metric!r} is not one of {', '.join(self.metrics)} for task {self.task.name!r}")
        name = self.task.primary if metric == "primary" else metric
        task = self.task
        if task.key_score:
            out = self._song_metric(rows, name)
        elif task.output_type == "multiclass":
            out = rows @ self._correct / rows.sum(axis=1)
        elif task.output_type == "multilabel":
            out = np.concatenate([self._macro(rows[chunk], name) for chunk in _chunks(len(rows), self.num_items)])
        else:
            out = np.concatenate([self._r2(rows[chunk], name) for chunk in _chunks(len(rows), self._targets.size)])
        return out[0] if weights.ndim == 1 else out

    def _song_metric(self, rows, name):
        song_weights = rows[:, self._first_clip]
        if not np.array_equal(song_weights[:, self._songs], rows):
            raise ValueError("key-score weights must be equal for all clips of a song; draw them over "
                             "resampling_units(task, uids)")
        return song_weights @ self._song_values[name] / song_weights.sum(axis=1)

    def _macro(self, rows, name):
        """Macro ROC-AUC or AP over tags, as sklearn's with `sample_weight`, per row.

        A tag left without weighted positives (or, for ROC-AUC, without negatives) by a draw
        is undefined there, and the macro mean of that draw skips it (sklearn would give NaN
        for ROC-AUC and 0 for AP). A row with no defined tag gives NaN.
        """
        # Bootstrap counts fit in int8: 8x less to gather per tag, and int32 sums stay exact.
        small_counts = rows.max(initial=0) <= 127 and np.array_equal(rows, np.round(rows))
        padded = np.zeros((len(rows), self.num_items + 1), np.int8 if small_counts else np.float64)
        padded[:, :-1] = rows  # the last column is a weightless item (see _tag_order)
        total = np.zeros(len(rows))
        defined = np.zeros(len(rows))
        for tag in self._tags:
            value = _tag_metric(tag, padded, name)
            ok = ~np.isnan(value)
            total += np.where(ok, value, 0.0)
            defined += ok
        return np.divide(total, defined, out=np.full(len(rows), np.nan), where=defined > 0)

    def _r2(self, rows, name):
        """R2 per output as sklearn's `r2_score(sample_weight=...)` (force_finite), per row."""
        y = self._targets
        weight_sum = rows.sum(axis=1, keepdims=True)
        mean = rows @ y / weight_sum  # (b, C)
        total = np.einsum("bn,bnc->bc", rows, (y[None] - mean[:, None]) ** 2)
        residual = rows @ (y - self._preds) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(total > 0, 1 - residual / total, np.where(residual == 0, 1.0, 0.0))
        if name == "r2":
            return r2.mean(axis=1)
        return r2[:, self._output_of[name]]


def _chunks(num_rows: int, elements_per_row: int):
    """Slices of bootstrap rows that keep each chunk's work arrays near `_CHUNK_ELEMENTS`."""
    step = max(1, _CHUNK_ELEMENTS // max(1, elements_per_row))
    return [slice(i, i + step) for i in range(0, num_rows, step)]


def _tag_order(scores: np.ndarray, positive: np.ndarray) -> tuple:
    """One tag's items in score order, cut so that weighted ROC-AUC and AP need only segment sums.

    Positives sorted by score with where each run of tied scores starts; negatives sorted by
    score, followed by the weightless item N (padding, so that a cut at the very end is still
    an index), and cut where those below each distinct positive score end (`lo`) and where
    those tied with it end (`hi`); `lo` and `hi` are given as indices into the cuts.
    """
    neg = np.flatnonzero(~positive)
    neg = neg[np.argsort(scores[neg], kind="stable")]
    pos = np.flatnonzero(positive)
    pos = pos[np.argsort(scores[pos], kind="stable")]
    groups = np.flatnonzero(np.r_[True, scores[pos][1:] != scores[pos][:-1]]) if len(pos) else pos
    lo = np.searchsorted(scores[neg], scores[pos][groups], side="left")
    hi = np.searchsorted(scores[neg], scores[pos][groups], side="right")
    cuts = np.unique(np.r_[0, lo, hi])
    return pos, groups, np.r_[neg, len(scores)], cuts, np.searchsorted(cuts, lo), np.searchsorted(cuts, hi)


def _tag_metric(tag: tuple, padded: np.ndarray, name: str) -> np.ndarray:
    """(b,) weighted ROC-AUC or AP of one tag per row of `padded` (b, N + 1) weights; NaN where
    a row leaves it undefined."""
    pos, groups, neg, cuts, lo, hi = tag
    if not len(pos):
        return np.full(len(padded), np.nan)
    exact = np.int32 if padded.dtype == np.int8 else np.float64
    # Positive weight of each tied group of positives, ascending; negative weight below each cut.
    pos = np.add.reduceat(padded[:, pos], groups, axis=1, dtype=exact).astype(np.float64)
    seg = np.add.reduceat(padded[:, neg], cuts, axis=1, dtype=exact).astype(np.float64)
    below = np.cumsum(seg, axis=1) - seg
    num_pos, num_neg = pos.sum(axis=1), seg.sum(axis=1)
    if name == "auc_roc":
        # The weighted share of (positive, negative) pairs ranked right, a tie counting half.
        right = (pos * (below[:, lo] + below[:, hi])).sum(axis=1) / 2
        return right / np.where(num_pos * num_neg > 0, num_pos * num_neg, np.nan)
    # Recall gained at each threshold (high to low) times the precision there.
    true_pos = np.cumsum(pos[:, ::-1], axis=1)[:, ::-1]  # positives at or above each group
    false_pos = num_neg[:, None] - below[:, lo]
    precision = np.divide(true_pos, true_pos + false_pos, out=np.zeros_like(pos), where=pos > 0)
    return (pos * precision).sum(axis=1) / np.where(num_pos > 0, num_pos, np.nan)


def bootstrap_scores(task: Task, uids, targets: np.ndarray, logits_per_seed: list[np.ndarray],
                     strategies: list[str | None], metric: str, weights: np.ndarray) -> np.ndarray:
    """(n_boot,) `metric` per draw, averaged over seeds: each seed's selected probe (its test
    logits and the strategy chosen on valid) scored under the same draws."""
    if not logits_per_seed or len(logits_per_seed) != len(strategies):
        raise ValueError("need one strategy per seed's logits, and at least one seed")
    scores = [WeightedScorer(task, uids, targets, logits, strategy)(weights, metric)
              for logits, strategy in zip(logits_per_seed, strategies)]
    return np.mean(scores, axis=0)


def bootstrap_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval holding `level` of the bootstrap samples (which must be NaN-free)."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size == 0 or np.isnan(samples).any():
        raise ValueError("bootstrap samples must be non-empty and free of NaN")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    low, high = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def paired_difference(scores_a: np.ndarray, scores_b: np.ndarray, level: float = 0.95) -> dict:
    """A minus B from per-draw scores of both under the same weight draws.

    Returns the mean difference over draws, its percentile interval, and `p_a_not_better`, the
    fraction of draws where A does not beat B (a one-sided bootstrap p-value for "A > B").
    """
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b must be (n_boot,) scores of the same draws, got {a.shape}, {b.shape}")
    diff = a - b
    low, high = bootstrap_interval(diff, level)
    return {"difference": float(diff.mean()), "low": low, "high": high, "p_a_not_better": float(np.mean(diff <= 0))}
