"""The `tunemir` command line: thin click commands over the library functions."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import click

from tunemir import __version__
from tunemir.checkpoints import CheckpointError
from tunemir.demo import run_demo
from tunemir.extract import ExtractError, ExtractUsageError, resolve_device, shard_status
from tunemir.extract import extract as run_extract
from tunemir.extras import MissingExtraError, missing, require
from tunemir.models import available_models, build_model, get_info
from tunemir.models import convert_checkpoint as convert
from tunemir.weights import RELEASES, WeightsError, WeightsUsageError, fetch_weights


#: Commands that need an extra, imported only when run (so that the base install's `tunemir --help`,
#: `models` and `extract` never import yaml, Lightning or scikit-learn): name -> (module, attribute,
#: extra or None, the one-line help `tunemir --help` shows; tests check it against the command's own).
LAZY_COMMANDS = {
    "data": ("tunemir.datasets.cli", "data", None,
             "Download, verify and process the benchmark datasets; write the synthetic one."),
    "evaluate": ("tunemir.pretrain.cli", "evaluate", "train", "Evaluate pretrained encoders."),
    "probe": ("tunemir.probe.cli", "probe", "probe",
              "Train and evaluate probes on extracted features (jukemir protocol)."),
    "train": ("tunemir.pretrain.cli", "train", "train",
              "Pretrain an encoder with CLMR's contrastive learning (SimCLR on raw audio)."),
}
_LOG_LEVEL = "tunemir.log_level"


def _configure_logging(level: int) -> None:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)
    # -v is for tunemir's own debug lines; numba's compiler logs thousands at DEBUG.
    for noisy in ("numba", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.INFO))


def _set_log_level(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    # Parameters are processed in command-line order, so of -v and -q the last one given wins.
    if value:
        level = logging.DEBUG if param.name == "verbose" else logging.WARNING
        ctx.meta[_LOG_LEVEL] = level
        _configure_logging(level)


def add_log_options(command: click.Command) -> click.Command:
    """Give `command` and every command under it -v/--verbose and -q/--quiet, so that they work
    before the subcommand (`tunemir -v extract ...`) and after it (`tunemir extract ... -v`)."""
    if not any("--verbose" in getattr(param, "opts", ()) for param in command.params):
        command.params += [
            click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, callback=_set_log_level,
                         help="Log debug messages (of -v and -q, the last one given wins)."),
            click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_set_log_level,
                         help="Log only warnings and errors."),
        ]
    for sub in getattr(command, "commands", {}).values():
        add_log_options(sub)
    return command


def _unavailable(name: str, err: MissingExtraError) -> click.Command:
    """Stands in for a command whose extra is missing: any arguments, exit 1 with the install line."""
    def fail(args: tuple[str, ...]) -> None:
        raise click.ClickException(str(err))
    return click.Command(name, callback=fail, add_help_option=False, help=str(err),
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
                         context_settings={"ignore_unknown_options": True})


class LazyGroup(click.Group):
    """The root group: the commands of LAZY_COMMANDS are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands or name not in LAZY_COMMANDS:
            return super().get_command(ctx, name)
        module, attribute, extra, _ = LAZY_COMMANDS[name]
        if extra is not None:
            try:
                require(extra, f"tunemir {name}")
            except MissingExtraError as err:
                return _unavailable(name, err)
        command = add_log_options(getattr(importlib.import_module(module), attribute))
        self.add_command(command, name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The lazy commands' help comes from LAZY_COMMANDS: listing them imports nothing.
        rows = []
        for name in self.list_commands(ctx):
            limit = formatter.width - 6 - len(name)
            if name in self.commands:
                command = self.commands[name]
                if not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
                continue
            _, _, extra, text = LAZY_COMMANDS[name]
            if extra is not None and missing(extra):
                rows.append((name, f"[needs: pip install 'tunemir[{extra}]'] {text}"))
            else:
                rows.append((name, click.Command(name, help=text).get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tunemir")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Pretrain, extract and probe raw-waveform music representations."""
    _configure_logging(ctx.meta.get(_LOG_LEVEL, logging.INFO))


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
@click.option("--list-shards", is_flag=True,
              help="Print 'INDEX done' or 'INDEX todo' per shard of --batch_size files and exit (nothing is written).")
def extract(model, input_dir, output_dir, checkpoint, layer, batch_size, batch_idx, device, workers,
            frames_per_batch, random_init, list_shards) -> None:
    """Write OUTPUT_DIR/<relative path>.npy, one vector per audio file under INPUT_DIR."""
    try:
        resolve_device(device)  # the one rule for device names, checked before any file is touched
    except ExtractUsageError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None
    if list_shards and (batch_size is None or batch_idx is not None):
        raise click.UsageError("--list-shards needs --batch_size (the shard size) and no --batch_idx")
    if not get_info(model).needs_weights:
        try:
            require("handcrafted", f"tunemir extract {model}")
        except MissingExtraError as err:
            raise click.ClickException(str(err)) from None
    try:
        if list_shards:
            status = shard_status(model, input_dir, output_dir, batch_size=batch_size, checkpoint=checkpoint,
                                  layer=layer, random_init=random_init)
            for index, done in enumerate(status):
                click.echo(f"{index} {'done' if done else 'todo'}")
            return
        summary = run_extract(model, input_dir, output_dir, checkpoint=checkpoint, layer=layer, batch_size=batch_size,
                      batch_idx=batch_idx, device=device, workers=workers, random_init=random_init,
                      frames_per_batch=frames_per_batch)
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
    except WeightsUsageError as err:
        raise click.UsageError(str(err)) from None
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


add_log_options(main)
