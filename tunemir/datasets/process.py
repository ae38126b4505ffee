"""`tunemir data process`: downloaded sources -> processed/<dataset>/{meta.json, wav/<uid>.wav}.

As jukemir: mono 16-bit PCM WAV at the source's own sample rate (each model resamples), clip
excerpts cut with sample accuracy, `clip.clip_duration` set from the written WAV. Decoding is
soundfile (MP3 included) in a process pool; a file that fails is reported and the rest goes on;
WAVs already written are kept, so a rerun only does what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import platform
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from tunemir import __version__
from tunemir.datasets import builders
from tunemir.datasets.assets import GIANTSTEPS_ARCHIVES, giantsteps_audio_assets
from tunemir.datasets.reference import check, packaged_reference, read_reference
from tunemir.datasets.sources import DatasetError, Sources, dataset_assets, load_registry
from tunemir.fileio import atomic_path, remove_stale_temps

log = logging.getLogger(__name__)
BUILDERS = {"gtzan_ff": builders.build_gtzan_ff, "magnatagatune": builders.build_magnatagatune,
            "emomusic": builders.build_emomusic, "giantsteps_clips": builders.build_giantsteps_clips}


@dataclasses.dataclass
class ProcessSummary:
    """Counts of one `process_dataset` run; `failed` maps uid to the reason and the fix."""

    dataset: str
    folder: Path
    entries: int
    written: int
    kept: int
    failed: dict[str, str]
    skipped: dict[str, str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failed


def _to_pcm16(signal: np.ndarray) -> np.ndarray:
    # ffmpeg's float -> s16 conversion: scale by 2^15, round half to even, clip.
    return np.clip(np.round(signal * 32768.0), -32768, 32767).astype(np.int16)


def wav_frames(path: Path) -> tuple[int, int] | None:
    """(frames, sample rate) of an existing, readable, non-empty WAV, else None."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None
    return (info.frames, info.samplerate) if info.frames > 0 and info.channels == 1 else None


