"""A config's run is its own: the same minibatches, dropout, steps and weights whether it trains
alone, beside 2 or 4 group-mates, in the full grid, in a subset, or in a run resumed after a crash."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tunemir.probe.config import grid_configs
from tunemir.probe.data import ProbeDirs, load_probe_data
from tunemir.probe.runs import train_pending, write_grid
from tunemir.probe.tasks import BUILTIN_TASKS
from tunemir.probe.train import group_key, train_grid
from tunemir.testing import write_probe_dataset

#: Two architectures x five (lr, dropout) pairs: two groups of five configs (four group-mates each).
GRID = {"hidden_layer_sizes": [[], [16]], "learning_rate": [3e-3, 1e-2],
        "dropout_p": [0.25, 0.5, 0.3], "l2_weight_decay": [None], "early_stopping_boredom": [12]}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("invariance")
    write_probe_dataset(root, "gtzan_ff", "rep", BUILTIN_TASKS["gtzan_ff"],
                        {"train": 300, "valid": 120, "test": 120}, dim=12, seed=3)
    return ProbeDirs(root / "processed", root / "representations", root / "probes")


def _configs():
    return grid_configs("gtzan_ff", "rep", GRID)[:5] + grid_configs("gtzan_ff", "rep", GRID)[6:11]


def _same(a, b):
    assert (a.steps, a.evals, a.best_eval, a.stop_reason) == (b.steps, b.evals, b.best_eval, b.stop_reason)
    assert a.best_score == b.best_score
    for name in a.state:
        assert torch.equal(a.state[name], b.state[name]), name


def test_a_config_trains_the_same_alone_with_two_or_four_mates_and_in_the_grid(dirs):
    data = load_probe_data("gtzan_ff", "rep", dirs)
    configs = _configs()
    groups = {}
    for c in configs:
        groups.setdefault(group_key(c), []).append(c)
    assert sorted(len(g) for g in groups.values()) == [5, 5]
    full = {r.config.uid(): r for r in train_grid(data, configs)}
    # The dropout p of 0.3 is not a multiple of 1/256, so float noise is exercised beside byte noise.
    for target in (configs[0], configs[2], configs[7]):
        mates = groups[group_key(target)]
        others = [c for c in mates if c is not target]
        for subset in ([target], [target] + others[:2], others[1:3] + [target] + configs[5 if target in configs[:5] else 0:][:1]):
            got = {r.config.uid(): r for r in train_grid(data, subset)}
            _same(got[target.uid()], full[target.uid()])
    steps = {r.steps for r in full.values()}
    assert len(steps) > 1, "the configs should stop at different steps, or the test shows nothing"


def test_a_resumed_grid_ends_with_the_files_of_an_uninterrupted_one(dirs, tmp_path, monkeypatch):
    configs = _configs()
    clean = ProbeDirs(dirs.datasets, dirs.representations, tmp_path / "clean")
    crashed = ProbeDirs(dirs.datasets, dirs.representations, tmp_path / "crashed")
    for d in (clean, crashed):
        write_grid("gtzan_ff", "rep", d, GRID)
    # The grid folders hold all 12 configs; keep the 10 of `_configs` (two groups of five).
    for d in (clean, crashed):
        keep = {c.uid() for c in configs}
        for path in d.runs("gtzan_ff", "rep").glob("*.json"):
            if path.stem not in keep:
                path.unlink()
    assert train_pending("gtzan_ff", "rep", clean).ok
    import tunemir.probe.runs as runs

    saved = []
    original = runs.save_result

    def crash_after_three(folder, *args, **kwargs):
        if len(saved) == 3:
            raise KeyboardInterrupt
        saved.append(folder.name)
        return original(folder, *args, **kwargs)

    monkeypatch.setattr(runs, "save_result", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        train_pending("gtzan_ff", "rep", crashed)
    monkeypatch.setattr(runs, "save_result", original)
    resumed = train_pending("gtzan_ff", "rep", crashed)
    assert resumed.skipped == 3 and len(resumed.trained) == 7
    for config in configs:
        a, b = (d.runs("gtzan_ff", "rep") / config.uid() for d in (clean, crashed))
        for name in ("metrics.json", "test_metrics.json"):
            assert json.loads((a / name).read_text()) == json.loads((b / name).read_text())
        assert json.loads((a / "train.json").read_text())["steps"] == json.loads((b / "train.json").read_text())["steps"]
        wa, wb = load_file(str(a / "probe.safetensors")), load_file(str(b / "probe.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
