"""Pretraining data: a decoded-audio cache (22.05 kHz mono, memory-mapped) and the dataset of
crop pairs drawn from it, reproducible from (seed, epoch, clip) alone so resumed runs repeat."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler
from tqdm import tqdm

from tunemir.audio import FRAME_LENGTH, SAMPLE_RATE, AudioDecodeError, load_mono
from tunemir.fileio import atomic_dir, remove_stale_temps

log = logging.getLogger(__name__)

#: Samples are stored as 16-bit integers: the precision of the 22.05 kHz WAVs CLMR and TUNe
#: trained on, at half the size of float32 (MTT's train split is about 23 GB this way).
CACHE_DTYPE = np.int16
_SCALE = 32768.0
CACHE_FORMAT = 1


class PretrainDataError(ValueError):
    """Training audio that cannot be used; the message says which and what to do."""


def data_roots(datasets_dir: Path | str | None, audio_cache_dir: Path | str | None) -> tuple[Path, Path]:
    """(processed datasets, decoded-audio caches), by default inside `$TUNEMIR_CACHE_DIR`."""
    from tunemir.probe.data import cache_dir

    return (Path(datasets_dir) if datasets_dir else cache_dir() / "processed",
            Path(audio_cache_dir) if audio_cache_dir else cache_dir() / "audio-cache")


def load_meta(datasets_dir: Path, dataset: str) -> dict:
    """A processed dataset's meta.json; a clear error when it has not been processed."""
    meta_path = Path(datasets_dir) / dataset / "meta.json"
    if not meta_path.is_file():
        raise PretrainDataError(
            f"{meta_path} not found: process the {dataset!r} dataset first (see the README, "
            f"'Datasets'), pass --datasets_dir, or train on a folder with --audio_dir"
        )
    return json.loads(meta_path.read_text())


def dataset_sources(datasets_dir: Path, dataset: str, splits: str, meta: dict | None = None) -> list[tuple[str, Path]]:
    """(uid, wav path) of a processed dataset's clips in `splits` (comma-separated), sorted by
    uid. `meta` is its meta.json when the caller has already read it."""
    meta_path = Path(datasets_dir) / dataset / "meta.json"
    meta = load_meta(datasets_dir, dataset) if meta is None else meta
    wanted = {s.strip() for s in splits.split(",") if s.strip()}
    uids = sorted(uid for uid, entry in meta.items() if entry.get("split") in wanted)
    if not uids:
        found = sorted({str(entry.get("split")) for entry in meta.values()})
        raise PretrainDataError(f"{meta_path}: no clips in split {splits!r}; splits present: {', '.join(found)}")
    wav_dir = meta_path.parent / "wav"
    missing = [uid for uid in uids if not (wav_dir / f"{uid}.wav").is_file()]
    if missing:
        raise PretrainDataError(
            f"{wav_dir}: {len(missing)} of {len(uids)} clips of split {splits!r} have no WAV "
            f"(first: {missing[0]}.wav); finish processing the dataset"
        )
    return [(uid, wav_dir / f"{uid}.wav") for uid in uids]


def folder_sources(audio_dir: Path) -> list[tuple[str, Path]]:
    """(relative path, path) of every audio file under `audio_dir`."""
    from tunemir.extract import find_audio_files

    files = find_audio_files(audio_dir)
    if not files:
        raise PretrainDataError(f"{audio_dir} holds no WAV/FLAC/OGG/MP3 files")
    return [(rel.as_posix(), Path(audio_dir) / rel) for rel in files]


