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
from pathlib import Path, PurePosixPath

from tunemir.datasets.assets import (DATASETS, PRECOMPUTED_FOLDER, Asset, all_static_tags, checksum_algorithm,
                                      static_assets, url_problem)
from tunemir.fileio import atomic_dir, ensure_writable_dir

log = logging.getLogger(__name__)
#: Set to a JSON file of asset entries that replace or extend the registry (see `load_registry`).
REGISTRY_ENV = "TUNEMIR_DATA_REGISTRY"


class DatasetError(ValueError):
    """Sources that cannot be turned into a dataset; the message names the file and the fix."""


def load_registry(path: Path | str | None = None) -> dict[str, dict]:
    """Registry overrides: `{TAG: {"path"?, "urls"?, "checksum"?, "optional"?}}` from `path`
    (else `$TUNEMIR_DATA_REGISTRY`, else none). Fields left out keep the built-in value;
    unknown tags add assets (and then need a path and a checksum). For private mirrors holding
    re-packed copies, and for tests. Every field is checked here, so a typo is an error naming
    the file and the entry instead of a download that silently does something else."""
    from_env = not path
    path = path or os.environ.get(REGISTRY_ENV)
    if not path:
        return {}
    where = f"registry file {path}" + (f" (from ${REGISTRY_ENV})" if from_env else "")
    fix = f"Fix the file, or point --registry (or ${REGISTRY_ENV}) at another one."
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DatasetError(f"{where} does not exist. {fix}") from None
    except IsADirectoryError:
        raise DatasetError(f"{where} is a folder, not a JSON file. {fix}") from None
    except (OSError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
        raise DatasetError(f"{where} is not readable JSON ({err}). {fix}") from None
    if not isinstance(table, dict):
        raise DatasetError(f"{where}: expected a JSON object of TAG -> {{path, urls, checksum, optional}}, "
                           f"got a {type(table).__name__}. {fix}")
    static = all_static_tags()
    out = {}
    for tag, entry in table.items():
        problem = _entry_problem(tag, entry, tag in static)
        if problem:
            raise DatasetError(f"{where}, entry {tag!r}: {problem}. {fix}")
        out[tag] = {**entry, **({"checksum": entry["checksum"].lower()} if "checksum" in entry else {})}
    return out


_ENTRY_FIELDS = ("path", "urls", "checksum", "optional")


def _entry_problem(tag: str, entry, static: bool) -> str | None:
    """What is wrong with one registry entry (None when nothing is)."""
    if not isinstance(entry, dict):
        return f"expected an object with some of {', '.join(_ENTRY_FIELDS)}, got {json.dumps(entry)}"
    unknown = sorted(set(entry) - set(_ENTRY_FIELDS))
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}; the fields are {', '.join(_ENTRY_FIELDS)}"
    if not static and not {"path", "checksum"} <= set(entry):
        return ("a new asset (not one of the built-in tags) needs a \"path\" (<dataset>/<file>) and a "
                "\"checksum\"")
    if "path" in entry:
        value = entry["path"]
        parts = PurePosixPath(value).parts if isinstance(value, str) else ()
        folders = (PRECOMPUTED_FOLDER,) if tag.startswith("PRECOMPUTED_") else DATASETS
        if not parts or value.startswith("/") or ".." in parts or parts[0] not in folders or len(parts) < 2:
            return (f"\"path\" {json.dumps(value)} must be a relative path below a dataset folder, "
                    f"<dataset>/<file> with <dataset> one of {', '.join(folders)}")
    if "urls" in entry:
        urls = entry["urls"]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            return f"\"urls\" must be a list of URL strings, got {json.dumps(urls)}"
        for url in urls:
            if url_problem(url):
                return f"\"urls\": {url_problem(url)}"
    if "checksum" in entry:
        value = entry["checksum"]
        try:
            checksum_algorithm(value.lower() if isinstance(value, str) else "")
        except ValueError:
            return (f"\"checksum\" {json.dumps(value)} is not a hex md5, sha1 or sha256 digest "
                    "(32, 40 or 64 hex digits)")
    if "optional" in entry and not isinstance(entry["optional"], bool):
        return f"\"optional\" must be true or false, got {json.dumps(entry['optional'])}"
    return None


def with_registry(a: Asset, registry: dict[str, dict]) -> Asset:
    """Built-in asset `a` with the fields its registry entry (if any) replaces."""
    entry = registry.get(a.tag, {})
    return Asset(a.tag, entry.get("path", a.path), tuple(entry.get("urls", a.urls)),
                 entry.get("checksum", a.checksum), entry.get("optional", a.optional))


def dataset_assets(dataset: str, registry: dict[str, dict] | None = None) -> list[Asset]:
    """`dataset`'s static assets with the registry overrides applied."""
    registry = registry or {}
    out = [with_registry(a, registry) for a in static_assets(dataset)]
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
    try:
        ensure_writable_dir(dest.parent)
    except OSError as err:
        raise DatasetError(f"cannot unpack {archives[0].name} into {dest}: {err.strerror}. The unpacked files "
                           "live beside the downloads: make that folder writable, or copy the downloads to a "
                           "writable --cache-dir.") from None
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


def _damaged(name: str, why: str) -> DatasetError:
    return DatasetError(f"{name} {why}: the file is damaged or not the expected one. Run `tunemir data "
                        "download` for its dataset (it re-checks every checksum and fetches wrong files again), "
                        "or fix the --registry copy")


def read_text(source: Path | bytes, name: str | None = None) -> str:
    """A downloaded text file (a path, or its bytes read from an archive) as UTF-8 text;
    `name` is how messages call it (default: the path)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _damaged(name or str(source), f"is not UTF-8 text ({err})") from None


def read_table(source: Path | bytes, delimiter: str = ",", name: str | None = None,
               columns: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Rows of a CSV/TSV file (a path, or its bytes read from an archive) with a header line
    (quoted fields allowed). `columns` must all be in the header; a row with more fields than
    the header is an error, one with fewer gets empty strings."""
    name = name or str(source)
    reader = csv.DictReader(io.StringIO(read_text(source, name), newline=""), delimiter=delimiter, restval="")
    header = reader.fieldnames or []
    missing = [c for c in columns if c not in header]
    if missing:
        raise _damaged(name, f"has no column {', '.join(map(repr, missing))} (its header: "
                             f"{', '.join(map(repr, header[:8])) or 'none'})")
    rows = []
    for number, row in enumerate(reader, 2):
        if None in row:
            raise _damaged(name, f"line {number} has more fields than the header")
        rows.append(row)
    return rows


def find_one(folder: Path, pattern: str) -> Path:
    """The single path under `folder` matching `pattern` (archives differ in their top folder)."""
    hits = sorted(folder.rglob(pattern))
    if not hits:
        raise DatasetError(f"{folder}: no {pattern} inside; the archive is not the expected one. "
                           f"Delete {folder} and the archive, then download again.")
    return hits[0]
