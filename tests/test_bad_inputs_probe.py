"""Bad inputs of `tunemir probe grid/train/evaluate/report`: each exits cleanly with a message
naming the file, key or option at fault and the fix.

Every case gets a tiny dataset in jukemir's layout (a few clips, 3-d features) under its own
folder; the cases of `evaluate` and `report` copy one smoke grid trained once for the module.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tunemir.probe.config import ProbeConfig
from tunemir.probe.data import ProbeDirs
from tunemir.probe.runs import train_pending, write_grid
from tunemir.probe.tasks import BUILTIN_TASKS
from tunemir.testing import write_probe_dataset
from tunemir.testing.bad_inputs import BadInput, check_bad_input

SIZES = {"train": 12, "valid": 6, "test": 6}
DIRS = ("--datasets-dir", "{tmp}/processed", "--representations-dir", "{tmp}/representations",
        "--probes-dir", "{tmp}/probes")


def _dirs(tmp: Path) -> ProbeDirs:
    return ProbeDirs(tmp / "processed", tmp / "representations", tmp / "probes")


def _meta_path(tmp: Path, dataset: str = "gtzan_ff") -> Path:
    return tmp / "processed" / dataset / "meta.json"


def _features(tmp: Path, dataset: str = "gtzan_ff") -> Path:
    return tmp / "representations" / dataset / "rep"


# --- setups -----------------------------------------------------------------------------------

def dataset(tmp: Path, name: str = "gtzan_ff", grid: bool = True) -> dict:
    """A tiny dataset of `name` (a built-in task) with 3-d features and, with `grid`, the smoke grid."""
    write_probe_dataset(tmp, name, "rep", BUILTIN_TASKS[name], SIZES, dim=3, seed=2)
    if grid:
        write_grid(name, "rep", _dirs(tmp), "smoke")
    meta = json.loads(_meta_path(tmp, name).read_text())
    uid = sorted(u for u, e in meta.items() if e["split"] == "train")[0]
    return {"uid": uid, "meta": str(_meta_path(tmp, name)), "features": str(_features(tmp, name))}


def _edit_meta(tmp: Path, edit, name: str = "gtzan_ff") -> dict:
    subs = dataset(tmp, name)
    meta = json.loads(_meta_path(tmp, name).read_text())
    meta = edit(meta, subs["uid"])
    _meta_path(tmp, name).write_text(json.dumps(meta))
    return subs


def meta_edit(edit, name="gtzan_ff"):
    return lambda tmp: _edit_meta(tmp, edit, name)


def _set(uid_field_value):
    def edit(meta, uid):
        field, value = uid_field_value
        meta[uid][field] = value
        return meta
    return edit


def _drop(field):
    def edit(meta, uid):
        del meta[uid][field]
        return meta
    return edit


def meta_text(text: str | bytes):
    def setup(tmp):
        subs = dataset(tmp)
        _meta_path(tmp).write_bytes(text if isinstance(text, bytes) else text.encode())
        return subs
    return setup


def meta_is_folder(tmp):
    subs = dataset(tmp)
    _meta_path(tmp).unlink()
    _meta_path(tmp).mkdir()
    return subs


def no_meta(tmp):
    subs = dataset(tmp)
    _meta_path(tmp).unlink()
    return subs


def all_valid_same(field_index: int):
    def edit(meta, uid):
        for entry in meta.values():
            if entry["split"] == "valid":
                entry["y"][field_index] = 0.5
        return meta
    return edit


def no_test_split(meta, uid):
    return {u: e for u, e in meta.items() if e["split"] != "test"}


def feature_edit(edit):
    def setup(tmp):
        subs = dataset(tmp)
        edit(Path(subs["features"]) / f"{subs['uid']}.npy")
        return subs
    return setup


def _nan_vector(path):
    np.save(path, np.array([0.0, np.nan, 1.0], np.float32))


def _long_vector(path):
    np.save(path, np.zeros(5, np.float32))


def _matrix(path):
    np.save(path, np.zeros((3, 3), np.float32))


def _garbage(path):
    path.write_bytes(b"\x93NUMPY garbage")


def _pickled(path):
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def no_features_folder(tmp):
    subs = dataset(tmp)
    shutil.rmtree(subs["features"])
    (_features(tmp).parent / "chroma").mkdir()
    return subs


def empty_features_folder(tmp):
    subs = dataset(tmp)
    for path in Path(subs["features"]).glob("*.npy"):
        path.unlink()
    return subs


def task_json(spec):
    def setup(tmp):
        write_probe_dataset(tmp, "gtzan_ff", "rep", BUILTIN_TASKS["gtzan_ff"], SIZES, dim=3, seed=2)
        shutil.move(tmp / "processed" / "gtzan_ff", tmp / "processed" / "mine")
        shutil.move(tmp / "representations" / "gtzan_ff", tmp / "representations" / "mine")
        path = tmp / "processed" / "mine" / "task.json"
        path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
        return {"task": str(path)}
    return setup


def config_file(text_or_config):
    """The smoke grid plus one more config file (text, or a ProbeConfig under its own uid)."""
    def setup(tmp):
        subs = dataset(tmp)
        folder = tmp / "probes" / "gtzan_ff" / "rep"
        if isinstance(text_or_config, str):
            path = folder / ("0" * 40 + ".json")
            path.write_text(text_or_config)
        else:
            path = folder / f"{text_or_config.uid()}.json"
            path.write_text(json.dumps(text_or_config))
        return {**subs, "config": str(path)}
    return setup


def renamed_config(tmp):
    subs = dataset(tmp)
    folder = tmp / "probes" / "gtzan_ff" / "rep"
    first = sorted(folder.glob("*.json"))[0]
    shutil.copy(first, folder / ("f" * 40 + ".json"))
    return {**subs, "config": str(folder / ("f" * 40 + ".json"))}


def a_file(tmp):
    (tmp / "afile").write_text("not a folder\n")


@functools.lru_cache(maxsize=1)
def _trained_grid() -> Path:
    """One smoke grid trained on the tiny GTZAN set, shared by the evaluate/report cases."""
    root = Path(tempfile.mkdtemp(prefix="tunemir-probe-bad-inputs-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    dataset(root)
    summary = train_pending("gtzan_ff", "rep", _dirs(root), device="cpu", progress=False)
    assert summary.ok and len(summary.trained) == 8
    return root


def trained(tmp):
    root = _trained_grid()
    for part in ("processed", "representations", "probes"):
        shutil.copytree(root / part, tmp / part, dirs_exist_ok=True)
    folder = tmp / "probes" / "gtzan_ff" / "rep"
    return {"run": str(sorted(p for p in folder.iterdir() if p.is_dir())[0])}


def trained_with(edit):
    def setup(tmp):
        subs = trained(tmp)
        edit(Path(subs["run"]))
        return subs
    return setup


def trained_and_a_file(tmp):
    a_file(tmp)
    return trained(tmp)


def _corrupt_metrics(run: Path):
    (run / "metrics.json").write_text("{not json")


def _list_metrics(run: Path):
    (run / "metrics.json").write_text("[1, 2]")


# --- cases ------------------------------------------------------------------------------------

def G(*args):
    return ("probe", "grid", *args, *DIRS)


def T(*args, dataset="gtzan_ff"):
    return ("probe", "train", dataset, "rep", "--device", "cpu", *args, *DIRS)


def E(*args):
    return ("probe", "evaluate", "gtzan_ff", "rep", *args, *DIRS)


def R(*args):
    return ("probe", "report", *args, *DIRS)


def C(a="rep", b="rep", *args):
    return ("probe", "compare", "gtzan_ff", a, b, *args, *DIRS)


def features_gone(tmp):
    subs = trained(tmp)
    shutil.rmtree(tmp / "representations" / "gtzan_ff" / "rep")
    return subs


def dataset_without_grid(tmp):
    return dataset(tmp, grid=False)


CASES = [
    # probe grid
    BadInput("grid-unknown-dataset", G("gtzan", "rep"), ("'gtzan'", "gtzan_ff", "task.json"), 1),
    BadInput("grid-dataset-is-a-path", G("../gtzan_ff", "rep"), ("DATASET", "plain name"), 2),
    BadInput("grid-empty-representation", G("gtzan_ff", ""), ("REPRESENTATION", "plain name"), 2),
    BadInput("grid-hidden-representation", G("gtzan_ff", ".rep"), ("'.rep'", "plain name"), 2),
    BadInput("grid-unknown-grid", G("gtzan_ff", "rep", "--grid", "huge"), ("--grid", "paper", "smoke"), 2),
    BadInput("grid-paper-over-smoke", G("gtzan_ff", "rep", "--grid", "paper"),
             ("already holds the smoke grid", "--probes-dir", "rm -r"), 1, setup=dataset),
    BadInput("grid-probes-dir-is-a-file", ("probe", "grid", "gtzan_ff", "rep", "--probes-dir", "{tmp}/afile"),
             ("--probes-dir", "is a file"), 2, setup=a_file),
    BadInput("grid-probes-dir-under-a-file", ("probe", "grid", "gtzan_ff", "rep", "--probes-dir", "{tmp}/afile/p"),
             ("afile", "writable"), 1, setup=a_file),
    BadInput("grid-task-json-labels-a-string", G("mine", "rep"), ("{task}", "labels must be a list of strings"), 1,
             setup=task_json({"output_type": "multiclass", "labels": "abc"})),
    BadInput("grid-task-json-not-json", G("mine", "rep"), ("{task}", "Fix the file"), 1, setup=task_json("{oops")),
    BadInput("grid-task-json-unknown-type", G("mine", "rep"), ("{task}", "ranking", "multiclass"), 1,
             setup=task_json({"output_type": "ranking", "labels": ["a", "b"]})),
    # probe train: options and the grid
    BadInput("train-device-banana", T("--device", "banana"), ("--device", "'banana'", "cpu"), 2, setup=dataset),
    BadInput("train-device-cuda-99", T("--device", "cuda:99"), ("cuda:99", "--device cpu"), 2, setup=dataset),
    BadInput("train-device-negative-index", T("--device", "cuda:-1"), ("--device", "cuda:N"), 2, setup=dataset),
    BadInput("train-no-grid", T(), ("no probe configs", "tunemir probe grid gtzan_ff rep"), 1,
             setup=functools.partial(dataset, grid=False)),
    BadInput("train-config-not-json", T(), ("{config}", "not a probe config", "write the grid again"), 1,
             setup=config_file("{oops")),
    BadInput("train-config-unknown-field", T(), ("{config}", "learning_rat", "valid fields"), 1,
             setup=config_file('{"dataset": "gtzan_ff", "representation": "rep", "learning_rat": 1}')),
    BadInput("train-config-under-another-uid", T(), ("{config}", "named by their own uid"), 1, setup=renamed_config),
    BadInput("train-config-never-stops", T(), ("never stop", "max_num_epochs"), 1,
             setup=config_file('{"dataset": "gtzan_ff", "representation": "rep", "early_stopping": false}')),
    BadInput("train-config-unknown-metric", T(), ("early_stopping_metric 'f1'", "choose from", "accuracy"), 1,
             setup=config_file(ProbeConfig(dataset="gtzan_ff", representation="rep", early_stopping_metric="f1"))),
    # probe train: meta.json
    BadInput("train-meta-missing", T(), ("{meta}", "does not exist", "--datasets-dir"), 1, setup=no_meta),
    BadInput("train-meta-is-a-folder", T(), ("{meta}", "is a folder"), 1, setup=meta_is_folder),
    BadInput("train-meta-not-json", T(), ("{meta}", "not valid JSON"), 1, setup=meta_text('{"a": ')),
    BadInput("train-meta-not-utf8", T(), ("{meta}", "not valid JSON"), 1, setup=meta_text(b"{\"\xff\": 1}")),
    BadInput("train-meta-is-a-list", T(), ("{meta}", "JSON list", "must be an object"), 1,
             setup=meta_text('[{"split": "train", "y": "rock"}]')),
    BadInput("train-meta-entry-a-string", T(), ("{meta}", "uid {uid}", '"split"'), 1,
             setup=meta_edit(lambda meta, uid: {**meta, uid: "train"})),
    BadInput("train-meta-entry-without-split", T(), ("{meta}", "uid {uid}", '"split"'), 1,
             setup=meta_edit(_drop("split"))),
    BadInput("train-meta-entry-without-label", T(), ("{meta}", "uid {uid}", 'no "y"'), 1,
             setup=meta_edit(_drop("y"))),
    BadInput("train-split-capitalised", T(), ("{meta}", "'Train'", "lower case"), 1,
             setup=meta_edit(_set(("split", "Train")))),
    BadInput("train-split-validation", T(), ("'validation'", '"valid" not "validation"'), 1,
             setup=meta_edit(_set(("split", "validation")))),
    BadInput("train-no-test-split", T(), ("test split", "{meta}", "empty"), 1, setup=meta_edit(no_test_split)),
    BadInput("train-unknown-genre", T(), ("{meta}", "uid {uid}", "'polka'", "Fix meta.json"), 1,
             setup=meta_edit(_set(("y", "polka")))),
    BadInput("train-genre-as-a-list", T(), ("uid {uid}", "['rock']", "Fix meta.json"), 1,
             setup=meta_edit(_set(("y", ["rock"])))),
    BadInput("train-tags-as-a-string", T(dataset="magnatagatune"), ("uid {uid}", "must be a list of tags"), 1,
             setup=meta_edit(_set(("y", "guitar")), "magnatagatune")),
    BadInput("train-regression-target-a-string", T(dataset="emomusic"), ("uid {uid}", "2 finite number(s)"), 1,
             setup=meta_edit(_set(("y", "high")), "emomusic")),
    BadInput("train-regression-target-nan", T(dataset="emomusic"), ("uid {uid}", "finite"), 1,
             setup=meta_edit(_set(("y", [float("nan"), 0.0])), "emomusic")),
    BadInput("train-regression-target-too-short", T(dataset="emomusic"), ("uid {uid}", "expected 2"), 1,
             setup=meta_edit(_set(("y", [0.5])), "emomusic")),
    BadInput("train-regression-valid-constant", T(dataset="emomusic"),
             ("valid split", "'arousal'", "R2 is undefined", "Check the labels"), 1,
             setup=meta_edit(all_valid_same(0), "emomusic")),
    # probe train: features
    BadInput("train-unknown-representation", T(), ("{features}", "does not exist", "chroma", "tunemir extract"), 1,
             setup=no_features_folder),
    BadInput("train-features-folder-empty", T(), ("{features}", "holds no .npy", "tunemir extract"), 1,
             setup=empty_features_folder),
    BadInput("train-feature-missing", T(), ("uid {uid}", "have no features", "tunemir extract"), 1,
             setup=feature_edit(lambda path: path.unlink())),
    BadInput("train-feature-nan", T(), ("uid {uid}", "NaN or infinite", "extract again"), 1,
             setup=feature_edit(_nan_vector)),
    BadInput("train-feature-other-length", T(), ("5-d: 1", "uid {uid}", "Re-extract"), 1,
             setup=feature_edit(_long_vector)),
    BadInput("train-feature-a-matrix", T(), ("{uid}.npy", "expected one vector", "extract again"), 1,
             setup=feature_edit(_matrix)),
    BadInput("train-feature-corrupt", T(), ("{uid}.npy", "cannot be used", "extract again"), 1,
             setup=feature_edit(_garbage)),
    BadInput("train-feature-pickled-objects", T(), ("{uid}.npy", "cannot be used", "extract again"), 1,
             setup=feature_edit(_pickled)),
    BadInput("train-seeds-zero", T("--seeds", "0"), ("--seeds", "x>=1"), 2),
    BadInput("train-unknown-precision", T("--precision", "fp16"), ("--precision", "'fp32'", "'bf16'"), 2),
    BadInput("train-pattern-matches-nothing", ("probe", "train", "gtzan_ff", "tune@*", *DIRS),
             ("'tune@*'", "matches no features folder", "representations there: rep"), 1, setup=dataset),
    BadInput("train-seeds-of-no-grid", T("--seeds", "2"), ("holds no configs of a named grid", "--grid paper"), 1,
             setup=dataset_without_grid),
    # probe evaluate
    BadInput("evaluate-seed-not-trained", E("--seed", "3"), ("no probe trained under seed 3", "only under seed 0",
                                                             "--seeds 4"), 1, setup=trained),
    BadInput("evaluate-nothing-trained", E(), ("no trained probes yet", "tunemir probe train gtzan_ff rep"), 1,
             setup=dataset),
    BadInput("evaluate-no-grid-folder", E(), ("does not exist", "tunemir probe grid gtzan_ff rep"), 1),
    BadInput("evaluate-216-on-a-smoke-grid", E("--expected-num-runs", "216"),
             ("the smoke grid (8 configs), all trained", "--expected-num-runs 8", "--grid paper --probes-dir"), 1,
             setup=trained),
    BadInput("evaluate-paper-grid-on-a-smoke-grid", E("--grid", "paper"),
             ("expected the paper grid (216 configs)", "holds the smoke grid", "--grid smoke", "--probes-dir"), 1,
             setup=trained),
    BadInput("evaluate-grid-not-finished", E("--grid", "smoke"),
             ("7 trained", "tunemir probe train gtzan_ff rep"), 1, setup=trained_with(shutil.rmtree)),
    BadInput("evaluate-unknown-grid", E("--grid", "huge"), ("--grid", "'paper'", "'smoke'"), 2),
    BadInput("evaluate-expected-zero", E("--expected-num-runs", "0"), ("--expected-num-runs", "x>=1"), 2),
    BadInput("evaluate-split-train", E("--split", "train"), ("--split", "'valid'", "'test'"), 2),
    BadInput("evaluate-unknown-metric", E("--metric", "f1"), ("'f1'", "choose --metric", "accuracy"), 1,
             setup=trained),
    BadInput("evaluate-metric-not-a-number", E("--metric", "primary"), ("{run}/metrics.json", "not a number",
                                                                        "train again"), 1,
             setup=trained_with(lambda run: (run / "metrics.json").write_text('{"primary": "high", "loss": 1}'))),
    BadInput("evaluate-metrics-corrupt", E(), ("{run}/metrics.json", "train again"), 1,
             setup=trained_with(_corrupt_metrics)),
    BadInput("evaluate-metrics-a-list", E(), ("{run}/metrics.json", "train again"), 1,
             setup=trained_with(_list_metrics)),
    BadInput("evaluate-output-is-a-folder", E("--output", "{tmp}"), ("--output", "is a directory"), 2),
    BadInput("evaluate-output-under-a-file", E("--output", "{tmp}/afile/best.json"),
             ("--output", "{tmp}/afile", "writable folder"), 2,
             setup=trained_and_a_file),
    # probe report
    BadInput("report-nothing-trained", R("--output-dir", "{tmp}/out"), ("no trained probes", "tunemir probe train"),
             1, setup=dataset),
    BadInput("report-output-dir-is-a-file", R("--output-dir", "{tmp}/afile"), ("--output-dir", "is a file"), 2,
             setup=a_file),
    BadInput("report-negative-bootstrap", R("--bootstrap", "-1"), ("--bootstrap", "x>=0"), 2),
    # probe compare
    BadInput("compare-untrained-representation", C("rep", "other"), ("other", "does not exist",
                                                                    "tunemir probe grid gtzan_ff other"), 1,
             setup=trained),
    BadInput("compare-without-test-features", C(), ("gtzan_ff/rep", "no test features to resample"), 1,
             setup=features_gone),
    BadInput("compare-too-few-resamples", C("rep", "rep", "--bootstrap", "10"), ("--bootstrap", "x>=100"), 2),
    BadInput("report-unknown-dataset-filter", R("--output-dir", "{tmp}/out", "--dataset", "gtzan"),
             ("no trained probes", "for gtzan", "trained: gtzan_ff/rep", "--dataset"), 1, setup=trained),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, tmp_path):
    check_bad_input(case, tmp_path)


def test_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


def test_evaluate_output_creates_missing_folders(tmp_path):
    """`--output` into a folder that does not exist yet: the folders are made and the JSON
    written there is what was printed."""
    from click.testing import CliRunner

    from tunemir.cli import main

    trained(tmp_path)
    target = tmp_path / "results" / "deep" / "best.json"
    args = [a.replace("{tmp}", str(tmp_path)) for a in E("--output", str(target), "--expected-num-runs", "8")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = json.loads(target.read_text())
    assert written == json.loads(result.output) and written["num_runs"] == 8
