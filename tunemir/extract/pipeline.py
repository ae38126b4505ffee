"""The extraction pipeline: decode workers -> cross-file frame batches on the device -> atomic .npy."""

from __future__ import annotations

import collections
import errno
import functools
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from tunemir.audio import AudioDecodeError, iter_frames, load_mono
from tunemir.extract.records import write_source_record
from tunemir.fileio import NAME_MAX, atomic_path
from tunemir.models import HandcraftedFeature, ModelSpec
from tunemir.models.base import InferenceEncoder
from tunemir.models.loading import inference_module

log = logging.getLogger(__name__)

#: Frames per worker message; bounds the memory a long file takes in flight.
CHUNK_FRAMES = 16
#: Without a terminal, progress is a log line this often (seconds).
LOG_EVERY_S = 30.0


@dataclass
class Job:
    """One input file and the vector file it becomes."""

    rel: str
    source: Path
    target: Path
    stamp: dict | None = None  #: the source's size and mtime when planned (see records.source_stamp)
    record: Path | None = None  #: where to record `stamp` once the vector is written
    #: Several layers in one pass (`extract(layers=...)`): the model's vector is the chosen layers'
    #: concatenated, and part [start:stop] goes to `target` (its record beside it); empty: the whole
    #: vector goes to the job's own target.
    parts: tuple[tuple[Path, Path | None, int, int], ...] = ()

    def outputs(self) -> tuple[tuple[Path, Path | None, int | None, int | None], ...]:
        return self.parts or ((self.target, self.record, None, None),)


#: Write errors that hit every file of the output folder alike: the run stops at the first.
FOLDER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class OutputFolderError(Exception):
    """Writing into the output folder fails for every file (full disk, read-only filesystem)."""

    def __init__(self, target: Path, err: OSError):
        self.target, self.err = target, err
        super().__init__(f"{target}: {err.strerror}")


def write_failure(target: Path, err: OSError) -> str:
    """Why one vector could not be written, and the fix."""
    if isinstance(err, IsADirectoryError) or target.is_dir():
        return f"{target}: a folder of that name is in the way of the vector; rename or remove that folder"
    if isinstance(err, (NotADirectoryError, FileExistsError)):
        return (f"{target}: a file is in the way of the folder {target.parent.name}/ it goes in; "
                f"rename or remove that file")
    if err.errno == errno.ENAMETOOLONG or len(os.fsencode(target.name)) > NAME_MAX:
        return (f"{target}: the name is too long for the filesystem ({len(os.fsencode(target.name))} bytes, "
                f"at most {NAME_MAX}); rename the input file")
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"{target}: permission denied; make {target.parent} writable for this user"
    return f"{target}: cannot be written ({err.strerror or err}); check the output folder"


@dataclass
class Stats:
    """Counters and per-stage seconds of one run."""

    written: int = 0
    audio_seconds: float = 0.0
    decode_s: float = 0.0
    model_s: float = 0.0
    write_s: float = 0.0
    frames: int = 0


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

    def pin_memory(self) -> _Item:
        """Called by the DataLoader's pinning thread: page-locked frames copy to a GPU asynchronously."""
        if self.frames is not None:
            self.frames = self.frames.pin_memory()
        return self


class _DecodeStream(IterableDataset):
    """Decodes the jobs (split among DataLoader workers) into frame chunks or feature vectors, at the
    sample rate and frame length the model declares (`spec`)."""

    def __init__(self, jobs: list[Job], spec: ModelSpec, feature: HandcraftedFeature | None = None):
        self.jobs, self.spec, self.feature = jobs, spec, feature

    def spectrogram(self, signal: np.ndarray) -> np.ndarray:
        """The model's input frames (P, ...) of a whole decoded file (`spectrogram_frames`)."""
        return spectrogram_frames(self.spec, signal)

    def __iter__(self) -> Iterator[_Item]:
        info = get_worker_info()
        ids = range(len(self.jobs)) if info is None else range(info.id, len(self.jobs), info.num_workers)
        for job in ids:
            yield from self._decode(job)

    def _decode(self, job: int) -> Iterator[_Item]:
        path = self.jobs[job].source
        tick, seconds, error, vector = time.perf_counter(), 0.0, None, None
        try:
            if self.feature is not None:
                signal = load_mono(path, self.spec.sample_rate)
                vector = self.feature(signal)
            elif self.spec.spectrogram:  # its frames straddle any waveform frame: the whole file at once
                frames = self.spectrogram(load_mono(path, self.spec.sample_rate))
                for start in range(0, len(frames), CHUNK_FRAMES):
                    yield _Item(job, frames=torch.from_numpy(frames[start:start + CHUNK_FRAMES].copy()))
            else:
                for chunk in iter_frames(path, max_frames=CHUNK_FRAMES, frame_length=self.spec.frame_length,
                                         sample_rate=self.spec.sample_rate):
                    yield _Item(job, frames=torch.from_numpy(chunk))
            seconds = sf.info(str(path)).duration  # the file's length, not the framed part
        except AudioDecodeError as err:
            error = str(err)
        except Exception as err:  # one bad file must never abort the whole run
            error = f"{path}: {type(err).__name__}: {err}"
        yield _Item(job, vector=vector, end=True, seconds=seconds,
                    decode_s=time.perf_counter() - tick, error=error)


