"""Bootstrap intervals: weighted metrics equal sklearn with sample_weight and `evaluate` on the
literally resampled arrays; draws, intervals and paired differences behave as a bootstrap should."""

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, r2_score, roc_auc_score

from tunemir.probe import bootstrap, metrics
from tunemir.probe.bootstrap import (WeightedScorer, bootstrap_interval, bootstrap_scores, draw_weights,
                                     paired_difference, resampling_units)
from tunemir.probe.metrics import evaluate
from tunemir.probe.tasks import BUILTIN_TASKS, Task

#: A small multilabel task, so that tags are few and each has positives and negatives.
TAGS = Task("tags", "multilabel", 6, tuple("abcdef"))
TASKS = {"gtzan_ff": BUILTIN_TASKS["gtzan_ff"], "giantsteps_clips": BUILTIN_TASKS["giantsteps_clips"],
         "tags": TAGS, "emomusic": BUILTIN_TASKS["emomusic"]}


def _split(name, rng, ties=True):
    """(task, uids, targets, logits) of a random test split for one task type; `ties` puts the
    multilabel probabilities on a 0.01 grid, so that many scores tie."""
    task = TASKS[name]
    if name == "giantsteps_clips":
        uids, targets = [], []
        for song in range(30):  # 1 to 4 clips per song, one key per song
            key = int(rng.integers(0, 24))
            for clip in range(int(rng.integers(1, 5))):
                uids.append(f"{song:07d}-{clip}")
                targets.append(key)
        targets = np.array(targets)
        logits = 2 * rng.normal(size=(len(uids), 24)) + 2 * np.eye(24)[targets]
    elif name == "gtzan_ff":
        uids, targets = [str(i) for i in range(80)], rng.integers(0, 10, 80)
        logits = rng.normal(size=(80, 10)) + 1.5 * np.eye(10)[targets]
    elif name == "tags":
        uids, targets = [str(i) for i in range(100)], (rng.random((100, 6)) < 0.3).astype(np.float32)
        logits = rng.normal(size=(100, 6)) + 1.5 * targets
        if ties:
            probs = np.clip(np.round(_sigmoid(logits), 2), 0.01, 0.99)
            logits = np.log(probs / (1 - probs))
    else:
        # float64 targets make sklearn's r2 in evaluate float64 too (with float32 ones it is float32).
        uids, targets = [str(i) for i in range(90)], rng.normal(size=(90, 2))
        logits = targets + 0.7 * rng.normal(size=(90, 2))
    return task, uids, targets, logits.astype(np.float32)


def _sigmoid(logits):
    """The scorer's probabilities: float64 sigmoid rounded to float32."""
    return (1 / (1 + np.exp(-np.asarray(logits, np.float64)))).astype(np.float32)


def _sklearn_tags(targets, logits):
    return {"auc_roc": roc_auc_score(targets, _sigmoid(logits), average="macro"),
            "ap": average_precision_score(targets, _sigmoid(logits), average="macro")}


def _resample(uids, targets, logits, counts):
    """The split with item i repeated counts[i] times; the copies of a song become songs of their own."""
    counts = counts.astype(int)
    items = np.repeat(np.arange(len(uids)), counts)
    copies = np.concatenate([np.arange(k) for k in counts])
    uids = [f"{uids[i].split('-')[0]}.{j}-{uids[i].partition('-')[2]}" for i, j in zip(items, copies)]
    return uids, targets[items], logits[items]


def _assert_matches(ours, expected, metric, task):
    if (task.primary if metric == "primary" else metric) == "accuracy":
        # evaluate averages correctness in float32: equal once ours is rounded the same way.
        assert np.float32(ours) == np.float32(expected), metric
    else:
        assert ours == pytest.approx(expected, abs=1e-9), metric


