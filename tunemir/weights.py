"""Released weights: find or download them, check them against a pinned sha256 and convert them
to tunemir's safetensors format (what the extractor images do at build time)."""

from __future__ import annotations

import logging
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tunemir.checkpoints import read_encoder_weights
from tunemir.datasets.assets import Asset, OverrideError, check_mirror, check_weights_env_overrides, url_problem
from tunemir.datasets.download import download_assets
from tunemir.fileio import ensure_writable_dir, file_digest
from tunemir.models import (CLMR_RELEASE_URL, MUSICNN_WHEEL, MUSICNN_WHEEL_PAGE, MUSICNN_WHEEL_SHA256,
                            MUSICNN_WHEEL_URL, MUSICNN_WHEEL_VARIANTS, TUNE_RELEASE_FOLDER, WEIGHTS_DIR_ENV,
                            convert_checkpoint, default_weights_path)
from tunemir.models import musicnn
from tunemir.tf_checkpoint import TFCheckpointError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Release:
    """A model's published weights: the file as released, where it is, and the checkpoint in it.
    `urls` is empty when the file has no direct download (a Google Drive folder). `sha256` is the
    file's pin when tunemir knows it (else `--sha256` or `--pin-file` must give one). `member` is the
    PyTorch checkpoint inside a zip; `tf_variant` the TensorFlow checkpoint inside a musicnn wheel
    (`musicnn/<tf_variant>/`), converted by `tunemir.models.musicnn.convert_wheel`."""

    model: str
    filename: str
    page: str
    urls: tuple[str, ...] = ()
    member: str | None = None
    sha256: str | None = None
    tf_variant: str | None = None


RELEASES = {r.model: r for r in [
    # The checkpoint jukemir's CLMR image and TUNe's CLMR baseline use.
    Release("clmr", "clmr_magnatagatune_mlp.zip", CLMR_RELEASE_URL, (CLMR_RELEASE_URL,),
            "clmr_magnatagatune_mlp/clmr_epoch=10000.ckpt"),
    Release("tune", "tune_5_tail_epoch_10000.ckpt", TUNE_RELEASE_FOLDER),
    Release("tune_plus", "tune_plus_epoch_10000.ckpt", TUNE_RELEASE_FOLDER),
    # musicnn's TensorFlow checkpoints ship inside its PyPI wheel (sha256 as PyPI lists it).
    *(Release(model, MUSICNN_WHEEL, MUSICNN_WHEEL_PAGE, (MUSICNN_WHEEL_URL,), sha256=MUSICNN_WHEEL_SHA256,
              tf_variant=variant)
      for model, variant in MUSICNN_WHEEL_VARIANTS.items()),
]}


class WeightsError(RuntimeError):
    """Weights that cannot be found, do not match their pin, or hold no usable checkpoint."""


class WeightsUsageError(WeightsError):
    """An option or environment variable of `fetch_weights` that cannot work (a usage error)."""


def release(model: str) -> Release:
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
    """Write `output` (default `$TUNEMIR_WEIGHTS_DIR/<model>.safetensors`) from `model`'s released file.

    The file is taken from the first of `search_dirs` holding it, else downloaded (`urls`, then
    the release's own; `TUNEMIR_URL_WEIGHTS_<MODEL>` and `TUNEMIR_DATA_MIRROR` apply as for
    datasets). It must match `sha256` (or the pin in `pin_file`): nothing is converted unchecked.
    An `output` already converted from the pinned file is kept. Options that cannot work raise
    `WeightsUsageError` before anything is read or downloaded.
    """
    rel = release(model)
    output = check_options(model, sha256=sha256, pin_file=pin_file, search_dirs=search_dirs, urls=urls,
                           output=output)
    pinned = sha256.strip() if sha256 else (read_pin(pin_file, rel.filename) if pin_file else rel.sha256)
    if not pinned:
        where = f"pin it in {pin_file}" if pin_file else "pass --sha256 HEX"
        raise WeightsError(
            f"no sha256 is pinned for {rel.filename}, and weights are never converted unchecked. Get the "
            f"file from {rel.page}, check it, then {where} (`sha256sum {rel.filename}` prints the line)")
    pinned = pinned.lower()
    if _converted_from(output) == pinned:
        log.info("%s already holds %s (sha256 %s)", output, rel.filename, pinned[:12])
        return output
    with tempfile.TemporaryDirectory(prefix="tunemir-weights-") as tmp:
        source = _locate(rel, pinned, tuple(Path(d) for d in search_dirs), urls, Path(tmp), progress)
        output.parent.mkdir(parents=True, exist_ok=True)
        pin = {"file": rel.filename, "sha256": pinned}
        if rel.tf_variant:
            try:
                musicnn.convert_wheel(source, rel.tf_variant, output, model=model, release=pin)
            except TFCheckpointError as err:
                raise WeightsError(f"{rel.filename} matches the pin but its {rel.tf_variant} checkpoint cannot be "
                                   f"read ({err}); get the wheel again from {rel.page}") from None
        else:
            convert_checkpoint(_unpack(rel, source, Path(tmp)), output, model, release=pin)
    log.info("wrote %s from %s (sha256 %s)", output, rel.filename, pinned[:12])
    return output


def _converted_from(path: Path) -> str | None:
    """The pinned sha256 recorded in a converted file, or None (missing, other or unreadable)."""
    if not path.is_file():
        return None
    try:
        return read_encoder_weights(path).metadata.get("source", {}).get("release", {}).get("sha256")
    except Exception:  # noqa: BLE001 - a damaged file is simply converted again
        return None


def _locate(rel: Release, pinned: str, search_dirs: tuple[Path, ...], urls: tuple[str, ...], tmp: Path,
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
        looked = ", ".join(f"{d}{'' if d.is_dir() else ' (does not exist)'}" for d in search_dirs) or \
            "no --search-dir given"
        raise WeightsError(f"{rel.filename} has no direct download URL and is not in {looked}: download it "
                           f"from {rel.page} and put it there (for the images: containers/{rel.model}/)")
    asset = Asset(weight_tag(rel.model), f"weights/{rel.filename}", candidates, pinned)
    summary = download_assets([asset], tmp, jobs=1, progress=progress)
    if not summary.ok:
        raise WeightsError(f"could not fetch {rel.filename}: {summary.failed[0].detail}")
    return tmp / asset.path


def _unpack(rel: Release, source: Path, tmp: Path) -> Path:
    if rel.member is None:
        return source
    try:
        with zipfile.ZipFile(source) as archive:
            target = tmp / Path(rel.member).name
            with archive.open(rel.member) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    except (zipfile.BadZipFile, KeyError) as err:
        raise WeightsError(f"{rel.filename} matches the pin but does not hold {rel.member} ({err}), so it is not "
                           f"the released file: get that from {rel.page}, check it and fix the pin") from None
    return target