@functools.cache
def _function(name: str) -> Callable[[np.ndarray], np.ndarray]:
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def spectrogram_frames(spec: ModelSpec, signal: np.ndarray) -> np.ndarray:
    """The model's input frames (P, ...) of a whole decoded signal, by its declared `spectrogram`
    function (imported on first use, in the process that calls it: a decode worker)."""
    frames = np.ascontiguousarray(_function(spec.spectrogram)(signal), dtype=np.float32)
    if frames.ndim < 2 or not len(frames):
        raise ValueError(f"{spec.spectrogram} returned an array of shape {frames.shape}, not frames (P, ...)")
    return frames


def _keep(item: _Item) -> _Item:
    return item


def _stream(jobs: list[Job], spec: ModelSpec, workers: int, pin: bool,
            feature: HandcraftedFeature | None = None) -> DataLoader:
    return DataLoader(_DecodeStream(jobs, spec, feature), batch_size=None, num_workers=workers, collate_fn=_keep,
                      pin_memory=pin, prefetch_factor=4 if workers else None)


class FrameAverager:
    """Packs frames of many files into device batches of `batch_frames` and pools the frame
    vectors back per file (`pooling`: "mean", in float64, or "max"), calling `done(job, vector)`
    once a file's last frame is encoded."""

    def __init__(self, model: torch.nn.Module, device: torch.device, layer: int, batch_frames: int,
                 done: Callable[[int, np.ndarray], None], stats: Stats, pooling: str = "mean"):
        self.model, self.device, self.layer, self.batch_frames = model, device, layer, batch_frames
        self.done, self.stats, self.pooling = done, stats, pooling
        self.queue: collections.deque[tuple[int, torch.Tensor]] = collections.deque()
        self.queued = 0
        self.sums: dict[int, np.ndarray] = {}
        self.counts = collections.Counter()
        self.waiting = collections.Counter()  # frames of a file not yet encoded
        self.ended: set[int] = set()

    def add(self, job: int, frames: torch.Tensor) -> None:
        """Queue a chunk of `job`'s frames (N, L), or (N, ...) from a spectrogram front end; encode every
        full batch."""
        frames = frames.to(self.device, non_blocking=True)  # from pinned memory: overlaps decoding
        self.queue.append((job, frames))
        self.waiting[job] += len(frames)
        self.queued += len(frames)
        while self.queued >= self.batch_frames:
            self._run_batch()

    def end(self, job: int, ok: bool) -> None:
        """No more frames will come for `job`; if not `ok`, forget it."""
        if not ok:
            kept = [(j, f) for j, f in self.queue if j != job]
            self.queue = collections.deque(kept)
            self.queued = sum(len(f) for _, f in kept)
            self.waiting.pop(job, None)
            self.sums.pop(job, None)
            self.counts.pop(job, None)
            return
        self.ended.add(job)
        if not self.waiting[job]:
            self._finish(job)

    def flush(self) -> None:
        while self.queue:
            self._run_batch()

    def _run_batch(self) -> None:
        owners, parts, size = [], [], 0
        while self.queue and size < self.batch_frames:
            job, frames = self.queue.popleft()
            room = self.batch_frames - size
            if len(frames) > room:
                self.queue.appendleft((job, frames[room:]))
                frames = frames[:room]
            owners += [job] * len(frames)
            parts.append(frames)
            size += len(frames)
        self.queued -= size
        tick = time.perf_counter()
        with torch.inference_mode():
            batch = torch.cat(parts)  # on the device
            if batch.dim() == 2:  # waveform frames (N, L) -> (N, 1, L); spectrogram frames go as they are
                batch = batch.unsqueeze(1)
            reps = self.model(batch, layer=self.layer).double().cpu().numpy()  # (N, D)
        self.stats.model_s += time.perf_counter() - tick
        self.stats.frames += size
        for job, rep in zip(owners, reps):
            if job not in self.sums:
                self.sums[job] = rep.copy()
            elif self.pooling == "max":
                np.maximum(self.sums[job], rep, out=self.sums[job])
            else:
                self.sums[job] += rep
            self.counts[job] += 1
            self.waiting[job] -= 1
            if not self.waiting[job] and job in self.ended:
                self._finish(job)

    def _finish(self, job: int) -> None:
        self.ended.discard(job)
        self.waiting.pop(job, None)
        count = self.counts.pop(job)
        vector = self.sums.pop(job) / (count if self.pooling == "mean" else 1)
        self.done(job, vector.astype(np.float32))


