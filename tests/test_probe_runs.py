"""Probe inputs and outputs on disk: bad data, result folders, resume, selection, CLI, report."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from tunemir.cli import main
from tunemir.probe.data import ProbeDataError, ProbeDirs, load_probe_data
from tunemir.probe.metrics import evaluate
from tunemir.probe.runs import GridError, load_result, select_best, train_pending, write_grid
from tunemir.probe.config import ProbeConfig, grid_configs
from tunemir.probe.tasks import BUILTIN_TASKS, Task, TaskError, load_task
from tunemir.probe.train import ProbeResult, probe_logits
from tunemir.testing import write_probe_dataset

SIZES = {"train": 200, "valid": 80, "test": 80}


def _dataset(root, dataset="gtzan_ff", task=None, **kwargs):
    write_probe_dataset(root, dataset, "rep", task or BUILTIN_TASKS[dataset], SIZES, dim=8, **kwargs)
    return ProbeDirs(root / "processed", root / "representations", root / "probes")


def _features(dirs, dataset="gtzan_ff"):
    return dirs.features(dataset, "rep")


def _meta(dirs, dataset="gtzan_ff"):
    return json.loads((dirs.dataset(dataset) / "meta.json").read_text())


def _write_meta(dirs, meta, dataset="gtzan_ff"):
    (dirs.dataset(dataset) / "meta.json").write_text(json.dumps(meta))


def _first_uid(dirs, split="train"):
    return sorted(u for u, e in _meta(dirs).items() if e["split"] == split)[0]


@pytest.mark.parametrize("damage, message", [
    ("missing", "have no features"),
    ("length", "different lengths"),
    ("nan", "NaN or infinite"),
    ("inf", "NaN or infinite"),
    ("label", "not one of the task's labels"),
    ("empty", "split of .* is empty"),
    ("corrupt", "cannot be used"),
])
def test_bad_inputs_name_the_uid_and_the_fix_and_train_nothing(tmp_path, damage, message):
    dirs = _dataset(tmp_path)
    uid = _first_uid(dirs)
    path = _features(dirs) / f"{uid}.npy"
    if damage == "missing":
        path.unlink()
    elif damage == "length":
        np.save(path, np.zeros(9, np.float32))
    elif damage in ("nan", "inf"):
        vector = np.load(path)
        vector[2] = np.nan if damage == "nan" else np.inf
        np.save(path, vector)
    elif damage == "label":
        meta = _meta(dirs)
        meta[uid]["y"] = "polka"
        _write_meta(dirs, meta)
    elif damage == "empty":
        meta = {u: e for u, e in _meta(dirs).items() if e["split"] != "valid"}
        _write_meta(dirs, meta)
    elif damage == "corrupt":
        path.write_bytes(b"not an npy file")
    write_grid("gtzan_ff", "rep", dirs, "smoke")
    with pytest.raises(ProbeDataError, match=message) as err:
        train_pending("gtzan_ff", "rep", dirs, device="cpu", progress=False)
    assert "gtzan_ff" in str(err.value)
    if damage not in ("empty",):
        assert uid in str(err.value)
    assert not [p for p in dirs.runs("gtzan_ff", "rep").iterdir() if p.is_dir()]


def test_missing_meta_and_unknown_dataset_are_explained(tmp_path):
    dirs = ProbeDirs(tmp_path / "processed", tmp_path / "representations", tmp_path / "probes")
    with pytest.raises(ProbeDataError, match="does not exist.*datasets-dir"):
        load_probe_data("gtzan_ff", "rep", dirs)
    dirs = _dataset(tmp_path, "mydata", task=Task("mydata", "multiclass", 3, ("a", "b", "c")))
    with pytest.raises(TaskError, match="no task.*task.json"):
        load_probe_data("mydata", "rep", dirs)


def test_mtt_tag_missing_from_valid_is_refused_before_training(tmp_path):
    dirs = _dataset(tmp_path, "magnatagatune")
    meta = _meta(dirs, "magnatagatune")
    for entry in meta.values():
        if entry["split"] == "valid":
            entry["y"] = [t for t in entry["y"] if t != "sitar"]
    _write_meta(dirs, meta, "magnatagatune")
    with pytest.raises(ProbeDataError, match="'sitar'.*undefined"):
        load_probe_data("magnatagatune", "rep", dirs)


def test_custom_task_json(tmp_path):
    task = Task("moods", "multilabel", 3, ("happy", "sad", "calm"))
    dirs = _dataset(tmp_path, "moods", task=task, write_task_json=True)
    data = load_probe_data("moods", "rep", dirs)
    assert data.task == task and data.task.primary == "auc_roc"
    (dirs.dataset("moods") / "task.json").write_text('{"output_type": "ranking", "labels": null, "num_outputs": 2}')
    with pytest.raises(TaskError, match="task.json.*output_type 'ranking'"):
        load_probe_data("moods", "rep", dirs)


@pytest.mark.slow
def test_result_folders_hold_no_pickles_and_reproduce_their_metrics(tmp_path):
    dirs = _dataset(tmp_path, "emomusic")
    configs = write_grid("emomusic", "rep", dirs, "smoke")
    summary = train_pending("emomusic", "rep", dirs, device="cpu", progress=False)
    assert summary.ok and len(summary.trained) == len(configs) == 8
    data = load_probe_data("emomusic", "rep", dirs)
    for config in configs:
        folder = dirs.runs("emomusic", "rep") / config.uid()
        assert json.loads((folder / "cfg.json").read_text()) == config
        loaded_config, state, scaler = load_result(folder)
        assert set(load_file(str(folder / "probe.safetensors"))) == set(state)
        assert ("hidden_0.weight" in state) == bool(config["hidden_layer_sizes"])
        assert scaler.standardize == config["data_standardization"]
        result = ProbeResult(loaded_config, state, scaler, 0, 0, None, 0.0, "")
        for split, name in (("valid", "metrics.json"), ("test", "test_metrics.json")):
            part = data.splits[split]
            expected = evaluate(data.task, part.uids, part.targets, probe_logits(result, part.features))
            assert json.loads((folder / name).read_text()) == pytest.approx(expected)
        train_info = json.loads((folder / "train.json").read_text())
        assert train_info["steps"] % 8 == 0 and train_info["steps"] >= 8 * 33


@pytest.mark.slow
def test_second_run_does_nothing_and_evaluate_picks_the_best(tmp_path):
    dirs = _dataset(tmp_path)
    write_grid("gtzan_ff", "rep", dirs, "smoke")
    assert len(train_pending("gtzan_ff", "rep", dirs, device="cpu", progress=False).trained) == 8
    again = train_pending("gtzan_ff", "rep", dirs, device="cpu", progress=False)
    assert (again.trained, again.skipped) == ([], 8)
    best = select_best("gtzan_ff", "rep", dirs, split="test", expected_num_runs=8)
    folder = dirs.runs("gtzan_ff", "rep")
    valid = {p.name: json.loads((p / "metrics.json").read_text()) for p in folder.iterdir() if p.is_dir()}
    top = max(v["accuracy"] for v in valid.values())
    tied = sorted((v["loss"], uid) for uid, v in valid.items() if v["accuracy"] == top)
    assert best["uid"] == tied[0][1]  # ties: lower valid loss, then uid
    assert best["metrics"] == json.loads((folder / best["uid"] / "test_metrics.json").read_text())
    with pytest.raises(GridError, match="8 trained configs, expected 216") as err:
        select_best("gtzan_ff", "rep", dirs, expected_num_runs=216)
    # It says what the folder holds and what helps; retraining (all 8 are done) would not.
    message = str(err.value)
    assert "holds the smoke grid (8 configs), all trained" in message
    assert "--expected-num-runs 8" in message and "--grid paper --probes-dir" in message
    assert "probe train" not in message
    # A grid folder holds one grid: the paper grid is not written beside the smoke grid.
    with pytest.raises(GridError, match=r"already holds the smoke grid \(8 configs\), 8 of them trained.*--probes-dir"):
        write_grid("gtzan_ff", "rep", dirs, "paper")
    smoke = sorted(c.uid() for c in grid_configs("gtzan_ff", "rep", "smoke"))
    assert sorted(p.stem for p in folder.glob("*.json")) == smoke  # nothing of the paper grid was written
    assert len(write_grid("gtzan_ff", "rep", dirs, "smoke")) == 8  # the same grid again is fine


@pytest.mark.slow
def test_killed_grid_resumes_without_redoing_finished_configs(tmp_path):
    dirs = _dataset(tmp_path, "magnatagatune")
    env = {**os.environ, "TUNEMIR_CACHE_DIR": str(tmp_path)}
    runner = CliRunner()
    assert runner.invoke(main, ["probe", "grid", "magnatagatune", "rep", "--grid", "smoke"], env=env).exit_code == 0
    folder = dirs.runs("magnatagatune", "rep")
    proc = subprocess.Popen([sys.executable, "-m", "tunemir", "probe", "train", "magnatagatune", "rep",
                             "--device", "cpu"], env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert 1 <= len(finished) < 8, "the kill should land mid-grid"
    for name in finished:
        assert sorted(f.name for f in (folder / name).iterdir()) == sorted(
            ["cfg.json", "metrics.json", "probe.safetensors", "scaler.npz", "test_metrics.json", "train.json"])
    result = runner.invoke(main, ["probe", "train", "magnatagatune", "rep"], env=env)
    assert result.exit_code == 0, result.output
    assert f"trained {8 - len(finished)} configs" in result.output
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_dir()}
    assert len(after) == 8 and all(after[n] == t for n, t in finished.items())
    result = runner.invoke(main, ["probe", "train", "magnatagatune", "rep"], env=env)
    assert "nothing to do" in result.output


@pytest.mark.slow
def test_cli_end_to_end_with_report(tmp_path):
    env = {"TUNEMIR_CACHE_DIR": str(tmp_path)}
    runner = CliRunner()
    for dataset in ("gtzan_ff", "giantsteps_clips"):
        _dataset(tmp_path, dataset)
        assert runner.invoke(main, ["probe", "grid", dataset, "rep", "--grid", "smoke"],
                             env=env).exit_code == 0
        result = runner.invoke(main, ["probe", "train", dataset, "rep", "--device", "cpu"], env=env)
        assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["probe", "evaluate", "giantsteps_clips", "rep", "--expected-num-runs", "8"], env=env)
    assert result.exit_code == 0, result.output
    best = json.loads(result.output)
    assert best["metrics"]["strategy"] in ("vote", "max", "gmean", "mean")
    result = runner.invoke(main, ["probe", "report", "--output-dir", str(tmp_path / "report")], env=env)
    assert result.exit_code == 0, result.output
    table = (tmp_path / "report" / "results.md").read_text()
    assert "| rep |" in table and f"{100 * best['metrics']['score']:.1f}" in table
    assert (tmp_path / "report" / "valid_scores.png").read_bytes()[:4] == b"\x89PNG"
    assert "giantsteps_clips" in (tmp_path / "report" / "results.csv").read_text()
    result = runner.invoke(main, ["probe", "train", "emomusic", "rep"], env=env)
    assert result.exit_code != 0 and "tunemir probe grid emomusic rep" in result.output


@pytest.mark.slow
def test_report_puts_paper_numbers_beside_ours(tmp_path):
    dirs = _dataset(tmp_path)
    write_probe_dataset(tmp_path, "gtzan_ff", "tune", BUILTIN_TASKS["gtzan_ff"], SIZES, dim=8)
    write_grid("gtzan_ff", "tune", dirs, "smoke")
    train_pending("gtzan_ff", "tune", dirs, device="cpu", progress=False)
    from tunemir.probe.report import build_report
    paths = build_report(dirs, tmp_path / "out")
    lines = paths["markdown"].read_text().splitlines()
    row = [line for line in lines if line.startswith("| tune |")][0]
    assert "(67.6)" in row  # the GTZAN paper value for TUNe
    assert lines[0] == "| representation | GTZAN acc |"  # only the paper's columns that have results


@pytest.mark.slow
def test_leftover_temporary_folders_are_ignored_and_cleaned(tmp_path):
    import shutil

    dirs = _dataset(tmp_path)
    configs = write_grid("gtzan_ff", "rep", dirs, "smoke")
    train_pending("gtzan_ff", "rep", dirs, device="cpu", progress=False)
    folder = dirs.runs("gtzan_ff", "rep")
    # A run killed between writing a result folder and renaming it leaves a complete copy.
    leftover = folder / f".{configs[0].uid()}.tunemir-tmp-abc"
    shutil.copytree(folder / configs[0].uid(), leftover)
    assert select_best("gtzan_ff", "rep", dirs, expected_num_runs=8)["num_runs"] == 8
    shutil.rmtree(folder / configs[1].uid())
    with pytest.raises(GridError, match="7 trained configs, expected 8.*1 still untrained; finish the grid with: "
                                        "tunemir probe train gtzan_ff rep"):
        select_best("gtzan_ff", "rep", dirs, expected_num_runs=8)
    summary = train_pending("gtzan_ff", "rep", dirs, device="cpu", progress=False)
    assert summary.trained == [configs[1].uid()] and not leftover.exists()


@pytest.mark.slow
def test_report_rows_follow_the_extracted_model_and_filters(tmp_path):
    """Self-trained weights extracted under another name sit beside the paper row of their model;
    --dataset/--representation narrow the report."""
    from tunemir.probe.report import build_report

    dirs = _dataset(tmp_path)
    for rep in ("mine", "other", "mnn", "jk"):
        write_probe_dataset(tmp_path, "gtzan_ff", rep, BUILTIN_TASKS["gtzan_ff"], SIZES, dim=8)
        write_grid("gtzan_ff", rep, dirs, "smoke")
        train_pending("gtzan_ff", rep, dirs, device="cpu", progress=False)
    (dirs.features("gtzan_ff", "mine") / "tunemir-manifest.json").write_text('{"model": "tune_plus", "layer": 0}')
    (dirs.features("gtzan_ff", "other") / "tunemir-manifest.json").write_text('{"model": "tune_plus", "layer": 3}')
    (dirs.features("gtzan_ff", "mnn") / "tunemir-manifest.json").write_text('{"model": "musicnn", "layer": 0}')
    (dirs.features("gtzan_ff", "jk") / "tunemir-manifest.json").write_text('{"model": "jukebox", "source": "x"}')
    paths = build_report(dirs, tmp_path / "out")
    lines = paths["markdown"].read_text().splitlines()
    # musicnn (MSD_musicnn_big) sits beside the jukemir paper's row, marked as not yet checked.
    mnn = next(line for line in lines if line.startswith("| mnn (paper: musicnn) † |"))
    assert "(79.0)" in mnn and "jukemir paper's (Castellon et al. 2021)" in paths["markdown"].read_text()
    assert any(line.startswith("†: the paper numbers of this row are transcribed") for line in lines)
    assert "(79.7)" in next(line for line in lines if line.startswith("| jk (paper: jukebox) |"))
    mine = next(line for line in lines if line.startswith("| mine (paper: tune_plus) |"))
    other = next(line for line in lines if line.startswith("| other |"))
    assert "(64.5)" in mine and "(" not in other.split("|")[3]  # GTZAN: TUNe+ 64.5; a layer-3 tap has no row
    assert paths["test_plot"].read_bytes()[:4] == b"\x89PNG"
    paths = build_report(dirs, tmp_path / "only", representations=("other",))
    assert "mine" not in paths["markdown"].read_text()
    with pytest.raises(GridError, match="no trained probes .* for emomusic"):
        build_report(dirs, tmp_path / "none", datasets=("emomusic",))


@pytest.mark.slow
def test_a_diverging_multilabel_config_fails_alone(tmp_path):
    """A learning rate that overflows the weights gives NaN logits on MTT: that config is
    recorded as failed and the rest of the grid trains (a NaN logit used to stop the grid)."""
    dirs = _dataset(tmp_path, "magnatagatune")
    folder = dirs.runs("magnatagatune", "rep")
    folder.mkdir(parents=True)
    configs = [ProbeConfig(dataset="magnatagatune", representation="rep", learning_rate=lr, hidden_layer_sizes=[8],
                           early_stopping_boredom=4) for lr in (1e-2, 3e-3, 1e38)]
    for config in configs:
        (folder / f"{config.uid()}.json").write_text(config.to_json())
    summary = train_pending("magnatagatune", "rep", dirs, device="cpu", progress=False)
    diverged = configs[2].uid()
    assert sorted(summary.trained) == sorted(c.uid() for c in configs[:2])
    assert list(summary.failed) == [diverged]
    assert "NaN valid auc_roc" in summary.failed[diverged] and "diverged" in summary.failed[diverged]
    assert not (folder / diverged).exists() and (folder / f"{diverged}.json").exists()
    assert select_best("magnatagatune", "rep", dirs)["num_runs"] == 2


def test_a_constant_regression_target_is_refused_before_training(tmp_path):
    dirs = _dataset(tmp_path, "emomusic")
    meta = _meta(dirs, "emomusic")
    for entry in meta.values():
        if entry["split"] == "valid":
            entry["y"][1] = 0.25
    _write_meta(dirs, meta, "emomusic")
    with pytest.raises(ProbeDataError, match=r"valid split the regression target 'valence' \(= 0.25\) is the same "
                                             r"for all 80 clips, so its R2 is undefined"):
        load_probe_data("emomusic", "rep", dirs)


@pytest.mark.parametrize("spec, message", [
    ({"output_type": "multiclass", "labels": "abc"}, "labels must be a list of strings"),
    ({"output_type": "multiclass", "labels": ["a", "b", "a"]}, "labels repeat 'a'"),
    ({"output_type": "multiclass", "labels": ["a", "b"], "num_outputs": "2"}, "num_outputs must be a whole number"),
    ({"labels": ["a", "b"]}, "output_type is missing"),
    (["multiclass"], "holds a JSON list"),
])
def test_task_json_fields_are_checked_for_their_type(tmp_path, spec, message):
    """A string where the labels list belongs used to become one label per character."""
    dataset_dir = tmp_path / "mine"
    dataset_dir.mkdir()
    (dataset_dir / "task.json").write_text(json.dumps(spec))
    with pytest.raises(TaskError, match=message):
        load_task("mine", dataset_dir)


@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_result_folders_have_the_umask_modes(tmp_path, umask, file_mode, folder_mode):
    """A shared probes cache is readable by the group and others as the umask allows: no file of a
    result folder is owner-only (safetensors' own save_file writes 0600)."""
    dirs = _dataset(tmp_path)
    configs = write_grid("gtzan_ff", "rep", dirs, "smoke")[:1]
    for path in dirs.runs("gtzan_ff", "rep").glob("*.json"):
        if path.stem != configs[0].uid():
            path.unlink()
    old = os.umask(umask)
    try:
        assert train_pending("gtzan_ff", "rep", dirs, device="cpu", progress=False).ok
    finally:
        os.umask(old)
    folder = dirs.runs("gtzan_ff", "rep") / configs[0].uid()
    assert folder.stat().st_mode & 0o777 == folder_mode
    files = sorted(folder.iterdir())
    assert {p.name for p in files} >= {"probe.safetensors", "scaler.npz", "metrics.json"}
    assert {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: file_mode for p in files}
