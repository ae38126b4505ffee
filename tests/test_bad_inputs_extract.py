"""Bad and odd inputs to `tunemir extract`: each is a clean error naming the file or option and the fix."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tunemir.testing import save_tiny_checkpoint, write_audio
from tunemir.testing.bad_inputs import BadInput, check_bad_input

IS_ROOT = os.geteuid() == 0
_MOUNTS: list[Path] = []


@pytest.fixture(autouse=True)
def _unmount():
    yield
    while _MOUNTS:
        subprocess.run(["umount", str(_MOUNTS.pop())])


def _tmpfs(folder: Path, options: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                      stderr=subprocess.DEVNULL).returncode:
        pytest.skip("cannot mount a tmpfs here")
    _MOUNTS.append(folder)
    return folder


def audio(*names: str, seconds: float = 0.5):
    """setup: short good files under {tmp}/in, plus a tiny TUNe+ checkpoint at {tmp}/tiny.safetensors."""
    def setup(tmp: Path) -> None:
        (tmp / "in").mkdir(exist_ok=True)
        for seed, name in enumerate(names):
            write_audio(tmp / "in" / name, seconds, seed=seed)
        save_tiny_checkpoint(tmp / "tiny.safetensors", "tune_plus")
    return setup


def then(*steps):
    """setup: run several setups in order."""
    def setup(tmp: Path) -> None:
        for step in steps:
            step(tmp)
    return setup


def write(rel: str, data: bytes):
    def setup(tmp: Path) -> None:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    return setup


def mkdir(rel: str):
    return lambda tmp: (tmp / rel).mkdir(parents=True, exist_ok=True)


def symlink(rel: str, target: str):
    def setup(tmp: Path) -> None:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).symlink_to(target)
    return setup


def float_wav(rel: str, value: float):
    def setup(tmp: Path) -> None:
        signal = np.full((4000, 1), 0.1, np.float32)
        signal[100:200] = value
        sf.write(tmp / rel, signal, 22050, subtype="FLOAT")
    return setup


def manifest(content: str):
    return write("out/tunemir-manifest.json", content.encode())


def other_model_manifest(tmp: Path) -> None:
    from tunemir.extract import extract

    extract("mfcc", tmp / "in", tmp / "out", workers=0)


def nan_checkpoint(tmp: Path) -> None:
    import torch

    from tunemir.testing import tiny_model

    state = tiny_model("tune_plus", seed=3).state_dict()
    state["conv1.layers.0.weight"][0, 0, 0] = float("nan")
    torch.save(state, tmp / "nan.pt")


def exploded_checkpoint(tmp: Path) -> None:
    """Finite weights so large (a diverged run) that every output overflows to inf/NaN."""
    import torch

    from tunemir.testing import tiny_model

    state = tiny_model("tune_plus", seed=3).state_dict()
    for name, tensor in state.items():
        if name.endswith("weight") and tensor.dim() > 1:
            tensor.mul_(1e6)
    torch.save(state, tmp / "exploded.pt")


def clmr_checkpoint(tmp: Path) -> None:
    save_tiny_checkpoint(tmp / "clmr.safetensors", "clmr")


def read_only_output(tmp: Path) -> None:
    if IS_ROOT:  # permission bits do not stop root: a read-only filesystem does
        _tmpfs(tmp / "out", "ro,size=64k")
    else:
        (tmp / "out").mkdir()
        (tmp / "out").chmod(0o555)


def full_output(tmp: Path) -> None:
    if not IS_ROOT:
        pytest.skip("a full disk is made with a tiny tmpfs, which needs root")
    out = _tmpfs(tmp / "out", "size=16k")
    try:
        (out / "filler").write_bytes(b"0" * 10**6)
    except OSError:
        pass  # now full


def unreadable_folder(tmp: Path) -> None:
    if IS_ROOT:
        pytest.skip("root reads every folder; covered by test_extract.py's setpriv test")
    write_audio(tmp / "in" / "locked" / "b.wav", 0.5)
    (tmp / "in" / "locked").chmod(0)


LONG = "l" * 236 + ".wav"  # 240 bytes, legal on ext4
TINY = ("--checkpoint", "{tmp}/tiny.safetensors", "--workers", "0")
EXTRACT = ("extract", "tune_plus", "{tmp}/in", "{tmp}/out")
RUN = (*EXTRACT, *TINY)

CASES = [
    # The output folder.
    BadInput("output-below-a-file", ("extract", "tune_plus", "{tmp}/in", "{tmp}/in/a.wav/sub", *TINY),
             ("{tmp}/in/a.wav/sub", "is a file, not a folder", "choose another"), 1, audio("a.wav")),
    BadInput("output-is-a-file", ("extract", "tune_plus", "{tmp}/in", "{tmp}/in/a.wav", *TINY),
             ("OUTPUT_DIR", "a.wav", "is a file"), 2, audio("a.wav")),
    BadInput("output-read-only", RUN, ("{tmp}/out", "read-only" if IS_ROOT else "permission denied", "choose"),
             1, then(audio("a.wav"), read_only_output)),
    BadInput("output-disk-full", RUN, ("{tmp}/out", "disk (or quota) is full", "free some space"), 1,
             then(audio("a.wav", "b.wav"), full_output)),
    BadInput("output-folder-named-like-a-vector", RUN, ("{tmp}/out/a.npy", "folder of that name is in the way",
             "rename or remove"), 1, then(audio("a.wav", "b.wav"), mkdir("out/a.npy"))),
    BadInput("output-file-where-a-folder-goes", RUN, ("{tmp}/out/sub/c.npy", "a file is in the way", "rename"),
             1, then(audio("a.wav", "sub/c.wav"), write("out/sub", b"x"))),
    BadInput("manifest-not-json", RUN, ("tunemir-manifest.json", "not valid JSON", "move the folder aside"), 2,
             then(audio("a.wav"), manifest("{not json"))),
    BadInput("manifest-a-list", RUN, ("tunemir-manifest.json", "not a tunemir manifest", "move the folder aside"),
             2, then(audio("a.wav"), manifest("[1, 2]"))),
    BadInput("manifest-binary", RUN, ("tunemir-manifest.json", "not text", "move the folder aside"), 2,
             then(audio("a.wav"), write("out/tunemir-manifest.json", bytes(range(256))))),
    BadInput("manifest-a-folder", RUN, ("tunemir-manifest.json", "cannot be read", "move the folder aside"), 2,
             then(audio("a.wav"), mkdir("out/tunemir-manifest.json"))),
    BadInput("manifest-of-another-model", RUN, ("{tmp}/out", "other settings", "'mfcc'", "another output folder"),
             2, then(audio("a.wav"), other_model_manifest)),
    BadInput("manifest-of-another-layer", (*RUN, "--layer", "2"), ("layer: folder has 0", "another output folder"),
             2, then(audio("a.wav"), lambda tmp: check_bad_input(BadInput("first", RUN, (), 0), tmp))),
    # The input folder and its files.
    BadInput("input-missing", ("extract", "tune_plus", "{tmp}/nope", "{tmp}/out", "--random-init"),
             ("INPUT_DIR", "does not exist"), 2),
    BadInput("input-is-a-file", ("extract", "tune_plus", "{tmp}/in/a.wav", "{tmp}/out", *TINY),
             ("INPUT_DIR", "is a file"), 2, audio("a.wav")),
    BadInput("input-empty", RUN, ("no audio files under {tmp}/in", "check the input folder"), 1, audio()),
    BadInput("input-only-other-files", RUN, ("no audio files under", ".flac", "check the input folder"), 1,
             then(audio(), write("in/notes.txt", b"hi"), write("in/.hidden.wav", b"RIFF"))),
    BadInput("input-only-a-folder-named-x-wav", RUN, ("no audio files under", "check the input folder"), 1,
             then(audio(), mkdir("in/x.wav"))),
    BadInput("input-only-a-symlink-loop", RUN, ("no audio files under", "check the input folder"), 1,
             then(audio(), symlink("in/loop", "."), symlink("in/sub/up", ".."))),
    BadInput("corrupt-wav", RUN, ("{tmp}/in/bad.wav", "cannot be decoded", "ffmpeg", "1 of 2 files failed"), 1,
             then(audio("a.wav"), write("in/bad.wav", b"RIFF\x00\x01garbage" * 50))),
    BadInput("zero-length-wav", RUN, ("{tmp}/in/empty.wav", "is empty (0 bytes)", "re-encode"), 1,
             then(audio("a.wav"), write("in/empty.wav", b""))),
    BadInput("header-only-wav", RUN, ("{tmp}/in/h.wav", "no audio samples", "re-encode"), 1,
             then(audio("a.wav"), lambda tmp: sf.write(tmp / "in" / "h.wav", np.zeros((0, 1)), 22050))),
    BadInput("nan-samples-float-wav", RUN, ("{tmp}/in/nan.wav", "NaN or infinite samples", "re-encode"), 1,
             then(audio("a.wav"), float_wav("in/nan.wav", float("nan")))),
    BadInput("inf-samples-float-wav", RUN, ("{tmp}/in/inf.wav", "NaN or infinite samples", "re-encode"), 1,
             then(audio("a.wav"), float_wav("in/inf.wav", float("inf")))),
    BadInput("checkpoint-that-overflows", (*EXTRACT, "--checkpoint", "{tmp}/exploded.pt"),
             ("{tmp}/in/a.wav", "produced NaN or infinite", "check the checkpoint", "2 of 2 files failed"), 1,
             then(audio("a.wav", "b.wav"), exploded_checkpoint)),
    BadInput("text-file-named-mp3", RUN, ("{tmp}/in/song.mp3", "cannot be decoded", "ffmpeg"), 1,
             then(audio("a.wav"), write("in/song.mp3", b"this is not audio\n" * 40))),
    BadInput("truncated-flac", RUN, ("{tmp}/in/t.flac", "ffmpeg"), 1,
             then(audio("a.wav", "t.flac", seconds=4.0),
                  lambda tmp: (tmp / "in" / "t.flac").write_bytes((tmp / "in" / "t.flac").read_bytes()[:3000]))),
    BadInput("240-byte-name-beside-a-bad-file", RUN, ("{tmp}/in/bad.ogg", "1 of 2 files failed"), 1,
             then(audio(LONG), write("in/bad.ogg", b"OggS" + b"\x00" * 100))),
    BadInput("same-output-name", RUN, ("a.flac, a.wav would all be written to", "rename all but one"), 1,
             audio("a.wav", "a.flac", "b.wav")),
    BadInput("same-output-name-other-shard", (*RUN, "--batch_size", "1", "--batch_idx", "1"),
             ("a.flac, a.wav would all be written to", "rename all but one"), 1, audio("a.wav", "a.flac")),
    BadInput("dangling-symlink", RUN, ("{tmp}/in/gone.wav", "broken symlink", "remove it"), 1,
             then(audio("a.wav"), symlink("in/gone.wav", "/nonexistent/gone.wav"))),
    BadInput("fifo-named-wav", RUN, ("{tmp}/in/pipe.wav", "not a regular file", "replace it"), 1,
             then(audio("a.wav"), lambda tmp: os.mkfifo(tmp / "in" / "pipe.wav"))),
    BadInput("unreadable-sub-folder", RUN, ("{tmp}/in/locked", "cannot be read", "chmod"), 1,
             then(audio("a.wav"), unreadable_folder)),
    # Options.
    BadInput("checkpoint-and-random-init", (*RUN, "--random-init"), ("--checkpoint", "--random-init", "drop"), 2,
             audio("a.wav")),
    BadInput("checkpoint-missing", (*EXTRACT, "--checkpoint", "{tmp}/nope.ckpt"), ("--checkpoint", "does not exist"),
             2, audio("a.wav")),
    BadInput("checkpoint-a-folder", (*EXTRACT, "--checkpoint", "{tmp}/in"), ("--checkpoint", "is a directory"), 2,
             audio("a.wav")),
    BadInput("checkpoint-garbage", (*EXTRACT, "--checkpoint", "{tmp}/junk.ckpt"), ("{tmp}/junk.ckpt",), 1,
             then(audio("a.wav"), write("junk.ckpt", b"\x00garbage" * 100))),
    BadInput("checkpoint-with-nan-weights", (*EXTRACT, "--checkpoint", "{tmp}/nan.pt"),
             ("{tmp}/nan.pt", "NaN", "use an earlier checkpoint"), 1, then(audio("a.wav"), nan_checkpoint)),
    BadInput("checkpoint-of-another-model", (*EXTRACT, "--checkpoint", "{tmp}/clmr.safetensors"),
             ("{tmp}/clmr.safetensors", "clmr"), 1, then(audio("a.wav"), clmr_checkpoint)),
    BadInput("missing-weights", ("extract", "clmr", "{tmp}/in", "{tmp}/out"), ("--checkpoint", "releases"), 1,
             audio("a.wav"), env={"TUNEMIR_WEIGHTS_DIR": "/nonexistent/weights"}),
    BadInput("unknown-model", ("extract", "tune_pls", "{tmp}/in", "{tmp}/out"), ("'tune_pls' is not one of", "'tune_plus'"), 2,
             audio("a.wav")),
    BadInput("batch-size-zero", (*RUN, "--batch_size", "0", "--batch_idx", "0"), ("--batch_size", "0"), 2,
             audio("a.wav")),
    BadInput("batch-size-without-idx", (*RUN, "--batch_size", "2"), ("--batch_idx", "give both"), 2, audio("a.wav")),
    BadInput("batch-idx-out-of-range", (*RUN, "--batch_size", "2", "--batch_idx", "5"),
             ("--batch_idx 5", "must be 0 to 0"), 2, audio("a.wav", "b.wav")),
    BadInput("batch-idx-negative", (*RUN, "--batch_size", "2", "--batch_idx", "-1"), ("--batch_idx -1", "must be 0"),
             2, audio("a.wav")),
    BadInput("batch-idx-not-a-number", (*RUN, "--batch_size", "2", "--batch_idx", "one"), ("--batch_idx", "'one'"),
             2, audio("a.wav")),
    BadInput("layer-too-deep", (*RUN, "--layer", "99"), ("layer", "99"), 2, audio("a.wav")),
    BadInput("layer-of-a-handcrafted-feature", ("extract", "mfcc", "{tmp}/in", "{tmp}/out", "--layer", "1"),
             ("mfcc", "drop --layer"), 2, audio("a.wav")),
    BadInput("device-banana", (*RUN, "--device", "banana"), ("--device", "cuda:N"), 2, audio("a.wav")),
    BadInput("device-cuda-colon-x", (*RUN, "--device", "cuda:x"), ("--device", "cuda:N"), 2, audio("a.wav")),
    BadInput("workers-negative", (*EXTRACT, "--random-init", "--workers", "-1"), ("--workers", "-1"), 2,
             audio("a.wav")),
    BadInput("frames-per-batch-zero", (*RUN, "--frames-per-batch", "0"), ("--frames-per-batch", "0"), 2,
             audio("a.wav")),
    BadInput("list-shards-without-batch-size", (*RUN, "--list-shards"), ("--list-shards", "--batch_size"), 2,
             audio("a.wav")),
    BadInput("list-shards-with-batch-idx", (*RUN, "--list-shards", "--batch_size", "1", "--batch_idx", "0"),
             ("--list-shards", "no --batch_idx"), 2, audio("a.wav")),
]


# A model of one's own (`tunemir extract FILE.py:FUNCTION`): the file, its build() and its module's outputs.
MODEL_HEAD = """
import torch
from torch import nn


