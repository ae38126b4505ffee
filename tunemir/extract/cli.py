"""`tunemir extract` and the commands around it (demo, convert-checkpoint, weights): they load
encoders, so the CLI root imports this module only when one of them runs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tunemir.checkpoints import CheckpointError
from tunemir.demo import run_demo
from tunemir.extract import ExtractError, ExtractUsageError, resolve_device, shard_status
from tunemir.extract import extract as run_extract
from tunemir.extras import MissingExtraError, require
from tunemir.models import available_models, get_info
from tunemir.models.custom import entry_point_names, is_custom_reference
from tunemir.models import convert_checkpoint as convert
from tunemir.weights import RELEASES, WeightsError, WeightsUsageError, fetch_weights


class ModelName(click.ParamType):
    """A registry name, a model file `FILE.py:FUNCTION` or an installed `tunemir.models` entry point."""

    name = "MODEL"

    def convert(self, value, param, ctx):
        if value in available_models() or value in entry_point_names():
            return value
        if is_custom_reference(value):
            file, _, function = value.rpartition(":") if ".py:" in value else (value, "", "")
            if not function.isidentifier():
                self.fail(f"{value!r} names no function in the model file: write FILE.py:FUNCTION, e.g. "
                          f"{file}:build", param, ctx)
            if not Path(file).expanduser().is_file():
                what = "is a folder" if Path(file).expanduser().is_dir() else "does not exist"
                self.fail(f"model file {file} {what}: give the path of a Python file defining {function}()",
                          param, ctx)
            return value
        offered = ", ".join(repr(name) for name in available_models() + entry_point_names())
        self.fail(f"{value!r} is not one of {offered}; or name a model file of your own as FILE.py:FUNCTION",
                  param, ctx)

    def get_metavar(self, param, *args, **kwargs) -> str:
        return "{" + "|".join(available_models()) + "|FILE.py:FUNCTION}"


@click.command()
@click.argument("model", type=ModelName())
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Weights: a TUNe/CLMR .ckpt or .pt, or a tunemir .safetensors.")
@click.option("--layer", type=click.IntRange(min=0), default=0, show_default=True,
              help="0 = final representation; k counts blocks back from the output (TUNe eval_layer).")
@click.option("--layers", metavar="all|K,K,...",
              help="Several layers in one pass (decode and encode once): layer K goes to OUTPUT_DIR@K, e.g. "
                   "representations/gtzan_ff/tune_plus@5, each as --layer K would write it.")
@click.option("--batch_size", "--batch-size", "batch_size", type=click.IntRange(min=1),
              help="Shard size (jukemir): files per shard.")
@click.option("--batch_idx", "--batch-idx", "batch_idx", type=int, help="Which shard to run (0-based).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=click.IntRange(min=0), help="Decoding processes (default: 0 on a CPU of <= 4 cores, else up to 8).")
@click.option("--frames-per-batch", type=click.IntRange(min=1), help="Frames per model call (default 2 on CPU, 128 on GPU).")
@click.option("--random-init", is_flag=True, help="Untrained weights: for tests and smoke runs only.")
@click.option("--list-shards", is_flag=True,
              help="Print 'INDEX done' or 'INDEX todo' per shard of --batch_size files and exit (nothing is written).")
def extract(model, input_dir, output_dir, checkpoint, layer, layers, batch_size, batch_idx, device, workers,
            frames_per_batch, random_init, list_shards) -> None:
    """Write OUTPUT_DIR/<relative path>.npy, one vector per audio file under INPUT_DIR.

    MODEL is one of tunemir's models, or your own: FILE.py:FUNCTION, where FUNCTION() returns
    (module, spec), a torch module mapping frames (B, samples) to vectors (B, D) and a
    tunemir.models.ModelSpec (or dict) declaring sample_rate, frame_length, pooling and
    num_layers; or the name of a `tunemir.models` entry point of an installed package.
    Loading FILE.py runs its code, as `python FILE.py` would: name only files you trust.
    """
    try:
        resolve_device(device)  # the one rule for device names, checked before any file is touched
    except ExtractUsageError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None
    if list_shards and (batch_size is None or batch_idx is not None):
        raise click.UsageError("--list-shards needs --batch_size (the shard size) and no --batch_idx")
    if model in available_models() and not get_info(model).needs_weights:
        try:
            require("handcrafted", f"tunemir extract {model}")
        except MissingExtraError as err:
            raise click.ClickException(str(err)) from None
    try:
        if list_shards:
            status = shard_status(model, input_dir, output_dir, batch_size=batch_size, checkpoint=checkpoint,
                                  layer=layer, random_init=random_init, layers=layers)
            for index, done in enumerate(status):
                click.echo(f"{index} {'done' if done else 'todo'}")
            return
        summary = run_extract(model, input_dir, output_dir, checkpoint=checkpoint, layer=layer,
                              batch_size=batch_size, batch_idx=batch_idx, device=device, workers=workers,
                              random_init=random_init, frames_per_batch=frames_per_batch, layers=layers)
    except ExtractUsageError as err:
        raise click.UsageError(str(err)) from None
    except (CheckpointError, ExtractError) as err:
        raise click.ClickException(str(err)) from None
    if not summary.ok:
        for _, reason in summary.failed:
            click.echo(f"FAILED {reason}", err=True)
        click.echo(f"{len(summary.failed)} of {summary.total} files failed (listed above, and in the run report); "
                   f"the other outputs are complete. Fix or remove those files and run again.", err=True)
        sys.exit(1)


@click.command("convert-checkpoint")
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


@click.group()
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
    except WeightsUsageError as err:
        raise click.UsageError(str(err)) from None
    except (WeightsError, CheckpointError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{model}: {path}")


@click.command()
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path), default="demo-output")
@click.option("--workers", type=click.IntRange(min=0), help="Decoding processes.")
def demo(output_dir: Path, workers: int | None) -> None:
    """A tour of extraction: every model on a folder of mixed audio formats written to OUTPUT_DIR.

    The whole pipeline (synthetic corpus, pretraining, sharded extraction, probe grids, results
    table) is `make demo`, which runs reproduce/demo.sh.
    """
    blocker = next((p for p in [output_dir, *output_dir.parents] if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        raise click.BadParameter(f"{blocker} is a file (or a broken link), not a folder: choose another OUTPUT_DIR",
                                 param_hint="OUTPUT_DIR")
    try:
        rows = run_demo(output_dir, workers=workers)
    except (OSError, ExtractError, ExtractUsageError) as err:
        raise click.ClickException(f"the demo cannot write into {output_dir}: {err}; choose another OUTPUT_DIR") from None
    click.echo(f"\n{'model':10s} {'weights':26s} {'files':>5s} {'dim':>5s} {'audio-s/s':>10s}  vectors")
    for row in rows:
        click.echo(f"{row['model']:10s} {row['weights']:26s} {row['files']:5d} {row['dim']:5d} "
                   f"{row['audio_s_per_s']:10.1f}  {row['folder']}")
    if any(row["failed"] for row in rows):
        sys.exit(1)
