"""Crash-safe file writing and hashing shared by extraction and checkpoints."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: Marker in the names of in-progress files; a rerun removes leftovers of killed runs.
TEMP_MARKER = ".tunemir-tmp-"


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` on success.

    The rename is atomic on POSIX, so readers see either the old file or the complete new
    one, and a run killed mid-write leaves only a temporary file that `remove_stale_temps`
    cleans up.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARKER}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """`atomic_path` for a folder: fill the yielded temporary folder; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMP_MARKER}", dir=path.parent))
    try:
        yield tmp
        if path.exists():  # an incomplete folder written some other way
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(folder: Path, min_age_s: float = 300.0) -> int:
    """Delete temporary files and folders left under `folder` by killed runs; returns how many.

    Only those older than `min_age_s` go: a shard running beside this one in the same folder
    may be writing (for milliseconds) a temporary file of its own.
    """
    cutoff = time.time() - min_age_s
    stale = [p for p in folder.rglob(f"*{TEMP_MARKER}*") if p.stat().st_mtime < cutoff]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return len(stale)


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest (md5, sha1, sha256, ...) of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    return file_digest(path, "sha256")
