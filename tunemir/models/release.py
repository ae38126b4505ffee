"""How a model's published weights are found and converted: a registry declaration (no torch).

`tunemir weights fetch` (`tunemir.weights`) reads a model's `Release`: where the file is, how it is
pinned, and the converter that turns it into tunemir's safetensors checkpoint. A converter is a
"module:function" name, imported only when weights are converted, called as

    convert(source, output, *, model, release, pin, workdir)

with `source` the checked file (or folder), `output` the safetensors path to write, `pin` what the
metadata records of the release (file name and pins) and `workdir` a scratch folder. A converter
that finds the checked file unusable raises `ReleaseFormatError` with the reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

#: Pin kinds: "sha256:<64 hex>" (sha256sum's digest) or "git:<40 hex>" (the git blob id
#: `git hash-object FILE` prints, as `git ls-tree` lists a repository's files).
PIN_KINDS = ("sha256", "git")


class ReleaseFormatError(ValueError):
    """A released file that matches its pin but does not hold the checkpoint it should."""


@dataclass(frozen=True)
class Release:
    """A model's published weights.

    `filename` is the released file, or for a folder release (`files` given) the folder's name;
    `page` where a person gets it; `urls` its direct downloads (none: a Google Drive folder, or a
    folder release). `sha256` pins a single file when tunemir knows it (else `--sha256` or
    `--pin-file` must); `files` pins each file of a folder release ((name, "kind:hex"), ...).
    `member` names the checkpoint inside an archive, for the converter. `converter` is the
    "module:function" that writes tunemir's checkpoint from the checked file or folder.
    """

    filename: str
    page: str
    converter: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    files: tuple[tuple[str, str], ...] = ()
    member: str | None = None

    def __post_init__(self) -> None:
        for name, pin in self.files:
            kind, _, digest = pin.partition(":")
            if kind not in PIN_KINDS or not digest:
                raise ValueError(f"release {self.filename}: pin of {name} must be 'sha256:HEX' or 'git:HEX', "
                                 f"got {pin!r}")

    @property
    def is_folder(self) -> bool:
        return bool(self.files)


def git_blob_id(path: Path | str) -> str:
    """The id git gives a file's contents (`git hash-object FILE`): sha1 of "blob <size>\\0" + bytes."""
    path = Path(path)
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def pin_digest(path: Path | str, pin: str) -> str:
    """The digest of `path` in the kind `pin` uses ("sha256:..." or "git:..."), as "kind:hex"."""
    kind = pin.partition(":")[0]
    if kind == "git":
        return f"git:{git_blob_id(path)}"
    with open(path, "rb") as handle:
        return f"sha256:{hashlib.file_digest(handle, 'sha256').hexdigest()}"
