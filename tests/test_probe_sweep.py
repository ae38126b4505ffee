"""Layer sweeps under several seeds: one `probe train` for every layer and seed, the per-seed
selection, the report's mean, spread, intervals and layer curve, and `probe compare`."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from tunemir.cli import main
from tunemir.probe.data import ProbeDirs
from tunemir.probe.grid import GridError, select_best, write_grid
from tunemir.probe.runs import load_result
from tunemir.probe.summary import saved_probe_logits
from tunemir.probe.tasks import BUILTIN_TASKS
from tunemir.probe.train import ProbeResult, probe_logits
from tunemir.testing import write_probe_dataset

SIZES = {"train": 160, "valid": 60, "test": 60}
LAYERS = ("m@0", "m@1", "m@10")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Three layers of a model `m` on GTZAN-like data, the smoke grid trained under two seeds by one command."""
    root = tmp_path_factory.mktemp("sweep")
    for k, rep in enumerate(LAYERS):
        write_probe_dataset(root, "gtzan_ff", rep, BUILTIN_TASKS["gtzan_ff"], SIZES, dim=6, noise=0.5 + k)
    write_probe_dataset(root, "gtzan_ff", "other", BUILTIN_TASKS["gtzan_ff"], SIZES, dim=6)
    env = {"TUNEMIR_CACHE_DIR": str(root)}
    result = CliRunner().invoke(main, ["probe", "train", "gtzan_ff", "m@*", "--grid", "smoke", "--seeds", "2"], env=env)
    assert result.exit_code == 0, result.output
    return root, env, ProbeDirs(root / "processed", root / "representations", root / "probes"), result.output


def test_one_command_trains_every_matching_layer_under_every_seed(swept):
    root, env, dirs, output = swept
    lines = [line for line in output.splitlines() if line.startswith("gtzan_ff/")]
    assert [line.split(":")[0] for line in lines] == [f"gtzan_ff/{rep}" for rep in LAYERS]  # natural order
    assert all("trained 16 configs" in line for line in lines)
    assert not dirs.runs("gtzan_ff", "other").exists()  # not matched by m@*
    for rep in LAYERS:
        seeds = sorted(json.loads(p.read_text())["seed"] for p in dirs.runs("gtzan_ff", rep).glob("*.json"))
        assert seeds == [0] * 8 + [1] * 8
        info = [json.loads(p.read_text()) for p in dirs.runs("gtzan_ff", rep).glob("*/train.json")]
        assert len(info) == 16 and {i["precision"] for i in info} == {"fp32"}
    again = CliRunner().invoke(main, ["probe", "train", "gtzan_ff", "m@*", "--seeds", "2"], env=env)
    assert again.exit_code == 0 and again.output.count("nothing to do, all 16 configs") == 3


def test_selection_is_made_within_each_seed(swept):
    root, env, dirs, _ = swept
    with pytest.raises(GridError, match="seeds 0-1; pick one with --seed"):
        select_best("gtzan_ff", "m@1", dirs)
    for seed in (0, 1):
        best = select_best("gtzan_ff", "m@1", dirs, seed=seed, grid="smoke", expected_num_runs=8)
        cfg = json.loads((dirs.runs("gtzan_ff", "m@1") / best["uid"] / "cfg.json").read_text())
        assert cfg["seed"] == seed and best["seed"] == seed
    result = CliRunner().invoke(main, ["probe", "evaluate", "gtzan_ff", "m@1", "--seed", "1", "--grid", "smoke"],
                                env=env)
    assert result.exit_code == 0 and json.loads(result.output)["seed"] == 1
    missing = CliRunner().invoke(main, ["probe", "evaluate", "gtzan_ff", "m@1", "--seed", "5"], env=env)
    assert missing.exit_code == 1 and "--seeds 6" in missing.output