class Energy(nn.Module):
    def forward(self, frames):  # (B, samples) -> (B, 2)
        return torch.stack([frames.pow(2).mean(1), frames.abs().amax(1)], dim=1)


SPEC = {"sample_rate": 8000, "frame_length": 800}
"""


def model_file(body: str, name: str = "m.py"):
    """setup: short audio (see `audio`) and {tmp}/<name>: MODEL_HEAD followed by `body`."""
    def setup(tmp: Path) -> None:
        audio("a.wav")(tmp)
        (tmp / name).write_text(MODEL_HEAD + body)
    return setup


def custom(reference: str = "{tmp}/m.py:build", *flags: str) -> tuple[str, ...]:
    return ("extract", reference, "{tmp}/in", "{tmp}/out", "--workers", "0", *flags)


GOOD_BUILD = "def build():\n    return Energy(), SPEC\n"
CASES += [
    BadInput("custom-model-file-missing", custom("{tmp}/nope.py:build"), ("{tmp}/nope.py", "does not exist",
             "python file"), 2, audio("a.wav")),
    BadInput("custom-model-file-a-folder", custom("{tmp}/in.py:build"), ("{tmp}/in.py", "is a folder"), 2,
             then(audio("a.wav"), mkdir("in.py"))),
    BadInput("custom-model-without-function", custom("{tmp}/m.py"), ("m.py", "FILE.py:FUNCTION", "m.py:build"), 2,
             model_file(GOOD_BUILD)),
    BadInput("custom-model-function-not-an-identifier", custom("{tmp}/m.py:1build"), ("names no function",
             "FILE.py:FUNCTION"), 2, model_file(GOOD_BUILD)),
    BadInput("custom-model-no-such-function", custom("{tmp}/m.py:make"), ("{tmp}/m.py", "no function make()",
             "defined there: build", "m.py:NAME"), 1, model_file(GOOD_BUILD)),
    BadInput("custom-model-syntax-error", custom(), ("{tmp}/m.py", "failed to import", "SyntaxError", "fix the file"),
             1, model_file("def build(:\n    pass\n")),
    BadInput("custom-model-missing-import", custom(), ("{tmp}/m.py", "ModuleNotFoundError", "fix the file"), 1,
             model_file("import not_a_package_anywhere\n" + GOOD_BUILD)),
    BadInput("custom-build-raises", custom(), ("{tmp}/m.py:build", "RuntimeError: no GPU here", "fix the build"), 1,
             model_file("def build():\n    raise RuntimeError('no GPU here')\n")),
    BadInput("custom-build-needs-arguments", custom(), ("{tmp}/m.py:build", "TypeError", "takes no arguments"), 1,
             model_file("def build(size):\n    return Energy(), SPEC\n")),
    BadInput("custom-build-returns-module-only", custom(), ("m.py:build", "returned a Energy",
             "return (module, spec)"), 1, model_file("def build():\n    return Energy()\n")),
    BadInput("custom-build-returns-a-function", custom(), ("returned a function as the module",
             "torch.nn.Module"), 1, model_file("def build():\n    return (lambda x: x), SPEC\n")),
    BadInput("custom-build-returns-no-spec", custom(), ("returned a NoneType as the spec", "ModelSpec"), 1,
             model_file("def build():\n    return Energy(), None\n")),
    BadInput("custom-spec-unknown-field", custom(), ("not a ModelSpec", "'rate'", "sample_rate"), 1,
             model_file("def build():\n    return Energy(), {'rate': 8000}\n")),
    BadInput("custom-spec-negative-rate", custom(), ("m.py:build", "sample_rate must be a positive", "-8000"), 1,
             model_file("def build():\n    return Energy(), {**SPEC, 'sample_rate': -8000}\n")),
    BadInput("custom-spec-rate-a-string", custom(), ("sample_rate must be a positive whole number", "'16k'"), 1,
             model_file("def build():\n    return Energy(), {**SPEC, 'sample_rate': '16k'}\n")),
    BadInput("custom-spec-overlapping-hop", custom(), ("hop_length 400", "non-overlapping"), 1,
             model_file("def build():\n    return Energy(), {**SPEC, 'hop_length': 400}\n")),
    BadInput("custom-spec-unknown-pooling", custom(), ("pooling must be one of mean, max", "'median'"), 1,
             model_file("def build():\n    return Energy(), {**SPEC, 'pooling': 'median'}\n")),
    BadInput("custom-spec-whole-file-front-end", custom(), ("front_end 'whole_file'", "declare front_end"), 1,
             model_file("def build():\n    return Energy(), {**SPEC, 'front_end': 'whole_file'}\n")),
    BadInput("custom-output-not-pooled-over-time", custom(), ("m.py:build", "shape (2, 1, 800)", "shape (B, D)",
             "pool over time"), 1, model_file(
        "class Raw(nn.Module):\n    def forward(self, x):\n        return x[:, None]\n"
        "def build():\n    return Raw(), SPEC\n")),
    BadInput("custom-output-wrong-batch", custom(), ("shape (1, 2)", "(2, D)"), 1, model_file(
        "class One(Energy):\n    def forward(self, x):\n        return super().forward(x)[:1]\n"
        "def build():\n    return One(), SPEC\n")),
    BadInput("custom-output-integers", custom(), ("torch.int64", "float vectors"), 1, model_file(
        "class Ints(Energy):\n    def forward(self, x):\n        return super().forward(x).long()\n"
        "def build():\n    return Ints(), SPEC\n")),
    BadInput("custom-output-nan", custom(), ("m.py:build", "NaN or infinite", "fix its forward"), 1, model_file(
        "class Normed(Energy):\n    def forward(self, x):\n        e = super().forward(x)\n"
        "        return e / e.sum(1, keepdim=True)\n"
        "def build():\n    return Normed(), SPEC\n")),
    BadInput("custom-frame-length-does-not-fit-the-module", custom(), ("failed on a batch of 2 frames of 800 samples",
             "check frame_length"), 1, model_file("def build():\n    return nn.Linear(1000, 4), SPEC\n")),
    BadInput("custom-layer-not-declared", custom("{tmp}/m.py:build", "--layer", "1"), ("layer 1", "num_layers=1",
             "--layer 0 to 0"), 2, model_file(GOOD_BUILD)),
    BadInput("custom-with-checkpoint", custom("{tmp}/m.py:build", "--checkpoint", "{tmp}/tiny.safetensors"),
             ("--checkpoint", "build() makes its module", "drop --checkpoint"), 2, model_file(GOOD_BUILD)),
    BadInput("custom-with-random-init", custom("{tmp}/m.py:build", "--random-init"),
             ("--random-init", "drop --random-init"), 2, model_file(GOOD_BUILD)),
    BadInput("custom-model-changed-since", custom(), ("model_source", "other settings", "another output folder"), 2,
             then(model_file(GOOD_BUILD), lambda tmp: check_bad_input(BadInput("first", custom(), (), 0), tmp),
                  lambda tmp: (tmp / "m.py").write_text(MODEL_HEAD + GOOD_BUILD + "# tuned\n"))),
    BadInput("model-name-typo-suggests-files", ("extract", "TUNE", "{tmp}/in", "{tmp}/out"),
             ("'TUNE' is not one of", "'tune'", "FILE.py:FUNCTION"), 2, audio("a.wav")),
]

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: BadInput, tmp_path: Path):
    check_bad_input(case, tmp_path)


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES) >= 40


def test_failures_are_also_in_the_run_report(tmp_path: Path):
    output = check_bad_input(CASES[[c.id for c in CASES].index("corrupt-wav")], tmp_path)
    report = json.loads((tmp_path / "out" / "tunemir-run-all.json").read_text())
    assert [f["file"] for f in report["files"]["failed"]] == ["bad.wav"] and report["files"]["written"] == 1
    assert output.count("FAILED") == 1
