"""CLMR's linear evaluation: frames, clip-level scoring by hand, and the command end to end."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from sklearn.metrics import average_precision_score, roc_auc_score

from tunemir.audio import FRAME_LENGTH
from tunemir.cli import main
from tunemir.pretrain.data import AudioCache
from tunemir.pretrain.linear import (
    clip_metrics, clip_predictions, fixed_crop_starts, full_frames, map_test_frames,
)
from tunemir.probe.tasks import Task
from tunemir.testing import TINY_CONFIGS, save_tiny_checkpoint, tiny_model, write_processed_audio


def make_cache(tmp_path, lengths):
    """An AudioCache written by hand: clip i holds the values i + ramp (distinguishable)."""
    folder = tmp_path / "cache"
    folder.mkdir()
    clips = [((np.arange(n) % 1000) + 1000 * i).astype(np.int16) for i, n in enumerate(lengths)]
    (folder / "audio.i16").write_bytes(b"".join(c.tobytes() for c in clips))
    (folder / "index.json").write_text(json.dumps({"uids": [str(i) for i in range(len(lengths))],
                                                   "lengths": list(lengths), "failed": {}}))
    return AudioCache.open(folder), clips


def test_test_frames_keep_every_full_frame_and_pad_short_clips(tmp_path):
    lengths = [2 * FRAME_LENGTH, 10 * FRAME_LENGTH, 11 * FRAME_LENGTH + 5, FRAME_LENGTH + 100, 500]
    cache, clips = make_cache(tmp_path, lengths)
    frames, owners = full_frames(cache)
    assert np.bincount(owners).tolist() == [2, 10, 11, 1, 1]
    for index, clip in enumerate(clips):
        mine = frames[owners == index]
        if len(clip) >= FRAME_LENGTH:
            expected = clip[: len(mine) * FRAME_LENGTH].reshape(len(mine), FRAME_LENGTH) / 32768
        else:  # shorter than a frame: its own audio, zero-padded, with its own label
            expected = np.zeros((1, FRAME_LENGTH))
            expected[0, : len(clip)] = clip / 32768
        np.testing.assert_allclose(mine, expected, rtol=0, atol=1e-7)
    # Streamed two clips at a time (as the evaluation does for large test sets): the same rows.
    heads, chunked_owners = map_test_frames(lambda f: f[:, :5], cache, chunk=2)
    np.testing.assert_array_equal(heads, frames[:, :5])
    np.testing.assert_array_equal(chunked_owners, owners)


def test_fixed_crops_are_in_range_and_frozen():
    lengths = np.array([FRAME_LENGTH, FRAME_LENGTH + 10, 3 * FRAME_LENGTH, 100])
    starts = fixed_crop_starts(lengths, seed=42)
    assert starts[0] == 0 and starts[3] == 0 and 0 <= starts[1] <= 10 and 0 <= starts[2] <= 2 * FRAME_LENGTH
    np.testing.assert_array_equal(starts, fixed_crop_starts(lengths, seed=42))


def test_clip_metric_on_a_case_computed_by_hand():
    """Three clips, two tags. Clip 0 has two frames (sigmoid 0.6 and 0.8 for tag 0, mean 0.7).

    Clip predictions: tag 0 = [0.7, 0.6, 0.55] with truth [1, 0, 1]; tag 1 = [0.2, 0.9, 0.4]
    with truth [0, 1, 1]. Tag 0: positives 0.7 and 0.55 vs negative 0.6 -> AUC 1/2; ranked
    0.7 (pos), 0.6, 0.55 (pos) -> AP (1 + 2/3) / 2 = 5/6. Tag 1: both positives above the
    negative -> AUC 1, AP 1. Macro: ROC-AUC 0.75, PR-AUC 11/12.
    """
    def logit(p):
        return np.log(p / (1 - p))

    frame_probs = np.array([[0.6, 0.1], [0.8, 0.3], [0.6, 0.9], [0.55, 0.4]])
    owners = np.array([0, 0, 1, 2])
    predictions = clip_predictions(logit(frame_probs), owners, 3, multilabel=True)
    np.testing.assert_allclose(predictions, [[0.7, 0.2], [0.6, 0.9], [0.55, 0.4]], atol=1e-12)
    metrics = clip_metrics(np.array([[1, 0], [0, 1], [1, 1]]), predictions, multilabel=True)
    assert metrics["roc_auc"] == pytest.approx(0.75, abs=1e-12)
    assert metrics["pr_auc"] == pytest.approx(11 / 12, abs=1e-12)
    # Single-label: softmax per frame, then the mean; clip 0's frames disagree, the mean decides.
    logits = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]]))
    single = clip_predictions(logits, owners, 3, multilabel=False)
    np.testing.assert_allclose(single, [[0.55, 0.45], [0.3, 0.7], [0.6, 0.4]], atol=1e-12)
    assert clip_metrics(np.array([0, 1, 1]), single, multilabel=False)["accuracy"] == pytest.approx(2 / 3)


TOY = Task("toytags", "multilabel", 3, ("bright", "dark", "noisy"))


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("processed")
    write_processed_audio(root, "toytags", TOY, {"train": 12, "valid": 6, "test": 6}, seconds=(1.0, 7.5))
    (root / "toytags" / "task.json").write_text(json.dumps({"output_type": "multilabel", "labels": list(TOY.labels)}))
    return root


def test_linear_evaluation_end_to_end_matches_an_independent_recomputation(tmp_path, toy_dataset):
    checkpoint = tmp_path / "encoder.safetensors"
    save_tiny_checkpoint(checkpoint, "tune_plus")
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, [
        "evaluate", "linear", "--checkpoint", str(checkpoint), "--dataset", "toytags", "--datasets-dir",
        str(toy_dataset), "--audio-cache-dir", str(tmp_path / "cache"), "--output-dir", str(out),
        "--max-epochs", "30", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "linear_evaluation.json").read_text())
    assert report["clips"] == {"train": 12, "valid": 6, "test": 6} and report["model"] == "tune_plus"
    assert 1 <= report["epochs"] <= 30 and report["settings"]["learning_rate"] == 1e-3
    # Independently: the encoder in training code's eval mode, every full frame, the head, the mean.
    encoder = tiny_model("tune_plus")
    head = torch.nn.Linear(16, 3)
    head.load_state_dict({k.removeprefix("0."): v for k, v in load_file(out / "head.safetensors").items()})
    meta = json.loads((toy_dataset / "toytags" / "meta.json").read_text())
    cache = AudioCache.open(next((tmp_path / "cache").glob("toytags-test-*")))
    truth, scores = [], []
    for index, uid in enumerate(cache.uids):
        audio = cache.clip(index)
        n = len(audio) // FRAME_LENGTH
        frames = audio[: n * FRAME_LENGTH].reshape(n, 1, FRAME_LENGTH) if n else \
            np.pad(audio, (0, FRAME_LENGTH - len(audio)))[None, None]
        with torch.no_grad():
            probs = torch.sigmoid(head(encoder(torch.from_numpy(frames)))).double().mean(0).numpy()
        scores.append(probs)
        truth.append([tag in meta[uid]["y"] for tag in TOY.labels])
    assert report["clips_shorter_than_a_frame"]["test"] >= 1  # the padded case is exercised
    assert report["test"]["roc_auc"] == pytest.approx(roc_auc_score(truth, scores, average="macro"), abs=1e-6)
    assert report["test"]["pr_auc"] == pytest.approx(average_precision_score(truth, scores, average="macro"), abs=1e-6)
    assert f"roc_auc {100 * report['test']['roc_auc']:.2f}" in result.output


def test_supervised_baseline_trains_end_to_end(tmp_path, toy_dataset):
    out = tmp_path / "supervised"
    result = CliRunner().invoke(main, [
        "evaluate", "linear", "--supervised", "--model", "clmr", "--encoder-config",
        json.dumps({"channels": list(TINY_CONFIGS["clmr"].channels)}), "--dataset", "toytags", "--datasets-dir",
        str(toy_dataset), "--audio-cache-dir", str(tmp_path / "cache"), "--output-dir", str(out),
        "--max-epochs", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "linear_evaluation.json").read_text())
    assert report["settings"]["supervised"] and report["epochs"] == 2 and report["settings"]["learning_rate"] == 3e-4
    weights = load_file(out / "supervised.safetensors")
    assert "fc.weight" in weights and "encoder.sequential.0.0.weight" in weights
    assert 0 <= report["test"]["roc_auc"] <= 1


def test_linear_evaluation_usage_errors(tmp_path, toy_dataset):
    result = CliRunner().invoke(main, ["evaluate", "linear", "--dataset", "toytags"])
    assert result.exit_code == 2 and "--checkpoint" in result.output
    checkpoint = tmp_path / "encoder.safetensors"
    save_tiny_checkpoint(checkpoint, "clmr")
    result = CliRunner().invoke(main, ["evaluate", "linear", "--checkpoint", str(checkpoint), "--model", "tune",
                                       "--dataset", "toytags", "--datasets-dir", str(toy_dataset),
                                       "--audio-cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    assert result.exit_code == 1 and "holds a 'clmr' encoder, but 'tune' was requested" in result.output


def test_fit_stops_on_a_non_finite_loss():
    from torch import nn

    from tunemir.pretrain.linear import LinearEvalError, LinearEvalSettings, fit

    head = nn.Linear(4, 2)
    x, y = torch.ones(6, 4), torch.zeros(6, 2)
    x[2, 1] = float("inf")
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    with pytest.raises(LinearEvalError, match="epoch 0: the loss is (nan|inf).*lower --learning-rate"):
        fit(head, lambda epoch: [(x, y)], lambda: [(x, y)], nn.BCEWithLogitsLoss(), optimizer, 0.1,
            LinearEvalSettings(max_epochs=3), torch.device("cpu"))
