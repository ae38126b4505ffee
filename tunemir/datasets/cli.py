"""`tunemir data ...`: thin click commands over `tunemir.datasets`."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import click

from tunemir.datasets.assets import (DATASETS, MIRROR_ENV, PRECOMPUTED_REPRESENTATIONS, URL_ENV_PREFIX,
                                     OverrideError, check_env_overrides, check_mirror, check_track_overrides,
                                     giantsteps_audio_assets, parse_url_overrides, precomputed_asset)
from tunemir.datasets.download import download_assets
from tunemir.datasets.process import process_dataset
from tunemir.datasets.sources import REGISTRY_ENV, DatasetError, dataset_assets, load_registry, with_registry
from tunemir.datasets.synth import (MAX_SAMPLE_RATE, MAX_SECONDS, MIN_CLIPS, MIN_SAMPLE_RATE, MIN_SECONDS,
                                    write_synth)
from tunemir.fileio import ensure_writable_dir
from tunemir.probe.data import cache_dir

CACHE_ENV = "TUNEMIR_CACHE_DIR"
_CACHE = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                      help=f"Cache root holding datasets/ and processed/ [${CACHE_ENV} or ~/.tunemir].")
_REGISTRY = click.option("--registry", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                         help=f"JSON of asset entries replacing the built-in ones [${REGISTRY_ENV}].")


@click.group()
def data() -> None:
    """Download, verify and process the benchmark datasets; write the synthetic one."""


def _fail(err: Exception):
    raise click.ClickException(str(err)) from None


def _overrides(dataset: str, assets, urls: tuple[str, ...], mirror: str | None, table: dict) -> dict[str, str]:
    """The --url overrides of `assets`, after checking them, the TUNEMIR_URL_* variables and the mirror."""
    tags = {a.tag for a in assets}
    try:
        overrides = parse_url_overrides(dataset, urls, tags)
        check_env_overrides(dataset, tags, set(table))
        check_mirror(mirror)
    except OverrideError as err:
        _usage(err)
    return overrides


def _usage(err: OverrideError):
    if err.source.startswith("--"):
        raise click.BadParameter(str(err), param_hint=err.source) from None
    raise click.UsageError(str(err)) from None


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
    try:
        table = load_registry(registry)
        assets = dataset_assets(dataset, table)
    except DatasetError as err:
        _fail(err)
    overrides = _overrides(dataset, assets, urls, mirror, table)
    root = _writable_cache(cache_dir, f"datasets/{dataset}").parent
    summaries = [download_assets(assets, root, jobs, overrides, mirror, progress=sys.stderr.isatty())]
    if dataset == "giantsteps_clips" and summaries[0].ok:
        click.echo("annotation archives verified; fetching the audio they list")
        audio = giantsteps_audio_assets(root)
        try:
            check_track_overrides(overrides, audio)
        except OverrideError as err:
            _usage(err)
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


@data.command("download-representations")
@click.argument("dataset", type=click.Choice(DATASETS))
@click.argument("representations", nargs=-1, type=click.Choice(PRECOMPUTED_REPRESENTATIONS))
@click.option("--prefix", default="", help="Unpack as <prefix><representation> (e.g. jukemir-, beside your own).")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Parallel transfers.")
@click.option("--url", "urls", multiple=True, metavar="TAG=URL",
              help=f"Fetch archive TAG (PRECOMPUTED_<DATASET>_<REP>) from URL first [${URL_ENV_PREFIX}<TAG>].")
@click.option("--mirror", metavar="URL", help=f"Try <URL>/precomputed/<archive> before jukemir's host [${MIRROR_ENV}].")
@_REGISTRY
@_CACHE
def download_representations(dataset: str, representations: tuple[str, ...], prefix: str, jobs: int,
                             urls: tuple[str, ...], mirror: str | None, registry: Path | None,
                             cache_dir: Path | None) -> None:
    """jukemir's pre-computed REPRESENTATIONS of DATASET (default: all six), verified and unpacked.

    Archives go to <cache>/datasets/precomputed/, vectors to <cache>/representations/DATASET/<rep>/,
    ready for `tunemir probe`. jukemir's host is gone (since late 2023): point --mirror or --url at
    a copy; each archive must match jukemir's sha256.
    """
    from tunemir.datasets.precomputed import PrecomputedError, unpack_precomputed

    if prefix and (prefix != prefix.strip() or "/" in prefix or prefix.startswith(".")):
        raise click.BadParameter(f"{prefix!r}: a prefix is part of a folder name (no '/', no leading '.' or "
                                 f"spaces), e.g. jukemir-", param_hint="--prefix")
    try:
        table = load_registry(registry)
    except DatasetError as err:
        _fail(err)
    archives = {rep: with_registry(precomputed_asset(dataset, rep), table)
                for rep in dict.fromkeys(representations or PRECOMPUTED_REPRESENTATIONS)}
    assets = list(archives.values())
    overrides = _overrides(dataset, assets, urls, mirror, table)
    root = _writable_cache(cache_dir, "datasets")
    representations_root = _writable_cache(cache_dir, "representations")
    summary = download_assets(assets, root, jobs, overrides, mirror, progress=sys.stderr.isatty())
    failed = {o.asset.tag: o.detail for o in summary.failed}
    for rep, a in archives.items():
        if a.tag in failed:
            click.echo(f"  FAILED {a.tag}: {failed[a.tag]}", err=True)
            continue
        try:
            done = unpack_precomputed(root / a.path, dataset, rep, representations_root, name=prefix + rep,
                                      sha256=a.checksum if a.algorithm == "sha256" else None)
        except PrecomputedError as err:
            failed[a.tag] = str(err)
            click.echo(f"  FAILED {a.tag}: {err}", err=True)
            continue
        state = "already unpacked" if done.skipped else "unpacked"
        click.echo(f"{dataset}/{prefix + rep}: {done.vectors} vectors of {done.dim}-d {state} in {done.folder}")
    meta = _cache(cache_dir) / "processed" / dataset / "meta.json"
    if len(failed) < len(assets) and not meta.exists():  # probing needs the labels and splits, not the audio
        from tunemir.datasets.reference import packaged_reference
        from tunemir.fileio import atomic_path

        meta.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(meta) as tmp:
            tmp.write_text(json.dumps(packaged_reference(dataset), indent=2, sort_keys=True))
        click.echo(f"{meta}: written from jukemir's canonical metadata (labels and splits; no audio is needed to "
                   f"probe these vectors)")
    click.echo(f"{dataset}: {len(assets) - len(failed)} of {len(assets)} pre-computed representations ready")
    if failed:
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
        raise click.UsageError("--reference and --no-reference exclude each other; keep one")
    root = _cache(cache_dir)
    downloads = root / "datasets" / dataset
    if not downloads.is_dir():
        what = "is a file, not a folder" if downloads.exists() else "does not exist"
        raise click.ClickException(f"{downloads} {what}: nothing of {dataset} is "
                                   f"downloaded in this cache. Run `tunemir data download {dataset}` first (with "
                                   "the same --cache-dir), or pass the --cache-dir that holds the download.")
    _writable_cache(cache_dir, "processed")
    try:
        summary = process_dataset(dataset, root, jobs=jobs, registry=registry,
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


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):  # FloatRange lets NaN through: every comparison with it is False
        raise click.BadParameter(f"{value} is not a number of seconds; give one from {MIN_SECONDS:g} to "
                                 f"{MAX_SECONDS:g}")
    return value


@data.command()
@click.option("--clips", type=click.IntRange(min=MIN_CLIPS), default=240, show_default=True)
@click.option("--seconds", type=click.FloatRange(min=MIN_SECONDS, max=MAX_SECONDS), callback=_finite, default=8.0,
              show_default=True)
@click.option("--sample-rate", type=click.IntRange(min=MIN_SAMPLE_RATE, max=MAX_SAMPLE_RATE), default=22050,
              show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@_CACHE
def synth(clips: int, seconds: float, sample_rate: int, seed: int, cache_dir: Path | None) -> None:
    """Write the synthetic corpus (key, instrument tags, tempo) to <cache>/processed."""
    folders = write_synth(_writable_cache(cache_dir, "processed"), clips, seconds, sample_rate, seed,
                          progress=sys.stderr.isatty())
    for name, folder in folders.items():
        click.echo(f"{name:12s} {folder}")


def _cache(path: Path | None) -> Path:
    return Path(path) if path else cache_dir()


def _writable_cache(path: Path | None, sub: str) -> Path:
    """`<cache>/<sub>`, created and checked writable; else a usage error naming where the cache came from."""
    folder = _cache(path) / sub
    try:
        return ensure_writable_dir(folder)
    except OSError as err:
        fix = "Pass a folder you can write to"
        if path is not None:
            raise click.BadParameter(f"{err.strerror}. {fix}.", param_hint="--cache-dir") from None
        source = f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "the default cache ~/.tunemir"
        raise click.UsageError(f"cache folder {folder} (from {source}): {err.strerror}. {fix} with --cache-dir "
                               f"or ${CACHE_ENV}.") from None
