"""`tunemir extract --layers`: every chosen layer from one decoding and one encoder pass per file,
each into its own representation folder `OUT@K`, equal to `--layer K` runs and resumable by them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tunemir.cli import main
from tunemir.testing import save_tiny_checkpoint, write_audio

from test_custom_model import MODEL_FILE


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def wavs(tmp_path) -> Path:
    folder = tmp_path / "wavs"
    for i, seconds in enumerate((1.0, 6.5, 3.2)):
        write_audio(folder / f"clip{i}.wav", seconds, 22050 if i else 44100, seed=i)
    return folder


def vectors(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(folder.glob("*.npy"))}


def test_all_layers_in_one_pass_equal_one_run_per_layer(wavs, tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "tp.safetensors", "tune_plus", seed=2) and tmp_path / "tp.safetensors"
    out = tmp_path / "reps" / "tune_plus"
    result = invoke("extract", "tune_plus", wavs, out, "--checkpoint", ckpt, "--layers", "all", "--device", "cpu")
    assert result.exit_code == 0, result.output
    folders = sorted(p.name for p in out.parent.iterdir())
    assert folders == sorted(f"tune_plus@{k}" for k in range(18)) and not out.exists()
    for k in (0, 4, 17):
        single = tmp_path / "single" / str(k)
        assert invoke("extract", "tune_plus", wavs, single, "--checkpoint", ckpt, "--layer", k,
                      "--device", "cpu").exit_code == 0
        got, want = vectors(out.parent / f"tune_plus@{k}"), vectors(single)
        assert sorted(got) == sorted(want) == ["clip0.npy", "clip1.npy", "clip2.npy"]
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
        manifest = json.loads((out.parent / f"tune_plus@{k}" / "tunemir-manifest.json").read_text())
        assert manifest["layer"] == k and manifest["model"] == "tune_plus"
        # The layer folder is what `--layer K` writes: a run of it finds everything done.
        before = {p: p.stat().st_mtime_ns for p in (out.parent / f"tune_plus@{k}").glob("*.npy")}
        assert invoke("extract", "tune_plus", wavs, out.parent / f"tune_plus@{k}", "--checkpoint", ckpt,
                      "--layer", k, "--device", "cpu").exit_code == 0
        assert {p: p.stat().st_mtime_ns for p in before} == before
    # A rerun resumes: only what a layer lacks is made again, and only in that layer's folder.
    (out.parent / "tune_plus@5" / "clip1.npy").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.parent.glob("tune_plus@*/*.npy")}
    result = invoke("extract", "tune_plus", wavs, out, "--checkpoint", ckpt, "--layers", "all", "--device", "cpu")
    assert result.exit_code == 0, result.output
    changed = [p for p in out.parent.glob("tune_plus@*/*.npy") if stamps.get(p) != p.stat().st_mtime_ns]
    assert changed == [out.parent / "tune_plus@5" / "clip1.npy"]
    report = json.loads(next((out.parent / "tune_plus@5").glob("tunemir-run*.json")).read_text())
    assert report["files"]["written"] == 1 and report["stages"]["layers_in_one_pass"] == 18  # the last run: one file


def test_a_model_of_ones_own_and_bad_requests(wavs, tmp_path):
    model_file = tmp_path / "bands.py"
    model_file.write_text(MODEL_FILE)
    reference = f"{model_file}:build"
    out = tmp_path / "reps" / "bands"
    result = invoke("extract", reference, wavs, out, "--layers", "1,0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for k in (0, 1):
        single = tmp_path / "single" / str(k)
        assert invoke("extract", reference, wavs, single, "--layer", k, "--device", "cpu").exit_code == 0
        got, want = vectors(out.parent / f"bands@{k}"), vectors(single)
        assert sorted(got) == sorted(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    cases = [(["--layers", "2"], "layer 2 does not exist for"), (["--layers", "x"], "give 'all' or layer numbers"),
             (["--layers", "all", "--layer", "1"], "--layer and --layers exclude each other")]
    for extra, message in cases:
        result = invoke("extract", reference, wavs, tmp_path / "bad", *extra)
        assert result.exit_code == 2 and message in result.output, (extra, result.output)
    result = invoke("extract", "chroma", wavs, tmp_path / "chroma", "--layers", "all")
    assert result.exit_code == 2 and "no layers; drop --layers" in result.output


def test_list_shards_with_layers_is_done_only_where_every_layer_is(wavs, tmp_path):
    model_file = tmp_path / "bands.py"
    model_file.write_text(MODEL_FILE)
    reference = f"{model_file}:build"
    out = tmp_path / "reps" / "bands"
    shards = ("extract", reference, wavs, out, "--layers", "all", "--batch_size", "2", "--list-shards")
    assert invoke(*shards).output == "0 todo\n1 todo\n"
    assert invoke("extract", reference, wavs, out, "--layers", "all", "--batch_size", "2", "--batch_idx", "0",
                  "--device", "cpu").exit_code == 0
    assert invoke(*shards).output == "0 done\n1 todo\n"
    # Shard 1 done for layer 1 only (by a --layer run into its folder): still todo for the pair.
    assert invoke("extract", reference, wavs, out.parent / "bands@1", "--layer", "1", "--batch_size", "2",
                  "--batch_idx", "1", "--device", "cpu").exit_code == 0
    assert invoke(*shards).output == "0 done\n1 todo\n"
    assert invoke("extract", reference, wavs, out, "--layers", "all", "--device", "cpu").exit_code == 0
    assert invoke(*shards).output == "0 done\n1 done\n"
