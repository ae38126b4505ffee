"""A grid on disk: config files, one result folder per trained config, resume, best-config pick.

Layout under `<probes>/<dataset>/<representation>/` (jukemir's, without pickles):
`<uid>.json` is a pending config; `<uid>/` holds a finished one: `cfg.json`, `metrics.json`
(valid metrics, as jukemir), `test_metrics.json`, `probe.safetensors` (jukemir SimpleMLP keys),
`scaler.npz` (mean, scale, standardize; loads with `allow_pickle=False`) and `train.json`.
A result folder is written under a temporary name and renamed, so it is complete or absent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from tunemir import __version__
from tunemir.checkpoints import write_safetensors
from tunemir.extract import resolve_device
from tunemir.fileio import atomic_dir, atomic_path, remove_stale_temps
from tunemir.probe.config import GRIDS, ProbeConfig, grid_configs
from tunemir.probe.data import ProbeData, ProbeDirs, load_probe_data
from tunemir.probe.metrics import evaluate
from tunemir.probe.tasks import load_task
from tunemir.probe.train import ProbeResult, Scaler, probe_logits, train_grid

log = logging.getLogger(__name__)
RESULT_FILES = ("cfg.json", "metrics.json", "test_metrics.json", "probe.safetensors", "scaler.npz", "train.json")


class GridError(RuntimeError):
    """A grid cannot be trained or evaluated as asked; the message says what to do."""


class DivergedProbe(ValueError):
    """A trained probe whose outputs are not finite: that config failed, the others go on."""


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


@dataclasses.dataclass
class TrainSummary:
    total: int
    skipped: int
    trained: list[str]
    failed: dict[str, str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failed


def train_pending(dataset: str, representation: str, dirs: ProbeDirs, device: str = "auto",
                  progress: bool | None = None) -> TrainSummary:
    """Train every config of the grid that has no finished result folder, all at once.

    Each config's folder appears as soon as it stops, so a killed run loses only configs
    still training; rerunning trains exactly those.
    """
    start = time.perf_counter()
    configs = read_configs(dataset, representation, dirs)
    if not configs:
        raise GridError(f"no probe configs in {dirs.runs(dataset, representation)}; write them first: "
                        f"tunemir probe grid {dataset} {representation}")
    folder = dirs.runs(dataset, representation)
    if folder.is_dir():
        remove_stale_temps(folder, min_age_s=0)  # one trainer per grid: every leftover is stale
    pending = [c for c in configs if not is_finished(folder / c.uid())]  # temp folders start with "."
    summary = TrainSummary(len(configs), len(configs) - len(pending), [], {}, 0.0)
    if not pending:
        summary.seconds = time.perf_counter() - start
        return summary
    data = load_probe_data(dataset, representation, dirs)
    device = resolve_device(device)
    log.info("%s/%s: training %d of %d configs on %s (%d already done)", dataset, representation,
             len(pending), len(configs), device, summary.skipped)
    bar = _progress(len(pending), progress)
    best, done, last_log = -math.inf, 0, time.monotonic()

    def on_progress(step: int, running: int, running_best: float) -> None:
        nonlocal last_log
        shown = max(best, running_best) if not math.isnan(running_best) else best
        bar.set_postfix(step=step, running=running, best_valid=f"{shown:.4f}")
        if bar.disable and time.monotonic() - last_log > 30:
            last_log = time.monotonic()
            log.info("step %d: %d configs running, %d done; best valid %s so far %.4f", step, running, done,
                     data.task.primary, shown)

    for result in train_grid(data, pending, device, on_progress=on_progress):
        done += 1
        uid = result.config.uid()
        if not result.error:
            try:
                save_result(folder / uid, result, data, device)
            except DivergedProbe as err:
                result.error = str(err)
        if result.error:
            summary.failed[uid] = result.error
            log.error("config %s failed: %s (jukemir stops such a run too)", uid, result.error)
        else:
            summary.trained.append(uid)
            best = max(best, result.best_score)
        bar.update(1)
        bar.set_postfix(running=len(pending) - done, best_valid=f"{best:.4f}")
        if bar.disable:
            log.info("%d/%d configs done (%s: valid %s %.4f after %d steps); best valid so far %.4f",
                     done, len(pending), uid[:10], data.task.primary, result.best_score, result.steps, best)
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def save_result(folder: Path, result: ProbeResult, data: ProbeData, device="cpu") -> dict:
    """Score `result` on valid and test with the exact metrics and write its result folder."""
    valid, test = data.splits["valid"], data.splits["test"]
    logits = {}
    for name, split in (("valid", valid), ("test", test)):
        logits[name] = probe_logits(result, split.features, device)
        if not np.isfinite(logits[name]).all():
            raise DivergedProbe(f"its {name} logits are not finite after {result.steps} steps (the probe diverged; "
                                "a smaller learning_rate avoids that); nothing was written")
    valid_metrics = evaluate(data.task, valid.uids, valid.targets, logits["valid"])
    test_metrics = evaluate(data.task, test.uids, test.targets, logits["test"], strategy=valid_metrics.get("strategy"))
    info = {"steps": result.steps, "evals": result.evals, "best_eval": result.best_eval,
            "best_valid_score_during_training": result.best_score, "stop_reason": result.stop_reason,
            "device": str(device), "num_train": len(data.splits["train"].uids), "feature_dim": data.dim,
            "tunemir_version": __version__, "torch_version": torch.__version__,
            "random_streams": "torch generator per config group (not jukemir's per-config streams)"}
    with atomic_dir(folder) as tmp:
        (tmp / "cfg.json").write_text(result.config.to_json())
        (tmp / "metrics.json").write_text(json.dumps(valid_metrics, indent=2, sort_keys=True))
        (tmp / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2, sort_keys=True))
        (tmp / "train.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        write_safetensors(tmp / "probe.safetensors", result.state, {"uid": result.config.uid()})
        np.savez(tmp / "scaler.npz", mean=result.scaler.mean, scale=result.scaler.scale,
                 standardize=np.array(result.scaler.standardize))
    return valid_metrics


def load_result(folder: Path) -> tuple[ProbeConfig, dict[str, torch.Tensor], Scaler]:
    """A finished probe's config, SimpleMLP state dict and scaler, without unpickling anything."""
    config = ProbeConfig(json.loads((folder / "cfg.json").read_text()))
    state = load_file(str(folder / "probe.safetensors"))
    with np.load(folder / "scaler.npz", allow_pickle=False) as arrays:
        scaler = Scaler(bool(arrays["standardize"]), arrays["mean"], arrays["scale"])
    return config, state, scaler


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


def _progress(total: int, enabled: bool | None):
    from tqdm import tqdm

    return tqdm(total=total, unit="config", desc="probes", disable=None if enabled is None else not enabled,
                dynamic_ncols=True)