@pytest.mark.parametrize("name", TASKS)
def test_weighted_equals_evaluate_on_resampled_arrays(name):
    task, uids, targets, logits = _split(name, np.random.default_rng(1))
    strategy = evaluate(task, uids, targets, logits).get("strategy")  # as if chosen on valid
    units, num_units = resampling_units(task, uids)
    weights = draw_weights(num_units, units, n_boot=4, seed=0)
    scorer = WeightedScorer(task, uids, targets, logits, strategy)
    scores = {metric: scorer(weights, metric) for metric in scorer.metrics}
    for row, counts in enumerate(weights):
        resampled = _resample(uids, targets, logits, counts)
        if name == "tags":
            # Not evaluate: torch's float32 sigmoid can give one logit two values, depending on
            # where it sits in the array (vector lanes or the scalar tail), which splits the tie
            # between copies of an item. sklearn on the scorer's probabilities is the reference.
            expected = _sklearn_tags(*resampled[1:])
            expected["primary"] = expected["auc_roc"]
        else:
            expected = evaluate(task, *resampled, strategy=strategy)
        for metric in scorer.metrics:
            _assert_matches(scores[metric][row], expected[metric], metric, task)
    assert len(set(np.round(scores["primary"], 12))) > 1  # the draws differ


@pytest.mark.parametrize("name", TASKS)
def test_unit_weights_reproduce_evaluate(name):
    # Without ties in the multilabel scores: torch may split a tie (see above).
    task, uids, targets, logits = _split(name, np.random.default_rng(2), ties=False)
    expected = evaluate(task, uids, targets, logits)
    scorer = WeightedScorer(task, uids, targets, logits)  # no strategy: picked as evaluate picks it
    assert getattr(scorer, "strategy", None) == expected.get("strategy")
    for metric in scorer.metrics:
        score = scorer(np.ones(len(uids)), metric)
        assert score.shape == ()
        _assert_matches(float(score), expected[metric], metric, task)


def test_strategy_ties_keep_the_earlier_as_evaluate():
    task, uids, targets, logits = _split("giantsteps_clips", np.random.default_rng(8))
    first = np.unique([uid.split("-")[0] for uid in uids], return_index=True)[1]
    uids, targets, logits = [uids[i] for i in first], targets[first], logits[first]  # one clip a song
    assert evaluate(task, uids, targets, logits)["strategy"] == "vote"  # every strategy ties
    assert WeightedScorer(task, uids, targets, logits).strategy == "vote"


def test_multilabel_and_regression_equal_sklearn_with_sample_weight():
    rng = np.random.default_rng(3)
    task, uids, targets, logits = _split("tags", rng)
    probs = _sigmoid(logits)
    assert min(len(p) - len(np.unique(p)) for p in probs.T) > 20  # ties are being tested
    weights = draw_weights(len(uids), np.arange(len(uids)), n_boot=5, seed=1)
    scorer = WeightedScorer(task, uids, targets, logits)
    weights = np.vstack([weights, rng.random((2, len(uids))) * 3])  # and any non-negative weights
    for w, auc, ap in zip(weights, scorer(weights, "auc_roc"), scorer(weights, "ap")):
        assert auc == pytest.approx(roc_auc_score(targets, probs, average="macro", sample_weight=w), abs=1e-9)
        assert ap == pytest.approx(average_precision_score(targets, probs, average="macro", sample_weight=w), abs=1e-9)

    task, uids, targets, logits = _split("emomusic", rng)
    scorer = WeightedScorer(task, uids, targets, logits)
    weights = rng.random((3, len(uids))) * 3
    for w, r2, arousal in zip(weights, scorer(weights, "r2"), scorer(weights, "arousal_r2")):
        assert r2 == pytest.approx(r2_score(targets, logits.astype(np.float64), sample_weight=w), abs=1e-9)
        assert arousal == pytest.approx(r2_score(targets[:, 0], logits[:, 0].astype(np.float64), sample_weight=w),
                                        abs=1e-9)


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn on the undefined tags
def test_multilabel_skips_tags_a_draw_leaves_undefined():
    task, uids, targets, logits = _split("tags", np.random.default_rng(4))
    probs = _sigmoid(logits)
    scorer = WeightedScorer(task, uids, targets, logits)
    w = np.random.default_rng(5).integers(0, 3, len(uids)).astype(np.float64)

    def per_tag(fn, w):
        return [fn(targets[:, c], probs[:, c], sample_weight=w) for c in range(targets.shape[1])]

    no_positives = np.where(targets[:, 0] > 0, 0.0, w)  # tag 0 has no weighted positives left
    assert scorer(no_positives, "auc_roc") == pytest.approx(np.mean(per_tag(roc_auc_score, no_positives)[1:]))
    assert scorer(no_positives, "ap") == pytest.approx(np.mean(per_tag(average_precision_score, no_positives)[1:]))
    no_negatives = np.where(targets[:, 0] > 0, w, 0.0)  # AUC undefined; AP is 1, as sklearn's
    assert scorer(no_negatives, "auc_roc") == pytest.approx(np.mean(per_tag(roc_auc_score, no_negatives)[1:]))
    assert scorer(no_negatives, "ap") == pytest.approx(np.mean(per_tag(average_precision_score, no_negatives)))


