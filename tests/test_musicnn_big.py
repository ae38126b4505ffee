"""`musicnn` (MSD_musicnn_big, jukemir's variant): the folder the user brings from musicnn's GitHub
repository, pinned by the git blob ids at 516acb2, converted by `tunemir weights fetch musicnn` and
extracted end to end. The released data file (96 MB) is not available here, so the end-to-end
checkpoint is a random-weight one in the released layout; the layout itself is checked against
the released `.index` (tests/data/musicnn/MSD_musicnn_big.index, from musicnn@516acb2, ISC licence).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tunemir.audio import load_mono
from tunemir.checkpoints import read_encoder_weights
from tunemir.cli import main
from tunemir.models import MUSICNN_BIG_FILES, get_info, load_model
from tunemir.models import musicnn as mn
from tunemir.models.release import git_blob_id
from tunemir.testing import write_audio, write_musicnn_folder
from tunemir.tf_checkpoint import read_index

RELEASED_INDEX = Path(__file__).parent / "data" / "musicnn" / "MSD_musicnn_big.index"
PINS = dict(MUSICNN_BIG_FILES)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_the_released_index_is_what_the_pin_names_and_what_the_model_expects():
    # The pin is the blob id GitHub lists; the committed file is the released one, so they agree,
    # and so does git itself.
    assert PINS[".index"] == f"git:{git_blob_id(RELEASED_INDEX)}"
    if shutil.which("git"):
        out = subprocess.run(["git", "hash-object", str(RELEASED_INDEX)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == git_blob_id(RELEASED_INDEX)
    _, entries = read_index(str(RELEASED_INDEX)[: -len(".index")])
    released = {k: e.shape for k, e in entries.items() if not k.endswith(("/Adam", "/Adam_1", "_power"))}
    model = mn.Musicnn(get_info("musicnn").config)
    assert {k: v.shape for k, v in model.to_tf_variables().items()} == released
    assert get_info("musicnn").config.embedding_dim == 4194  # jukemir's musicnn vector


def big_release(folder: Path, seed: int = 0, config=None) -> mn.Musicnn:
    return write_musicnn_folder(folder, seed, config)[1]


def sha256_pins(folder: Path) -> str:
    return "".join(f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n" for name in PINS)


def test_fetch_and_extract_a_folder_in_the_released_layout(tmp_path, monkeypatch):
    clone = tmp_path / "clone"  # as in a clone of the repository: musicnn/MSD_musicnn_big/
    folder = clone / "musicnn" / "MSD_musicnn_big"
    net = big_release(folder)
    weights = tmp_path / "weights"
    monkeypatch.setenv("TUNEMIR_WEIGHTS_DIR", str(weights))
    # The released pins (git blob ids) refuse these files, naming the file and both digests.
    result = invoke("weights", "fetch", "musicnn", "--search-dir", clone)
    assert result.exit_code == 1, result.output
    assert f"{folder / '.index'} has git:{git_blob_id(folder / '.index')}, but {PINS['.index']} is pinned" in result.output
    assert not (weights / "musicnn.safetensors").exists()
    # Pinned by a pin file (a sha256sum line per file), the folder converts.
    pins = tmp_path / "weights.sha256"
    pins.write_text("# my own MSD_musicnn_big\n" + sha256_pins(folder))
    for search in (clone, folder):  # the clone's root or the folder itself
        result = invoke("weights", "fetch", "musicnn", "--search-dir", search, "--pin-file", pins,
                        "--output", tmp_path / f"{search.name}.safetensors")
        assert result.exit_code == 0, result.output
    result = invoke("weights", "fetch", "musicnn", "--search-dir", clone, "--pin-file", pins)
    assert result.exit_code == 0, result.output
    meta = read_encoder_weights(weights / "musicnn.safetensors").metadata
    assert meta["model"] == "musicnn" and meta["source"]["release"]["file"] == "MSD_musicnn_big"
    assert meta["source"]["release"]["pins"][".index"].startswith("sha256:")
    before = (weights / "musicnn.safetensors").stat().st_mtime_ns  # a rerun keeps what is converted
    assert invoke("weights", "fetch", "musicnn", "--search-dir", clone, "--pin-file", pins).exit_code == 0
    assert (weights / "musicnn.safetensors").stat().st_mtime_ns == before
    # Extraction: jukemir's 4194-d vector, as the model computes it.
    wavs = tmp_path / "wavs"
    write_audio(wavs / "long.wav", seconds=7.0, sample_rate=22050, seed=3)
    write_audio(wavs / "short.wav", seconds=1.0, sample_rate=16000, seed=4)
    result = invoke("extract", "musicnn", wavs, tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for stem in ("long", "short"):
        got = np.load(tmp_path / "out" / f"{stem}.npy")
        want = mn.embed(net, load_mono(wavs / f"{stem}.wav", mn.SAMPLE_RATE))
        assert got.shape == (4194,) and np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    assert isinstance(load_model("musicnn"), mn.Musicnn)


def test_bad_folders_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEMIR_WEIGHTS_DIR", str(tmp_path / "weights"))
    small = tmp_path / "small"  # an MSD_musicnn-sized checkpoint in the folder
    big_release(small, config=mn.PRESETS["MSD_musicnn"])
    pins = tmp_path / "pins.sha256"
    pins.write_text(sha256_pins(small))
    result = invoke("weights", "fetch", "musicnn", "--search-dir", small, "--pin-file", pins)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "mid-end width 64 and 200 dense units, not MSD_musicnn_big's 512 and 500" in result.output
    assert "fix the pin" in result.output
    (small / ".data-00000-of-00001").unlink()
    result = invoke("weights", "fetch", "musicnn", "--search-dir", small, "--pin-file", pins)
    assert result.exit_code == 1
    assert f"{small} holds .index but not .data-00000-of-00001" in result.output
    result = invoke("weights", "fetch", "musicnn", "--search-dir", tmp_path / "empty")
    assert result.exit_code == 1
    assert "MSD_musicnn_big (.index, .data-00000-of-00001) is not in" in result.output
    assert "(does not exist)" in result.output and "github.com/jordipons/musicnn/tree/516acb2" in result.output
    for option in (("--sha256", "0" * 64), ("--url", "http://127.0.0.1:9/x")):
        result = invoke("weights", "fetch", "musicnn", "--search-dir", small, *option)
        assert result.exit_code == 2 and f"{option[0]}: musicnn's weights are a folder" in result.output
    assert not (tmp_path / "weights" / "musicnn.safetensors").exists()
