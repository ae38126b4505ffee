"""Reading the downloaded assets: paths under the datasets root, archive unpacking, CSV tables."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import tarfile
import zipfile
from pathlib import Path

from tunemir.datasets.assets import Asset, static_assets
from tunemir.fileio import atomic_dir

log = logging.getLogger(__name__)
#: Set to a JSON file of asset entries that replace or extend the registry (see `load_registry`).
REGISTRY_ENV = "TUNEMIR_DATA_REGISTRY"


class DatasetError(ValueError):
    """Sources that cannot be turned into a dataset; the message names the file and the fix."""


def load_registry(path: Path | str | None = None) -> dict[str, dict]:
    """Registry overrides: `{TAG: {"path"?, "urls"?, "checksum"?, "optional"?}}` from `path`
    (else `$TUNEMIR_DATA_REGISTRY`, else none). Fields left out keep the built-in value;
    unknown tags add assets. For private mirrors holding re-packed copies, and for tests."""
    path = path or os.environ.get(REGISTRY_ENV)
    if not path:
        return {}
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"registry file {path}: {err}. Fix or remove it (and ${REGISTRY_ENV}).") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise DatasetError(f"registry file {path}: expected an object of TAG -> {{path, urls, checksum}}")
    return table


def dataset_assets(dataset: str, registry: dict[str, dict] | None = None) -> list[Asset]:
    """`dataset`'s static assets with the registry overrides applied."""
    registry = registry or {}
    out = []
    for a in static_assets(dataset):
        entry = registry.get(a.tag, {})
        out.append(Asset(a.tag, entry.get("path", a.path), tuple(entry.get("urls", a.urls)),
                         entry.get("checksum", a.checksum), entry.get("optional", a.optional)))
    prefix = f"{dataset}/"
    for tag, entry in registry.items():
        if entry.get("path", "").startswith(prefix) and tag not in {a.tag for a in out}:
            out.append(Asset(tag, entry["path"], tuple(entry.get("urls", ())), entry["checksum"],
                             entry.get("optional", False)))
    return out


@dataclasses.dataclass(frozen=True)
class Sources:
    """Where one dataset's downloaded files are: `root` is the datasets root, `work` the
    dataset's scratch folder for unpacked archives."""

    dataset: str
    root: Path
    assets: dict[str, Asset]

    @property
    def work(self) -> Path:
        return self.root / self.dataset / "unpacked"

    def path(self, tag: str) -> Path:
        return self.root / self.assets[tag].path

    def require(self) -> None:
        """Raise `DatasetError` naming every missing required file."""
        missing = [str(self.path(t)) for t, a in self.assets.items() if not a.optional and not self.path(t).is_file()]
        if missing:
            raise DatasetError(f"{self.dataset}: {len(missing)} downloaded file(s) missing, e.g. "
                               f"{', '.join(missing[:3])}. Run `tunemir data download {self.dataset}` first.")


def unpack(archives: list[Path], dest: Path) -> Path:
    """Unpack a tar or zip archive (several paths = one zip split into parts) into `dest`,
    once: the folder appears complete or not at all, and an existing one is reused."""
    if dest.is_dir():
        return dest
    log.info("unpacking %s into %s", ", ".join(p.name for p in archives), dest)
    with atomic_dir(dest) as tmp:
        try:
            if len(archives) > 1 or zipfile.is_zipfile(archives[0]):
                with _Concatenated(archives) as stream, zipfile.ZipFile(stream) as archive:
                    archive.extractall(tmp)
            else:
                with tarfile.open(archives[0]) as archive:
                    archive.extractall(tmp, filter="data")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
            raise DatasetError(f"cannot unpack {', '.join(map(str, archives))}: {err}. Delete the file(s) "
                               "and download again (the checksum check will re-fetch them).") from None
    return dest


class _Concatenated(io.RawIOBase):
    """A read-only seekable stream over files laid end to end (MTT's mp3.zip.001-003 are one
    zip cut into three parts), so the zip is read in place instead of copied into one file."""

    def __init__(self, paths: list[Path]):
        self.handles = [open(p, "rb") for p in paths]
        self.sizes = [os.fstat(h.fileno()).st_size for h in self.handles]
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: sum(self.sizes)}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        start, view, filled = 0, memoryview(buffer), 0
        for handle, size in zip(self.handles, self.sizes):
            if self.pos < start + size and filled < len(view):
                handle.seek(self.pos - start)
                n = handle.readinto(view[filled:filled + min(len(view) - filled, start + size - self.pos)])
                filled += n
                self.pos += n
            start += size
        return filled

    def close(self) -> None:
        for handle in self.handles:
            handle.close()
        super().close()


def read_table(source: Path | bytes, delimiter: str = ",") -> list[dict[str, str]]:
    """Rows of a CSV/TSV file (a path, or its bytes read from an archive) with a header line
    (quoted fields allowed)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter))


def find_one(folder: Path, pattern: str) -> Path:
    """The single path under `folder` matching `pattern` (archives differ in their top folder)."""
    hits = sorted(folder.rglob(pattern))
    if not hits:
        raise DatasetError(f"{folder}: no {pattern} inside; the archive is not the expected one. "
                           f"Delete {folder} and the archive, then download again.")
    return hits[0]
