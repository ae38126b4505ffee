"""Atomic writes (tunemir.fileio): ordinary file modes under any umask, names that fit, races between runs."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest

from tunemir.extract.records import ManifestMismatchError, check_or_write_manifest
from tunemir.fileio import (
    NAME_MAX, TEMP_MARKER, atomic_dir, atomic_path, check_writable, create_exclusive, remove_stale_temps, temp_name,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o002, 0o077], ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_atomic_writes_get_the_umask_modes(tmp_path: Path, umask: int):
    with atomic_path(tmp_path / "sub" / "file.bin") as tmp:
        tmp.write_bytes(b"x")
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "inner.txt").write_text("y")
    assert create_exclusive(tmp_path / "manifest.json", b"{}")
    assert mode(tmp_path / "sub" / "file.bin") == 0o666 & ~umask
    assert mode(tmp_path / "manifest.json") == 0o666 & ~umask
    assert mode(tmp_path / "folder") == 0o777 & ~umask
    assert mode(tmp_path / "sub") == 0o777 & ~umask  # created by atomic_path's mkdir
    plain = tmp_path / "plain.txt"
    plain.write_text("reference")  # what any program gets under this umask
    assert mode(tmp_path / "sub" / "file.bin") == mode(plain)


def test_overwrite_keeps_ordinary_mode_and_leaves_no_temporaries(tmp_path: Path):
    target = tmp_path / "a.npy"
    for content in (b"one", b"two"):
        with atomic_path(target, durable=False) as tmp:
            tmp.write_bytes(content)
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_failed_write_leaves_the_old_file(tmp_path: Path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("length", [1, 200, 233, 240, 254, NAME_MAX])
def test_temporary_names_fit_name_max(tmp_path: Path, length: int):
    name = "x" * (length - 4) + ".npy" if length > 4 else "x"
    names = {temp_name(name) for _ in range(50)}
    assert len(names) == 50 and all(len(n.encode()) <= NAME_MAX and TEMP_MARKER in n for n in names)
    target = tmp_path / name
    with atomic_path(target) as tmp:  # a 240-byte name crashed every run before
        tmp.write_bytes(b"ok")
    assert target.read_bytes() == b"ok"


def test_temporary_names_cut_multibyte_names_on_a_character(tmp_path: Path):
    name = "é" * 127 + ".npy"  # 258 bytes... too long itself, but the temporary name must still be valid UTF-8
    tmp = temp_name(name)
    assert len(tmp.encode()) <= NAME_MAX
    tmp.encode("utf-8")  # no half character
    long_ok = "é" * 120 + ".npy"  # 244 bytes: fits, its temporary name must too
    with atomic_path(tmp_path / long_ok) as tmp:
        tmp.write_bytes(b"ok")
    assert (tmp_path / long_ok).read_bytes() == b"ok"


def test_stale_temporaries_are_removed_but_fresh_ones_kept(tmp_path: Path):
    old_file = tmp_path / "deep" / f".a.npy{TEMP_MARKER}abcd1234"
    old_dir = tmp_path / f".cache{TEMP_MARKER}ffff0000"
    fresh = tmp_path / f".b.npy{TEMP_MARKER}12345678"
    old_file.parent.mkdir()
    old_file.write_bytes(b"")
    (old_dir / "inner").mkdir(parents=True)
    fresh.write_bytes(b"")
    past = time.time() - 3600
    for p in (old_file, old_dir):
        os.utime(p, (past, past))
    assert remove_stale_temps(tmp_path) == 2
    assert fresh.exists() and not old_file.exists() and not old_dir.exists()


def _churn(folder: str, seconds: float, seed: int) -> None:
    """Write, rename and lose temporaries as fast as possible (what parallel shards do)."""
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        try:
            with atomic_path(Path(folder) / f"{seed}-{i % 7}.npy") as tmp:
                tmp.write_bytes(b"v")
        except FileNotFoundError:  # the cleaner (min_age_s=0 here) took it first: fine for this test
            pass


def test_stale_cleanup_survives_files_renamed_under_it(tmp_path: Path):
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_churn, args=(str(tmp_path), 1.5, seed)) for seed in range(3)]
    for w in writers:
        w.start()
    try:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # used to raise FileNotFoundError from p.stat()
            remove_stale_temps(tmp_path, min_age_s=0)
    finally:
        for w in writers:
            w.join()
    assert all(w.exitcode == 0 for w in writers)


def _create_manifest(path: str, model: str, barrier, results) -> None:
    barrier.wait()
    try:
        check_or_write_manifest(Path(path), {"model": model, "config": {}, "weights_sha256": None, "layer": 0,
                                             "dim": 4, "sample_rate": 22050, "frame_length": 59049,
                                             "framing": "f", "random_init": False, "tunemir_version": "x"})
        results.put((model, "ok"))
    except ManifestMismatchError:
        results.put((model, "refused"))


@pytest.mark.slow
def test_shards_racing_to_create_the_manifest_agree_on_one(tmp_path: Path):
    ctx = multiprocessing.get_context("fork")
    for round_ in range(25):
        path = tmp_path / f"r{round_}" / "tunemir-manifest.json"
        path.parent.mkdir()
        models = ["tune", "clmr"] * 3
        barrier, results = ctx.Barrier(len(models)), ctx.Queue()
        procs = [ctx.Process(target=_create_manifest, args=(str(path), m, barrier, results)) for m in models]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        outcome = [results.get(timeout=5) for _ in models]
        winner = json.loads(path.read_text())["model"]
        # Exactly the shards with the winner's settings go on; the others are refused, never both.
        assert sorted(outcome) == sorted((m, "ok" if m == winner else "refused") for m in models), outcome
        assert [p.name for p in path.parent.iterdir()] == ["tunemir-manifest.json"]


def test_create_exclusive_never_replaces(tmp_path: Path):
    path = tmp_path / "m.json"
    assert create_exclusive(path, b"first")
    assert not create_exclusive(path, b"second")
    assert path.read_bytes() == b"first" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounts a tmpfs (needs root)")
def test_check_writable_on_a_full_and_a_read_only_disk(tmp_path: Path):
    import errno
    import subprocess

    full, ro = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], check=True)
        with pytest.raises(OSError) as err:
            (full / "filler").write_bytes(b"0" * 10**6)
        assert err.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as err:
            check_writable(full)
        assert err.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as err:
            check_writable(ro)
        assert err.value.errno == errno.EROFS
    finally:
        subprocess.run(["umount", str(full)])
        subprocess.run(["umount", str(ro)])
