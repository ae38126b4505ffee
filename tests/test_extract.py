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
from tunemir.extract.records import record_path
from tunemir.models import HandcraftedFeature, load_model
from tunemir.testing import save_tiny_checkpoint, write_audio

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_handcrafted_features_through_extract(tmp_path: Path):
    src = make_folder(tmp_path / "in", MIXED[:2])
    summary = extract("mfcc", src, tmp_path / "out", workers=2)
    assert summary.ok
    from tunemir.audio import load_mono

    for rel, *_ in MIXED[:2]:
        vector = np.load(tmp_path / "out" / Path(rel).with_suffix(".npy"))
        assert vector.shape == (120,) and vector.dtype == np.float32
        np.testing.assert_allclose(vector, HandcraftedFeature("mfcc")(load_mono(src / rel)), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
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
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    assert 3 <= len(written) < 24, "the run must be killed part-way"
    assert all(is_valid_output(out / name, 512) for name in written)
    # A vector is done once its source record follows it; the kill may fall between the two, and
    # that one vector is then made again.
    done_before = {name: mtime for name, mtime in written.items() if record_path(out, out / name).is_file()}
    assert len(done_before) >= len(written) - 1

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


# --- files others can read, runs that cannot mix, and one bad file failing alone -------------------------


def run_cli(*args: str):
    return CliRunner().invoke(main, ["extract", *map(str, args)])


def nan_checkpoint(path: Path) -> Path:
    """A tiny TUNe+ whose first convolution holds a NaN, saved as a bare state_dict `.pt` (what a
    run trained to a NaN loss leaves)."""
    import torch

    from tunemir.testing import tiny_model

    state = tiny_model("tune_plus", seed=3).state_dict()
    state["conv1.layers.0.weight"][0, 0, 0] = float("nan")
    torch.save(state, path)
    return path


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_outputs_have_the_umask_modes(tmp_path: Path, tiny_checkpoint, umask: int):
    import stat

    ckpt, _ = tiny_checkpoint
    src = make_folder(tmp_path / "in", [MIXED[0], MIXED[5]])
    old = os.umask(umask)
    try:
        assert extract("tune_plus", src, tmp_path / "out" / "new", checkpoint=ckpt, workers=0).ok
    finally:
        os.umask(old)
    out = tmp_path / "out" / "new"
    files = [out / "a_44k_stereo_pcm16.npy", out / "sub" / "f_44k.npy", out / MANIFEST_NAME,
             out / "tunemir-run-all.json", *(out / ".tunemir-sources").rglob("*.json")]
    folders = [out.parent, out, out / "sub", out / ".tunemir-sources", out / ".tunemir-sources" / "sub"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~umask}
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o777 & ~umask}


