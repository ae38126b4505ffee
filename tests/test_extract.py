"""The `tunemir extract` contract: reference equality, sharding, bad input, resume and kill-safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import reference_vector
from tunemir.audio import FRAME_LENGTH, SAMPLE_RATE
from tunemir.cli import main
from tunemir.extract import MANIFEST_NAME, ExtractUsageError, extract, find_audio_files, is_valid_output, select_shard
from tunemir.models import HandcraftedFeature, load_model
from tunemir.testing import write_audio

MIXED = [  # (relative path, rate, channels, subtype, seconds): all at least two frames long
    ("a_44k_stereo_pcm16.wav", 44100, 2, "pcm16", 6.0),
    ("b_48k_mono_pcm24.wav", 48000, 1, "pcm24", 8.1),
    ("c_16k_3ch_float.wav", 16000, 3, "float", 5.6),
    ("d_8k_u8.wav", 8000, 1, "pcm8", 5.5),
    ("e_22k_pcm32.wav", SAMPLE_RATE, 2, "pcm32", 9.0),
    ("sub/f_44k.flac", 44100, 2, "pcm16", 6.2),
    ("sub/g_32k.ogg", 32000, 2, "pcm16", 5.9),
    ("sub/deeper/h_44k.mp3", 44100, 2, "pcm16", 7.0),
]


def make_folder(root: Path, specs=MIXED) -> Path:
    for seed, (rel, rate, channels, subtype, seconds) in enumerate(specs):
        write_audio(root / rel, seconds, rate, channels, subtype, seed=seed)
    return root


def vectors(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.load(p) for p in sorted(folder.rglob("*.npy"))}


def test_vectors_equal_plain_reference(tmp_path: Path, tiny_checkpoint):
    ckpt, model = tiny_checkpoint
    src = make_folder(tmp_path / "in")
    summary = extract("tune_plus", src, tmp_path / "out", checkpoint=ckpt, workers=2, frames_per_batch=5)
    assert summary.ok and summary.written == len(MIXED)
    got = vectors(tmp_path / "out")
    assert sorted(got) == sorted(str(Path(rel).with_suffix(".npy")) for rel, *_ in MIXED)
    for rel, *_ in MIXED:
        vector = got[str(Path(rel).with_suffix(".npy"))]
        assert vector.dtype == np.float32 and vector.shape == (16,)
        np.testing.assert_allclose(vector, reference_vector(model, src / rel), atol=1e-4, rtol=0)


def test_full_size_model_matches_reference(tmp_path: Path):
    src = tmp_path / "in"
    write_audio(src / "song.wav", 6.0, 44100, 2)
    extract("tune_plus", src, tmp_path / "out", random_init=True, workers=0)
    model = load_model("tune_plus", random_init=True)
    vector = np.load(tmp_path / "out" / "song.npy")
    assert vector.shape == (512,)
    np.testing.assert_allclose(vector, reference_vector(model, src / "song.wav"), atol=1e-4, rtol=0)


def test_layer_and_short_file(tmp_path: Path, tiny_checkpoint):
    ckpt, model = tiny_checkpoint
    src = tmp_path / "in"
    write_audio(src / "short.wav", 1.0, 44100, 1)  # shorter than one frame: zero-padded
    write_audio(src / "long.wav", 6.0, 22050, 1)
    extract("tune_plus", src, tmp_path / "out", checkpoint=ckpt, layer=5, workers=0)
    for name in ("short", "long"):
        vector = np.load(tmp_path / "out" / f"{name}.npy")
        assert vector.shape == (model.layer_dims[5],)
        np.testing.assert_allclose(vector, reference_vector(model, src / f"{name}.wav", layer=5), atol=1e-4)


def test_invariant_to_workers_and_device_batch(tmp_path: Path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    src = make_folder(tmp_path / "in")
    runs = []
    for index, (workers, frames) in enumerate([(0, 1), (2, 7), (1, 64)]):
        extract("tune_plus", src, tmp_path / f"out{index}", checkpoint=ckpt, workers=workers, frames_per_batch=frames)
        runs.append(vectors(tmp_path / f"out{index}"))
    for other in runs[1:]:
        assert other.keys() == runs[0].keys()
        for key in other:
            np.testing.assert_allclose(other[key], runs[0][key], rtol=1e-5, atol=1e-6)


def test_discovery_skips_hidden_and_non_audio(tmp_path: Path):
    src = tmp_path / "in"
    write_audio(src / "b.WAV", 0.5)
    write_audio(src / "a" / "z.flac", 0.5)
    write_audio(src / ".hidden.wav", 0.5)
    write_audio(src / ".cache" / "x.wav", 0.5)
    (src / "notes.txt").write_text("not audio")
    assert [p.as_posix() for p in find_audio_files(src)] == ["a/z.flac", "b.WAV"]


def test_bad_files_are_reported_and_skipped(tmp_path: Path, tiny_checkpoint):
    ckpt, model = tiny_checkpoint
    src = tmp_path / "in"
    write_audio(src / "good1.wav", 6.0, 44100, 2)
    write_audio(src / "good2.flac", 6.0, 22050, 1)
    (src / "corrupt.wav").write_bytes(os.urandom(4000))
    (src / "empty.mp3").write_bytes(b"")
    truncated = write_audio(src / "truncated.flac", 6.0, 44100, 2)
    truncated.write_bytes(truncated.read_bytes()[:3000])
    write_audio(src / "clash.wav", 6.0)
    write_audio(src / "clash.ogg", 6.0)
    result = CliRunner().invoke(main, ["extract", "tune_plus", str(src), str(tmp_path / "out"),
                                       "--checkpoint", str(ckpt), "--workers", "2"])
    assert result.exit_code == 1, result.output
    out = tmp_path / "out"
    for name in ("good1", "good2"):
        ext = "wav" if name == "good1" else "flac"
        np.testing.assert_allclose(np.load(out / f"{name}.npy"), reference_vector(model, src / f"{name}.{ext}"), atol=1e-4)
    assert not (out / "corrupt.npy").exists() and not (out / "empty.npy").exists()
    assert not (out / "clash.npy").exists()
    report = json.loads((out / "tunemir-run-all.json").read_text())
    failed = {entry["file"]: entry["reason"] for entry in report["files"]["failed"]}
    assert {"corrupt.wav", "empty.mp3", "truncated.flac", "clash.wav", "clash.ogg"} == set(failed)
    assert str(src / "corrupt.wav") in failed["corrupt.wav"] and "ffmpeg" in failed["corrupt.wav"]
    assert "rename" in failed["clash.wav"]
    assert "files failed" in result.output


def test_resume_skips_valid_and_redoes_corrupt_outputs(tmp_path: Path, tiny_checkpoint):
    ckpt, model = tiny_checkpoint
    src = make_folder(tmp_path / "in", MIXED[:4])
    out = tmp_path / "out"
    extract("tune_plus", src, out, checkpoint=ckpt, workers=0)
    kept, broken = out / "a_44k_stereo_pcm16.npy", out / "b_48k_mono_pcm24.npy"
    before = kept.stat().st_mtime_ns
    broken.write_bytes(broken.read_bytes()[:40])
    (out / "c_16k_3ch_float.npy").unlink()
    summary = extract("tune_plus", src, out, checkpoint=ckpt, workers=0)
    assert (summary.skipped, summary.written) == (2, 2)
    assert kept.stat().st_mtime_ns == before
    np.testing.assert_allclose(np.load(broken), reference_vector(model, src / "b_48k_mono_pcm24.wav"), atol=1e-4)


def test_sharding_covers_every_file_once(tmp_path: Path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    src = make_folder(tmp_path / "in")
    extract("tune_plus", src, tmp_path / "full", checkpoint=ckpt, workers=0)
    files = find_audio_files(src)
    seen = set()
    for index in range(3):  # 8 files in batches of 3: 3 shards
        extract("tune_plus", src, tmp_path / "sharded", checkpoint=ckpt, batch_size=3, batch_idx=index, workers=0)
        now = set(vectors(tmp_path / "sharded"))
        assert now - seen == {f.with_suffix(".npy").as_posix() for f in files[3 * index : 3 * index + 3]}
        seen = now
    full, sharded = vectors(tmp_path / "full"), vectors(tmp_path / "sharded")
    assert full.keys() == sharded.keys()
    for key in full:
        np.testing.assert_allclose(sharded[key], full[key], rtol=1e-5, atol=1e-6)


def test_select_shard_matches_jukemir_semantics():
    items = list(range(10))
    assert select_shard(items, None, None) == items
    assert select_shard(items, 4, 0) == [0, 1, 2, 3]
    assert select_shard(items, 4, 2) == [8, 9]
    for size, index in [(4, 3), (4, -1), (None, 1), (4, None), (0, 0)]:
        with pytest.raises(ExtractUsageError):
            select_shard(items, size, index)


@pytest.mark.parametrize("flags, expected", [
    (["--batch_size", "2"], "give both"),
    (["--batch_idx", "0"], "give both"),
    (["--batch_size", "2", "--batch_idx", "-1"], "make 2 batches"),
    (["--batch_size", "2", "--batch_idx", "2"], "must be 0 to 1"),
])
def test_shard_usage_errors_exit_2(tmp_path: Path, tiny_checkpoint, flags, expected):
    ckpt, _ = tiny_checkpoint
    src = make_folder(tmp_path / "in", MIXED[:3])
    result = CliRunner().invoke(main, ["extract", "tune_plus", str(src), str(tmp_path / "out"), "--checkpoint", str(ckpt), *flags])
    assert result.exit_code == 2
    assert expected in result.output


def test_output_folder_with_other_settings_is_refused(tmp_path: Path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    src = make_folder(tmp_path / "in", MIXED[:2])
    out = tmp_path / "out"
    extract("tune_plus", src, out, checkpoint=ckpt, workers=0)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["model"] == "tune_plus" and manifest["layer"] == 0 and manifest["frame_length"] == FRAME_LENGTH
    assert manifest["sample_rate"] == SAMPLE_RATE and len(manifest["checkpoint_sha256"]) == 64
    assert manifest["tunemir_version"] and manifest["random_init"] is False
    with pytest.raises(ExtractUsageError, match="layer"):
        extract("tune_plus", src, out, checkpoint=ckpt, layer=2, workers=0)
    result = CliRunner().invoke(main, ["extract", "tune_plus", str(src), str(out), "--random-init"])
    assert result.exit_code == 2 and "other settings" in result.output
    assert extract("tune_plus", src, out, checkpoint=ckpt, workers=0).skipped == 2


def test_missing_weights_say_where_to_get_them(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TUNEMIR_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    src = make_folder(tmp_path / "in", MIXED[:1])
    result = CliRunner().invoke(main, ["extract", "clmr", str(src), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "github.com/Spijkervet/CLMR/releases" in result.output and "--checkpoint" in result.output


def test_handcrafted_features_through_extract(tmp_path: Path):
    src = make_folder(tmp_path / "in", MIXED[:2])
    summary = extract("mfcc", src, tmp_path / "out", workers=2)
    assert summary.ok
    from tunemir.audio import load_mono

    for rel, *_ in MIXED[:2]:
        vector = np.load(tmp_path / "out" / Path(rel).with_suffix(".npy"))
        assert vector.shape == (120,) and vector.dtype == np.float32
        np.testing.assert_allclose(vector, HandcraftedFeature("mfcc")(load_mono(src / rel)), rtol=1e-5, atol=1e-5)


def test_killed_run_leaves_only_complete_files_and_resumes(tmp_path: Path):
    src = tmp_path / "in"
    for index in range(24):
        write_audio(src / f"{index:02d}.wav", 5.5, 44100, 2, seed=index)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tunemir", "extract", "tune_plus", str(src), str(out),
               "--random-init", "--workers", "1", "--frames-per-batch", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*.npy"))) < 3:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    assert 3 <= len(done_before) < 24, "the run must be killed part-way"
    assert all(is_valid_output(out / name, 512) for name in done_before)

    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert sorted(p.name for p in out.glob("*.npy")) == [f"{i:02d}.npy" for i in range(24)]
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in done_before.items())
    model = load_model("tune_plus", random_init=True)
    last = sorted(set(f"{i:02d}.npy" for i in range(24)) - set(done_before))[-1]
    np.testing.assert_allclose(np.load(out / last), reference_vector(model, src / last.replace(".npy", ".wav")), atol=1e-4)


@pytest.mark.gpu
def test_cuda_extraction_matches_cpu_reference(tmp_path: Path):
    src = make_folder(tmp_path / "in", MIXED[:3])
    summary = extract("tune_plus", src, tmp_path / "out", random_init=True, device="cuda", workers=2)
    assert summary.ok
    model = load_model("tune_plus", random_init=True)
    for rel, *_ in MIXED[:3]:
        vector = np.load(tmp_path / "out" / Path(rel).with_suffix(".npy"))
        np.testing.assert_allclose(vector, reference_vector(model, src / rel), atol=1e-4, rtol=1e-5)


def test_summary_counts_whole_file_durations(tmp_path: Path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    src = make_folder(tmp_path / "in", MIXED[:3])
    summary = extract("tune_plus", src, tmp_path / "out", checkpoint=ckpt, workers=0)
    assert summary.audio_seconds == pytest.approx(sum(seconds for *_, seconds in MIXED[:3]), abs=1e-3)
