"""Bad-input table, the command line itself: typos, stray arguments, argument values `tunemir` refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunemir.testing import write_audio
from tunemir.testing.bad_inputs import BadInput, check_bad_input


def three_wavs(tmp: Path) -> None:
    for i in range(3):
        write_audio(tmp / "in" / f"clip{i}.wav", 0.5, 22050, 1, seed=i)


def a_file(tmp: Path) -> None:
    (tmp / "notes.txt").write_text("not a folder")


def a_broken_link(tmp: Path) -> None:
    (tmp / "gone").symlink_to(tmp / "nowhere")


def wavs_and_a_file(tmp: Path) -> None:
    three_wavs(tmp)
    a_file(tmp)


EXTRACT = ("extract", "tune_plus", "{tmp}/in", "{tmp}/out", "--random-init", "--workers", "0")

CASES = [
    BadInput("root-unknown-command", ("extrakt",), mentions=("extrakt", "Did you mean 'extract'")),
    BadInput("root-unknown-option", ("--verbos", "models"), mentions=("--verbos", "--verbose")),
    BadInput("root-no-such-command-case", ("Models",), mentions=("Models", "Did you mean 'models'")),
    BadInput("models-extra-argument", ("models", "tune"), mentions=("unexpected extra argument", "tune")),
    BadInput("models-unknown-option", ("models", "--all"), mentions=("--all", "models --help")),
    BadInput("extract-missing-output-dir", ("extract", "tune_plus", "{tmp}/in"), setup=three_wavs,
             mentions=("OUTPUT_DIR", "Missing argument")),
    BadInput("extract-input-missing", ("extract", "tune_plus", "{tmp}/nope", "{tmp}/out"),
             mentions=("nope", "does not exist")),
    BadInput("extract-input-is-a-file", ("extract", "tune_plus", "{tmp}/notes.txt", "{tmp}/out"), setup=a_file,
             mentions=("notes.txt", "is a file")),
    BadInput("extract-output-is-a-file", ("extract", "tune_plus", "{tmp}/in", "{tmp}/notes.txt"),
             setup=wavs_and_a_file, mentions=("notes.txt", "is a file")),
    BadInput("extract-unknown-model", ("extract", "jukebox", "{tmp}/in", "{tmp}/out"), setup=three_wavs,
             mentions=("jukebox", "tune_plus")),
    BadInput("extract-model-wrong-case", ("extract", "TUNE", "{tmp}/in", "{tmp}/out"), setup=three_wavs,
             mentions=("TUNE", "tune_plus")),
    BadInput("extract-device-banana", EXTRACT + ("--device", "banana"), setup=three_wavs,
             mentions=("--device", "banana", "cpu")),
    BadInput("extract-device-cuda-colon-word", EXTRACT + ("--device", "cuda:first"), setup=three_wavs,
             mentions=("--device", "cuda:N")),
    BadInput("extract-layer-negative", EXTRACT + ("--layer", "-1"), setup=three_wavs,
             mentions=("--layer", "-1", "0")),
    BadInput("extract-layer-too-deep", EXTRACT + ("--layer", "99"), setup=three_wavs,
             mentions=("layer 99", "0", "17")),
    BadInput("extract-layer-not-a-number", EXTRACT + ("--layer", "last"), setup=three_wavs,
             mentions=("--layer", "last", "integer")),
    BadInput("extract-layer-on-chroma", ("extract", "chroma", "{tmp}/in", "{tmp}/out", "--layer", "2"),
             setup=three_wavs, mentions=("chroma", "--layer")),
    BadInput("extract-batch-idx-alone", EXTRACT + ("--batch_idx", "1"), setup=three_wavs,
             mentions=("--batch_size", "--batch_idx", "both")),
    BadInput("extract-batch-idx-out-of-range", EXTRACT + ("--batch_size", "2", "--batch_idx", "7"),
             setup=three_wavs, mentions=("--batch_idx 7", "0 to 1")),
    BadInput("extract-batch-size-zero", EXTRACT + ("--batch_size", "0", "--batch_idx", "0"), setup=three_wavs,
             mentions=("--batch_size", "0")),
    BadInput("extract-workers-negative", EXTRACT[:-2] + ("--workers", "-1"), setup=three_wavs,
             mentions=("--workers", "-1")),
    BadInput("extract-workers-float", EXTRACT[:-2] + ("--workers", "2.5"), setup=three_wavs,
             mentions=("--workers", "2.5")),
    BadInput("extract-frames-per-batch-zero", EXTRACT + ("--frames-per-batch", "0"), setup=three_wavs,
             mentions=("--frames-per-batch", "0")),
    BadInput("extract-log-option-typo-after", EXTRACT + ("--quite",), setup=three_wavs,
             mentions=("--quite", "--quiet")),
    BadInput("demo-below-a-file", ("demo", "{tmp}/notes.txt/demo"), setup=a_file,
             mentions=("notes.txt", "is a file", "choose another OUTPUT_DIR")),
    BadInput("demo-into-a-file", ("demo", "{tmp}/notes.txt"), setup=a_file, mentions=("notes.txt", "is a file")),
    BadInput("demo-below-a-broken-link", ("demo", "{tmp}/gone/demo"), setup=a_broken_link,
             mentions=("gone", "broken link", "choose another OUTPUT_DIR")),
    BadInput("demo-workers-negative", ("demo", "{tmp}/demo", "--workers", "-3"), mentions=("--workers", "-3")),
    BadInput("convert-checkpoint-missing-source", ("convert-checkpoint", "{tmp}/none.ckpt", "{tmp}/x.safetensors"),
             mentions=("none.ckpt", "does not exist")),
    BadInput("convert-checkpoint-source-is-a-folder", ("convert-checkpoint", "{tmp}", "{tmp}/x.safetensors"),
             mentions=("SOURCE", "is a directory")),
    BadInput("convert-checkpoint-unknown-model", ("convert-checkpoint", "{tmp}/notes.txt", "{tmp}/x.safetensors",
                                                  "--model", "jukebox"), setup=a_file,
             mentions=("--model", "jukebox", "tune_plus")),
    BadInput("weights-fetch-unknown-model", ("weights", "fetch", "chroma"), mentions=("chroma", "tune_plus")),
    BadInput("weights-unknown-subcommand", ("weights", "download", "clmr"), mentions=("download", "weights --help")),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: BadInput, tmp_path: Path):
    check_bad_input(case, tmp_path)


def test_case_ids_are_unique():
    assert len({case.id for case in CASES}) == len(CASES)
