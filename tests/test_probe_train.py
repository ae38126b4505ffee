"""The vectorised grid trainer against torch.optim.Adam and against jukemir's loop run per config."""

import math

import numpy as np
import pytest
import torch

from tunemir.probe.config import ProbeConfig, grid_configs
from tunemir.probe.data import ProbeDirs, load_probe_data
from tunemir.probe.metrics import evaluate
from tunemir.probe.serial import train_serial
from tunemir.probe.tasks import BUILTIN_TASKS
from tunemir.probe.streams import Streams, config_key
from tunemir.probe.train import adam_step, fused_adam_works, initial_weights, probe_logits, stacked_adam_step, train_grid
from tunemir.testing import synthetic_probe_data, write_probe_dataset


@pytest.fixture(scope="module")
def gtzan(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    write_probe_dataset(root, "gtzan_ff", "rep", BUILTIN_TASKS["gtzan_ff"],
                        {"train": 400, "valid": 200, "test": 1000}, dim=24, seed=1)
    dirs = ProbeDirs(root / "processed", root / "representations", root / "probes")
    return load_probe_data("gtzan_ff", "rep", dirs)


@pytest.mark.parametrize("kind", ["fused-buckets", "stacked"])
def test_stacked_adam_row_matches_torch_adam(kind):
    torch.manual_seed(0)
    lrs, wds = [1e-3, 1e-2, 3e-4], [0.0, 1e-3, 1e-1]
    stacked = torch.randn(3, 5, 4)
    exp_avg, exp_avg_sq = torch.zeros_like(stacked), torch.zeros_like(stacked)
    refs = [torch.nn.Parameter(stacked[m].clone()) for m in range(3)]
    opts = [torch.optim.Adam([refs[m]], lr=lrs[m], weight_decay=wds[m]) for m in range(3)]
    buckets = {(lr, wd): [m] for m, (lr, wd) in enumerate(zip(lrs, wds))}
    for step in range(1, 21):
        grad = torch.randn(3, 5, 4)
        if kind == "stacked":
            stacked_adam_step([stacked], [grad.clone()], [exp_avg], [exp_avg_sq], step,
                              torch.tensor(lrs).view(3, 1, 1), torch.tensor(wds).view(3, 1, 1))
        else:
            adam_step([stacked], [grad.clone()], [exp_avg], [exp_avg_sq], step, buckets)
        for m in range(3):
            refs[m].grad = grad[m].clone()
            opts[m].step()
    for m in range(3):
        assert torch.allclose(stacked[m], refs[m].detach(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("population, size", [(18706, 256), (443, 256), (100, 64), (50, 64)])
def test_minibatches_are_distinct_uniform_and_independent(population, size):
    streams = Streams([config_key(f"config {r}") for r in range(40)], "cpu")
    idx = streams.batches(0, population, size)
    size = min(size, population)
    assert idx.shape == (40, size)
    assert idx.min() >= 0 and idx.max() < population
    assert all(len(set(row.tolist())) == size for row in idx)
    assert not torch.equal(idx[0].sort().values, idx[1].sort().values) or size == population
    # Every index equally likely: over many draws the counts are close to uniform.
    counts = torch.bincount(torch.cat([streams.batches(step, population, size).flatten()
                                       for step in range(1, 51)]), minlength=population).double()
    expected = 2000 * size / population
    assert ((counts - expected).abs() < 6 * math.sqrt(expected) + 1).all()


def test_initial_weights_are_jukemirs():
    torch.manual_seed(0)
    first = torch.nn.Linear(24, 512)
    second = torch.nn.Linear(512, 10)
    got = initial_weights(0, (24, 512, 10))
    for a, b in zip(got, (first.weight, first.bias, second.weight, second.bias)):
        assert torch.equal(a, b)


def _state_close(a, b, atol):
    return all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("adam", ["fused", "stacked"])
def test_without_randomness_the_grid_reproduces_the_serial_loop_exactly(gtzan, adam, monkeypatch):
    """Full-batch steps and no dropout remove every random stream: the vectorised trainer must
    then take the same steps, stop at the same evaluation and end with the same weights.
    Both Adam paths are checked (the stacked one is what GPUs use)."""
    if adam == "stacked":
        monkeypatch.setattr("tunemir.probe.train.FUSED_ADAM_DEVICES", ())
    configs = [ProbeConfig(dataset="gtzan_ff", representation="rep", batch_size=1000, dropout_p=0.0,
                           learning_rate=lr, l2_weight_decay=wd, hidden_layer_sizes=hidden, data_standardization=std,
                           early_stopping_boredom=12)
               for lr, wd, hidden, std in [(1e-2, None, [], True), (3e-3, 1e-3, [], False), (1e-2, 1e-4, [16], True)]]
    grid = {r.config.uid(): r for r in train_grid(gtzan, configs)}
    for config in configs:
        ref = train_serial(gtzan, config)
        got = grid[config.uid()]
        assert (got.steps, got.evals, got.best_eval) == (ref.steps, ref.evals, ref.best_eval)
        assert got.best_score == pytest.approx(ref.best_score, abs=1e-9)
        assert _state_close(got.state, ref.state, 1e-4)


def test_early_stopping_and_epoch_cap_follow_jukemirs_loop(gtzan):
    configs = [ProbeConfig(dataset="gtzan_ff", representation="rep", early_stopping_boredom=5,
                           early_stopping_eval_frequency=4, learning_rate=1e-2),
               ProbeConfig(dataset="gtzan_ff", representation="rep", early_stopping=False, max_num_epochs=2)]
    results = {r.config.uid(): r for r in train_grid(gtzan, configs)}
    stopped = results[configs[0].uid()]
    # Stops at the check after `boredom` evaluations without strict improvement.
    assert stopped.stop_reason == "early_stopping"
    assert stopped.evals == stopped.best_eval + 1 + 5
    assert stopped.steps == 4 * stopped.evals
    logits = probe_logits(stopped, gtzan.splits["valid"].features)
    valid = gtzan.splits["valid"]
    assert evaluate(gtzan.task, valid.uids, valid.targets, logits)["accuracy"] == pytest.approx(stopped.best_score)
    capped = results[configs[1].uid()]
    # First step with step * B / N > 2 epochs: 400 clips, B = 64 -> step 13.
    assert (capped.stop_reason, capped.steps, capped.evals) == ("max_num_epochs", 13, 0)


@pytest.mark.slow
def test_grid_and_serial_loop_select_the_same_quality(gtzan):
    """With random streams, the vectorised grid and jukemir's loop pick probes of equal test quality."""
    configs = grid_configs("gtzan_ff", "rep", {"hidden_layer_sizes": [[], [32]], "learning_rate": [1e-3, 1e-2],
                                               "dropout_p": [0.25, 0.5], "early_stopping_boredom": [32]})
    test = gtzan.splits["test"]

    def test_accuracies(results):
        return {r.config.uid(): evaluate(gtzan.task, test.uids, test.targets,
                                         probe_logits(r, test.features))["accuracy"] for r in results}

    def selected(results, accuracies):
        return accuracies[max(results, key=lambda r: r.best_score).config.uid()]

    grid = list(train_grid(gtzan, configs))
    serial = [train_serial(gtzan, c) for c in configs]
    assert len(grid) == len(configs)
    grid_acc, serial_acc = test_accuracies(grid), test_accuracies(serial)
    assert selected(serial, serial_acc) > 0.1 + 0.4  # the task has real signal (chance is 0.1)
    # Measured over 5 seeds of the grid's generator: selected gap <= 0.022, mean gap <= 0.011.
    assert abs(selected(grid, grid_acc) - selected(serial, serial_acc)) < 0.04
    assert abs(np.mean(list(grid_acc.values())) - np.mean(list(serial_acc.values()))) < 0.02


@pytest.mark.slow
def test_bf16_products_select_probes_of_fp32_quality(gtzan):
    """`precision="bf16"` trains in bfloat16 products with float32 master weights: the probes differ
    from fp32's, but the selected and the average test accuracy stay within seed noise."""
    configs = grid_configs("gtzan_ff", "rep", {"hidden_layer_sizes": [[], [64]], "learning_rate": [1e-3, 1e-2],
                                               "dropout_p": [0.5], "early_stopping_boredom": [24]})
    test = gtzan.splits["test"]
    runs = {p: {r.config.uid(): r for r in train_grid(gtzan, configs, precision=p)} for p in ("fp32", "bf16")}
    accuracy = {p: {uid: evaluate(gtzan.task, test.uids, test.targets, probe_logits(r, test.features))["accuracy"]
                    for uid, r in rs.items()} for p, rs in runs.items()}
    selected = {p: accuracy[p][max(rs.values(), key=lambda r: r.best_score).config.uid()] for p, rs in runs.items()}
    assert all(t.dtype == torch.float32 for r in runs["bf16"].values() for t in r.state.values())
    assert any(not torch.equal(runs["bf16"][uid].state[k], r.state[k]) for uid, r in runs["fp32"].items()
               for k in r.state)
    assert selected["fp32"] > 0.5 and abs(selected["bf16"] - selected["fp32"]) < 0.04
    assert abs(np.mean(list(accuracy["bf16"].values())) - np.mean(list(accuracy["fp32"].values()))) < 0.02
    with pytest.raises(ValueError, match="choose from fp32, bf16"):
        next(train_grid(gtzan, configs, precision="fp16"))


@pytest.mark.gpu
def test_grid_on_cuda_matches_the_cpu_grid_in_quality(gtzan):
    configs = grid_configs("gtzan_ff", "rep", "smoke")
    test = gtzan.splits["test"]

    def accuracies(device):
        return [evaluate(gtzan.task, test.uids, test.targets, probe_logits(r, test.features))["accuracy"]
                for r in sorted(train_grid(gtzan, configs, device), key=lambda r: r.config.uid())]

    cpu, cuda = accuracies("cpu"), accuracies("cuda")
    assert abs(np.mean(cpu) - np.mean(cuda)) < 0.03


def _raising_fused_adam(*args, **kwargs):
    raise RuntimeError("_fused_adam_ is not implemented for this device")


@pytest.mark.parametrize("damage", ["missing", "raises"])
def test_fused_adam_falls_back_to_the_stacked_update(monkeypatch, damage):
    """torch._fused_adam_ is private: where a torch build lacks it or it fails, the stacked
    update (public tensor ops only) is chosen automatically, before any training step."""
    assert fused_adam_works("cpu")  # this torch has the op: the fast CPU path is in use
    if damage == "missing":
        monkeypatch.delattr(torch, "_fused_adam_")
    else:
        monkeypatch.setattr(torch, "_fused_adam_", _raising_fused_adam)
    assert not fused_adam_works("cpu")
    data = synthetic_probe_data(BUILTIN_TASKS["gtzan_ff"], {"train": 40, "valid": 20, "test": 20}, dim=6)
    config = ProbeConfig(dataset="gtzan_ff", representation="rep", early_stopping=False, max_num_epochs=1)
    (result,) = train_grid(data, [config])
    assert result.stop_reason == "max_num_epochs" and result.error is None


def test_fused_and_fallback_adam_train_the_same_parameters(monkeypatch):
    """The same grid trained with the fused kernel and with the forced fallback: the random
    streams are shared (Adam draws none), so after the same steps the weights must agree."""
    data = synthetic_probe_data(BUILTIN_TASKS["magnatagatune"], {"train": 60, "valid": 30, "test": 30}, dim=10)
    configs = [ProbeConfig(dataset="magnatagatune", representation="rep", early_stopping=False, max_num_epochs=5,
                           batch_size=16, learning_rate=lr, l2_weight_decay=wd, hidden_layer_sizes=hidden)
               for lr, wd, hidden in [(1e-3, None, []), (1e-2, 1e-3, []), (3e-3, 1e-4, [12]), (1e-2, None, [12])]]
    fused = {r.config.uid(): r for r in train_grid(data, configs)}
    monkeypatch.delattr(torch, "_fused_adam_")
    fallback = {r.config.uid(): r for r in train_grid(data, configs)}
    for uid, ref in fused.items():
        got = fallback[uid]
        assert got.steps == ref.steps == 19  # the first step past 5 epochs: 19 * 16 / 60 > 5
        start = initial_weights(0, (10, *ref.config.hidden, 50))
        assert not torch.allclose(ref.state["output.weight"], start[-2], atol=1e-3)  # they did train
        assert _state_close(got.state, ref.state, 1e-5)
