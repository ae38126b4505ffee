"""Released weights: find or download them, check them against a pinned sha256 and convert them
to tunemir's safetensors format (what the extractor images do at build time)."""

from __future__ import annotations

import importlib
import logging
import re
import tempfile
from pathlib import Path

from tunemir.checkpoints import read_encoder_weights
from tunemir.datasets.assets import Asset, OverrideError, check_mirror, check_weights_env_overrides, url_problem
from tunemir.datasets.download import download_assets
from tunemir.fileio import ensure_writable_dir, file_digest
from tunemir.models import WEIGHTS_DIR_ENV, Release, default_weights_path, releases
from tunemir.models.release import ReleaseFormatError, pin_digest
from tunemir.tf_checkpoint import TFCheckpointError

log = logging.getLogger(__name__)

#: Registry name -> its published weights, as the models declare them (`ModelInfo.release`).
RELEASES = releases()


class WeightsError(RuntimeError):
    """Weights that cannot be found, do not match their pin, or hold no usable checkpoint."""


class WeightsUsageError(WeightsError):
    """An option or environment variable of `fetch_weights` that cannot work (a usage error)."""


def release(model: str) -> Release:
    """The published weights `model` declares."""
    try:
        return RELEASES[model]
    except KeyError:
        raise WeightsError(f"{model} has no released weights; models with weights: "
                           f"{', '.join(sorted(RELEASES))}") from None


def read_pin(path: Path, filename: str) -> str | None:
    """The sha256 that a `sha256sum`-format file pins for `filename` (None when it pins none)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # -sig: a BOM from a Windows editor is fine
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise WeightsError(f"pin file {path}: cannot read it ({why}); it must hold sha256sum lines "
                           "('<64 hex digits>  <file name>')") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line)
        if not match:
            raise WeightsError(f"{path}:{number}: not a sha256sum line ('<64 hex digits>  <file name>'): {line!r}; "
                               "fix or delete the line")
        if Path(match[2]).name == filename:
            return match[1].lower()
    return None


def weight_tag(model: str) -> str:
    """The asset tag of `model`'s released file (`TUNEMIR_URL_<tag>` overrides its URL)."""
    return f"WEIGHTS_{model.upper()}"


def check_options(model: str, *, sha256: str | None = None, pin_file: Path | None = None,
                  search_dirs: tuple[Path, ...] = (), urls: tuple[str, ...] = (),
                  output: Path | None = None) -> Path:
    """Raise `WeightsUsageError` for an option or variable of `fetch_weights` that cannot work,
    before anything is read or downloaded; returns the output path."""
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256.strip()):
        raise WeightsUsageError(f"--sha256 must be 64 hex digits (the first field `sha256sum FILE` prints), "
                                f"got {sha256!r}")
    if pin_file is not None and not Path(pin_file).is_file():
        what = "is a folder" if Path(pin_file).is_dir() else "does not exist"
        raise WeightsUsageError(f"--pin-file {pin_file} {what}: give the weights.sha256 file "
                                f"(containers/{model}/weights.sha256), or pass --sha256 HEX")
    for url in urls:
        if url_problem(url):
            raise WeightsUsageError(f"--url: {url_problem(url)}")
    try:
        check_weights_env_overrides({weight_tag(m) for m in RELEASES})
        check_mirror()
    except OverrideError as err:
        raise WeightsUsageError(str(err)) from None
    for folder in search_dirs:  # a missing one may simply not hold the file (yet); a file is a mistake
        if Path(folder).exists() and not Path(folder).is_dir():
            raise WeightsUsageError(f"--search-dir {folder} is a file, not a folder: give the folder that "
                                    f"holds {release(model).filename}")
    if output is not None:
        target, where = Path(output), "--output"
    else:
        target = default_weights_path(model)
        where = f"the default output (${WEIGHTS_DIR_ENV}/{target.name})"
    if target.is_dir():
        raise WeightsUsageError(f"{where} {target} is a folder: give a file name such as {target / target.name}")
    try:
        ensure_writable_dir(target.parent)
    except OSError as err:
        fix = "give another --output" if output is not None else f"set ${WEIGHTS_DIR_ENV} or pass --output"
        raise WeightsUsageError(f"{where} {target}: {err.strerror}; {fix}") from None
    return target


