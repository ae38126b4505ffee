"""Training a grid on disk: one result folder per trained config, resume (the config files and the
best-config pick, which need no torch, are `tunemir.probe.grid`'s).

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
from tunemir.fileio import atomic_dir, remove_stale_temps
from tunemir.probe.config import ProbeConfig
from tunemir.probe.data import ProbeData, ProbeDirs, Scaler, load_probe_data
from tunemir.probe.grid import GridError, is_finished, read_configs, select_best, write_grid
from tunemir.probe.metrics import evaluate
from tunemir.probe.train import ProbeResult, probe_logits, train_grid

log = logging.getLogger(__name__)
#: The grid's bookkeeping lives in `tunemir.probe.grid` (no torch); its best-known names are re-exported here.
__all__ = ["DivergedProbe", "GridError", "TrainSummary", "load_result", "read_configs", "save_result", "select_best",
           "train_pending", "write_grid"]


class DivergedProbe(ValueError):
    """A trained probe whose outputs are not finite: that config failed, the others go on."""


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
                  progress: bool | None = None, precision: str = "fp32") -> TrainSummary:
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

    for result in train_grid(data, pending, device, on_progress=on_progress, precision=precision):
        done += 1
        uid = result.config.uid()
        if not result.error:
            try:
                save_result(folder / uid, result, data, device, precision)
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


def save_result(folder: Path, result: ProbeResult, data: ProbeData, device="cpu", precision: str = "fp32") -> dict:
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
            "device": str(device), "precision": precision, "num_train": len(data.splits["train"].uids), "feature_dim": data.dim,
            "tunemir_version": __version__, "torch_version": torch.__version__,
            "random_streams": "counter-based, keyed by the config uid and step (tunemir.probe.streams)"}
    with atomic_dir(folder) as tmp:
        (tmp / "cfg.json").write_text(result.config.to_json())
        (tmp / "metrics.json").write_text(json.dumps(valid_metrics, indent=2, sort_keys=True))
        (tmp / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2, sort_keys=True))
        (tmp / "train.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        write_safetensors(tmp / "probe.safetensors", result.state, {"uid": result.config.uid()})
        result.scaler.save(tmp / "scaler.npz")
    return valid_metrics


def load_result(folder: Path) -> tuple[ProbeConfig, dict[str, torch.Tensor], Scaler]:
    """A finished probe's config, SimpleMLP state dict and scaler, without unpickling anything."""
    config = ProbeConfig(json.loads((folder / "cfg.json").read_text()))
    state = load_file(str(folder / "probe.safetensors"))
    return config, state, Scaler.load(folder / "scaler.npz")


def _progress(total: int, enabled: bool | None):
    from tqdm import tqdm

    return tqdm(total=total, unit="config", desc="probes", disable=None if enabled is None else not enabled,
                dynamic_ncols=True)
