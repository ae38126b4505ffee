"""`tunemir train` (contrastive pretraining) and `tunemir evaluate linear` (CLMR's protocol)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from tunemir.pretrain.config import (
    MAX_SEED, ConfigError, dump_config, load_config, option_fields, parse_encoder_config, read_yaml,
    trainable_models,
)

#: Options that fix the network's shape: a resumed run keeps them.
ARCHITECTURE = ("model", "encoder_config", "projection_dim")


def _config_options(command):
    """One click option per configuration field (`--batch_size` / `--batch-size`,
    `--augment.p_pitch`, `--sync-batchnorm/--no-sync-batchnorm`), all defaulting to None so
    that only what the user typed overrides the YAML file and the defaults."""
    for dotted, kind, help_text in reversed(option_fields()):
        param = dotted.replace(".", "__")
        dashed = dotted.replace("_", "-")
        if kind is bool:
            decls = [f"--{dashed}/--no-{dashed}", param]
            command = click.option(*decls, default=None, help=help_text)(command)
            continue
        names = [f"--{dotted}"] + ([f"--{dashed}"] if dashed != dotted else [])
        if getattr(kind, "__origin__", None) is tuple:
            option = click.option(*names, param, type=float, nargs=2, default=None, help=help_text)
        else:
            option = click.option(*names, param, type=kind, default=None, help=help_text)
        command = option(command)
    return command


PAPER_RECIPE = """Pretrain an encoder with CLMR's contrastive learning (SimCLR on raw audio).

\b
The defaults are the TUNe paper's recipe: TUNe+ on the MagnaTagATune train split, batch 48
clips (96 views of 59,049 samples at 22,050 Hz), the CLMR augmentation chain on the device,
NT-Xent with temperature 0.5, Adam 3e-4, seed 42, 10,000 epochs, on one device (as TUNe);
a checkpoint every 200 epochs plus last.ckpt. `--model tune` / `--model clmr` give TUNe and
the CLMR SampleCNN.

\b
Options come from, in order: the defaults, a checkpoint being resumed, --config FILE (YAML;
`--print-config` writes one), then the options typed here.

\b
  tunemir train                                   # the paper recipe (MTT processed first)
  tunemir train --audio_dir my_music --max_epochs 1000
  tunemir train --resume last                     # continue a killed or finished run
  tunemir train --devices 4 --strategy ddp        # 4 GPUs, batch 48 per GPU, synced batch norm
  tunemir train --devices 4 --strategy ddp --lr_scaling linear   # TUNe's lr x 4
  tunemir train --devices 8 --num_nodes 2 --strategy ddp --gather-negatives

