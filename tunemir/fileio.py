"""Crash-safe file writing and hashing shared by extraction and checkpoints."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

#: Marker in the names of in-progress files; a rerun removes leftovers of killed runs.
TEMP_MARKER = ".tunemir-tmp-"
#: Longest file name (bytes) of ext4, xfs, btrfs and tmpfs; temporary names are cut to fit.
NAME_MAX = 255
_RANDOM_CHARS = 8


def temp_name(name: str) -> str:
    """A fresh hidden temporary name for `name`, never longer than NAME_MAX bytes.

    The random tail makes it unique; the copied part of `name` (only there so a person can tell
    whose leftover it is) is shortened when `name` is already near the limit.
    """
    tail = f"{TEMP_MARKER}{secrets.token_hex(_RANDOM_CHARS // 2)}"
    room = NAME_MAX - 1 - len(tail.encode())
    head = os.fsencode(name)[:room].decode(errors="ignore")  # cut on a character boundary
    return f".{head}{tail}"


def _create_temp_file(folder: Path, name: str) -> Path:
    # Not tempfile.mkstemp: it creates 0600, so caches shared through a group or a host mount
    # came out unreadable. Asking for 0666 lets the kernel apply the umask (and any default ACL)
    # exactly as for any other new file; no process-wide umask read is needed.
    while True:
        tmp = folder / temp_name(name)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # 2**32 random names: only a real collision comes here
            continue


def fsync_path(path: Path, directory: bool = False) -> None:
    """Flush a file (or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError as err:  # some filesystems (e.g. a few FUSE mounts) cannot sync a folder
        if not directory or err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path | str, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` on success.

    The rename is atomic on POSIX, so readers see either the old file or the complete new
    one, and a run killed mid-write leaves only a temporary file that `remove_stale_temps`
    cleans up. The file gets the ordinary mode of a new file (0666 less the umask). With
    `durable`, the file is fsynced before the rename and its folder after it, so a power cut
    cannot leave an empty file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_file(path.parent, path.name)
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent, directory=True)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(folder: Path | str) -> None:
    """Raise the OSError (read-only, permission denied, disk full) that writing into `folder` meets."""
    tmp = _create_temp_file(Path(folder), "write-test")
    try:
        with open(tmp, "wb") as handle:
            handle.write(b"tunemir")
    finally:
        tmp.unlink(missing_ok=True)


def create_exclusive(path: Path | str, data: bytes) -> bool:
    """Write `data` to `path` unless it exists; True if this call created it.

    Of several processes creating one file at once, exactly one wins, and every reader sees
    the complete file: it is written and fsynced under a temporary name, then hard-linked
    into place (which fails if the name is taken).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_file(path.parent, path.name)
    try:
        tmp.write_bytes(data)
        fsync_path(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as err:  # a filesystem without hard links: a plain rename, racy only here
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK) or path.exists():
                raise
            os.replace(tmp, path)
        fsync_path(path.parent, directory=True)
        return True
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """`atomic_path` for a folder: fill the yielded temporary folder; on success it replaces `path`.

    The folder gets the ordinary mode of a new folder (0777 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / temp_name(path.name)
        try:
            tmp.mkdir(0o777)  # not tempfile.mkdtemp, which makes 0700 (see _create_temp_file)
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        if path.exists():  # an incomplete folder written some other way
            shutil.rmtree(path)
        os.replace(tmp, path)
        fsync_path(path.parent, directory=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(folder: Path, min_age_s: float = 300.0) -> int:
    """Delete temporary files and folders left under `folder` by killed runs; returns how many.

    Only those older than `min_age_s` go: a shard running beside this one in the same folder
    may be writing (for milliseconds) a temporary file of its own, and may rename or remove
    it while this runs, which is fine.
    """
    cutoff = time.time() - min_age_s
    removed = 0
    for root, dirs, files in os.walk(folder):  # errors (a folder gone meanwhile) are skipped
        temp_dirs = [d for d in dirs if TEMP_MARKER in d]
        dirs[:] = [d for d in dirs if TEMP_MARKER not in d]
        for name in temp_dirs + [f for f in files if TEMP_MARKER in f]:
            p = Path(root, name)
            try:
                if p.lstat().st_mtime >= cutoff:
                    continue
                if name in temp_dirs:
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink()
            except FileNotFoundError:  # a parallel run renamed or removed it a moment ago
                continue
            removed += 1
    return removed


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest (md5, sha1, sha256, ...) of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    return file_digest(path, "sha256")


def ensure_writable_dir(path: Path | str) -> Path:
    """Create folder `path` (and its parents) and check that a file can be created in it.

    Raises `OSError` whose `strerror` names the path and the cause (a file where a folder
    should be, a read-only file system, an immutable folder), so a command can fail at once
    with that message instead of midway with a traceback.
    """
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        check_writable(path)
    except OSError as err:
        raise OSError(err.errno, f"cannot write in {path} ({err.strerror or err})") from None
    return path