def decode_job(job: builders.Job, wav_dir: Path) -> list[tuple[str, int, int, str]]:
    """Decode one source and write each clip's WAV; `(uid, frames, sample rate, error)` per clip."""
    try:
        signal, rate = sf.read(str(job.source), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        reason = f"{job.source}: cannot decode ({err}). Delete it and download again; if it stays corrupt, report it."
        return [(c.uid, 0, 0, reason) for c in job.clips]
    mono = signal.mean(axis=1)  # ffmpeg's -ac 1: the channel average
    out = []
    for clip in job.clips:
        if clip.offset is None:
            piece = mono
        else:
            start = int(round(clip.offset * rate))
            piece = mono[start:start + int(round(clip.duration * rate))]
        if len(piece) == 0:
            out.append((clip.uid, 0, rate, f"{job.source}: no audio at {clip.offset or 0:.2f} s "
                        f"(decoded {len(mono) / rate:.2f} s). The file is truncated: download it again."))
            continue
        with atomic_path(wav_dir / f"{clip.uid}.wav") as tmp:
            sf.write(str(tmp), _to_pcm16(piece), rate, subtype="PCM_16", format="WAV")
        out.append((clip.uid, len(piece), rate, ""))
    return out


def decode_jobs(jobs: list[builders.Job], wav_dir: Path) -> list[tuple[str, int, int, str]]:
    """`decode_job` over several jobs (one task per batch keeps the pool's overhead small)."""
    return [result for job in jobs for result in decode_job(job, wav_dir)]


def _reference(dataset: str, reference) -> dict | None:
    if reference is None:
        return None
    if reference == "canonical":
        return packaged_reference(dataset)
    return read_reference(Path(reference))


def build_dataset(dataset: str, datasets_root: Path, registry: dict | None = None) -> builders.Built:
    """The metadata and decoding jobs of `dataset` from the files under `datasets_root`."""
    src = Sources(dataset, datasets_root, {a.tag: a for a in dataset_assets(dataset, registry)})
    try:
        if dataset == "giantsteps_clips":
            src.require()
            for tag in GIANTSTEPS_ARCHIVES:  # the MP3 list comes from them: check them first
                if not zipfile.is_zipfile(src.path(tag)):
                    raise DatasetError(f"{src.path(tag)} is not a zip archive. Delete it and run `tunemir data "
                                       "download giantsteps_clips` (the checksum check fetches it again).")
            audio = {int(a.tag.rsplit("_", 1)[1]): datasets_root / a.path
                     for a in giantsteps_audio_assets(datasets_root)}
            return builders.build_giantsteps_clips(src, {t: p for t, p in audio.items() if p.is_file()})
        return BUILDERS[dataset](src)
    except DatasetError:
        raise
    except (KeyError, ValueError, IndexError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        # The downloads are checksum-verified, so this is a file changed since, or a --registry
        # copy of another layout: a value the builder expected is not there.
        raise DatasetError(
            f"{dataset}: the files under {datasets_root / dataset} do not have the expected contents "
            f"({type(err).__name__}: {err}). Run `tunemir data download {dataset}` to re-check every "
            "checksum (wrong files are fetched again); a --registry copy must keep jukemir's layout.") from None


def process_dataset(dataset: str, cache_root: Path, jobs: int | None = None, reference="canonical",
                    registry: Path | str | None = None, progress: bool = True) -> ProcessSummary:
    """Build `processed/<dataset>` under `cache_root` from `datasets/` there.

    `reference`: "canonical" (jukemir's shipped metadata), a path to a meta.json(.gz), or None
    to skip the check. A mismatch raises before anything is decoded.
    """
    start = time.perf_counter()
    out = cache_root / "processed" / dataset
    wav_dir = out / "wav"
    registry = load_registry(registry)
    ref = _reference(dataset, reference)  # before the (slow) build: a bad reference fails at once
    built = build_dataset(dataset, cache_root / "datasets", registry)
    if ref is not None:
        check(dataset, built.meta, ref, out / "mismatch.json")
    wav_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(wav_dir, min_age_s=0)
    lengths: dict[str, tuple[int, int]] = {}
    todo = []
    for job in built.jobs:
        existing = [wav_frames(wav_dir / f"{c.uid}.wav") for c in job.clips]
        if all(existing):
            lengths.update({c.uid: e for c, e in zip(job.clips, existing)})
        else:
            todo.append(job)
    kept = len(lengths)
    failed = _decode_all(todo, wav_dir, jobs, progress, lengths)
    meta = built.meta
    for uid, (frames, rate) in lengths.items():
        if "clip" in meta[uid]:
            meta[uid]["clip"]["clip_duration"] = frames / rate
    with atomic_path(out / "meta.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    summary = ProcessSummary(dataset, out, len(meta), len(lengths) - kept, kept, failed, built.skipped,
                             time.perf_counter() - start)
    _write_report(summary, lengths, reference)
    return summary


def _decode_all(todo: list[builders.Job], wav_dir: Path, jobs: int | None, progress: bool,
                lengths: dict[str, tuple[int, int]]) -> dict[str, str]:
    failed: dict[str, str] = {}
    workers = jobs or (1 if len(todo) < 16 else min(os.cpu_count() or 1, 8))
    workers = min(workers, max(1, len(todo)))
    bar = tqdm(total=sum(len(j.clips) for j in todo), unit="clip", desc="decode", disable=not progress,
               dynamic_ncols=True)

    def record(results):
        for uid, frames, rate, error in results:
            if error:
                failed[uid] = error
                log.error("%s: %s", uid, error)
            else:
                lengths[uid] = (frames, rate)
            bar.update(1)

    if workers <= 1:
        for job in todo:
            record(decode_job(job, wav_dir))
    else:
        # fork: spawned workers would re-import the CLI (and with it torch), seconds each; this
        # command runs no torch code, so no thread pool exists to be copied in a bad state.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            size = max(1, min(32, len(todo) // (4 * workers)))
            futures = [pool.submit(decode_jobs, todo[i:i + size], wav_dir) for i in range(0, len(todo), size)]
            for future in as_completed(futures):
                record(future.result())
    bar.close()
    return failed


def _write_report(summary: ProcessSummary, lengths: dict[str, tuple[int, int]], reference) -> None:
    rates: dict[int, int] = {}
    for _, rate in lengths.values():
        rates[rate] = rates.get(rate, 0) + 1
    report = {
        "dataset": summary.dataset, "entries": summary.entries, "wav_written": summary.written,
        "wav_kept": summary.kept, "failed": summary.failed, "left_out_on_purpose": summary.skipped,
        "sample_rates": {str(k): v for k, v in sorted(rates.items())}, "seconds": round(summary.seconds, 3),
        "reference": str(reference), "tunemir": __version__, "soundfile": sf.__version__,
        "libsndfile": sf.__libsndfile_version__, "python": platform.python_version(),
    }
    with atomic_path(summary.folder / "process.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
