"""`tunemir extract`: a folder of audio in, one representation vector (.npy) per file out."""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tunemir.audio import AUDIO_SUFFIXES, is_audio_path
from tunemir.extract.pipeline import Job, OutputFolderError, Progress, Stats, run_jobs, write_failure
from tunemir.extract.records import (
    MANIFEST_NAME, SOURCES_DIR, ManifestMismatchError, build_manifest, check_manifest, check_or_write_manifest,
    read_source_record, record_path, source_stamp, write_run_report,
)
from tunemir.fileio import check_writable, remove_stale_temps
from tunemir.models import (
    HandcraftedFeature, ModelSpec, UnknownModelError, available_models, default_weights_path, get_info, load_model,
)
from tunemir.models.custom import CustomModelError, entry_point_names, is_custom_reference, load_custom

__all__ = [
    "MANIFEST_NAME", "SOURCES_DIR", "ExtractError", "ExtractSummary", "ExtractUsageError", "LoadedModel",
    "default_frames_per_batch",
    "default_workers", "discover_audio", "extract", "find_audio_files", "is_valid_output", "resolve_device",
    "select_shard", "shard_status",
]

log = logging.getLogger(__name__)


class ExtractUsageError(ValueError):
    """Arguments that cannot work together (bad shard, mismatched output folder, bad layer)."""


class ExtractError(Exception):
    """The run as a whole cannot proceed: no audio, an unusable output folder, a broken checkpoint.
    The message names the path and the fix."""


@dataclass
class LoadedModel:
    """A model ready to extract with, and what the pipeline reads of it."""

    rep: torch.nn.Module | HandcraftedFeature
    spec: ModelSpec  #: its declarations: sample rate, window, front end, pooling, layers
    dim: int  #: the length of its vectors at the chosen layer
    source: dict | None = None  #: a custom model's file and sha256 (or entry point); None for the registry's


@dataclass
class ExtractSummary:
    """What one `extract` call did."""

    total: int = 0
    written: int = 0
    skipped: int = 0
    changed: int = 0  #: vectors redone because their audio changed since they were written
    failed: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def find_audio_files(input_dir: Path | str) -> list[Path]:
    """Audio files under `input_dir`, recursively, as relative paths sorted by their POSIX form.

    Hidden files and folders (names starting with '.') and files without an audio suffix are
    skipped with one log line each; symlinked folders are followed. Unreadable folders are
    left out here: `discover_audio` also returns them.
    """
    return discover_audio(input_dir)[0]


def discover_audio(input_dir: Path | str) -> tuple[list[Path], list[tuple[str, str]]]:
    """(audio files as in `find_audio_files`, [(folder, reason)] of sub-folders that could not be read).

    Symlinked folders are followed; one that leads back to a folder already listed (a loop,
    or a second link to the same folder) is skipped with a warning, so every real folder is
    read once and the walk always ends.
    """
    input_dir = Path(input_dir)
    found, unreadable = [], []
    seen: dict[tuple[int, int], Path] = {}

    def report(err: OSError) -> None:
        where = Path(err.filename) if err.filename else input_dir
        rel = where.relative_to(input_dir).as_posix() if where.is_relative_to(input_dir) else str(where)
        unreadable.append((rel, f"{where}: this folder cannot be read ({err.strerror}), so its audio was not "
                                f"extracted. Make it readable (chmod a+rx) or move it out of {input_dir}"))

    try:
        info = input_dir.stat()
        seen[(info.st_dev, info.st_ino)] = Path(".")
    except OSError as err:
        report(err)
        return [], unreadable
    for root, dirs, files in os.walk(input_dir, onerror=report, followlinks=True):
        rel_root = Path(root).relative_to(input_dir)
        kept = []
        for name in sorted(dirs):
            rel = rel_root / name
            if name.startswith("."):
                log.info("skipping hidden folder %s", rel)
                continue
            try:
                info = (Path(root) / name).stat()
            except OSError:  # vanished or unreadable: os.walk's onerror reports it when it lists it
                kept.append(name)
                continue
            key = (info.st_dev, info.st_ino)
            if key in seen:
                log.warning("skipping %s: the same folder as %s (reached through a symlink), which is already "
                            "listed", rel, seen[key])
                continue
            seen[key] = rel
            kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            rel = rel_root / name
            if name.startswith("."):
                log.info("skipping hidden file %s", rel)
            elif not is_audio_path(rel):
                log.info("skipping %s: not an audio file (WAV, FLAC, OGG or MP3)", rel)
            else:
                found.append(rel)
    return sorted(found, key=lambda p: p.as_posix()), unreadable


