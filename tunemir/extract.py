"""`tunemir extract`: a folder of audio in, one representation vector (.npy) per file out."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import platform
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from tunemir import __version__
from tunemir.audio import FRAME_LENGTH, RESAMPLE_QUALITY, SAMPLE_RATE, AudioDecodeError, is_audio_path, iter_frames, load_mono
from tunemir.checkpoints import weights_sha256
from tunemir.fileio import atomic_path, remove_stale_temps, sha256_file
from tunemir.models import Encoder, HandcraftedFeature, default_weights_path, get_info, load_model
from tunemir.models.base import fuse_for_inference

log = logging.getLogger(__name__)

MANIFEST_NAME = "tunemir-manifest.json"
#: Manifest entries that must agree before new vectors are added to an output folder.
SETTINGS_KEYS = ("model", "config", "weights_sha256", "layer", "dim", "sample_rate", "frame_length",
                 "framing", "random_init")
FRAMING = "non-overlapping; incomplete tail dropped; shorter than one frame: zero-padded to one"
#: Frames per worker message; bounds the memory a long file takes in flight.
CHUNK_FRAMES = 16


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


def find_audio_files(input_dir: Path) -> list[Path]:
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
        for name in files:
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
    (2.6 MB per frame and layer) then stay in cache; measured in BENCHMARKS.md."""
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
    """
    start = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    shard = select_shard(find_audio_files(input_dir), batch_size, batch_idx)
    rep = load_model(model, checkpoint, random_init=random_init)
    if isinstance(rep, Encoder):
        try:
            rep.check_layer(layer)
        except ValueError as err:
            raise ExtractUsageError(str(err)) from None
        dim = rep.layer_dims[layer]
    elif layer != 0:
        raise ExtractUsageError(f"{model} is a handcrafted feature with no layers; drop --layer")
    else:
        dim = rep.dim
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = _build_manifest(model, rep, checkpoint, layer, dim, random_init)
    _check_or_write_manifest(output_dir / MANIFEST_NAME, manifest)
    if removed := remove_stale_temps(output_dir):
        log.info("removed %d temporary files left by an interrupted run", removed)

    summary = ExtractSummary(total=len(shard))
    todo = _plan(shard, input_dir, output_dir, dim, summary)
    log.info("%s: %d files in this shard, %d already done, %d to extract",
             model, len(shard), summary.skipped, len(todo))
    stats = _Stats()
    if todo:
        dev = resolve_device(device)
        n_workers = workers if workers is not None else default_workers(dev, isinstance(rep, Encoder))
        runner = _run_encoder if isinstance(rep, Encoder) else _run_handcrafted
        disable = None if progress is None else not progress  # None: only on a terminal
        with _strict_float32(), tqdm(total=len(todo), unit="file", disable=disable, desc=f"extract {model}") as bar:
            runner(rep, todo, dev, n_workers, layer, frames_per_batch, summary, stats, bar)
    summary.elapsed_s = time.perf_counter() - start
    _write_run_report(output_dir, batch_idx, manifest, summary, stats)
    for rel, reason in summary.failed:
        log.error("FAILED %s", reason)
    log.info("%d written, %d already present, %d failed of %d; %.1f audio-s in %.1f s (%.1f audio-s/s)",
             summary.written, summary.skipped, len(summary.failed), summary.total,
             summary.audio_seconds, summary.elapsed_s, summary.audio_seconds / max(summary.elapsed_s, 1e-9))
    return summary


@dataclass
class _Job:
    rel: str
    source: Path
    target: Path


@dataclass
class _Stats:
    decode_s: float = 0.0
    model_s: float = 0.0
    write_s: float = 0.0
    frames: int = 0


def _plan(shard: list[Path], input_dir: Path, output_dir: Path, dim: int, summary: ExtractSummary) -> list[_Job]:
    """Jobs still to do; outputs two inputs would share are reported as failures."""
    by_target = collections.defaultdict(list)
    for rel in shard:
        by_target[output_dir / rel.with_suffix(".npy")].append(rel)
    jobs = []
    for target, rels in by_target.items():
        if len(rels) > 1:
            names = ", ".join(r.as_posix() for r in rels)
            for rel in rels:
                summary.failed.append((rel.as_posix(), f"{names} would all be written to {target.name}; "
                                       f"rename all but one (outputs are named by stem)"))
        elif is_valid_output(target, dim):
            summary.skipped += 1
        else:
            if target.exists():
                log.warning("%s is incomplete or corrupt; extracting it again", target)
            jobs.append(_Job(rels[0].as_posix(), input_dir / rels[0], target))
    return jobs


@dataclass
class _Item:
    """One message from a decode worker: frames of a file, or its end (with the whole-file
    feature vector for handcrafted models, or the reason it failed)."""

    job: int
    frames: torch.Tensor | None = None
    vector: np.ndarray | None = None
    end: bool = False
    seconds: float = 0.0
    decode_s: float = 0.0
    error: str | None = None


class _DecodeStream(IterableDataset):
    """Decodes the jobs (split among DataLoader workers) into frame chunks or feature vectors."""

    def __init__(self, jobs: list[_Job], feature: HandcraftedFeature | None = None):
        self.jobs = jobs
        self.feature = feature

    def __iter__(self) -> Iterator[_Item]:
        info = get_worker_info()
        ids = range(len(self.jobs)) if info is None else range(info.id, len(self.jobs), info.num_workers)
        for job in ids:
            yield from self._decode(job)

    def _decode(self, job: int) -> Iterator[_Item]:
        path = self.jobs[job].source
        tick, samples, error, vector = time.perf_counter(), 0, None, None
        try:
            if self.feature is not None:
                signal = load_mono(path)
                samples = len(signal)
                vector = self.feature(signal)
            else:
                for chunk in iter_frames(path, max_frames=CHUNK_FRAMES):
                    samples += chunk.size
                    yield _Item(job, frames=torch.from_numpy(chunk))
        except AudioDecodeError as err:
            error = str(err)
        except Exception as err:  # one bad file must never abort the whole run
            error = f"{path}: {type(err).__name__}: {err}"
        yield _Item(job, vector=vector, end=True, seconds=samples / SAMPLE_RATE,
                    decode_s=time.perf_counter() - tick, error=error)


def _loader(stream: _DecodeStream, workers: int, pin: bool) -> DataLoader:
    return DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_keep,
                      pin_memory=pin, prefetch_factor=4 if workers else None)


def _keep(item: _Item) -> _Item:
    return item


def _run_encoder(model: Encoder, jobs, device, workers, layer, frames_per_batch, summary, stats, bar):
    """Batch frames from many files on the device; average them back per file."""
    frames_per_batch = frames_per_batch or default_frames_per_batch(device)
    model = fuse_for_inference(model).to(device)
    sums: dict[int, np.ndarray] = {}
    counts = collections.Counter()
    pending = collections.Counter()  # frames of a file waiting in `queue`
    ended: dict[int, _Item] = {}
    queue: collections.deque[tuple[int, torch.Tensor]] = collections.deque()
    queued = 0

    def run_batch(limit: int) -> None:
        nonlocal queued
        owners, parts, size = [], [], 0
        while queue and size < limit:
            job, frames = queue.popleft()
            if len(frames) > limit - size:
                queue.appendleft((job, frames[limit - size:]))
                frames = frames[: limit - size]
            owners += [job] * len(frames)
            parts.append(frames)
            size += len(frames)
        queued -= size
        tick = time.perf_counter()
        with torch.inference_mode():
            batch = torch.cat(parts).to(device, non_blocking=True).unsqueeze(1)  # (N, 1, L)
            reps = model(batch, layer=layer).double().cpu().numpy()  # (N, D)
        stats.model_s += time.perf_counter() - tick
        stats.frames += size
        for job, rep in zip(owners, reps):
            if job in sums:
                sums[job] += rep
            else:
                sums[job] = rep.copy()
            counts[job] += 1
            pending[job] -= 1
            if pending[job] == 0 and job in ended:
                finish(job)

    def finish(job: int) -> None:
        item = ended.pop(job)
        vector = sums.pop(job, None)
        n = counts.pop(job, 0)
        pending.pop(job, None)
        if item.error is None:
            _save(jobs[job], (vector / n).astype(np.float32), summary, stats)
            summary.audio_seconds += item.seconds
        bar.update(1)
        bar.set_postfix(audio_s_per_s=f"{summary.audio_seconds / max(bar.format_dict['elapsed'], 1e-9):.1f}")

    for item in _loader(_DecodeStream(jobs), workers, device.type == "cuda"):
        if item.frames is not None:
            queue.append((item.job, item.frames))
            pending[item.job] += len(item.frames)
            queued += len(item.frames)
            while queued >= frames_per_batch:
                run_batch(frames_per_batch)
            continue
        stats.decode_s += item.decode_s
        ended[item.job] = item
        if item.error is not None:
            summary.failed.append((jobs[item.job].rel, item.error))
            _drop(queue, item.job)
            queued = sum(len(f) for _, f in queue)
            pending[item.job] = 0
        if pending[item.job] == 0:
            finish(item.job)
    while queue:
        run_batch(frames_per_batch)


def _drop(queue: collections.deque, job: int) -> None:
    kept = [(j, f) for j, f in queue if j != job]
    queue.clear()
    queue.extend(kept)


def _run_handcrafted(feature: HandcraftedFeature, jobs, device, workers, layer, frames_per_batch, summary, stats, bar):
    """Whole-file features are computed inside the workers; this process only writes them."""
    for item in _loader(_DecodeStream(jobs, feature), workers, pin=False):
        stats.decode_s += item.decode_s
        if item.error is not None:
            summary.failed.append((jobs[item.job].rel, item.error))
        else:
            _save(jobs[item.job], item.vector, summary, stats)
            summary.audio_seconds += item.seconds
        bar.update(1)


def _save(job: _Job, vector: np.ndarray, summary: ExtractSummary, stats: _Stats) -> None:
    tick = time.perf_counter()
    with atomic_path(job.target) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, vector)
    summary.written += 1
    stats.write_s += time.perf_counter() - tick


@contextlib.contextmanager
def _strict_float32():
    """Keep CUDA convolutions and matmuls in full float32 (no TF32) so vectors match the CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _build_manifest(model: str, rep, checkpoint, layer: int, dim: int, random_init: bool) -> dict:
    manifest = {
        "tunemir_version": __version__,
        "model": model,
        "layer": layer,
        "dim": dim,
        "sample_rate": SAMPLE_RATE,
        "frame_length": FRAME_LENGTH,
        "framing": FRAMING,
        "resampler": f"soxr {RESAMPLE_QUALITY}",
        "random_init": random_init,
        "checkpoint": None,
        "checkpoint_sha256": None,
        "weights_sha256": None,
        "config": None,
    }
    if isinstance(rep, Encoder):
        path = Path(checkpoint) if checkpoint else (None if random_init else default_weights_path(model))
        manifest.update(
            config=json.loads(json.dumps(dataclasses.asdict(rep.config))),
            weights_sha256=weights_sha256(rep.state_dict()),
            checkpoint=str(path) if path else None,
            checkpoint_sha256=sha256_file(path) if path else None,
        )
    else:
        manifest["config"] = {"feature": rep.kind, "summary": get_info(model).summary}
    return manifest


