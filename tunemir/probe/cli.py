"""`tunemir probe ...`: thin click commands over `tunemir.probe`."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from tunemir.fileio import atomic_path
from tunemir.probe.config import GRIDS
from tunemir.probe.data import ProbeDataError, ProbeDirs
from tunemir.probe.grid import (GridError, check_name, expand_representations, held_grid, is_pattern, select_best,
                                write_grid)
from tunemir.probe.report import build_report
from tunemir.probe.tasks import TaskError

# Only `probe train` needs torch: it imports the device rule and the trainer when it runs, so that
# `probe grid`, `evaluate` and `report` (once per dataset x representation in reproduce/) start fast.

_DIR = click.Path(file_okay=False, path_type=Path)


def _dirs_options(command):
    """--datasets-dir / --representations-dir / --probes-dir, defaulting to the cache layout."""
    @click.option("--datasets-dir", type=_DIR, help="Processed datasets root [$TUNEMIR_CACHE_DIR/processed].")
    @click.option("--representations-dir", type=_DIR, help="Features root [$TUNEMIR_CACHE_DIR/representations].")
    @click.option("--probes-dir", type=_DIR, help="Probe configs and results [$TUNEMIR_CACHE_DIR/probes].")
    @functools.wraps(command)
    def wrapper(*args, datasets_dir, representations_dir, probes_dir, **kwargs):
        dirs = ProbeDirs.resolve(datasets_dir, representations_dir, probes_dir)
        try:
            return command(*args, dirs=dirs, **kwargs)
        except (ProbeDataError, TaskError, GridError, ValueError) as err:
            raise click.ClickException(str(err)) from None
        except OSError as err:  # an unwritable probes folder, a full disk
            raise click.ClickException(f"{err.filename or 'a probe file'}: {err.strerror or err}; check that "
                                       "the folder exists and is writable, or choose another one") from None
    return wrapper


def _name(ctx, param, value: str) -> str:
    """DATASET and REPRESENTATION name folders: one plain path component each."""
    try:
        check_name(param.name, value)
    except GridError as err:
        raise click.BadParameter(str(err)) from None
    return value


def _datasets(ctx, param, value: str) -> list[str]:
    """DATASET, or several separated by commas; each one plain folder name."""
    names = [part.strip() for part in value.split(",")]
    for name in names:
        try:
            check_name("dataset", name)
        except GridError as err:
            raise click.BadParameter(str(err)) from None
    return names


def _device(ctx, param, value: str) -> str:
    """auto, cpu, cuda or cuda:N; CUDA only where a GPU is visible (extraction's rule)."""
    from tunemir.extract import ExtractUsageError, resolve_device

    try:
        resolve_device(value)
    except ExtractUsageError as err:
        raise click.BadParameter(str(err)) from None
    return value


@click.group()
def probe() -> None:
    """Train and evaluate probes on extracted features (jukemir protocol)."""


_SEEDS = click.option("--seeds", type=click.IntRange(min=1),
                      help="Repeat the protocol under seeds 0..N-1 (each seed its own grid of configs and its own "
                           "selection on valid); the report gives mean, spread and intervals.  [default: 1]")


def _representations(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    """Plain names are checked here; patterns when they are matched against the feature folders."""
    for value in values:
        if not is_pattern(value):
            _name(ctx, param, value)
    return values


_REPRESENTATIONS = click.argument("representations", metavar="REPRESENTATION...", nargs=-1, required=True,
                                  callback=_representations)


def _grid_targets(datasets: list[str], patterns: tuple[str, ...], dirs: ProbeDirs) -> list[tuple[str, str]]:
    return [(d, r) for d in datasets for r in expand_representations(d, list(patterns), dirs)]


@probe.command()
@click.argument("dataset", callback=_datasets)
@_REPRESENTATIONS
@click.option("--grid", type=click.Choice(sorted(GRIDS)), default="paper", show_default=True,
              help="paper: jukemir's 216 configs; smoke: 8 quick configs for CI and the demo.")
@_SEEDS
@_dirs_options
def grid(dataset: list[str], representations: tuple[str, ...], grid: str, seeds: int | None, dirs: ProbeDirs) -> None:
    """Write the grid's config files for DATASET (or several, comma-separated) and each REPRESENTATION.

    A REPRESENTATION may be a pattern, e.g. 'tune_plus@*' for every layer extracted with --layers.
    """
    for name, rep in _grid_targets(dataset, representations, dirs):
        configs = write_grid(name, rep, dirs, grid, seeds or 1)
        under = f" under {seeds} seeds" if seeds else ""
        click.echo(f"{len(configs)} configs ({grid} grid{under}) in {dirs.runs(name, rep)}")


@probe.command()
@click.argument("dataset", callback=_datasets)
@_REPRESENTATIONS
@click.option("--grid", type=click.Choice(sorted(GRIDS)),
              help="Write this grid's configs first where they are missing (else they come from `probe grid`).")
@_SEEDS
@click.option("--device", default="auto", show_default=True, callback=_device, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16: minibatch products and activations in bfloat16 (float32 weights, Adam and metrics); "
                   "faster on AMX CPUs and GPUs, see BENCHMARKS.md for its effect on the scores.")
@_dirs_options
def train(dataset: list[str], representations: tuple[str, ...], grid: str | None, seeds: int | None, device: str,
          precision: str, dirs: ProbeDirs) -> None:
    """Train every pending config of the grids of DATASET (or several, comma-separated) and each
    REPRESENTATION; finished configs are skipped.

    A REPRESENTATION may be a pattern: 'tune_plus@*' trains the grids of every layer that
    `tunemir extract --layers` wrote, in one command. Each config's random streams are its own,
    so its result does not depend on what trains beside it.
    """
    from tunemir.probe.runs import train_pending

    targets = _grid_targets(dataset, representations, dirs)
    if grid or seeds:
        for name, rep in targets:
            chosen = grid or held_grid(name, rep, dirs)
            if chosen is None:
                raise GridError(f"{dirs.runs(name, rep)} holds no configs of a named grid to repeat under --seeds "
                                f"{seeds}; name the grid: --grid paper (or smoke)")
            write_grid(name, rep, dirs, chosen, seeds or 1)
    failed = 0
    for name, rep in targets:
        summary = train_pending(name, rep, dirs, device=device, precision=precision)
        where = f"{name}/{rep}"
        if not summary.trained and not summary.failed:
            click.echo(f"{where}: nothing to do, all {summary.total} configs are already trained")
            continue
        click.echo(f"{where}: trained {len(summary.trained)} configs in {summary.seconds:.1f} s "
                   f"({summary.skipped} were already done, {len(summary.failed)} failed)")
        for uid, error in summary.failed.items():
            click.echo(f"  {uid}: {error}", err=True)
        failed += len(summary.failed)
    if failed:
        sys.exit(1)


@probe.command()
@click.argument("dataset", callback=_name)
@click.argument("representation", callback=_name)
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("--expected-num-runs", type=click.IntRange(min=1), help="Fail unless exactly this many configs are trained.")
@click.option("--grid", type=click.Choice(sorted(GRIDS)), help="Fail unless exactly this grid's configs are trained.")
@click.option("--metric", default="primary", show_default=True, help="Valid metric that picks the config.")
@click.option("--seed", type=click.IntRange(min=0), help="Which seed's grid, when the folder holds several.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the JSON here (missing folders are created).")
@_dirs_options
def evaluate(dataset: str, representation: str, split: str, expected_num_runs: int | None, grid: str | None,
             metric: str, seed: int | None, output: Path | None, dirs: ProbeDirs) -> None:
    """Pick the config best on valid and print its metrics on SPLIT as JSON."""
    best = select_best(dataset, representation, dirs, split=split, expected_num_runs=expected_num_runs,
                       metric=metric, grid=grid, seed=seed)
    best.pop("valid_scores")
    text = json.dumps(best, indent=2, sort_keys=True)
    if output:
        try:
            with atomic_path(output) as tmp:  # missing parent folders are created
                tmp.write_text(text + "\n")
        except OSError as err:
            raise click.BadParameter(f"cannot write {output} ({err.strerror}: {err.filename}); choose a path in a "
                                     "writable folder", param_hint="--output") from None
    click.echo(text)


@probe.command()
@click.option("--output-dir", type=_DIR, default="probe-report", show_default=True)
@click.option("--dataset", "datasets", multiple=True, help="Only this dataset (repeatable; default: all).")
@click.option("--representation", "representations", multiple=True,
              help="Only this representation (repeatable; default: all).")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Test-set resamples for the 95% intervals and layer comparisons (0: none).")
@_dirs_options
def report(output_dir: Path, datasets: tuple[str, ...], representations: tuple[str, ...], n_boot: int,
           dirs: ProbeDirs) -> None:
    """Tables (Markdown, CSV) and plots for every dataset x representation with trained probes:
    mean and spread over seeds, bootstrap intervals, and the layer curve of layer sweeps."""
    paths = build_report(dirs, output_dir, datasets, representations, n_boot)
    click.echo(paths["markdown"].read_text())
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@probe.command()
@click.argument("dataset", callback=_name)
@click.argument("a", metavar="REP_A", callback=_name)
@click.argument("b", metavar="REP_B", callback=_name)
@click.option("--metric", default="primary", show_default=True, help="Test metric to compare.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=100), default=1000, show_default=True,
              help="Paired test-set resamples.")
@_dirs_options
def compare(dataset: str, a: str, b: str, metric: str, n_boot: int, dirs: ProbeDirs) -> None:
    """Is REP_A better than REP_B on DATASET? A paired bootstrap over the same test items.

    Prints the difference of the seed means (A - B), its 95% interval, and the share of
    resamples in which A is not better, as JSON.
    """
    from tunemir.probe.summary import compare as paired, score, to_json

    sides = [score(dataset, rep, dirs) for rep in (a, b)]
    task = sides[0].task
    name = task.primary if metric == "primary" and task is not None else metric
    click.echo(to_json(paired(*sides, name, n_boot)))
