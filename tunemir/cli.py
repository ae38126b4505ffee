"""The `tunemir` command line: thin click commands over the library functions."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from tunemir import __version__
from tunemir.checkpoints import CheckpointError
from tunemir.datasets.cli import data
from tunemir.demo import run_demo
from tunemir.extract import ExtractUsageError
from tunemir.extract import extract as run_extract
from tunemir.models import available_models, build_model, get_info
from tunemir.models import convert_checkpoint as convert
from tunemir.pretrain.cli import evaluate, train
from tunemir.probe.cli import probe
from tunemir.weights import RELEASES, WeightsError, fetch_weights


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tunemir")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings and errors.")
def main(verbose: bool, quiet: bool) -> None:
    """Pretrain, extract and probe raw-waveform music representations."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@main.command()
@click.argument("model", type=click.Choice(available_models()))
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Weights: a TUNe/CLMR .ckpt or .pt, or a tunemir .safetensors.")
@click.option("--layer", type=click.IntRange(min=0), default=0, show_default=True,
              help="0 = final representation; k counts blocks back from the output (TUNe eval_layer).")
@click.option("--batch_size", "--batch-size", "batch_size", type=click.IntRange(min=1),
              help="Shard size (jukemir): files per shard.")
@click.option("--batch_idx", "--batch-idx", "batch_idx", type=int, help="Which shard to run (0-based).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=click.IntRange(min=0), help="Decoding processes (default: 0 on a CPU of <= 4 cores, else up to 8).")
@click.option("--frames-per-batch", type=click.IntRange(min=1), help="Frames per model call (default 2 on CPU, 128 on GPU).")
@click.option("--random-init", is_flag=True, help="Untrained weights: for tests and smoke runs only.")
def extract(model, input_dir, output_dir, checkpoint, layer, batch_size, batch_idx, device, workers,
            frames_per_batch, random_init) -> None:
    """Write OUTPUT_DIR/<relative path>.npy, one vector per audio file under INPUT_DIR."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise click.BadParameter(f"{device!r}: use auto, cpu, cuda or cuda:N", param_hint="--device")
    try:
        summary = run_extract(model, input_dir, output_dir, checkpoint=checkpoint, layer=layer, batch_size=batch_size,
                      batch_idx=batch_idx, device=device, workers=workers, random_init=random_init,
                      frames_per_batch=frames_per_batch)
    except ExtractUsageError as err:
        raise click.UsageError(str(err)) from None
    except CheckpointError as err:
        raise click.ClickException(str(err)) from None
    if not summary.ok:
        click.echo(f"{len(summary.failed)} of {summary.total} files failed (listed above); "
                   f"the other outputs are complete. Fix or remove those files and run again.", err=True)
        sys.exit(1)


@main.command("convert-checkpoint")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", type=click.Choice(available_models()), help="Expected model (checked against the tensors).")
def convert_checkpoint(source: Path, target: Path, model: str | None) -> None:
    """Convert a CLMR/TUNe checkpoint to tunemir's safetensors format."""
    try:
        metadata = convert(source, target, name=model)
    except CheckpointError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {target}: {metadata['model']} encoder, weights sha256 {metadata['weights_sha256']}")


@main.group()
def weights() -> None:
    """Released weights: fetch, verify and convert (what the extractor images do at build time)."""


@weights.command("fetch")
@click.argument("model", type=click.Choice(sorted(RELEASES)))
@click.option("--sha256", help="Expected sha256 of the released file (overrides --pin-file).")
@click.option("--pin-file", type=click.Path(dir_okay=False, path_type=Path),
              help="sha256sum-format file pinning the released file (containers/<model>/weights.sha256).")
@click.option("--search-dir", "search_dirs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder that may already hold the released file (repeatable); searched before downloading.")
@click.option("--url", "urls", multiple=True, help="Download from this URL first (repeatable).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Converted file [$TUNEMIR_WEIGHTS_DIR/<model>.safetensors].")
def weights_fetch(model: str, sha256: str | None, pin_file: Path | None, search_dirs: tuple[Path, ...],
                  urls: tuple[str, ...], output: Path | None) -> None:
    """Find or download MODEL's released weights, check the pinned sha256, convert to safetensors."""
    try:
        path = fetch_weights(model, sha256=sha256, pin_file=pin_file, search_dirs=search_dirs, urls=urls,
                             output=output, progress=sys.stderr.isatty())
    except (WeightsError, CheckpointError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{model}: {path}")


@main.command()
def models() -> None:
    """List the available models and their layers."""
    for name in available_models():
        info = get_info(name)
        if info.needs_weights:
            layers = f"layers 0-{build_model(name).num_layers - 1}"
        else:
            layers = f"{info.config.dim}-d, no layers"
        click.echo(f"{name:10s} {info.summary} ({layers})")


@main.command()
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path), default="demo-output")
@click.option("--workers", type=click.IntRange(min=0), help="Decoding processes.")
def demo(output_dir: Path, workers: int | None) -> None:
    """A tour of extraction: every model on a folder of mixed audio formats written to OUTPUT_DIR.

    The whole pipeline (synthetic corpus, pretraining, sharded extraction, probe grids, results
    table) is `make demo`, which runs reproduce/demo.sh.
    """
    rows = run_demo(output_dir, workers=workers)
    click.echo(f"\n{'model':10s} {'weights':26s} {'files':>5s} {'dim':>5s} {'audio-s/s':>10s}  vectors")
    for row in rows:
        click.echo(f"{row['model']:10s} {row['weights']:26s} {row['files']:5d} {row['dim']:5d} "
                   f"{row['audio_s_per_s']:10.1f}  {row['folder']}")
    if any(row["failed"] for row in rows):
        sys.exit(1)


main.add_command(data)
main.add_command(probe)
main.add_command(train)
main.add_command(evaluate)
