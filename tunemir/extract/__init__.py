"""`tunemir extract`: a folder of audio in, one representation vector (.npy) per file out."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tunemir.audio import is_audio_path
from tunemir.extract.pipeline import Job, Progress, run_jobs
from tunemir.extract.records import (
    MANIFEST_NAME, ManifestMismatchError, build_manifest, check_or_write_manifest, write_run_report,
)
from tunemir.fileio import remove_stale_temps
from tunemir.models import Encoder, load_model

__all__ = [
    "MANIFEST_NAME", "ExtractSummary", "ExtractUsageError", "default_frames_per_batch", "default_workers",
    "extract", "find_audio_files", "is_valid_output", "resolve_device", "select_shard",
]

log = logging.getLogger(__name__)


class ExtractUsageError(ValueError):
    """Arguments that cannot work together (bad shard, mismatched output folder, bad layer)."""


@dataclass
class ExtractSummary:
    """What one `extract` call did."""

    total: int = 0
    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def find_audio_files(input_dir: Path | str) -> list[Path]:
    """Audio files under `input_dir`, recursively, as relative paths sorted by their POSIX form.

    Hidden files and folders (names starting with '.') and files without an audio suffix are
    skipped with one log line each.
    """
    input_dir = Path(input_dir)
    found = []
    for root, dirs, files in os.walk(input_dir):
        rel_root = Path(root).relative_to(input_dir)
        for name in sorted(d for d in dirs if d.startswith(".")):
            log.info("skipping hidden folder %s", rel_root / name)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(files):
            rel = rel_root / name
            if name.startswith("."):
                log.info("skipping hidden file %s", rel)
            elif not is_audio_path(rel):
                log.info("skipping %s: not an audio file (WAV, FLAC, OGG or MP3)", rel)
            else:
                found.append(rel)
    return sorted(found, key=lambda p: p.as_posix())


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
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ExtractUsageError("--device cuda was requested but no CUDA GPU is visible; use --device cpu")
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
) -> ExtractSummary:
    """Write `output_dir/<relative path>.npy` (float32, 1-D) for each audio file of the shard.

    Per file: decode, average channels, resample to 22.05 kHz (soxr HQ), cut into
    non-overlapping 59,049-sample frames, encode, average over frames. Existing valid outputs
    are kept; each output is written atomically; a file that fails to decode is reported and
    skipped. Raises ExtractUsageError for bad shards, layers or a mismatched output folder.
    `progress`: None shows a bar on a terminal and periodic log lines otherwise.
    """
    start = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    shard = select_shard(find_audio_files(input_dir), batch_size, batch_idx)
    rep = load_model(model, checkpoint, random_init=random_init)
    neural = isinstance(rep, Encoder)
    if neural:
        try:
            rep.check_layer(layer)
        except ValueError as err:
            raise ExtractUsageError(str(err)) from None
    elif layer != 0:
        raise ExtractUsageError(f"{model} is a handcrafted feature with no layers; drop --layer")
    dim = rep.layer_dims[layer] if neural else rep.dim
    dev = resolve_device(device)

    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(model, rep, checkpoint, layer, dim, random_init)
    try:
        check_or_write_manifest(output_dir / MANIFEST_NAME, manifest)
    except ManifestMismatchError as err:
        raise ExtractUsageError(str(err)) from None
    if removed := remove_stale_temps(output_dir):
        log.info("removed %d temporary files left by an interrupted run", removed)

    summary = ExtractSummary(total=len(shard))
    jobs = _plan(shard, input_dir, output_dir, dim, summary)
    log.info("%s: %d files in this shard, %d already done, %d to extract",
             model, len(shard), summary.skipped, len(jobs))
    stages = {}
    if jobs:
        n_workers = workers if workers is not None else default_workers(dev, neural)
        bar = Progress(len(jobs), f"extract {model}", progress)
        try:
            with _strict_float32():
                stats = run_jobs(rep, jobs, device=dev, workers=n_workers, layer=layer,
                                 batch_frames=frames_per_batch or default_frames_per_batch(dev),
                                 progress=bar, failed=summary.failed)
        finally:
            bar.close()
        summary.written, summary.audio_seconds = stats.written, stats.audio_seconds
        stages = {"decode_in_workers_s": stats.decode_s, "model_s": stats.model_s, "write_s": stats.write_s,
                  "frames": stats.frames, "workers": n_workers}
    summary.elapsed_s = time.perf_counter() - start
    write_run_report(output_dir, batch_idx, {
        "manifest": manifest, "device": str(dev),
        "files": {"total": summary.total, "written": summary.written, "skipped": summary.skipped,
                  "failed": [{"file": f, "reason": r} for f, r in summary.failed]},
        "audio_seconds": summary.audio_seconds, "elapsed_s": summary.elapsed_s,
        "audio_seconds_per_s": summary.audio_seconds / max(summary.elapsed_s, 1e-9), "stages": stages,
    })
    for _, reason in summary.failed:
        log.error("FAILED %s", reason)
    log.info("%d written, %d already present, %d failed of %d; %.1f audio-s in %.1f s (%.1f audio-s/s)",
             summary.written, summary.skipped, len(summary.failed), summary.total,
             summary.audio_seconds, summary.elapsed_s, summary.audio_seconds / max(summary.elapsed_s, 1e-9))
    return summary


def _plan(shard: list[Path], input_dir: Path, output_dir: Path, dim: int, summary: ExtractSummary) -> list[Job]:
    """Jobs still to do; inputs that would share one output are reported as failures."""
    by_target = collections.defaultdict(list)
    for rel in shard:
        by_target[output_dir / rel.with_suffix(".npy")].append(rel)
    jobs = []
    for target, rels in by_target.items():
        if len(rels) > 1:
            names = ", ".join(r.as_posix() for r in rels)
            for rel in rels:
                summary.failed.append((rel.as_posix(), f"{input_dir / rel}: {names} would all be written to "
                                       f"{target.name}; rename all but one (outputs are named by stem)"))
        elif is_valid_output(target, dim):
            summary.skipped += 1
        else:
            if target.exists():
                log.warning("%s is incomplete or corrupt; extracting it again", target)
            jobs.append(Job(rels[0].as_posix(), input_dir / rels[0], target))
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