def test_draw_weights():
    weights = draw_weights(50, np.arange(50), n_boot=200, seed=7)
    assert weights.shape == (200, 50) and weights.dtype == np.float64
    assert (weights.sum(axis=1) == 50).all()
    assert weights.mean() == pytest.approx(1.0)
    assert (weights == 0).mean() == pytest.approx((1 - 1 / 50) ** 50, abs=0.02)  # ~e^-1 left out
    assert np.array_equal(weights, draw_weights(50, np.arange(50), n_boot=200, seed=7))
    assert not np.array_equal(weights, draw_weights(50, np.arange(50), n_boot=200, seed=8))

    task, uids, _, _ = _split("giantsteps_clips", np.random.default_rng(0))
    songs, num_songs = resampling_units(task, uids)
    assert num_songs == 30 and len(songs) == len(uids) > 30
    weights = draw_weights(num_songs, songs, n_boot=20, seed=0)
    first_clip = np.unique(songs, return_index=True)[1]
    assert np.array_equal(weights[:, first_clip][:, songs], weights)  # a song's clips share its weight
    assert (weights[:, first_clip].sum(axis=1) == num_songs).all()
    assert np.array_equal(resampling_units(TASKS["gtzan_ff"], ["a-0", "a-1"])[0], [0, 1])  # clips elsewhere
    # Regression clips are resampled one by one too (Emomusic's clips are its songs; the synthetic
    # corpus's uids "synth-00000" share a prefix but are separate pieces).
    assert np.array_equal(resampling_units(TASKS["emomusic"], ["synth-0", "synth-1"])[0], [0, 1])


def test_key_score_weights_must_follow_songs():
    task, uids, targets, logits = _split("giantsteps_clips", np.random.default_rng(0))
    scorer = WeightedScorer(task, uids, targets, logits, "vote")
    w = np.ones(len(uids))
    w[uids.index("0000000-0")] = 2
    with pytest.raises(ValueError, match="all clips of a song"):
        scorer(w, "score")
    with pytest.raises(ValueError, match="not one of"):
        scorer(np.ones(len(uids)), "auc_roc")


