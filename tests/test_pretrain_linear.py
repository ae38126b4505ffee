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


def _evaluate_tiny_tune_plus(tmp_path, toy_dataset, *options: str):
    """`tunemir evaluate linear` of a tiny TUNe+ on the toy dataset: (CLI result, report, output folder)."""
    checkpoint = tmp_path / "encoder.safetensors"
    save_tiny_checkpoint(checkpoint, "tune_plus")
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, [
        "evaluate", "linear", "--checkpoint", str(checkpoint), "--dataset", "toytags", "--datasets-dir",
        str(toy_dataset), "--audio-cache-dir", str(tmp_path / "cache"), "--output-dir", str(out),
        "--device", "cpu", *options])
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "linear_evaluation.json").read_text()), out


def test_linear_evaluation_end_to_end_matches_an_independent_recomputation(tmp_path, toy_dataset):
    result, report, out = _evaluate_tiny_tune_plus(tmp_path, toy_dataset, "--max-epochs", "30")
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


def _valid_features(encoder: torch.nn.Module, layer: int, cache_root, seed: int = 42):
    """(the encoder's layer-`layer` output on each valid clip's frozen crop, the valid cache),
    recomputed from the cache with the training-code encoder."""
    cache = AudioCache.open(next(cache_root.glob("toytags-valid-*")))
    starts = fixed_crop_starts(cache.lengths, seed + 1)  # the valid split's crops: seed + 1
    crops = []
    for index, start in enumerate(starts):
        audio = cache.clip(index)[start: start + FRAME_LENGTH]
        crops.append(np.pad(audio, (0, FRAME_LENGTH - len(audio))))
    with torch.no_grad():
        features = encoder(torch.from_numpy(np.stack(crops))[:, None], layer=layer)
        assert features.shape[1] == encoder.layer_dims[layer]
        return features, cache


@pytest.mark.parametrize("head_choice, layer", [("last", 0), ("best", 5)])
def test_the_tested_head_is_the_epoch_it_claims(tmp_path, toy_dataset, head_choice, layer):
    """An early-stopped run (patience 2), so the last head is not the best: --head last tests the
    last epoch's weights (CLMR), --head best the best valid epoch's; the saved head's valid loss,
    recomputed on the encoder's own layer-k output, is that epoch's. --layer 5 gives 32-d features."""
    _, report, out = _evaluate_tiny_tune_plus(tmp_path, toy_dataset, "--patience", "2", "--learning-rate", "0.03",
                                              "--head", head_choice, "--layer", str(layer))
    history = [h["valid_loss"] for h in report["history"]]
    assert report["epochs"] < 200 and history[-1] > min(history)  # early-stopped: best != last
    expected = len(history) - 1 if head_choice == "last" else int(np.argmin(history))
    assert (report["head"], report["settings"]["head"], report["tested_epoch"]) == (head_choice, head_choice, expected)
    assert report["tested_valid_loss"] == history[expected]
    encoder = tiny_model("tune_plus")
    dim = encoder.layer_dims[layer]
    assert (report["layer"], report["feature_dim"]) == (layer, dim) and dim == (16 if layer == 0 else 32)
    weights = load_file(out / "head.safetensors")
    assert weights["0.weight"].shape == (3, dim)
    head = torch.nn.Linear(dim, 3)
    head.load_state_dict({k.removeprefix("0."): v for k, v in weights.items()})
    features, cache = _valid_features(encoder, layer, tmp_path / "cache")
    meta = json.loads((toy_dataset / "toytags" / "meta.json").read_text())
    truth = torch.tensor([[float(tag in meta[uid]["y"]) for tag in TOY.labels] for uid in cache.uids])
    with torch.no_grad():
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(head(features), truth))
    assert loss == pytest.approx(history[expected], abs=1e-5)
    assert all(abs(loss - v) > 1e-4 for i, v in enumerate(history) if i != expected and v != history[expected])


def test_fit_keeps_the_last_or_the_best_epochs_weights():
    """`fit` against a plain Adam loop over the same batches: the last head is the weights after
    the last epoch, the best head those after the best valid epoch (valid labels are the
    opposite of train's, so the valid loss rises and training stops after `patience` epochs)."""
    from torch import nn

    from tunemir.pretrain.linear import LinearEvalSettings, fit, tested_epoch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 4, generator=gen)
    y = (x[:, :2] > 0).float()
    valid_x, valid_y = x[:8] + 0.1, 1 - y[:8]

    def batches(epoch):
        order = torch.randperm(24, generator=torch.Generator().manual_seed(epoch))
        return [(x[order[i: i + 6]], y[order[i: i + 6]]) for i in range(0, 24, 6)]

    def reference(epochs: int) -> dict:
        torch.manual_seed(1)
        head = nn.Linear(4, 2)
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-6)
        for epoch in range(epochs):
            for bx, by in batches(epoch):
                loss = nn.functional.binary_cross_entropy_with_logits(head(bx), by)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return head.state_dict()

    kept = {}
    for choice in ("last", "best"):
        torch.manual_seed(1)
        head = nn.Linear(4, 2)
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-6)
        history = fit(head, batches, lambda: [(valid_x, valid_y)], nn.BCEWithLogitsLoss(), optimizer, 0.1,
                      LinearEvalSettings(max_epochs=50, patience=2, head=choice), torch.device("cpu"))
        kept[choice] = tested_epoch(history, choice)
        for key, value in reference(kept[choice] + 1).items():
            torch.testing.assert_close(head.state_dict()[key], value, rtol=0, atol=0)
    assert kept["best"] < kept["last"] == len(history) - 1


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
    common = ["--dataset", "toytags", "--datasets-dir", str(toy_dataset), "--audio-cache-dir", str(tmp_path / "cache"),
              "--device", "cpu", "--output-dir", str(tmp_path / "out")]
    frozen = ["evaluate", "linear", "--checkpoint", str(checkpoint)]
    result = CliRunner().invoke(main, [*frozen, "--layer", "11", *common])  # the tiny clmr has layers 0-10
    assert result.exit_code == 2 and "--layer 11: layer 11 does not exist" in result.output
    assert "choose 0 (final representation) to 10" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["evaluate", "linear", "--supervised", "--model", "clmr", "--layer", "2", *common])
    assert result.exit_code == 2 and "--layer" in result.output and "leave it out with --supervised" in result.output
    result = CliRunner().invoke(main, [*frozen, "--head", "first", *common])
    assert result.exit_code == 2 and "'first' is not one of 'last', 'best'" in result.output
    assert not (tmp_path / "out").exists()


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
