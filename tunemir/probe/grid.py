"""A grid on disk: its config files, which configs are trained, and the pick of the best one.

Layout under `<probes>/<dataset>/<representation>/`: `<uid>.json` is a pending config, `<uid>/`
a finished one (its files are RESULT_FILES, written by `tunemir.probe.runs`). Reading and writing
these needs no torch, so `tunemir probe grid`, `evaluate` and `report` start without it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from tunemir.fileio import atomic_path
from tunemir.probe.config import GRIDS, ProbeConfig, grid_configs
from tunemir.probe.data import ProbeDirs
from tunemir.probe.tasks import load_task

RESULT_FILES = ("cfg.json", "metrics.json", "test_metrics.json", "probe.safetensors", "scaler.npz", "train.json")


class GridError(RuntimeError):
    """A grid cannot be trained or evaluated as asked; the message says what to do."""


def write_grid(dataset: str, representation: str, dirs: ProbeDirs, grid: str | dict = "paper",
               seeds: int = 1) -> list[ProbeConfig]:
    """Write `<uid>.json` for every config of `grid` under seeds 0..seeds-1 that has no file yet;
    returns those configs.

    A seed is the config's `seed` field, so each seed's grid is jukemir's grid with that seed
    (seed 0 is jukemir's own) and every (config, seed) has its own uid and result folder. A grid
    folder holds one grid under any number of seeds: a folder already holding configs of another
    grid (the smoke grid, when the paper grid is asked for) is refused, since evaluating it would
    pick the best of both and counting its runs could never match either grid.
    """
    check_name("dataset", dataset)
    check_name("representation", representation)
    if seeds < 1:
        raise GridError(f"--seeds must be at least 1, got {seeds}")
    load_task(dataset, dirs.dataset(dataset))  # a typo in the dataset name fails here, not at training
    named = {c.uid() for c in grid_configs(dataset, representation, grid)}
    configs = [c for seed in range(seeds) for c in grid_configs(dataset, representation, grid, seed=seed)]
    folder = dirs.runs(dataset, representation)
    existing = folder_configs(folder)
    foreign = [uid for uid, c in existing.items() if base_uid(c) not in named]
    if foreign:
        trained = sum(grid_uids(folder).values())
        name = grid if isinstance(grid, str) else "asked"
        raise GridError(f"{folder} already holds {describe_grid(dataset, representation, folder)}, {trained} "
                        f"of them trained; a grid folder holds one grid, so the {name} grid was not written. "
                        f"Write it into another probes folder (--probes-dir), or delete this one first: rm -r {folder}")
    for config in configs:
        path = folder / f"{config.uid()}.json"
        if not path.exists():
            with atomic_path(path) as tmp:
                tmp.write_text(config.to_json())
    return configs


def held_grid(dataset: str, representation: str, dirs: ProbeDirs) -> str | None:
    """The named grid whose configs (under any seed) a grid folder holds, None if it holds none."""
    bases = {base_uid(c) for c in folder_configs(dirs.runs(dataset, representation)).values()}
    if not bases:
        return None
    return next((name for name in GRIDS if bases <= {c.uid() for c in grid_configs(dataset, representation, name)}),
                None)


def is_pattern(name: str) -> bool:
    """Whether a REPRESENTATION argument is a shell-style pattern (`tune_plus@*`) to match."""
    return any(ch in name for ch in "*?[")


def natural_order(name: str) -> list:
    """Sort key putting `x@2` before `x@10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def expand_representations(dataset: str, patterns: list[str], dirs: ProbeDirs) -> list[str]:
    """Representation names, with shell-style patterns (`tune_plus@*`) matched against the feature
    folders of the dataset's audio, in natural order."""
    import fnmatch

    audio = load_task(dataset, dirs.dataset(dataset)).audio_from or dataset
    root = dirs.representations / audio
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if root.is_dir() else []
    names: list[str] = []
    for pattern in patterns:
        if not is_pattern(pattern):
            check_name("representation", pattern)
            matched = [pattern]
        else:
            matched = [name for name in found if fnmatch.fnmatchcase(name, pattern)]
            if not matched:
                there = f"; the representations there: {', '.join(found)}" if found else "; it holds none"
                raise GridError(f"representation pattern {pattern!r} matches no features folder in {root}{there}")
        names += [m for m in matched if m not in names]
    return sorted(names, key=natural_order)


def base_uid(config: ProbeConfig) -> str:
    """The uid of `config` under seed 0: what its copies under other seeds share."""
    return ProbeConfig({**config, "seed": 0}).uid()


def folder_configs(folder: Path) -> dict[str, ProbeConfig]:
    """The readable `<uid>.json` configs of a grid folder, by uid (damaged files are left to
    `read_configs` to report)."""
    found = {}
    if folder.is_dir():
        for path in folder.glob("*.json"):
            if path.name.startswith("."):
                continue
            try:
                found[path.stem] = ProbeConfig(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError, ValueError):
                continue
    return found


def seed_text(seeds) -> str:
    """'seed 0', 'seeds 0-2' or 'seeds 0, 3'."""
    seeds = sorted(seeds)
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


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


def describe_grid(dataset: str, representation: str, folder: Path, uids: set[str] | None = None) -> str:
    """What a grid folder holds (of its configs, those in `uids` when given): 'the smoke grid (8
    configs)', 'part of the paper grid (100 of 216 configs)', '... under seeds 0-2' or 'N configs
    of no named grid'."""
    configs = folder_configs(folder)
    uids = set(configs) if uids is None else set(uids)
    seeds = sorted({int(configs[u]["seed"]) for u in uids if u in configs}) or [0]
    for name in GRIDS:
        named = {c.uid() for seed in seeds for c in grid_configs(dataset, representation, name, seed=seed)}
        under = f" under {seed_text(seeds)}" if seeds != [0] else ""
        per_seed = len(named) // len(seeds)
        if uids == named:
            return f"the {name} grid ({per_seed} configs){under}" + (f", {len(uids)} in all" if under else "")
        if uids < named:
            return f"part of the {name} grid{under} ({len(uids)} of {len(named)} configs)"
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
                expected_num_runs: int | None = None, metric: str = "primary", grid: str | None = None,
                seed: int | None = None) -> dict:
    """The config with the best valid `metric` and its metrics on `split` (jukemir's aggregate),
    among the configs of one seed.

    `seed` picks the seed when the folder holds several (`write_grid(seeds=N)`); a folder of one
    seed needs none. `expected_num_runs` (jukemir's check) fails unless exactly that many configs
    of the seed are trained; `grid` fails unless they are exactly that named grid's. Ties, frequent
    with accuracy on 197 GTZAN clips (it moves in steps of 1/197), are broken deterministically
    (unlike jukemir's file-system order): lower valid loss, then smaller uid.
    """
    folder = dirs.runs(dataset, representation)
    seeds = trained_seeds(dataset, representation, folder)
    if seed is None:
        if len(seeds) > 1:
            raise GridError(f"{folder} holds probes trained under {seed_text(seeds)}; pick one with --seed "
                            "(the report gives the mean and spread over all of them)")
        seed = next(iter(seeds))
    if seed not in seeds:
        raise GridError(f"{folder} holds no probe trained under seed {seed}, only under {seed_text(seeds)}; "
                        f"train them with: tunemir probe train {dataset} {representation} --seeds {seed + 1}")
    return _select(dataset, representation, folder, seeds[seed], seed, split, expected_num_runs, metric, grid)


def select_seeds(dataset: str, representation: str, dirs: ProbeDirs, split: str = "test",
                 metric: str = "primary") -> list[dict]:
    """`select_best` once per trained seed, in seed order: the protocol's result under each seed."""
    folder = dirs.runs(dataset, representation)
    seeds = trained_seeds(dataset, representation, folder)
    return [_select(dataset, representation, folder, seeds[seed], seed, split, None, metric, None)
            for seed in sorted(seeds)]


def trained_seeds(dataset: str, representation: str, folder: Path) -> dict[int, list[Path]]:
    """seed -> the finished result folders trained under it (sorted; the seed read from each
    cfg.json). Raises GridError, saying what to run, when nothing is trained."""
    finished = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and is_finished(p)) \
        if folder.is_dir() else []
    if not finished:
        train = f"tunemir probe train {dataset} {representation}"
        if grid_uids(folder):
            raise GridError(f"{folder} holds configs but no trained probes yet; train them: {train}")
        where = "does not exist" if not folder.is_dir() else "holds no probe configs"
        raise GridError(f"{folder} {where}; write and train a grid first: tunemir probe grid {dataset} "
                        f"{representation} && {train}")
    seeds: dict[int, list[Path]] = {}
    for path in finished:
        try:
            seed = int(json.loads((path / "cfg.json").read_text()).get("seed", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            raise GridError(f"{path / 'cfg.json'} cannot be read; delete its folder {path} and train again "
                            "(tunemir probe train retrains missing configs)") from None
        seeds.setdefault(seed, []).append(path)
    return seeds


def _select(dataset: str, representation: str, folder: Path, finished: list[Path], seed: int, split: str,
            expected_num_runs: int | None, metric: str, grid: str | None) -> dict:
    """`select_best` among the finished result folders of one seed."""
    if expected_num_runs is not None and len(finished) != expected_num_runs:
        raise GridError(_count_mismatch(dataset, representation, folder, len(finished), expected_num_runs))
    if grid is not None:
        _check_grid(dataset, representation, folder, {p.name for p in finished}, grid, seed)
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
    return {"dataset": dataset, "representation": representation, "uid": uid, "split": split, "seed": seed,
            "num_runs": len(finished), "selected_by": f"valid {metric}", "metrics": metrics,
            "valid_scores": sorted(-r[0] for r in rows)}


def _count_mismatch(dataset: str, representation: str, folder: Path, trained: int, expected: int) -> str:
    """Why the trained count differs from --expected-num-runs, and the command that helps."""
    uids = grid_uids(folder)
    held = describe_grid(dataset, representation, folder)
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


def _check_grid(dataset: str, representation: str, folder: Path, trained: set[str], grid: str, seed: int) -> None:
    named = {c.uid() for c in grid_configs(dataset, representation, grid, seed=seed)}
    if trained == named:
        return
    configs = folder_configs(folder)
    uids = {u for u, c in configs.items() if int(c["seed"]) == seed}
    under = f" under seed {seed}" if seed else ""
    head = (f"{folder}: expected the {grid} grid ({len(named)} configs) trained{under}, but it holds "
            f"{describe_grid(dataset, representation, folder, uids)}, {len(trained)} trained")
    if uids == named:
        raise GridError(f"{head}; finish the grid with: tunemir probe train {dataset} {representation}")
    other = next((n for n in GRIDS if {c.uid() for c in grid_configs(dataset, representation, n, seed=seed)} == uids),
                 None)
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