def _fingerprint(sources: list[tuple[str, Path]]) -> str:
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{SAMPLE_RATE}".encode())
    for uid, path in sources:
        stat = path.stat()
        digest.update(f"|{uid}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _decode(path: Path) -> np.ndarray | str:
    try:
        audio = load_mono(path)
    except AudioDecodeError as err:
        return str(err)
    return np.clip(np.round(audio * _SCALE), -_SCALE, _SCALE - 1).astype(CACHE_DTYPE)


@dataclass
class AudioCache:
    """Every clip of a source decoded once into one flat int16 file, memory-mapped on first use
    (so DataLoader workers each map it instead of copying it)."""

    folder: Path
    uids: list[str]
    offsets: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64
    failed: dict[str, str]
    _audio: np.ndarray | None = None

    @classmethod
    def open(cls, folder: Path) -> AudioCache:
        index = json.loads((Path(folder) / "index.json").read_text())
        lengths = np.asarray(index["lengths"], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return cls(Path(folder), index["uids"], offsets, lengths, index["failed"])

    def __len__(self) -> int:
        return len(self.uids)

    def __getstate__(self):
        return {**self.__dict__, "_audio": None}  # workers map the file themselves

    @property
    def audio(self) -> np.ndarray:
        if self._audio is None:
            total = int(self.lengths.sum())
            self._audio = np.memmap(self.folder / "audio.i16", CACHE_DTYPE, mode="r", shape=(total,)) \
                if total else np.zeros(0, CACHE_DTYPE)
        return self._audio

    def clip(self, index: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Samples `start : start + length` of clip `index` as float32."""
        length = int(self.lengths[index]) - start if length is None else length
        begin = int(self.offsets[index]) + start
        return self.audio[begin: begin + length].astype(np.float32) / _SCALE


def build_cache(sources: list[tuple[str, Path]], cache_root: Path, name: str,
                workers: int | None = None, progress: bool = True) -> AudioCache:
    """The cache of `sources` under `cache_root/<name>-<fingerprint>`, decoding only if it is
    missing or the sources changed (size or mtime). Files that fail to decode are logged,
    listed in the index and left out; they never stop the build."""
    folder = Path(cache_root) / f"{name}-{_fingerprint(sources)[:16]}"
    if (folder / "index.json").is_file():
        cache = AudioCache.open(folder)
        log.info("audio cache %s: %d clips (reused)", folder, len(cache))
        return cache
    if Path(cache_root).is_dir():
        remove_stale_temps(Path(cache_root))  # half-built caches of killed runs
    if workers is None:  # starting worker processes costs seconds: only worth it for real datasets
        workers = 1 if len(sources) < 64 else max(1, min(8, os.cpu_count() or 1))
    uids, lengths, failed = [], [], {}
    with atomic_dir(folder) as tmp, open(tmp / "audio.i16", "wb") as out:
        paths = [path for _, path in sources]
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers)) if workers > 1 else None
            results = pool.imap(_decode, paths, chunksize=4) if pool else map(_decode, paths)
            for (uid, path), audio in tqdm(zip(sources, results), total=len(sources), disable=not progress,
                                           desc="decoding audio", unit="file"):
                if isinstance(audio, str):
                    log.warning("skipping %s", audio)
                    failed[uid] = audio
                    continue
                out.write(audio.tobytes())
                uids.append(uid)
                lengths.append(len(audio))
        out.flush()
        index = {"format": CACHE_FORMAT, "sample_rate": SAMPLE_RATE, "dtype": "int16", "uids": uids,
                 "lengths": lengths, "failed": failed}
        (tmp / "index.json").write_text(json.dumps(index))
    if failed:
        log.warning("%d of %d files could not be decoded and are left out (listed in %s)",
                    len(failed), len(sources), folder / "index.json")
    return AudioCache.open(folder)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class CropPairs(Dataset):
    """Two independent random `frame_length` crops of each clip at least one frame long.

    Keys are `epoch * len(self) + index` (see `EpochSampler`), and the crops (and, with
    `augment`, the CPU-side augmentations) depend only on (seed, key): any run, resumed or
    not and with any number of workers, draws the same views. Shorter clips are left out,
    counted in `excluded`; no clip ever borrows another's audio.
    """

    def __init__(self, cache: AudioCache, seed: int, frame_length: int = FRAME_LENGTH, augment=None):
        self.cache = cache
        self.seed = seed
        self.frame_length = frame_length
        self.augment = augment
        self.clips = np.flatnonzero(cache.lengths >= frame_length)
        self.excluded = len(cache) - len(self.clips)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int) -> torch.Tensor:
        clip = int(self.clips[key % len(self.clips)])
        rng = np.random.default_rng(_seed(self.seed, key))
        starts = rng.integers(0, int(self.cache.lengths[clip]) - self.frame_length + 1, size=2)
        views = torch.from_numpy(np.stack([self.cache.clip(clip, int(s), self.frame_length) for s in starts]))
        if self.augment is not None:  # the CPU-worker pipeline; by default this runs on the device
            gen = torch.Generator().manual_seed(_seed(self.seed, key, 1))
            views, _ = self.augment(views, gen)
        return views  # (2, frame_length)


class EpochSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed and epoch, this rank's share, last partial batch
    handled by the loader) yielding `epoch * N + index` keys for `CropPairs`."""

    def __iter__(self):
        n = len(self.dataset)
        return (self.epoch * n + index for index in super().__iter__())


def augment_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the device-side augmentations of one optimizer step on one rank."""
    return _seed(seed, step, rank, 2)
