"""A grid on disk: its config files, which configs are trained, and the pick of the best one.

Layout under `<probes>/<dataset>/<representation>/`: `<uid>.json` is a pending config, `<uid>/`
a finished one (its files are RESULT_FILES, written by `tunemir.probe.runs`). Reading and writing
these needs no torch, so `tunemir probe grid`, `evaluate` and `report` start without it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tunemir.fileio import atomic_path
from tunemir.probe.config import GRIDS, ProbeConfig, grid_configs
from tunemir.probe.data import ProbeDirs
from tunemir.probe.tasks import load_task

RESULT_FILES = ("cfg.json", "metrics.json", "test_metrics.json", "probe.safetensors", "scaler.npz", "train.json")


class GridError(RuntimeError):
    """A grid cannot be trained or evaluated as asked; the message says what to do."""


def write_grid(dataset: str, representation: str, dirs: ProbeDirs, grid: str = "paper") -> list[ProbeConfig]:
    """Write `<uid>.json` for every config of `grid` that has no file yet; returns the grid.

    A grid folder holds one grid: a folder already holding configs of another grid (the smoke
    grid, when the paper grid is asked for) is refused, since evaluating it would pick the best
    of both and counting its runs could never match either grid.
    """
    check_name("dataset", dataset)
    check_name("representation", representation)
    load_task(dataset, dirs.dataset(dataset))  # a typo in the dataset name fails here, not at training
    configs = grid_configs(dataset, representation, grid)
    folder = dirs.runs(dataset, representation)
    existing = grid_uids(folder)
    foreign = set(existing) - {c.uid() for c in configs}
    if foreign:
        trained = sum(existing.values())
        raise GridError(f"{folder} already holds {describe_grid(dataset, representation, set(existing))}, {trained} "
                        f"of them trained; a grid folder holds one grid, so the {grid} grid was not written. "
                        f"Write it into another probes folder (--probes-dir), or delete this one first: rm -r {folder}")
    for config in configs:
        path = folder / f"{config.uid()}.json"
        if not path.exists():
            with atomic_path(path) as tmp:
                tmp.write_text(config.to_json())
    return configs


def check_name(what: str, name: str) -> None:
    """Dataset and representation names become folder names: one plain path component each."""
    if not name or name.startswith(".") or "/" in name or "\\" in name or name != name.strip():
        raise GridError(f"{what} {name!r} is not a plain name; use letters, digits, '_' or '-' (it names a folder)")


def grid_uids(folder: Path) -> dict[str, bool]:
    """The config uids a grid folder holds, pending (`<uid>.json`) or trained (`<uid>/`): uid -> trained."""
    if not folder.is_dir():
        return {}
    uids = {p.stem: False for p in folder.glob("*.json") if not p.name.startswith(".")}
    uids.update({p.name: True for p in folder.iterdir()
                 if p.is_dir() and not p.name.startswith(".") and is_finished(p)})
    return uids


def describe_grid(dataset: str, representation: str, uids: set[str]) -> str:
    """'the smoke grid (8 configs)', 'part of the paper grid (100 of 216 configs)' or 'N configs of no named grid'."""
    for name in GRIDS:
        named = {c.uid() for c in grid_configs(dataset, representation, name)}
        if uids == named:
            return f"the {name} grid ({len(uids)} configs)"
        if uids < named:
            return f"part of the {name} grid ({len(uids)} of {len(named)} configs)"
    return f"{len(uids)} configs of no named grid"


def read_configs(dataset: str, representation: str, dirs: ProbeDirs) -> list[ProbeConfig]:
    """The configs written for this dataset/representation, sorted by uid."""
    folder = dirs.runs(dataset, representation)
    configs = []
    for path in sorted(folder.glob("*.json")):
        try:
            config = ProbeConfig(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValueError) as err:
            raise GridError(f"{path}: not a probe config ({err}); delete it or write the grid again.") from None
        if (config["dataset"], config["representation"]) != (dataset, representation) or config.uid() != path.stem:
            raise GridError(f"{path}: holds a config for {config['dataset']}/{config['representation']} with uid "
                            f"{config.uid()}; config files must be named by their own uid in their own folder.")
        configs.append(config)
    return configs


def is_finished(folder: Path) -> bool:
    return all((folder / name).is_file() for name in RESULT_FILES)


def select_best(dataset: str, representation: str, dirs: ProbeDirs, split: str = "test",
                expected_num_runs: int | None = None, metric: str = "primary", grid: str | None = None) -> dict:
    """The config with the best valid `metric` and its metrics on `split` (jukemir's aggregate).

    `expected_num_runs` (jukemir's check) fails unless exactly that many configs are trained;
    `grid` fails unless the trained configs are exactly that named grid's. Ties, frequent with
    accuracy on 197 GTZAN clips, are broken deterministically (unlike jukemir's file-system
    order): lower valid loss, then smaller uid.
    """
    folder = dirs.runs(dataset, representation)
    finished = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and is_finished(p)) \
        if folder.is_dir() else []
    if not finished:
        train = f"tunemir probe train {dataset} {representation}"
        if grid_uids(folder):
            raise GridError(f"{folder} holds configs but no trained probes yet; train them: {train}")
        where = "does not exist" if not folder.is_dir() else "holds no probe configs"
        raise GridError(f"{folder} {where}; write and train a grid first: tunemir probe grid {dataset} "
                        f"{representation} && {train}")
    if expected_num_runs is not None and len(finished) != expected_num_runs:
        raise GridError(_count_mismatch(dataset, representation, folder, len(finished), expected_num_runs))
    if grid is not None:
        _check_grid(dataset, representation, folder, {p.name for p in finished}, grid)
    rows = []
    for path in finished:
        valid = _read_metrics(path / "metrics.json")
        if metric not in valid:
            raise GridError(f"{path / 'metrics.json'} has no metric {metric!r}; choose --metric from "
                            f"{', '.join(sorted(valid))}")
        score = valid[metric]
        if not isinstance(score, (int, float)):
            raise GridError(f"{path / 'metrics.json'}: metric {metric!r} is {score!r}, not a number, so the file is "
                            f"damaged; delete its folder {path} and train again (tunemir probe train retrains it)")
        rows.append((-(score if not math.isnan(score) else -math.inf), valid.get("loss", math.inf), path.name))
    _, _, uid = min(rows)
    name = "metrics.json" if split == "valid" else "test_metrics.json"
    metrics = _read_metrics(folder / uid / name)
    return {"dataset": dataset, "representation": representation, "uid": uid, "split": split,
            "num_runs": len(finished), "selected_by": f"valid {metric}", "metrics": metrics,
            "valid_scores": sorted(-r[0] for r in rows)}


def _count_mismatch(dataset: str, representation: str, folder: Path, trained: int, expected: int) -> str:
    """Why the trained count differs from --expected-num-runs, and the command that helps."""
    uids = grid_uids(folder)
    held = describe_grid(dataset, representation, set(uids))
    head = f"{folder}: {trained} trained configs, expected {expected}; the folder holds {held}"
    if trained < len(uids):
        fix = f"finish the grid with: tunemir probe train {dataset} {representation}"
        if len(uids) == expected:
            return f"{head}, {len(uids) - trained} still untrained; {fix}"
        return (f"{head}, {len(uids) - trained} still untrained. Once trained it will hold {len(uids)}, "
                f"not {expected}: {fix}, then pass --expected-num-runs {len(uids)}")
    named = [n for n in GRIDS if len(grid_configs(dataset, representation, n)) == expected]
    other = (f"to probe the {named[0]} grid write it into another probes folder (tunemir probe grid {dataset} "
             f"{representation} --grid {named[0]} --probes-dir NEW, or TUNEMIR_GRID={named[0]} with the reproduce "
             "scripts) and train it") if named else f"no named grid has {expected} configs"
    return f"{head}, all trained. Pass --expected-num-runs {trained} to evaluate it, or {other}."


def _check_grid(dataset: str, representation: str, folder: Path, trained: set[str], grid: str) -> None:
    named = {c.uid() for c in grid_configs(dataset, representation, grid)}
    if trained == named:
        return
    uids = grid_uids(folder)
    head = (f"{folder}: expected the {grid} grid ({len(named)} configs) trained, but it holds "
            f"{describe_grid(dataset, representation, set(uids))}, {len(trained)} trained")
    if set(uids) == named:
        raise GridError(f"{head}; finish the grid with: tunemir probe train {dataset} {representation}")
    other = next((n for n in GRIDS if {c.uid() for c in grid_configs(dataset, representation, n)} == set(uids)), None)
    fix = f"pass --grid {other} to evaluate it, or " if other else ""
    raise GridError(f"{head}; {fix}write the {grid} grid into another probes folder (tunemir probe grid {dataset} "
                    f"{representation} --grid {grid} --probes-dir NEW) and train it")


def _read_metrics(path: Path) -> dict:
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GridError(f"{path} cannot be read ({err}); delete its folder {path.parent} and train again "
                        "(tunemir probe train retrains missing configs)") from None
    if not isinstance(metrics, dict):
        raise GridError(f"{path} holds no metrics object; delete its folder {path.parent} and train again")
    return metrics