Multi-GPU and multi-node runs go through Lightning's strategies; on a cluster start one
process per GPU (e.g. `srun tunemir train --devices 4 --num_nodes 2 --strategy ddp`). The
start of a run logs its global batch (per device x devices x nodes), learning rate and
negatives per view; run.json stores them. `--lr_scaling none` (the default, as CLMR) keeps
--learning_rate on any number of devices.
Checkpoints load directly in `tunemir extract --checkpoint` and CLMR's/TUNe's own loaders.
"""


@click.command(help=PAPER_RECIPE, context_settings={"max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML file of options (as --print-config writes).")
@click.option("--resume", help="Checkpoint to continue from; 'last' for this run's checkpoints/last.ckpt; 'auto' "
                               "for 'last' if it exists, else a new run. The checkpoint's stored options are the base "
                               "that --config and typed options override. Without --resume a run whose folder already "
                               "holds checkpoints is refused, so that none is overwritten.")
@click.option("--print-config", is_flag=True, help="Print the resolved options as YAML and exit.")
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
@_config_options
def train(config_file, resume, print_config, progress, **options) -> None:
    overrides = {name.replace("__", "."): value for name, value in options.items() if value is not None}
    from tunemir.pretrain.data import PretrainDataError

    try:
        config, checkpoint = resolve_config(config_file, overrides, resume)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    if print_config:
        click.echo(dump_config(config), nl=False)
        return
    from tunemir.pretrain.module import ResumeError, TrainingError, run_dir
    from tunemir.pretrain.module import train as run_train

    if checkpoint is None:  # a new run must not write over another run's checkpoints
        held = sorted(p.name for p in (run_dir(config) / "checkpoints").glob("*.ckpt"))
        if held:
            raise click.UsageError(
                f"the run folder {run_dir(config)} already holds checkpoints ({', '.join(held[:3])}"
                f"{', ...' if len(held) > 3 else ''}); continue that run with --resume last (or --resume auto), or "
                f"start a new one with another --name")
    try:
        folder = run_train(config, resume=checkpoint, progress=progress)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    except (PretrainDataError, ResumeError, TrainingError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"run folder: {folder} (checkpoints/, loss.png, run.json)")


def resolve_config(config_file, overrides: dict, resume: str | None):
    """(the run's configuration, the checkpoint to resume or None); when resuming, the
    checkpoint's stored options are the base, and the options that shape the network must agree."""
    if resume is None:
        return load_config(config_file, overrides), None
    from tunemir.pretrain.module import ResumeError, resolve_resume, run_dir, stored_config

    if resume == "auto":  # continue this run if it has a last checkpoint, else start it
        config = load_config(config_file, overrides)
        if not (run_dir(config) / "checkpoints" / "last.ckpt").is_file():
            return config, None
        resume = "last"

    path = resolve_resume(load_config(config_file, overrides) if resume == "last" else None, resume)
    try:
        stored = stored_config(path)
    except ResumeError as err:
        raise click.ClickException(str(err)) from None
    where = f"{path} (stored configuration)"
    trained = load_config(base=stored, base_name=where)
    requested = read_yaml(config_file) if config_file is not None else {}
    requested = {**(requested if isinstance(requested, dict) else {}), **overrides}
    for key in ARCHITECTURE:  # checked before the rest: a new model would reject the old encoder_config
        if key in requested and not _same(key, requested[key], getattr(trained, key)):
            raise ConfigError(f"--{key}: {path} was trained with {key}={getattr(trained, key)!r}, not "
                              f"{requested[key]!r}; a resumed run keeps the network's shape (train the other "
                              f"one as a new run, e.g. with another --name)")
    return load_config(config_file, overrides, base=stored, base_name=where), path


def _same(key: str, requested, trained) -> bool:
    if key != "encoder_config":
        return requested == trained
    try:  # compared as parsed JSON; text that is not JSON is reported by load_config
        mine = json.loads(requested) if isinstance(requested, str) else requested
    except json.JSONDecodeError:
        return True
    return (mine or {}) == (json.loads(trained) if trained else {})


def _positive_finite(ctx, param, value):
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value} is not a finite number greater than 0", ctx, param)
    return value


def _device(ctx, param, value: str):
    kind, _, index = value.partition(":")
    if value in ("auto", "cpu", "cuda", "mps") or (kind == "cuda" and index.isdigit()):
        return value
    raise click.BadParameter(f"{value!r} is not a device: give auto, cpu, cuda, cuda:N or mps", ctx, param)


@click.group()
def evaluate() -> None:
    """Evaluate pretrained encoders."""


@evaluate.command()
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Encoder weights (a tunemir train .ckpt, a CLMR/TUNe checkpoint or a .safetensors).")
@click.option("--model", help="Model name; checked against the checkpoint, required with --supervised.")
@click.option("--dataset", default="magnatagatune", show_default=True, help="Processed dataset.")
@click.option("--datasets-dir", "--datasets_dir", "datasets_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Processed datasets [default: $TUNEMIR_CACHE_DIR/processed].")
@click.option("--audio-cache-dir", "--audio_cache_dir", "audio_cache_dir",
              type=click.Path(file_okay=False, path_type=Path),
              help="Decoded-audio caches [default: $TUNEMIR_CACHE_DIR/audio-cache].")
@click.option("--output-dir", "--output_dir", "output_dir", type=click.Path(file_okay=False, path_type=Path),
              default="runs/linear-evaluation", show_default=True)
@click.option("--mlp", is_flag=True, help="One hidden layer (512, ReLU) instead of a linear head.")
@click.option("--head", type=click.Choice(["last", "best"]), default="last", show_default=True,
              help="Weights tested: last (early-stopped, as CLMR) or best (the best valid epoch's).")
