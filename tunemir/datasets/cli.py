"""`tunemir data ...`: thin click commands over `tunemir.datasets`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tunemir.datasets.assets import DATASETS, MIRROR_ENV, URL_ENV_PREFIX, giantsteps_audio_assets
from tunemir.datasets.download import download_assets
from tunemir.datasets.process import process_dataset
from tunemir.datasets.sources import REGISTRY_ENV, DatasetError, dataset_assets, load_registry
from tunemir.datasets.synth import write_synth
from tunemir.probe.data import cache_dir

_CACHE = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                      help="Cache root holding datasets/ and processed/ [$TUNEMIR_CACHE_DIR or ~/.tunemir].")
_REGISTRY = click.option("--registry", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                         help=f"JSON of asset entries replacing the built-in ones [${REGISTRY_ENV}].")


@click.group()
def data() -> None:
    """Download, verify and process the benchmark datasets; write the synthetic one."""


def _fail(err: Exception):
    raise click.ClickException(str(err)) from None


@data.command()
@click.argument("dataset", type=click.Choice(DATASETS))
@click.option("--jobs", type=click.IntRange(min=1), default=4, show_default=True, help="Parallel transfers.")
@click.option("--url", "urls", multiple=True, metavar="TAG=URL",
              help=f"Fetch asset TAG from URL first (repeatable) [${URL_ENV_PREFIX}<TAG>].")
@click.option("--mirror", metavar="URL", help=f"Try <URL>/<asset path> before the original hosts [${MIRROR_ENV}].")
@_REGISTRY
@_CACHE
def download(dataset: str, jobs: int, urls: tuple[str, ...], mirror: str | None, registry: Path | None,
             cache_dir: Path | None) -> None:
    """Fetch and verify DATASET's files into <cache>/datasets/DATASET."""
    overrides = {}
    for item in urls:
        tag, sep, url = item.partition("=")
        if not sep or not url:
            raise click.BadParameter(f"{item!r}: expected TAG=URL", param_hint="--url")
        overrides[tag] = url
    root = _cache(cache_dir) / "datasets"
    try:
        assets = dataset_assets(dataset, load_registry(registry))
    except DatasetError as err:
        _fail(err)
    summaries = [download_assets(assets, root, jobs, overrides, mirror, progress=sys.stderr.isatty())]
    if dataset == "giantsteps_clips" and summaries[0].ok:
        click.echo("annotation archives verified; fetching the audio they list")
        audio = giantsteps_audio_assets(root)
        summaries.append(download_assets(audio, root, jobs, overrides, mirror, progress=sys.stderr.isatty()))
    outcomes = [o for s in summaries for o in s.outcomes]
    counts = {k: sum(o.status == k for o in outcomes) for k in ("verified", "downloaded", "failed")}
    size = sum(o.bytes for o in outcomes) / 1e6
    click.echo(f"{dataset}: {len(outcomes)} files, {counts['verified']} already verified, "
               f"{counts['downloaded']} downloaded and verified, {counts['failed']} failed "
               f"({size:.1f} MB in place, {sum(s.seconds for s in summaries):.1f} s) in {root / dataset}")
    for o in (o for o in outcomes if o.status == "failed"):
        kind = "optional, not needed to process" if o.asset.optional else "required"
        click.echo(f"  FAILED {o.asset.tag} ({kind}): {o.detail}", err=True)
    if not all(s.ok for s in summaries):
        click.echo("Fix: rerun to resume, or point to a copy with --url TAG=URL or --mirror URL.", err=True)
        sys.exit(1)


@data.command()
@click.argument("dataset", type=click.Choice(DATASETS))
@click.option("--jobs", type=click.IntRange(min=1), help="Decoding processes [CPU count, at most 8].")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Check against this meta.json(.gz) instead of jukemir's canonical metadata.")
@click.option("--no-reference", is_flag=True, help="Skip the check against canonical metadata (custom sources).")
@_REGISTRY
@_CACHE
def process(dataset: str, jobs: int | None, reference: Path | None, no_reference: bool, registry: Path | None,
            cache_dir: Path | None) -> None:
    """Build <cache>/processed/DATASET/{meta.json,wav/} from the downloaded files."""
    if reference and no_reference:
        raise click.UsageError("--reference and --no-reference exclude each other")
    try:
        summary = process_dataset(dataset, _cache(cache_dir), jobs=jobs, registry=registry,
                                  reference=None if no_reference else reference or "canonical",
                                  progress=sys.stderr.isatty())
    except DatasetError as err:
        _fail(err)
    click.echo(f"{dataset}: {summary.entries} entries in {summary.folder / 'meta.json'}; WAVs: "
               f"{summary.written} written, {summary.kept} already there, {len(summary.failed)} failed, "
               f"{len(summary.skipped)} left out on purpose ({summary.seconds:.1f} s)")
    for uid, why in sorted(summary.skipped.items()):
        click.echo(f"  left out {uid}: {why}")
    for uid, why in sorted(summary.failed.items()):
        click.echo(f"  FAILED {uid}: {why}", err=True)
    if not summary.ok:
        click.echo("The other WAVs are complete; fix those sources and rerun (finished files are kept).", err=True)
        sys.exit(1)


@data.command()
@click.option("--clips", type=click.IntRange(min=20), default=240, show_default=True)
@click.option("--seconds", type=click.FloatRange(min=1.0), default=8.0, show_default=True)
@click.option("--sample-rate", type=click.IntRange(min=8000), default=22050, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@_CACHE
def synth(clips: int, seconds: float, sample_rate: int, seed: int, cache_dir: Path | None) -> None:
    """Write the synthetic corpus (key, instrument tags, tempo) to <cache>/processed."""
    folders = write_synth(_cache(cache_dir) / "processed", clips, seconds, sample_rate, seed,
                          progress=sys.stderr.isatty())
    for name, folder in folders.items():
        click.echo(f"{name:12s} {folder}")


def _cache(path: Path | None) -> Path:
    return Path(path) if path else cache_dir()
