"""The `tunemir` command line: thin click commands over the library functions.

This root holds the group and `models`; the other commands live in their domains' `cli` modules,
imported when run, so that a command imports torch only if it needs it.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from tunemir import __version__
from tunemir.extras import MissingExtraError, missing, require
from tunemir.models import available_models, get_info


#: Commands imported only when run, so that `tunemir --help`, `models` and the probe commands that
#: write configs or read results start without torch, and the base install's never import yaml,
#: Lightning or scikit-learn: name -> (module, attribute, extra or None, the one-line help
#: `tunemir --help` shows; tests check it against the command's own).
LAZY_COMMANDS = {
    "convert-checkpoint": ("tunemir.extract.cli", "convert_checkpoint", None,
                           "Convert a CLMR/TUNe checkpoint to tunemir's safetensors format."),
    "data": ("tunemir.datasets.cli", "data", None,
             "Download, verify and process the benchmark datasets; write the synthetic one."),
    "demo": ("tunemir.extract.cli", "demo", None,
             "A tour of extraction: every model on a folder of mixed audio formats written to OUTPUT_DIR."),
    "evaluate": ("tunemir.pretrain.cli", "evaluate", "train", "Evaluate pretrained encoders."),
    "extract": ("tunemir.extract.cli", "extract", None,
                "Write OUTPUT_DIR/<relative path>.npy, one vector per audio file under INPUT_DIR."),
    "probe": ("tunemir.probe.cli", "probe", "probe",
              "Train and evaluate probes on extracted features (jukemir protocol)."),
    "train": ("tunemir.pretrain.cli", "train", "train",
              "Pretrain an encoder with CLMR's contrastive learning (SimCLR on raw audio)."),
    "weights": ("tunemir.extract.cli", "weights", None,
                "Released weights: fetch, verify and convert (what the extractor images do at build time)."),
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

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as err:
            # click (>= 8.4) suggests close names only among the commands imported so far.
            if not hasattr(err, "command_name"):
                raise
            raise type(err)(err.command_name, possibilities=self.list_commands(ctx), ctx=ctx) from None

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
@click.option("--names", is_flag=True, help="Only the names, one per line (for scripts).")
def models(names: bool) -> None:
    """List the available models and their layers."""
    if names:
        click.echo("\n".join(available_models()))
        return
    for name in available_models():
        info = get_info(name)
        if info.needs_weights:
            count = info.spec.num_layers
            layers = f"layers 0-{count - 1}" if count > 1 else "layer 0 only"
        else:
            layers = f"{info.config.dim}-d, no layers"
        click.echo(f"{name:12s} {info.summary} ({layers})")


add_log_options(main)
