"""Bad inputs to `convert-checkpoint`, `weights fetch` and `extract --checkpoint`: each gets a clean
exit and a message naming the file or option and the fix, never a traceback."""

from __future__ import annotations

import hashlib
import os
import random
import zipfile
from pathlib import Path

import pytest
import torch

from tunemir.testing import tiny_model, write_audio, write_released_weights
from tunemir.testing.bad_inputs import BadInput, check_bad_input
from tunemir.weights import RELEASES

CLMR_ZIP = RELEASES["clmr"].filename
CLMR_MEMBER = RELEASES["clmr"].member


class _Payload:
    """Pickles as `os.system(command)`."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def _lightning(name: str = "clmr", **extra) -> dict:
    state = {f"model.encoder.{k}": v for k, v in tiny_model(name).state_dict().items()}
    return {"pytorch-lightning_version": "1.9.5", "epoch": 3, "global_step": 30, "state_dict": state, **extra}


def _save(obj, name: str = "in.ckpt"):
    def setup(tmp: Path) -> None:
        torch.save(obj() if callable(obj) else obj, tmp / name)
    return setup


def _write(data: bytes, name: str = "in.ckpt"):
    def setup(tmp: Path) -> None:
        (tmp / name).write_bytes(data)
    return setup


def _truncated_zip(tmp: Path) -> None:
    torch.save(_lightning(), tmp / "full.ckpt")
    data = (tmp / "full.ckpt").read_bytes()
    (tmp / "in.ckpt").write_bytes(data[: len(data) // 2])


def _truncated_legacy(tmp: Path) -> None:
    torch.save(_lightning(), tmp / "full.ckpt", _use_new_zipfile_serialization=False)
    data = (tmp / "full.ckpt").read_bytes()
    (tmp / "in.ckpt").write_bytes(data[: len(data) - 100])


def _evil(tmp: Path) -> None:
    torch.save(_lightning(hyper_parameters={"x": _Payload(f"touch {tmp}/pwned")}), tmp / "in.ckpt")


def _legacy_evil(tmp: Path) -> None:
    torch.save({"x": _Payload(f"touch {tmp}/pwned")}, tmp / "in.ckpt", _use_new_zipfile_serialization=False)


def _no_state_dict(tmp: Path) -> None:
    checkpoint = _lightning()
    del checkpoint["state_dict"]
    torch.save(checkpoint, tmp / "in.ckpt")


def _projector_only(tmp: Path) -> None:
    torch.save(_lightning(state_dict={"model.projector.0.weight": torch.ones(4, 4)}), tmp / "in.ckpt")


def _partial_encoder(tmp: Path) -> None:
    checkpoint = _lightning()
    del checkpoint["state_dict"]["model.encoder.sequential.3.1.running_var"]
    torch.save(checkpoint, tmp / "in.ckpt")


def _release_zip(tmp: Path) -> dict:
    path, _ = write_released_weights(tmp / "ctx", "clmr")
    return {"digest": hashlib.sha256(path.read_bytes()).hexdigest()}


def _zip_without_member(tmp: Path) -> dict:
    (tmp / "ctx").mkdir()
    with zipfile.ZipFile(tmp / "ctx" / CLMR_ZIP, "w") as archive:
        archive.writestr("README.txt", "no checkpoint here")
    return {"digest": hashlib.sha256((tmp / "ctx" / CLMR_ZIP).read_bytes()).hexdigest()}


def _evil_release(tmp: Path) -> dict:
    (tmp / "ctx").mkdir()
    _evil(tmp)
    with zipfile.ZipFile(tmp / "ctx" / CLMR_ZIP, "w") as archive:
        archive.write(tmp / "in.ckpt", CLMR_MEMBER)
    return {"digest": hashlib.sha256((tmp / "ctx" / CLMR_ZIP).read_bytes()).hexdigest()}


def _pin(text: str):
    def setup(tmp: Path) -> dict:
        found = _release_zip(tmp)
        (tmp / "weights.sha256").write_text(text.format(**found))
        return found
    return setup


def _audio_and(setup=None):
    def both(tmp: Path):
        write_audio(tmp / "audio" / "x.wav", 3.0)
        return setup(tmp) if setup else None
    return both


def _file_and_dir(tmp: Path) -> None:
    torch.save(_lightning(), tmp / "in.ckpt")
    (tmp / "plain.txt").write_text("a file, not a folder")
    (tmp / "out").mkdir()


def _ok_source(tmp: Path) -> None:
    torch.save(_lightning(), tmp / "in.ckpt")


CONVERT = ("convert-checkpoint", "{tmp}/in.ckpt", "{tmp}/out.safetensors")
FETCH = ("weights", "fetch", "clmr", "--search-dir", "{tmp}/ctx", "--output", "{tmp}/clmr.safetensors")
EXTRACT = ("extract", "clmr", "{tmp}/audio", "{tmp}/vectors", "--workers", "0", "--checkpoint", "{tmp}/in.ckpt")
FIX_DOWNLOAD = "check the download (is it complete?)"
FIX_RESAVE = "torch.save(ckpt['state_dict']"

CASES = [
    # convert-checkpoint: files that are not checkpoints
    BadInput("convert-garbage", CONVERT, ("{tmp}/in.ckpt", FIX_DOWNLOAD), 1, _write(random.Random(0).randbytes(3000))),
    BadInput("convert-empty-file", CONVERT, ("{tmp}/in.ckpt", "empty file", FIX_DOWNLOAD), 1, _write(b"")),
    BadInput("convert-lfs-pointer", CONVERT, ("{tmp}/in.ckpt", "git lfs pull"), 1,
             _write(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n")),
    BadInput("convert-text-file", CONVERT, ("{tmp}/in.ckpt", "starts with", FIX_DOWNLOAD), 1,
             _write(b"this is not a checkpoint\n")),
    BadInput("convert-truncated-zip", CONVERT, ("{tmp}/in.ckpt", "damaged zip", FIX_DOWNLOAD), 1, _truncated_zip),
    BadInput("convert-truncated-pre-zip-file", CONVERT, ("{tmp}/in.ckpt", "truncated", FIX_DOWNLOAD), 1,
             _truncated_legacy),
    BadInput("convert-release-zip-not-unzipped", ("convert-checkpoint", "{tmp}/ctx/" + CLMR_ZIP, "{tmp}/o.safetensors"),
             (CLMR_ZIP, "unzip it and pass clmr_magnatagatune_mlp/clmr_epoch=10000.ckpt"), 1, _release_zip),
    BadInput("convert-fake-safetensors", ("convert-checkpoint", "{tmp}/in.safetensors", "{tmp}/o.safetensors"),
             ("{tmp}/in.safetensors", "safetensors", FIX_DOWNLOAD), 1,
             _write((20).to_bytes(8, "little") + b'{"a": 1', "in.safetensors")),
    # convert-checkpoint: pickles that would run code
    BadInput("convert-reduce-os-system", CONVERT, ("{tmp}/in.ckpt", f"{os.system.__module__}.system", "refused",
                                                    FIX_RESAVE), 1, _evil),
    BadInput("convert-pre-zip-format-runs-code", CONVERT, ("{tmp}/in.ckpt", "system", "refused", FIX_RESAVE), 1,
             _legacy_evil),
    # convert-checkpoint: checkpoints without (the right) weights
    BadInput("convert-lightning-without-state-dict", CONVERT, ("{tmp}/in.ckpt", "without a state_dict",
                                                                "trainer.save_checkpoint"), 1, _no_state_dict),
    BadInput("convert-state-dict-without-encoder", CONVERT,
             ("{tmp}/in.ckpt", "model.encoder.", "model.projector.0.weight"),
             1, _projector_only),
    BadInput("convert-partial-encoder", CONVERT, ("{tmp}/in.ckpt", "sequential.3.1.running_var", "missing"), 1,
             _partial_encoder),
    BadInput("convert-tensor-not-dict", CONVERT, ("{tmp}/in.ckpt", "Tensor", "not a dict"), 1,
             _save(lambda: torch.zeros(3))),
    BadInput("convert-non-tensor-entry", CONVERT, ("{tmp}/in.ckpt", "sequential.0.0.weight", "not a tensor"), 1,
             _save({"sequential.0.0.weight": "weights"})),
    BadInput("convert-named-function-as-entry", CONVERT, ("{tmp}/in.ckpt", f"{os.system.__module__}.system",
                                                           "not a tensor"), 1,
             _save(lambda: {"sequential.0.0.weight": os.system})),
    BadInput("convert-tune-weights-as-clmr", CONVERT + ("--model", "clmr"), ("{tmp}/in.ckpt", "'tune'", "'clmr'"), 1,
             _save(lambda: _lightning("tune"))),
    # convert-checkpoint: paths and options
    BadInput("convert-source-missing", CONVERT, ("{tmp}/in.ckpt", "does not exist"), 2),
    BadInput("convert-source-is-dir", ("convert-checkpoint", "{tmp}", "{tmp}/o.safetensors"),
             ("{tmp}", "directory"), 2),
    BadInput("convert-target-is-dir", ("convert-checkpoint", "{tmp}/in.ckpt", "{tmp}/out"),
             ("{tmp}/out", "directory"), 2,
             _file_and_dir),
    BadInput("convert-target-below-file", ("convert-checkpoint", "{tmp}/in.ckpt", "{tmp}/plain.txt/o.safetensors"),
             ("{tmp}/plain.txt", "not a folder", "choose an output path"), 1, _file_and_dir),
    BadInput("convert-unknown-model", CONVERT + ("--model", "clmr2"), ("--model", "clmr2", "tune_plus"), 2, _ok_source),
    # weights fetch
    BadInput("fetch-wrong-sha256", FETCH + ("--sha256", "0" * 64), (CLMR_ZIP, "0" * 64, "{digest}", "replace the file"),
             1, _release_zip),
    BadInput("fetch-malformed-sha256", FETCH + ("--sha256", "abc123"), ("--sha256", "64 hex digits", "abc123"), 2,
             _release_zip),
    BadInput("fetch-missing-pin-file", FETCH + ("--pin-file", "{tmp}/nope.sha256"),
             ("{tmp}/nope.sha256", "does not exist", "--sha256"),
             2, _release_zip),
    BadInput("fetch-pin-file-is-dir", FETCH + ("--pin-file", "{tmp}/ctx"), ("--pin-file", "directory"), 2,
             _release_zip),
    BadInput("fetch-malformed-pin-line", FETCH + ("--pin-file", "{tmp}/weights.sha256"),
             ("{tmp}/weights.sha256:1", "not a sha256sum line"), 1, _pin("{digest} \n")),
    BadInput("fetch-pin-for-another-file", FETCH + ("--pin-file", "{tmp}/weights.sha256"),
             (CLMR_ZIP, "{tmp}/weights.sha256", "sha256sum"), 1, _pin("{digest}  tune_5_tail_epoch_10000.ckpt\n")),
    BadInput("fetch-unknown-model", ("weights", "fetch", "jukebox", "--sha256", "0" * 64), ("jukebox", "clmr"), 2),
    BadInput("fetch-no-url-not-found", ("weights", "fetch", "tune", "--sha256", "0" * 64, "--search-dir", "{tmp}"),
             ("tune_5_tail_epoch_10000.ckpt", "{tmp}", "drive.google.com"), 1),
    BadInput("fetch-zip-without-checkpoint", FETCH + ("--sha256", "{digest}"), (CLMR_ZIP, CLMR_MEMBER), 1,
             _zip_without_member),
    BadInput("fetch-release-runs-code", FETCH + ("--sha256", "{digest}"),
             (f"{os.system.__module__}.system", "refused", FIX_RESAVE), 1, _evil_release),
    BadInput("fetch-output-is-dir", FETCH + ("--sha256", "{digest}", "--output", "{tmp}/ctx"),
             ("--output", "directory"), 2, _release_zip),
    # extract --checkpoint
    BadInput("extract-checkpoint-garbage", EXTRACT, ("{tmp}/in.ckpt", FIX_DOWNLOAD), 1,
             _audio_and(_write(random.Random(1).randbytes(500)))),
    BadInput("extract-checkpoint-empty", EXTRACT, ("{tmp}/in.ckpt", FIX_DOWNLOAD), 1, _audio_and(_write(b""))),
    BadInput("extract-checkpoint-runs-code", EXTRACT, ("{tmp}/in.ckpt", "refused", FIX_RESAVE), 1, _audio_and(_evil)),
    BadInput("extract-checkpoint-release-zip", EXTRACT[:-1] + ("{tmp}/ctx/" + CLMR_ZIP,), ("unzip it", CLMR_MEMBER), 1,
             _audio_and(_release_zip)),
    BadInput("extract-checkpoint-truncated", EXTRACT, ("{tmp}/in.ckpt", "damaged zip", FIX_DOWNLOAD), 1,
             _audio_and(_truncated_zip)),
    BadInput("extract-checkpoint-wrong-model", EXTRACT, ("{tmp}/in.ckpt", "'tune'", "'clmr'"), 1,
             _audio_and(_save(lambda: _lightning("tune")))),
    BadInput("extract-checkpoint-missing", EXTRACT, ("--checkpoint", "{tmp}/in.ckpt", "does not exist"), 2,
             _audio_and()),
    BadInput("extract-checkpoint-is-dir", EXTRACT[:-1] + ("{tmp}/audio",), ("--checkpoint", "directory"), 2,
             _audio_and()),
    BadInput("extract-checkpoint-and-random-init", EXTRACT + ("--random-init",), ("--checkpoint", "--random-init"), 2,
             _audio_and(_ok_source)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: BadInput, tmp_path: Path) -> None:
    check_bad_input(case, tmp_path)
    assert not (tmp_path / "pwned").exists()  # no pickled command ever ran
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "clmr.safetensors").exists()