def select_shard(items: list, batch_size: int | None, batch_idx: int | None) -> list:
    """jukemir's sharding: batch `batch_idx` of `range(0, len(items), batch_size)`."""
    if batch_size is None and batch_idx is None:
        return list(items)
    if batch_size is None or batch_idx is None:
        raise ExtractUsageError("--batch_size and --batch_idx go together: give both or neither")
    if batch_size < 1:
        raise ExtractUsageError(f"--batch_size must be at least 1, got {batch_size}")
    n_batches = len(range(0, len(items), batch_size))
    if not 0 <= batch_idx < n_batches:
        raise ExtractUsageError(
            f"--batch_idx {batch_idx} is out of range: {len(items)} files in batches of {batch_size} "
            f"make {n_batches} batches, so --batch_idx must be 0 to {n_batches - 1}"
        )
    return list(items[batch_idx * batch_size : (batch_idx + 1) * batch_size])


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ExtractUsageError(f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ExtractUsageError(f"--device {device} was requested but no CUDA GPU is visible; use --device cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ExtractUsageError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) are visible, "
                                    f"so use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(device)


def default_workers(device: torch.device, neural: bool) -> int:
    """Decoding processes. Handcrafted features are computed in the workers, so use every
    core. A neural model on a CPU already keeps every core busy: on a small machine a decode
    process only steals cycles from it (measured in BENCHMARKS.md), so decode in-process."""
    cores = os.cpu_count() or 1
    if not neural:
        return cores
    if device.type == "cpu":
        return 0 if cores <= 4 else min(4, cores // 4)
    return min(8, cores)


def default_frames_per_batch(device: torch.device) -> int:
    """Frames per model call. On a CPU small batches win: TUNe's full-resolution activations
    (2.6 MB per frame and layer) then stay in cache (measured in BENCHMARKS.md)."""
    return 128 if device.type == "cuda" else 2


def is_valid_output(path: Path, dim: int) -> bool:
    """True if `path` is a complete vector this run would have written (1-D float32, finite)."""
    try:
        vector = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return False
    return vector.dtype == np.float32 and vector.shape == (dim,) and bool(np.isfinite(vector).all())


def extract(
    model: str,
    input_dir: Path | str,
    output_dir: Path | str,
    *,
    checkpoint: Path | str | None = None,
    layer: int = 0,
    batch_size: int | None = None,
    batch_idx: int | None = None,
    device: str = "auto",
    workers: int | None = None,
    random_init: bool = False,
    frames_per_batch: int | None = None,
    progress: bool | None = None,
    layers: str | list[int] | tuple[int, ...] | None = None,
) -> ExtractSummary:
    """Write `output_dir/<relative path>.npy` (float32, 1-D) for each audio file of the shard.

    With `layers` ("all" or a list), every chosen layer k goes to its own representation folder
    `<output_dir>@<k>` (`layer_folder`), each as `extract(layer=k)` would write it (manifest,
    records, run report), from one decoding and one encoder pass per file.

    `model` is a registry name, a model file `FILE.py:FUNCTION` or a `tunemir.models` entry
    point (see `tunemir.models.custom`; loading one runs its code). Per file, as the model
    declares (`ModelSpec`): decode, average channels, resample to its sample rate (soxr HQ;
    22.05 kHz for tunemir's models), cut into non-overlapping frames of its frame length
    (59,049 samples), encode, pool the frame vectors (mean); a whole-file feature takes the
    whole signal instead. Existing valid outputs
    are kept if their audio has not changed since (its size and mtime are recorded under
    `OUT/.tunemir-sources/`); each output is written atomically; a file that fails (decoding,
    a non-finite vector, an output path in the way, an output name shared with another input
    anywhere in the list) is reported in `summary.failed` and skipped. Raises ExtractUsageError
    for bad shards, layers, options or a mismatched output folder, and ExtractError when the
    run as a whole cannot go on (no audio, an output folder that takes no files, a checkpoint
    holding NaN). `progress`: None shows a bar on a terminal and periodic log lines otherwise.
    """
    start = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if layers is not None:
        if layer != 0:
            raise ExtractUsageError("--layer and --layers exclude each other; keep one")
        return _extract_layers(model, input_dir, output_dir, layers, checkpoint=checkpoint, batch_size=batch_size,
                               batch_idx=batch_idx, device=device, workers=workers, random_init=random_init,
                               frames_per_batch=frames_per_batch, progress=progress, start=start)
    files, unreadable = _list_inputs(input_dir, checkpoint, random_init)
    shard = select_shard(files, batch_size, batch_idx)
    loaded = _load(model, checkpoint, layer, random_init)
    dim = loaded.dim
    dev = resolve_device(device)
    manifest = build_manifest(model, loaded.rep, loaded.spec, checkpoint, layer, dim, random_init, loaded.source)
    _prepare_output(output_dir, manifest)

    summary = ExtractSummary(total=len(shard) + len(unreadable))
    summary.failed += unreadable  # the listing is incomplete, so every shard of it fails
    jobs = _plan(shard, input_dir, output_dir, dim, _collisions(files, input_dir, output_dir), summary)
    log.info("%s: %d files in this shard, %d already done, %d to extract",
             model, len(shard), summary.skipped, len(jobs))
    stages = {}
    if jobs:
        stats, stages = _run(loaded, jobs, layer, dev, workers, frames_per_batch,
                             Progress(len(jobs), f"extract {model}", progress), summary.failed, [output_dir])
        summary.written, summary.audio_seconds = stats.written, stats.audio_seconds
    summary.elapsed_s = time.perf_counter() - start
    _report(output_dir, batch_idx, manifest, dev, summary, stages)
    if summary.failed:
        log.warning("%d of %d files failed; the reasons are in the run report in %s",
                    len(summary.failed), summary.total, output_dir)
    log.info("%d written (%d because their audio changed), %d already present, %d failed of %d; "
             "%.1f audio-s in %.1f s (%.1f audio-s/s)",
             summary.written, summary.changed, summary.skipped, len(summary.failed), summary.total,
             summary.audio_seconds, summary.elapsed_s, summary.audio_seconds / max(summary.elapsed_s, 1e-9))
    return summary


def _run(loaded: LoadedModel, jobs: list[Job], layer: int | tuple[int, ...], dev: torch.device,
         workers: int | None, frames_per_batch: int | None, bar: Progress, failed: list,
         folders: list[Path]) -> tuple[Stats, dict]:
    """`run_jobs` as `extract` runs it (strict float32, its errors as ExtractError naming the output
    folder, of `folders`, that failed); (stats, stages)."""
    n_workers = workers if workers is not None else default_workers(dev, neural=loaded.spec.framed)
    try:
        with _strict_float32():
            stats = run_jobs(loaded.rep, jobs, spec=loaded.spec, device=dev, workers=n_workers, layer=layer,
                             batch_frames=frames_per_batch or default_frames_per_batch(dev),
                             progress=bar, failed=failed)
    except OutputFolderError as err:
        folder = next((f for f in folders if f in err.target.parents), err.target.parent)
        raise ExtractError(_folder_failure(folder, err.err, during_run=True)) from None
    except CustomModelError as err:  # its output changed shape on real audio
        raise ExtractError(f"{err}; the vectors already written are complete and kept") from None
    finally:
        bar.close()
    return stats, {"decode_in_workers_s": stats.decode_s, "model_s": stats.model_s, "write_s": stats.write_s,
                   "frames": stats.frames, "workers": n_workers}


def _report(folder: Path, batch_idx: int | None, manifest: dict, dev: torch.device, summary: ExtractSummary,
            stages: dict) -> None:
    """The run report of one output folder (`write_run_report`)."""
    try:
        write_run_report(folder, batch_idx, {
            "manifest": manifest, "device": str(dev),
            "files": {"total": summary.total, "written": summary.written, "skipped": summary.skipped,
                      "changed": summary.changed,
                      "failed": [{"file": f, "reason": r} for f, r in summary.failed]},
            "audio_seconds": summary.audio_seconds, "elapsed_s": summary.elapsed_s,
            "audio_seconds_per_s": summary.audio_seconds / max(summary.elapsed_s, 1e-9), "stages": stages,
        })
    except OSError as err:
        raise ExtractError(_folder_failure(folder, err, during_run=True)) from None


def layer_folder(output_dir: Path | str, layer: int) -> Path:
    """Where `extract(layers=...)` writes layer k: the representation `<name>@<k>` beside `output_dir`."""
    output_dir = Path(output_dir)
    return output_dir.with_name(f"{output_dir.name}@{layer}")


def choose_layers(layers: str | list[int] | tuple[int, ...], num_layers: int, model: str) -> tuple[int, ...]:
    """"all" or a list of layer numbers -> the sorted, distinct layers (ExtractUsageError when one does not exist)."""
    if isinstance(layers, str):
        text = layers.strip()
        if text == "all":
            return tuple(range(num_layers))
        try:
            layers = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ExtractUsageError(f"--layers {text!r}: give 'all' or layer numbers separated by commas, "
                                    f"e.g. 0,5,17") from None
    chosen = tuple(sorted(set(int(k) for k in layers)))
    bad = [k for k in chosen if not 0 <= k < num_layers]
    if not chosen or bad:
        what = f"layer {bad[0]} does not exist" if bad else "no layer is given"
        raise ExtractUsageError(f"--layers: {what} for {model}, which has layers 0-{num_layers - 1} (0 = the output)")
    return chosen


def _extract_layers(model: str, input_dir: Path, output_dir: Path, layers, *, checkpoint: Path | None,
                    batch_size: int | None, batch_idx: int | None, device: str, workers: int | None,
                    random_init: bool, frames_per_batch: int | None, progress: bool | None,
                    start: float) -> ExtractSummary:
    """`extract(layers=...)`: the files any chosen layer still lacks, decoded and encoded once, each
    layer's slice of the concatenated vector written into that layer's folder."""
    files, unreadable = _list_inputs(input_dir, checkpoint, random_init)
    shard = select_shard(files, batch_size, batch_idx)
    loaded = _load(model, checkpoint, 0, random_init)
    if not loaded.spec.framed:
        raise ExtractUsageError(f"{model} is a handcrafted feature with no layers; drop --layers")
    chosen = choose_layers(layers, len(loaded.rep.layer_dims), model)
    dims = {k: loaded.rep.layer_dims[k] for k in chosen}
    dev = resolve_device(device)
    folders = {k: layer_folder(output_dir, k) for k in chosen}
    manifests = {k: build_manifest(model, loaded.rep, loaded.spec, checkpoint, k, dims[k], random_init,
                                   loaded.source) for k in chosen}
    for k in chosen:
        _prepare_output(folders[k], manifests[k])
    summaries = {k: ExtractSummary(total=len(shard) + len(unreadable), failed=list(unreadable)) for k in chosen}
    plans = {k: {job.rel: job for job in _plan(shard, input_dir, folders[k], dims[k],
                                                _collisions(files, input_dir, folders[k]), summaries[k])}
             for k in chosen}
    offsets, position = {}, 0
    for k in chosen:
        offsets[k] = (position, position + dims[k])
        position += dims[k]
    jobs = []
    for rel in dict.fromkeys(rel for k in chosen for rel in plans[k]):
        needed = [k for k in chosen if rel in plans[k]]
        first = plans[needed[0]][rel]
        parts = tuple((plans[k][rel].target, plans[k][rel].record, *offsets[k]) for k in needed)
        jobs.append(Job(rel, first.source, first.target, stamp=first.stamp, record=first.record, parts=parts))
    log.info("%s layers %s: %d files in this shard, %d to extract (in one pass each)",
             model, ",".join(map(str, chosen)), len(shard), len(jobs))
    run_failed: list[tuple[str, str]] = []
    stages = {}
    if jobs:
        _, stages = _run(loaded, jobs, chosen, dev, workers, frames_per_batch,
                         Progress(len(jobs), f"extract {model} x{len(chosen)} layers", progress), run_failed,
                         list(folders.values()))
        stages["layers_in_one_pass"] = len(chosen)
    failed_rels = {rel for rel, _ in run_failed}
    elapsed = time.perf_counter() - start
    combined = ExtractSummary(total=len(shard) + len(unreadable), failed=list(unreadable))
    for k in chosen:
        summary = summaries[k]
        summary.failed += [(rel, reason) for rel, reason in run_failed if rel in plans[k]]
        summary.written = sum(1 for rel in plans[k] if rel not in failed_rels)
        summary.elapsed_s = elapsed
        _report(folders[k], batch_idx, manifests[k], dev, summary, stages)
    failures = dict(unreadable)
    for k in chosen:
        failures.update(dict(summaries[k].failed))
    combined.failed = sorted(failures.items())
    combined.written = sum(1 for job in jobs if job.rel not in failed_rels)
    planned_failures = {rel for k in chosen for rel, _ in summaries[k].failed}
    job_rels = {job.rel for job in jobs}
    combined.skipped = sum(1 for rel in shard if rel.as_posix() not in job_rels | planned_failures)
    combined.elapsed_s = elapsed
    log.info("%d files written into %d layer folders (%s), %d failed of %d",
             combined.written, len(chosen), layer_folder(output_dir, chosen[0]).parent, len(combined.failed),
             combined.total)
    return combined


def shard_status(
    model: str,
    input_dir: Path | str,
    output_dir: Path | str,
    *,
    batch_size: int,
    checkpoint: Path | str | None = None,
    layer: int = 0,
    random_init: bool = False,
    layers: str | list[int] | None = None,
) -> list[bool]:
    """Per shard of `batch_size` files: True if `extract` would find nothing to do in it.

    The same rules as `extract` (discovery, collisions, valid vectors, recorded sources, the
    manifest's settings), so `reproduce/3_extract.sh` asks this instead of guessing. With
    `layers` (as `extract(layers=...)`), a shard is done when it is done in every chosen
    layer's folder `OUTPUT_DIR@K`. Nothing is written.
    """
    if layers is not None:
        chosen = choose_layers(layers, _load(model, checkpoint, 0, random_init).spec.num_layers, model)
        per_layer = [shard_status(model, input_dir, layer_folder(output_dir, k), batch_size=batch_size,
                                  checkpoint=checkpoint, layer=k, random_init=random_init) for k in chosen]
        return [all(done) for done in zip(*per_layer)]
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if batch_size < 1:
        raise ExtractUsageError(f"--batch_size must be at least 1, got {batch_size}")
    files, unreadable = _list_inputs(input_dir, checkpoint, random_init)
    loaded = _load(model, checkpoint, layer, random_init)
    dim = loaded.dim
    n_shards = len(range(0, len(files), batch_size))
    manifest = build_manifest(model, loaded.rep, loaded.spec, checkpoint, layer, dim, random_init, loaded.source)
    try:
        check_manifest(output_dir / MANIFEST_NAME, manifest)
    except ManifestMismatchError:  # missing, or other settings: running a shard says which
        return [False] * n_shards
    if unreadable:
        return [False] * n_shards
    clashes = _collisions(files, input_dir, output_dir)
    status = []
    for index in range(n_shards):
        summary = ExtractSummary()
        jobs = _plan(files[index * batch_size : (index + 1) * batch_size], input_dir, output_dir, dim, clashes,
                     summary, quiet=True)
        status.append(not jobs and not summary.failed)
    return status


def _list_inputs(input_dir: Path, checkpoint: Path | None, random_init: bool) -> tuple[list[Path], list]:
    if checkpoint is not None and random_init:
        raise ExtractUsageError("--checkpoint and --random-init exclude each other: drop --random-init to use "
                                "the checkpoint's weights, or drop --checkpoint for untrained ones")
    files, unreadable = discover_audio(input_dir)
    if not files and not unreadable:
        raise ExtractError(f"no audio files under {input_dir} (looked for {', '.join(sorted(AUDIO_SUFFIXES))}, "
                           f"in sub-folders too; hidden names are skipped): check the input folder")
    return files, unreadable


def _load(model: str, checkpoint: Path | None, layer: int, random_init: bool) -> LoadedModel:
    """The model, its declarations and the length of its vectors at `layer`; a checkpoint holding
    NaN is refused."""
    source = None
    if is_custom_reference(model) or (model not in available_models() and model in entry_point_names()):
        if checkpoint is not None or random_init:
            flag = "--checkpoint" if checkpoint is not None else "--random-init"
            raise ExtractUsageError(f"{flag} is for tunemir's own models; {model}'s build() makes its module "
                                    f"with its weights, so drop {flag}")
        try:
            custom = load_custom(model)
        except CustomModelError as err:
            raise ExtractError(str(err)) from None
        rep, spec, source = custom.encoder, custom.spec, custom.source
    else:
        try:
            spec = get_info(model).spec
        except UnknownModelError as err:
            raise ExtractUsageError(f"{err}; or name a model file as FILE.py:FUNCTION") from None
        rep = load_model(model, checkpoint, random_init=random_init)
    if not spec.framed:
        if layer != 0:
            raise ExtractUsageError(f"{model} is a handcrafted feature with no layers; drop --layer")
        return LoadedModel(rep, spec, rep.dim)
    try:
        rep.check_layer(layer)
    except ValueError as err:
        raise ExtractUsageError(str(err)) from None
    broken = [name for name, tensor in rep.state_dict().items()
              if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:
        where = (source or {}).get("file") or checkpoint or default_weights_path(model)
        raise ExtractError(
            f"{where}: {len(broken)} tensors hold NaN or infinite values ({', '.join(broken[:3])}"
            f"{', ...' if len(broken) > 3 else ''}), so every vector would be NaN. The checkpoint is broken "
            f"(trained to a NaN loss?): use an earlier checkpoint of the run, or train again")
    return LoadedModel(rep, spec, rep.layer_dims[layer], source)


def _prepare_output(output_dir: Path, manifest: dict) -> None:
    """Create the folder, check it takes files, write or check the manifest, clear stale temporaries."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        check_writable(output_dir)
        check_or_write_manifest(output_dir / MANIFEST_NAME, manifest)
        if removed := remove_stale_temps(output_dir):
            log.info("removed %d temporary files left by an interrupted run", removed)
    except ManifestMismatchError as err:
        raise ExtractUsageError(str(err)) from None
    except OSError as err:
        raise ExtractError(_folder_failure(output_dir, err)) from None


def _folder_failure(output_dir: Path, err: OSError, during_run: bool = False) -> str:
    """One message for an output folder that takes no files, instead of one per file."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "the disk (or quota) is full: free some space or choose a folder on another disk"
    elif err.errno == errno.EROFS:
        fix = "it is on a read-only filesystem: choose a writable folder (in Docker, mount /output without :ro)"
    elif err.errno in (errno.EACCES, errno.EPERM):
        fix = (f"permission denied for this user (uid {os.getuid()}): make the folder writable or choose "
               f"another (in Docker, run with -u $(id -u):$(id -g))")
    elif isinstance(err, (NotADirectoryError, FileExistsError)):
        fix = "part of that path is a file, not a folder: choose another output folder"
    else:
        fix = "choose another output folder"
    kept = "; the vectors already written are complete and kept, so run again once fixed" if during_run else ""
    return f"cannot write to the output folder {output_dir} ({err.strerror or err}): {fix}{kept}"


def _collisions(files: list[Path], input_dir: Path, output_dir: Path) -> dict[Path, str]:
    """Inputs that would share one output (`a.wav`, `a.flac`), decided on the whole list so that
    each fails in whichever shard it falls: {input: reason}."""
    by_target = collections.defaultdict(list)
    for rel in files:
        by_target[rel.with_suffix(".npy")].append(rel)
    clashes = {}
    for target, rels in by_target.items():
        if len(rels) > 1:
            names = ", ".join(r.as_posix() for r in rels)
            for rel in rels:
                clashes[rel] = (f"{input_dir / rel}: {names} would all be written to {output_dir / target}; "
                                f"rename all but one (outputs are named by the path without its suffix)")
    return clashes


def _plan(shard: list[Path], input_dir: Path, output_dir: Path, dim: int, clashes: dict[Path, str],
          summary: ExtractSummary, quiet: bool = False) -> list[Job]:
    """Jobs still to do; colliding or unreadable inputs are reported as failures.

    A valid vector is kept only if its source record matches the audio file's size and mtime
    now: audio replaced since is extracted again.
    """
    say = log.debug if quiet else log.info
    jobs = []
    for rel in shard:
        source, target = input_dir / rel, output_dir / rel.with_suffix(".npy")
        if rel in clashes:
            summary.failed.append((rel.as_posix(), clashes[rel]))
            continue
        try:
            stamp = source_stamp(source)
        except OSError as err:
            what = "is a broken symlink" if source.is_symlink() else f"cannot be read ({err.strerror})"
            summary.failed.append((rel.as_posix(), f"{source}: {what}; fix or remove it"))
            continue
        if not source.is_file():  # a FIFO or device would block or never end
            summary.failed.append((rel.as_posix(), f"{source}: is not a regular file; replace it with an audio file"))
            continue
        if target.is_dir():
            summary.failed.append((rel.as_posix(), write_failure(target, IsADirectoryError(errno.EISDIR, ""))))
            continue
        record = record_path(output_dir, target)
        if is_valid_output(target, dim):
            recorded = read_source_record(record)
            if recorded == {"source": rel.as_posix(), **stamp}:
                summary.skipped += 1
                continue
            if recorded is None:
                say("%s has no record of the audio it came from (an older tunemir, or a run killed "
                    "right after writing it); extracting it again", target)
            else:
                (log.debug if quiet else log.warning)(
                    "%s changed since %s was written from it; extracting it again", source, target)
                summary.changed += 1
        elif target.exists() and not quiet:
            log.warning("%s is incomplete or corrupt; extracting it again", target)
        jobs.append(Job(rel.as_posix(), source, target, stamp=stamp, record=record))
    return jobs


@contextlib.contextmanager
def _strict_float32():
    """Keep CUDA convolutions and matmuls in full float32 (no TF32) so vectors match the CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