def test_same_output_name_in_different_shards_fails_both(tmp_path: Path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    src = tmp_path / "in"
    write_audio(src / "a.wav", 3.0, seed=1)
    write_audio(src / "a.flac", 3.0, seed=2)
    write_audio(src / "b.wav", 3.0, seed=3)
    out = tmp_path / "out"
    outputs = [run_cli("tune_plus", src, out, "--checkpoint", ckpt, "--batch_size", 1, "--batch_idx", i)
               for i in range(3)]  # sorted: a.flac, a.wav, b.wav: the clashing pair in shards 0 and 1
    assert [r.exit_code for r in outputs] == [1, 1, 0]
    for result in outputs[:2]:
        assert "a.flac, a.wav would all be written to" in result.output and "rename" in result.output
    assert not (out / "a.npy").exists() and (out / "b.npy").exists()


def test_replaced_audio_is_extracted_again(tmp_path: Path, tiny_checkpoint, caplog):
    ckpt, model = tiny_checkpoint
    src = tmp_path / "in"
    song = write_audio(src / "song.wav", 3.0, seed=1)
    other = write_audio(src / "other.wav", 3.0, seed=2)
    out = tmp_path / "out"
    extract("tune_plus", src, out, checkpoint=ckpt, workers=0)
    first = np.load(out / "song.npy")
    write_audio(song, 3.0, seed=7)  # same name and size, new content
    summary = extract("tune_plus", src, out, checkpoint=ckpt, workers=0)
    assert (summary.written, summary.changed, summary.skipped) == (1, 1, 1)
    assert "changed since" in caplog.text
    np.testing.assert_allclose(np.load(out / "song.npy"), reference_vector(model, song), atol=1e-4)
    assert not np.allclose(np.load(out / "song.npy"), first)
    os.utime(other)  # a touch: extracted again, to the same vector
    before = np.load(out / "other.npy")
    assert extract("tune_plus", src, out, checkpoint=ckpt, workers=0).written == 1
    np.testing.assert_allclose(np.load(out / "other.npy"), before, rtol=1e-5, atol=1e-6)
    assert extract("tune_plus", src, out, checkpoint=ckpt, workers=0).skipped == 2  # and then it rests


def test_vector_without_a_source_record_is_redone(tmp_path: Path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    src = make_folder(tmp_path / "in", MIXED[:2])
    out = tmp_path / "out"
    extract("tune_plus", src, out, checkpoint=ckpt, workers=0)
    records = sorted((out / ".tunemir-sources").rglob("*.json"))
    assert [json.loads(p.read_text())["source"] for p in records] == [rel for rel, *_ in MIXED[:2]]
    records[0].unlink()
    assert extract("tune_plus", src, out, checkpoint=ckpt, workers=0).written == 1
    assert find_audio_files(out) == []  # the records are not mistaken for anything by a listing


def test_long_names_and_one_bad_output_path_fail_alone(tmp_path: Path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    src = tmp_path / "in"
    long = "x" * 236 + ".wav"  # 240 bytes: the temporary name used to overflow NAME_MAX
    write_audio(src / long, 3.0, seed=1)
    write_audio(src / "blocked.wav", 3.0, seed=2)
    write_audio(src / "under" / "file.wav", 3.0, seed=3)
    write_audio(src / "ok.wav", 3.0, seed=4)
    out = tmp_path / "out"
    (out / "blocked.npy").mkdir(parents=True)  # a folder where a vector goes
    (out / "under").write_text("a file where a folder goes")
    result = run_cli("tune_plus", src, out, "--checkpoint", ckpt, "--workers", 0)
    assert result.exit_code == 1, result.output
    assert "2 of 4 files failed" in result.output
    assert "blocked.npy: a folder of that name is in the way" in result.output
    assert "a file is in the way of the folder under/" in result.output
    assert (out / long.replace(".wav", ".npy")).is_file() and (out / "ok.npy").is_file()
    assert len(list((out / ".tunemir-sources").iterdir())) == 2


def test_symlinked_folders_are_followed_and_loops_end(tmp_path: Path, tiny_checkpoint, caplog):
    ckpt, _ = tiny_checkpoint
    src, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    write_audio(src / "a.wav", 3.0)
    write_audio(elsewhere / "linked.wav", 3.0)
    (src / "more").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "back").symlink_to(src, target_is_directory=True)  # a loop through both
    (src / "self").symlink_to(".", target_is_directory=True)
    assert [p.as_posix() for p in find_audio_files(src)] == ["a.wav", "more/linked.wav"]
    assert "already listed" in caplog.text
    (src / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    result = run_cli("tune_plus", src, tmp_path / "out", "--checkpoint", ckpt)
    assert result.exit_code == 1 and "gone.wav: is a broken symlink" in result.output
    assert (tmp_path / "out" / "more" / "linked.npy").is_file()


def unprivileged(command: list[str]) -> list[str]:
    """`command` as a process that file permissions apply to: root without its DAC capabilities."""
    if os.geteuid() != 0:
        return command
    import shutil

    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits cannot be tested")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", *command]


@pytest.mark.slow
def test_unreadable_sub_folder_is_reported_not_skipped(tmp_path: Path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    src = tmp_path / "in"
    write_audio(src / "a.wav", 3.0)
    write_audio(src / "locked" / "b.wav", 3.0)
    (src / "locked").chmod(0)
    try:
        result = subprocess.run(unprivileged([sys.executable, "-m", "tunemir", "extract", "tune_plus", str(src),
                                              str(tmp_path / "out"), "--checkpoint", str(ckpt), "--workers", "0"]),
                                capture_output=True, text=True, timeout=120)
    finally:
        (src / "locked").chmod(0o755)
    assert result.returncode == 1, result.stderr
    assert f"{src / 'locked'}: this folder cannot be read" in result.stderr and "chmod" in result.stderr
    assert "Traceback" not in result.stderr and (tmp_path / "out" / "a.npy").is_file()


def test_nan_checkpoint_is_refused(tmp_path: Path):
    src = make_folder(tmp_path / "in", MIXED[:1])
    result = run_cli("tune_plus", src, tmp_path / "out", "--checkpoint", nan_checkpoint(tmp_path / "nan.pt"))
    assert result.exit_code == 1 and "NaN" in result.output and "earlier checkpoint" in result.output
    assert not list((tmp_path / "out").glob("*.npy"))


def test_non_finite_vector_is_never_written(tmp_path: Path):
    import torch

    from tunemir.testing import tiny_model

    state = tiny_model("tune_plus", seed=3).state_dict()
    for name, tensor in state.items():  # finite, but so large (a diverged run) that outputs overflow
        if name.endswith("weight") and tensor.dim() > 1:
            tensor.mul_(1e6)
    torch.save(state, tmp_path / "exploded.pt")
    src = make_folder(tmp_path / "in", MIXED[:2])
    result = run_cli("tune_plus", src, tmp_path / "out", "--checkpoint", tmp_path / "exploded.pt")
    assert result.exit_code == 1 and "a_44k_stereo_pcm16.wav: the model produced NaN or infinite" in result.output
    assert "2 of 2 files failed" in result.output and not list((tmp_path / "out").glob("*.npy"))


def test_checkpoint_and_random_init_together_is_a_usage_error(tmp_path: Path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    src = make_folder(tmp_path / "in", MIXED[:1])
    result = run_cli("tune_plus", src, tmp_path / "out", "--checkpoint", ckpt, "--random-init")
    assert result.exit_code == 2 and "--checkpoint and --random-init" in result.output


@pytest.mark.slow
def test_list_shards_agrees_with_extract(tmp_path: Path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    src = make_folder(tmp_path / "in", MIXED[:5])
    out = tmp_path / "out"
    args = ("tune_plus", src, out, "--checkpoint", ckpt, "--batch_size", 2)
    assert run_cli(*args, "--list-shards").output.split("\n")[:3] == ["0 todo", "1 todo", "2 todo"]
    assert not out.exists() or not list(out.iterdir())  # asking writes nothing
    assert run_cli(*args, "--batch_idx", 1).exit_code == 0
    assert run_cli(*args, "--list-shards").output == "0 todo\n1 done\n2 todo\n"
    write_audio(src / "b_48k_mono_pcm24.wav", 2.0)  # shard 0's second file replaced: to do again
    (out / "c_16k_3ch_float.npy").write_bytes(b"")  # shard 1: a broken vector
    assert run_cli(*args, "--list-shards").output == "0 todo\n1 todo\n2 todo\n"
    for index in range(3):
        assert run_cli(*args, "--batch_idx", index).exit_code == 0
    assert run_cli(*args, "--list-shards").output == "0 done\n1 done\n2 done\n"
    other = run_cli("tune_plus", src, out, "--random-init", "--batch_size", 2, "--list-shards")
    assert other.output == "0 todo\n1 todo\n2 todo\n"  # other settings: running would say why


needs_root_mounts = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root)")


@pytest.fixture
def tmpfs(tmp_path: Path):
    """mount(folder, options): a tmpfs, unmounted after the test."""
    mounted = []

    def mount(folder: Path, options: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)]).returncode:
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)])


