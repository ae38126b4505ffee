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
from tunemir.probe.grid import GridError, check_name, select_best, write_grid
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


@probe.command()
@click.argument("dataset", callback=_name)
@click.argument("representation", callback=_name)
@click.option("--grid", type=click.Choice(sorted(GRIDS)), default="paper", show_default=True,
              help="paper: jukemir's 216 configs; smoke: 8 quick configs for CI and the demo.")
@_dirs_options
def grid(dataset: str, representation: str, grid: str, dirs: ProbeDirs) -> None:
    """Write the grid's config files for DATASET and REPRESENTATION."""
    configs = write_grid(dataset, representation, dirs, grid)
    click.echo(f"{len(configs)} configs ({grid} grid) in {dirs.runs(dataset, representation)}")


@probe.command()
@click.argument("dataset", callback=_name)
@click.argument("representation", callback=_name)
@click.option("--device", default="auto", show_default=True, callback=_device, help="auto, cpu, cuda or cuda:N.")
@_dirs_options
def train(dataset: str, representation: str, device: str, dirs: ProbeDirs) -> None:
    """Train every pending config of the grid together; finished configs are skipped."""
    from tunemir.probe.runs import train_pending

    summary = train_pending(dataset, representation, dirs, device=device)
    if not summary.trained and not summary.failed:
        click.echo(f"nothing to do: all {summary.total} configs of {dataset}/{representation} are already trained")
        return
    click.echo(f"trained {len(summary.trained)} configs in {summary.seconds:.1f} s "
               f"({summary.skipped} were already done, {len(summary.failed)} failed)")
    if summary.failed:
        for uid, error in summary.failed.items():
            click.echo(f"  {uid}: {error}", err=True)
        sys.exit(1)


@probe.command()
@click.argument("dataset", callback=_name)
@click.argument("representation", callback=_name)
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("--expected-num-runs", type=click.IntRange(min=1), help="Fail unless exactly this many configs are trained.")
@click.option("--grid", type=click.Choice(sorted(GRIDS)), help="Fail unless exactly this grid's configs are trained.")
@click.option("--metric", default="primary", show_default=True, help="Valid metric that picks the config.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the JSON here (missing folders are created).")
@_dirs_options
def evaluate(dataset: str, representation: str, split: str, expected_num_runs: int | None, grid: str | None,
             metric: str, output: Path | None, dirs: ProbeDirs) -> None:
    """Pick the config best on valid and print its metrics on SPLIT as JSON."""
    best = select_best(dataset, representation, dirs, split=split, expected_num_runs=expected_num_runs,
                       metric=metric, grid=grid)
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
@_dirs_options
def report(output_dir: Path, datasets: tuple[str, ...], representations: tuple[str, ...], dirs: ProbeDirs) -> None:
    """Tables (Markdown, CSV) and plots for every dataset x representation with trained probes."""
    paths = build_report(dirs, output_dir, datasets, representations)
    click.echo(paths["markdown"].read_text())
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