@click.option("--layer", type=click.IntRange(min=0), default=0, show_default=True,
              help="Encoder layer giving the features: 0 = final representation; k counts blocks back from the "
                   "output (as `tunemir extract --layer`; `tunemir models` lists them).")
@click.option("--supervised", is_flag=True, help="Train the model end to end from scratch (CLMR's baseline).")
@click.option("--learning-rate", "--learning_rate", "learning_rate", type=float, callback=_positive_finite,
              help="[default: 1e-3 for heads, 3e-4 (SGD) supervised]")
@click.option("--max-epochs", "--max_epochs", "max_epochs", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", "--batch_size", "batch_size", type=click.IntRange(min=1), default=48, show_default=True)
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=42, show_default=True)
@click.option("--device", default="auto", show_default=True, callback=_device, help="auto, cpu, cuda or cuda:N.")
@click.option("--encoder-config", "encoder_config", help="JSON of encoder fields for --supervised (small models).")
def linear(checkpoint, model, dataset, datasets_dir, audio_cache_dir, output_dir, mlp, head, layer, supervised,
           learning_rate, max_epochs, patience, batch_size, seed, device, encoder_config) -> None:
    """CLMR's linear evaluation: a head on frozen features of one fixed random crop per clip
    (train/valid), Adam 1e-3 + weight decay 1e-6, ReduceLROnPlateau, early stopping on valid
    loss, the last (early-stopped) head tested (--head best: the best valid epoch's); test clips
    scored by the mean sigmoid over all their full frames; macro ROC-AUC and PR-AUC. Writes
    OUTPUT_DIR/linear_evaluation.json."""
    from tunemir.checkpoints import CheckpointError
    from tunemir.extract import ExtractUsageError
    from tunemir.models import UnknownModelError
    from tunemir.pretrain.data import PretrainDataError
    from tunemir.pretrain.linear import LinearEvalError, LinearEvalSettings, LinearEvalUsageError, linear_evaluation
    from tunemir.probe.tasks import TaskError

    if supervised == (checkpoint is not None):
        raise click.UsageError("give --checkpoint (linear evaluation) or --supervised --model NAME, not both")
    if supervised:
        if model not in trainable_models():
            raise click.UsageError(f"--model {model}: --supervised trains one of {', '.join(trainable_models())}; "
                                   f"choose one with --model" if model else
                                   f"--supervised needs --model, one of {', '.join(trainable_models())}")
        if mlp:
            raise click.UsageError("--mlp applies to the head on a frozen encoder: leave it out with --supervised")
        if layer:
            raise click.UsageError("--layer selects a layer of a frozen --checkpoint encoder: leave it out with "
                                   "--supervised (the baseline trains the whole model)")
        if batch_size < 2:
            raise click.UsageError("--batch-size must be at least 2 with --supervised (batch norm trains on it)")
    elif encoder_config is not None:
        raise click.UsageError("--encoder-config applies with --supervised only (a --checkpoint fixes the encoder)")
    try:
        overrides = parse_encoder_config(model, encoder_config, "--encoder-config") if encoder_config else None
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    settings = LinearEvalSettings(mlp=mlp, supervised=supervised, learning_rate=learning_rate,
                                  max_epochs=max_epochs, patience=patience, batch_size=batch_size, seed=seed, head=head)
    try:
        result = linear_evaluation(output_dir, checkpoint=checkpoint, model=model, dataset=dataset,
                                   datasets_dir=datasets_dir, audio_cache_dir=audio_cache_dir, settings=settings,
                                   device=device, encoder_config=overrides, layer=layer)
    except (CheckpointError, PretrainDataError, TaskError, LinearEvalError) as err:
        raise click.ClickException(str(err)) from None
    except (ExtractUsageError, LinearEvalUsageError, UnknownModelError) as err:
        raise click.UsageError(str(err)) from None
    metrics = ", ".join(f"{k} {100 * v:.2f}" for k, v in result["test"].items())
    click.echo(f"{dataset} test ({result['test_clips']} clips): {metrics}; after {result['epochs']} epochs, "
               f"the {head} weights (epoch {result['tested_epoch']}"
               f"{f', layer {layer}' if layer else ''}). Details: {Path(output_dir) / 'linear_evaluation.json'}")

