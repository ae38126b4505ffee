"""jukemir's pre-computed representations: unpack a verified archive into `representations/`.

Each archive (`<dataset>-<representation>.tar.gz`, see `tunemir.datasets.assets.precomputed_asset`)
holds one `<uid>.npy` vector per clip, under `<dataset>/<representation>/` in jukemir's layout
(`tar xfz` inside `representations/` is jukemir's own step). tunemir reads the members instead
of extracting them: only `.npy` files become vectors, each is checked (a 1-D float array, finite,
of the same size as the others), nothing is written outside the target folder, and the folder
appears whole or not at all (written beside it, then renamed). A manifest records where the
vectors came from, so the probes and the report treat them as that model's.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from tunemir.fileio import file_digest

MANIFEST = "tunemir-manifest.json"
SOURCE = "jukemir pre-computed"


class PrecomputedError(RuntimeError):
    """An archive that cannot become a representation folder (the message names it and the fix)."""


@dataclass(frozen=True)
class Unpacked:
    folder: Path
    vectors: int
    dim: int
    skipped: bool  # the folder already held this archive's vectors


def unpack_precomputed(archive: Path, dataset: str, representation: str, representations_root: Path,
                       name: str | None = None, sha256: str | None = None) -> Unpacked:
    """Write `representations_root/<dataset>/<name or representation>/<uid>.npy` from `archive`;
    `sha256` is the archive's digest when the caller has just verified it (else it is computed)."""
    archive = Path(archive)
    target = Path(representations_root) / dataset / (name or representation)
    digest = sha256 or file_digest(archive, "sha256")
    existing = _manifest(target)
    if existing is not None and existing.get("source") == SOURCE and existing.get("sha256") == digest:
        return Unpacked(target, existing["vectors"], existing["dim"], skipped=True)
    if target.exists() and (existing is None or existing.get("source") != SOURCE):
        what = "tunemir's own extraction" if existing else "files tunemir did not write"
        raise PrecomputedError(f"{target} already holds {what}; move it aside, or unpack under another name "
                               f"(--prefix, e.g. jukemir-)")
    tmp = target.parent / f".{target.name}.tunemir-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        vectors, dim = _unpack(archive, dataset, representation, tmp)
        manifest = {"model": representation, "source": SOURCE, "archive": archive.name, "sha256": digest,
                    "dataset": dataset, "vectors": vectors, "dim": dim, "layer": 0}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if target.exists():  # an older copy of the same representation: replaced whole
            old = target.parent / f".{target.name}.tunemir-old-{os.getpid()}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Unpacked(target, vectors, dim, skipped=False)


def _manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _unpack(archive: Path, dataset: str, representation: str, out: Path) -> tuple[int, int]:
    fix = f"get {archive.name} again (or a copy you trust) and check it against jukemir's sha256"
    dims: dict[int, str] = {}
    bad: list[str] = []
    count = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if not member.isfile() or path.suffix != ".npy" or path.name.startswith("."):
                    continue  # folders, links, macOS ._ files, anything that is not a vector
                if path.is_absolute() or ".." in path.parts:
                    raise PrecomputedError(f"{archive}: member {member.name!r} points outside the archive; {fix}")
                folders = path.parts[:-1]
                if folders and folders[-1] != representation or len(folders) > 1 and folders[-2] != dataset:
                    raise PrecomputedError(f"{archive}: member {member.name!r} is not under {dataset}/{representation}/"
                                           f" as jukemir's archives are; {fix}")
                raw = tar.extractfile(member).read()
                try:
                    vector = np.load(io.BytesIO(raw), allow_pickle=False)
                except (ValueError, OSError) as err:
                    raise PrecomputedError(f"{archive}: {member.name} is not a .npy array ({err}); {fix}") from None
                if vector.ndim != 1 or not np.issubdtype(vector.dtype, np.floating):
                    raise PrecomputedError(f"{archive}: {member.name} holds a {vector.dtype} array of shape "
                                           f"{vector.shape}, not a vector; {fix}")
                if not np.isfinite(vector).all():
                    bad.append(path.stem)
                    continue
                dims.setdefault(vector.size, path.stem)
                (out / f"{path.stem}.npy").write_bytes(raw)
                count += 1
    except (tarfile.TarError, EOFError, OSError) as err:
        raise PrecomputedError(f"{archive}: not a readable .tar.gz ({err}); {fix}") from None
    if bad:
        raise PrecomputedError(f"{archive}: {len(bad)} vector(s) hold NaN or infinite values (e.g. {bad[0]}); {fix}")
    if not count:
        raise PrecomputedError(f"{archive} holds no .npy vectors; {fix}")
    if len(dims) > 1:
        sizes = ", ".join(f"{d} ({uid})" for d, uid in sorted(dims.items()))
        raise PrecomputedError(f"{archive}: vectors of different sizes: {sizes}; {fix}")
    return count, next(iter(dims))