class _PerLayer(torch.nn.Module):
    """Several layers of a module without a one-pass tap (musicnn, a model of one's own): each
    layer's vector in turn, concatenated as tunemir's encoders concatenate them in one pass."""

    def __init__(self, module: torch.nn.Module, layers: tuple[int, ...]):
        super().__init__()
        self.module, self.layers = module, layers

    def forward(self, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
        return torch.cat([self.module(x, layer=k) for k in self.layers], dim=1)


class Progress:
    """tqdm on a terminal; otherwise (e.g. `docker run` without -t) a log line every 30 s."""

    def __init__(self, total: int, desc: str, enabled: bool | None):
        interactive = sys.stderr.isatty() if enabled is None else enabled
        self.bar = tqdm(total=total, unit="file", desc=desc, disable=not interactive)
        self.total, self.desc, self.start, self.last_log = total, desc, time.perf_counter(), time.perf_counter()
        self.files, self.logging = 0, enabled is None and not interactive

    def update(self, audio_seconds: float) -> None:
        self.files += 1
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(1)
        self.bar.set_postfix(audio_s_per_s=f"{audio_seconds / elapsed:.1f}", refresh=False)
        if self.logging and time.perf_counter() - self.last_log >= LOG_EVERY_S:
            self.last_log = time.perf_counter()
            log.info("%s: %d/%d files, %.2f files/s, %.1f audio-s/s", self.desc, self.files, self.total,
                     self.files / elapsed, audio_seconds / elapsed)

    def close(self) -> None:
        self.bar.close()


def run_jobs(rep: torch.nn.Module | HandcraftedFeature, jobs: list[Job], *, spec: ModelSpec, device: torch.device,
             workers: int, layer: int | tuple[int, ...], batch_frames: int, progress: Progress,
             failed: list[tuple[str, str]]) -> Stats:
    """Extract every job as `spec` declares; failures are appended to `failed` as (relative path, reason).

    A vector that is not finite is never written (that file fails). Raises OutputFolderError
    when the output folder takes no more files (full disk, read-only filesystem).
    """
    stats = Stats()
    ends: dict[int, _Item] = {}

    def save(job: int, vector: np.ndarray) -> None:
        tick = time.perf_counter()
        seconds = ends.pop(job).seconds
        if not np.isfinite(vector).all():  # never write a vector a probe would choke on
            fail(job, f"{jobs[job].source}: {nonfinite}, so no vector was written")
            return
        for target, record, start, stop in jobs[job].outputs():
            try:
                # Not fsynced: a vector lost to a power cut is found invalid and redone on the next run.
                with atomic_path(target, durable=False) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, np.ascontiguousarray(vector[start:stop]))
                if record is not None:
                    write_source_record(record, jobs[job].rel, jobs[job].stamp)
            except OSError as err:
                if err.errno in FOLDER_ERRNOS:
                    raise OutputFolderError(target, err) from None
                fail(job, write_failure(target, err))
                return
        stats.written += 1
        stats.audio_seconds += seconds
        stats.write_s += time.perf_counter() - tick
        progress.update(stats.audio_seconds)

    def fail(job: int, reason: str) -> None:
        failed.append((jobs[job].rel, reason))
        progress.update(stats.audio_seconds)

    neural = spec.framed
    nonfinite = ("the model produced NaN or infinite values (a broken checkpoint, e.g. one trained to a NaN "
                 "loss, or audio far outside [-1, 1]); check the checkpoint and the file" if neural else
                 f"the {rep.kind} feature came out NaN or infinite; check the audio")
    if neural:
        model = inference_module(rep).to(device)
        if isinstance(layer, tuple) and not isinstance(model, InferenceEncoder):
            model, layer = _PerLayer(model, layer), 0  # a module of its own: one call per layer
        averager = FrameAverager(model, device, layer, batch_frames, save, stats, pooling=spec.pooling)
    else:
        rep.prepare()  # librosa's numba code is compiled here, once, before the decode workers fork
    stream = _stream(jobs, spec, workers, pin=device.type == "cuda", feature=None if neural else rep)
    for item in stream:
        if item.frames is not None:
            averager.add(item.job, item.frames)
            continue
        stats.decode_s += item.decode_s
        ends[item.job] = item
        if item.error is not None:
            ends.pop(item.job)
            fail(item.job, item.error)
            if neural:
                averager.end(item.job, ok=False)
        elif neural:
            averager.end(item.job, ok=True)
        else:
            save(item.job, item.vector)
    if neural:
        averager.flush()
    return stats