def _check_or_write_manifest(path: Path, manifest: dict) -> None:
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ExtractUsageError(f"{path} is unreadable ({err}); delete it only if the folder is yours to redo") from None
        differing = [k for k in SETTINGS_KEYS if existing.get(k) != manifest[k]]
        if differing:
            details = "; ".join(f"{k}: folder has {existing.get(k)!r}, this run {manifest[k]!r}" for k in differing)
            raise ExtractUsageError(
                f"{path.parent} holds vectors made with other settings ({details}). "
                f"Use another output folder, or delete this one to start over"
            )
        if existing.get("tunemir_version") != __version__:
            log.warning("%s was written by tunemir %s; this is %s", path, existing.get("tunemir_version"), __version__)
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _write_run_report(output_dir: Path, batch_idx: int | None, manifest: dict, summary: ExtractSummary, stats: _Stats) -> None:
    """A small JSON of timings, throughput and memory next to the outputs, one per shard."""
    peak_gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    report = {
        "manifest": manifest,
        "files": {"total": summary.total, "written": summary.written, "skipped": summary.skipped,
                  "failed": [{"file": f, "reason": r} for f, r in summary.failed]},
        "audio_seconds": summary.audio_seconds,
        "elapsed_s": summary.elapsed_s,
        "audio_seconds_per_s": summary.audio_seconds / max(summary.elapsed_s, 1e-9),
        "stages_s": {"decode_in_workers": stats.decode_s, "model": stats.model_s, "write": stats.write_s},
        "frames": stats.frames,
        "peak_host_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": peak_gpu / 2**20,
        "versions": {"tunemir": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    name = f"tunemir-run-{'all' if batch_idx is None else f'batch{batch_idx}'}.json"
    with atomic_path(output_dir / name) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