def test_scoring_imports_neither_torch_nor_sklearn():
    script = """
import json, sys
import numpy as np
from tunemir.probe.bootstrap import WeightedScorer, draw_weights, resampling_units
from tunemir.probe.tasks import BUILTIN_TASKS
rng = np.random.default_rng(0)
uids = [f"{i // 2}-{i % 2}" for i in range(20)]
splits = {"giantsteps_clips": rng.integers(0, 24, 20), "magnatagatune": (rng.random((20, 50)) < .5) * 1.0,
          "emomusic": rng.normal(size=(20, 2))}
for name, targets in splits.items():
    task = BUILTIN_TASKS[name]
    units, num_units = resampling_units(task, uids)
    WeightedScorer(task, uids, targets, rng.normal(size=(20, task.num_outputs)))(
        draw_weights(num_units, units, 3, 0), "primary")
print(json.dumps([m for m in ("torch", "sklearn") if m in sys.modules]))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(run.stdout) == []


def _predictions(targets, correct):
    """One-hot 10-class logits that are right on the first `correct` share of the items, wrong after."""
    right = np.arange(len(targets)) < round(correct * len(targets))
    return np.eye(10, dtype=np.float32)[np.where(right, targets, (targets + 1) % 10)]


def test_interval_contains_estimate_and_narrows_with_more_items():
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 2000):
        targets = rng.integers(0, 10, n)
        scorer = WeightedScorer(TASKS["gtzan_ff"], [str(i) for i in range(n)], targets, _predictions(targets, 0.7))
        low, high = bootstrap_interval(scorer(draw_weights(n, np.arange(n), n_boot=1000, seed=n), "accuracy"))
        assert low < 0.7 < high
        widths.append(high - low)
    assert 3.5 < widths[0] / widths[1] < 5.5  # sqrt(20) = 4.5
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_interval(np.array([0.5, np.nan]))


def test_paired_difference():
    n = 300
    targets = np.random.default_rng(1).integers(0, 10, n)
    uids = [str(i) for i in range(n)]
    weights = draw_weights(n, np.arange(n), n_boot=500, seed=0)
    a = WeightedScorer(TASKS["gtzan_ff"], uids, targets, _predictions(targets, 0.85))(weights, "accuracy")
    b = WeightedScorer(TASKS["gtzan_ff"], uids, targets, _predictions(targets, 0.6))(weights, "accuracy")
    assert paired_difference(a, a) == {"difference": 0.0, "low": 0.0, "high": 0.0, "p_a_not_better": 1.0}
    result = paired_difference(a, b)
    assert result["difference"] == pytest.approx(0.25, abs=0.01)
    assert 0 < result["low"] < 0.25 < result["high"] and result["p_a_not_better"] == 0.0
    # Pairing matters: the same difference under independent draws spreads wider.
    unpaired = paired_difference(a, b[np.random.default_rng(2).permutation(len(b))])
    assert result["high"] - result["low"] < 0.85 * (unpaired["high"] - unpaired["low"])
    with pytest.raises(ValueError, match="same draws"):
        paired_difference(a, b[:-1])


def test_bootstrap_scores_average_seeds_under_the_same_draws():
    task, uids, targets, logits = _split("giantsteps_clips", np.random.default_rng(6))
    other = logits + np.random.default_rng(7).normal(size=logits.shape).astype(np.float32)
    units, num_units = resampling_units(task, uids)
    weights = draw_weights(num_units, units, n_boot=50, seed=3)
    scores = bootstrap_scores(task, uids, targets, [logits, other], ["vote", "mean"], "primary", weights)
    expected = (WeightedScorer(task, uids, targets, logits, "vote")(weights, "score")
                + WeightedScorer(task, uids, targets, other, "mean")(weights, "score")) / 2
    assert scores.shape == (50,)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_mtt_shaped_bootstrap_runs():
    rng = np.random.default_rng(0)
    n, task = 5329, BUILTIN_TASKS["magnatagatune"]
    targets = (rng.random((n, 50)) < 0.06).astype(np.float32)
    logits = (2 * rng.normal(size=(n, 50)) + 3 * targets - 3).astype(np.float32)
    uids = [str(i) for i in range(n)]
    units, num_units = resampling_units(task, uids)
    weights = draw_weights(num_units, units, n_boot=200, seed=0)
    scorer = WeightedScorer(task, uids, targets, logits)
    auc, ap = scorer(weights, "auc_roc"), scorer(weights, "ap")
    assert auc.shape == ap.shape == (200,) and np.isfinite(auc).all() and np.isfinite(ap).all()
    probs = _sigmoid(logits)
    assert auc[0] == pytest.approx(roc_auc_score(targets, probs, average="macro", sample_weight=weights[0]), abs=1e-9)
    assert ap[-1] == pytest.approx(average_precision_score(targets, probs, average="macro", sample_weight=weights[-1]),
                                   abs=1e-9)