@needs_root_mounts
def test_full_disk_mid_run_stops_with_one_message(tmp_path: Path, tiny_checkpoint, tmpfs):
    ckpt, _ = tiny_checkpoint
    src = tmp_path / "in"
    for index in range(6):
        write_audio(src / f"{index}.wav", 3.0, seed=index)
    out = tmpfs(tmp_path / "out", "size=12k")  # 3 pages: the manifest, a record, a vector
    result = run_cli("tune_plus", src, out, "--checkpoint", ckpt, "--workers", 0)
    assert result.exit_code == 1, result.output
    assert f"cannot write to the output folder {out}" in result.output and "disk (or quota) is full" in result.output
    assert result.output.count("cannot write") == 1 and "Traceback" not in result.output
    assert all(is_valid_output(p, 16) for p in out.glob("*.npy"))


@needs_root_mounts
def test_read_only_output_is_one_clear_error(tmp_path: Path, tiny_checkpoint, tmpfs):
    ckpt, _ = tiny_checkpoint
    src = make_folder(tmp_path / "in", MIXED[:2])
    out = tmpfs(tmp_path / "ro", "ro,size=64k")
    result = run_cli("tune_plus", src, out, "--checkpoint", ckpt)
    assert result.exit_code == 1 and "read-only filesystem" in result.output and str(out) in result.output


@pytest.mark.slow
def test_unreadable_installed_weights_are_a_clear_error(tmp_path: Path):
    """The image's baked weights ($TUNEMIR_WEIGHTS_DIR/<model>.safetensors) unreadable by the
    uid given to `docker run -u`: a message, not a PermissionError traceback."""
    weights = tmp_path / "weights" / "tune_plus.safetensors"
    save_tiny_checkpoint(weights, "tune_plus")
    write_audio(tmp_path / "in" / "a.wav", 3.0)
    weights.chmod(0)
    try:
        result = subprocess.run(unprivileged([sys.executable, "-m", "tunemir", "extract", "tune_plus",
                                              str(tmp_path / "in"), str(tmp_path / "out")]),
                                capture_output=True, text=True, timeout=120,
                                env={**os.environ, "TUNEMIR_WEIGHTS_DIR": str(weights.parent)})
    finally:
        weights.chmod(0o644)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"checkpoint {weights} cannot be read (Permission denied)" in result.stderr
    assert "permissions" in result.stderr