def fetch_weights(model: str, *, sha256: str | None = None, pin_file: Path | None = None,
                  search_dirs: tuple[Path, ...] = (), urls: tuple[str, ...] = (), output: Path | None = None,
                  progress: bool = False) -> Path:
    """Write `output` (default `$TUNEMIR_WEIGHTS_DIR/<model>.safetensors`) from `model`'s released weights.

    The file is taken from the first of `search_dirs` holding it, else downloaded (`urls`, then
    the release's own; `TUNEMIR_URL_WEIGHTS_<MODEL>` and `TUNEMIR_DATA_MIRROR` apply as for
    datasets). It must match `sha256` (or the pin in `pin_file`): nothing is converted unchecked.
    A folder release (musicnn's MSD_musicnn_big) is found in `search_dirs` only, each of its files
    checked against its pin (`pin_file` may pin them by sha256 instead). The model's declared
    converter writes the output. An `output` already converted from the pinned release is kept.
    Options that cannot work raise `WeightsUsageError` before anything is read or downloaded.
    """
    rel = release(model)
    output = check_options(model, sha256=sha256, pin_file=pin_file, search_dirs=search_dirs, urls=urls,
                           output=output)
    if rel.is_folder:
        if sha256 or urls:
            option = "--sha256" if sha256 else "--url"
            raise WeightsUsageError(
                f"{option}: {model}'s weights are a folder ({rel.filename}: {', '.join(n for n, _ in rel.files)}) "
                f"whose files are pinned one by one and taken from --search-dir only; to pin them otherwise, "
                f"give a --pin-file with a sha256sum line per file")
        record = {"file": rel.filename, "pins": _folder_pins(rel, pin_file)}
    else:
        record = {"file": rel.filename, "sha256": _file_pin(rel, sha256, pin_file)}
    if _converted_from(output) == record:
        log.info("%s already holds %s (%s)", output, rel.filename, _pin_words(record))
        return output
    with tempfile.TemporaryDirectory(prefix="tunemir-weights-") as tmp:
        dirs = tuple(Path(d) for d in search_dirs)
        if rel.is_folder:
            source = _locate_folder(model, rel, record["pins"], dirs)
        else:
            source = _locate(model, rel, record["sha256"], dirs, urls, Path(tmp), progress)
        output.parent.mkdir(parents=True, exist_ok=True)
        module, _, function = rel.converter.partition(":")
        convert = getattr(importlib.import_module(module), function)
        try:
            convert(source, output, model=model, release=rel, pin=record, workdir=Path(tmp))
        except (ReleaseFormatError, TFCheckpointError) as err:
            raise WeightsError(f"{rel.filename} matches the pin but {err}, so it is not the released "
                               f"{'folder' if rel.is_folder else 'file'}: get that from {rel.page}, check it and "
                               f"fix the pin") from None
    log.info("wrote %s from %s (%s)", output, rel.filename, _pin_words(record))
    return output


def _file_pin(rel: Release, sha256: str | None, pin_file: Path | None) -> str:
    pinned = sha256.strip() if sha256 else (read_pin(pin_file, rel.filename) if pin_file else rel.sha256)
    if not pinned:
        where = f"pin it in {pin_file}" if pin_file else "pass --sha256 HEX"
        raise WeightsError(
            f"no sha256 is pinned for {rel.filename}, and weights are never converted unchecked. Get the "
            f"file from {rel.page}, check it, then {where} (`sha256sum {rel.filename}` prints the line)")
    return pinned.lower()


def _folder_pins(rel: Release, pin_file: Path | None) -> dict[str, str]:
    """Each file of a folder release -> its pin: the pin file's sha256 line for it, else the release's."""
    pins = {}
    for name, default in rel.files:
        override = read_pin(pin_file, name) if pin_file else None
        pins[name] = f"sha256:{override}" if override else default
    return pins


def _pin_words(record: dict) -> str:
    if "sha256" in record:
        return f"sha256 {record['sha256'][:12]}"
    return ", ".join(f"{name} {pin[:16]}" for name, pin in record["pins"].items())


def _converted_from(path: Path) -> dict | None:
    """The release recorded in a converted file (its name and pins), or None (missing, other or unreadable)."""
    if not path.is_file():
        return None
    try:
        return read_encoder_weights(path).metadata.get("source", {}).get("release")
    except Exception:  # noqa: BLE001 - a damaged file is simply converted again
        return None


def _locate(model: str, rel: Release, pinned: str, search_dirs: tuple[Path, ...], urls: tuple[str, ...], tmp: Path,
            progress: bool) -> Path:
    for folder in search_dirs:
        candidate = folder / rel.filename
        if candidate.is_file():
            digest = file_digest(candidate, "sha256")
            if digest != pinned:
                raise WeightsError(f"{candidate} has sha256 {digest}, but {pinned} is pinned: replace the "
                                   f"file with the released one from {rel.page}, or fix the pin")
            return candidate
    candidates = tuple(urls) + rel.urls
    if not candidates:
        raise WeightsError(f"{rel.filename} has no direct download URL and is not in {_looked(search_dirs)}: "
                           f"download it from {rel.page} and put it there (for the images: containers/{model}/)")
    asset = Asset(weight_tag(model), f"weights/{rel.filename}", candidates, pinned)
    summary = download_assets([asset], tmp, jobs=1, progress=progress)
    if not summary.ok:
        raise WeightsError(f"could not fetch {rel.filename}: {summary.failed[0].detail}")
    return tmp / asset.path


def _looked(search_dirs: tuple[Path, ...]) -> str:
    return ", ".join(f"{d}{'' if d.is_dir() else ' (does not exist)'}" for d in search_dirs) or "no --search-dir given"


def _locate_folder(model: str, rel: Release, pins: dict[str, str], search_dirs: tuple[Path, ...]) -> Path:
    """The first folder of a search dir (itself, its `<release folder>/`, or its `musicnn/<release
    folder>/`, as in a clone of the repository) holding the release's files, each matching its pin."""
    for root in search_dirs:
        for folder in (root, root / rel.filename, root / "musicnn" / rel.filename):
            present = [name for name in pins if (folder / name).is_file()]
            if not present:
                continue
            missing = [name for name in pins if name not in present]
            if missing:
                raise WeightsError(f"{folder} holds {', '.join(present)} but not {', '.join(missing)}: copy the whole "
                                   f"{rel.filename} folder from {rel.page} (a clone of that repository has them all)")
            for name, pin in pins.items():
                digest = pin_digest(folder / name, pin)
                if digest != pin:
                    raise WeightsError(f"{folder / name} has {digest}, but {pin} is pinned: replace it with the "
                                       f"released file from {rel.page}, or fix the pin")
            return folder
    raise WeightsError(f"{rel.filename} ({', '.join(pins)}) is not in {_looked(search_dirs)} and has no download here: "
                       f"take the folder from {rel.page} (a clone of that repository holds it) and "
                       f"pass --search-dir to it (for the image: copy it into containers/{model}/)")