def test_the_report_gives_mean_spread_intervals_and_the_layer_curve(swept, tmp_path):
    root, env, dirs, _ = swept
    result = CliRunner().invoke(main, ["probe", "report", "--output-dir", str(tmp_path), "--bootstrap", "300"], env=env)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "results.md").read_text()
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    for rep in LAYERS:
        tests = [json.loads((dirs.runs("gtzan_ff", rep) / select_best("gtzan_ff", rep, dirs, seed=s)["uid"]
                             / "test_metrics.json").read_text())["accuracy"] for s in (0, 1)]
        row = next(r for r in rows if r["representation"] == rep)
        assert float(row["test_x100"]) == pytest.approx(100 * np.mean(tests), abs=1e-3)
        assert float(row["std_x100"]) == pytest.approx(100 * np.std(tests, ddof=1), abs=1e-3)
        assert row["seeds"] == "2"
        low, high = float(row["ci_low_x100"]), float(row["ci_high_x100"])
        assert low <= 100 * np.mean(tests) <= high and high - low > 1
        assert f"| {rep} | {100 * np.mean(tests):.1f} ± {100 * np.std(tests, ddof=1):.1f} |" in text
        assert f"| {rep} | [{low:.1f}, {high:.1f}] |" in text
    assert "## Layers" in text and "| m | GTZAN acc |" in text
    assert "ties on valid go to the lower valid loss, then the smaller config uid" in text
    assert (tmp_path / "layers.png").read_bytes()[:4] == b"\x89PNG"
    none = CliRunner().invoke(main, ["probe", "report", "--output-dir", str(tmp_path / "b0"), "--bootstrap", "0"],
                              env=env)
    assert none.exit_code == 0 and "bootstrap intervals" not in (tmp_path / "b0" / "results.md").read_text()


def test_compare_is_paired_on_the_same_test_items(swept):
    root, env, dirs, _ = swept
    same = CliRunner().invoke(main, ["probe", "compare", "gtzan_ff", "m@0", "m@0", "--bootstrap", "200"], env=env)
    assert same.exit_code == 0, same.output
    paired = json.loads(same.output)
    assert (paired["difference"], paired["low"], paired["high"], paired["p_a_not_better"]) == (0, 0, 0, 1.0)
    other = json.loads(CliRunner().invoke(main, ["probe", "compare", "gtzan_ff", "m@0", "m@10"], env=env).output)
    assert other["metric"] == "accuracy" and other["a_seeds"] == other["b_seeds"] == 2
    assert other["low"] <= other["difference"] <= other["high"] and other["test_items"] == SIZES["test"]


def test_the_reports_numpy_logits_equal_the_trainers(swept):
    root, env, dirs, _ = swept
    folder = dirs.runs("gtzan_ff", "m@1") / select_best("gtzan_ff", "m@1", dirs, seed=0)["uid"]
    config, state, scaler = load_result(folder)
    features = np.stack([np.load(p) for p in sorted(dirs.features("gtzan_ff", "m@1").glob("*.npy"))])
    result = ProbeResult(config, state, scaler, 0, 0, None, 0.0, "")
    assert np.allclose(saved_probe_logits(folder, features), probe_logits(result, features), atol=1e-5)


def test_more_seeds_extend_a_grid_and_patterns_must_match(swept, tmp_path):
    root, env, dirs, _ = swept
    fresh = ProbeDirs(dirs.datasets, dirs.representations, tmp_path / "probes")
    assert len(write_grid("gtzan_ff", "m@0", fresh, "smoke", seeds=2)) == 16
    assert len(write_grid("gtzan_ff", "m@0", fresh, "smoke", seeds=3)) == 24
    assert len(list(fresh.runs("gtzan_ff", "m@0").glob("*.json"))) == 24
    assert len(write_grid("gtzan_ff", "m@0", fresh, "smoke")) == 8  # fewer seeds: nothing is removed
    with pytest.raises(GridError, match=r"already holds the smoke grid \(8 configs\) under seeds 0-2, 24 in all"):
        write_grid("gtzan_ff", "m@0", fresh, "paper")
    result = CliRunner().invoke(main, ["probe", "train", "gtzan_ff", "x@*", "--grid", "smoke"], env=env)
    assert result.exit_code == 1 and "matches no features folder" in result.output and "m@10" in result.output
