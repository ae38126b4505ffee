"""jukemir's pre-computed representations: archives served on 127.0.0.1, verified, unpacked into
representations/ and probed end to end, with their bad cases."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tunemir.cli import main
from tunemir.datasets.assets import PRECOMPUTED_REPRESENTATIONS, precomputed_asset
from tunemir.probe.tasks import BUILTIN_TASKS
from tunemir.testing import write_probe_dataset
from tunemir.testing.http import FileServer
from tunemir.testing.sources import tar_gz

SIZES = {"train": 60, "valid": 24, "test": 24}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def pack(archive: Path, members: dict[str, bytes]) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(tar_gz(members))


def npy(vector: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, vector)
    return buffer.getvalue()


@pytest.fixture
def mirror(tmp_path):
    """A cache with processed/gtzan_ff (no features), and a mirror of archives laid out as jukemir's
    (`gtzan_ff/<rep>/<uid>.npy`), with the registry file pinning their sha256: clmr and musicnn
    good, chroma with a NaN vector, mfcc whose bytes do not match the pin."""
    cache, served = tmp_path / "cache", tmp_path / "served"
    originals = {}
    for seed, rep in enumerate(("clmr", "musicnn", "chroma")):
        write_probe_dataset(cache, "gtzan_ff", rep, BUILTIN_TASKS["gtzan_ff"], SIZES, dim=8, seed=seed)
        folder = cache / "representations" / "gtzan_ff" / rep
        originals[rep] = {p.stem: np.load(p) for p in folder.glob("*.npy")}
        members = {f"gtzan_ff/{rep}/{uid}.npy": npy(v) for uid, v in originals[rep].items()}
        if rep == "chroma":
            members[f"gtzan_ff/{rep}/{min(originals[rep])}.npy"] = npy(np.full(8, np.nan, np.float32))
        members["gtzan_ff/._junk"] = b"macOS resource fork"  # not a vector: ignored
        pack(served / precomputed_asset("gtzan_ff", rep).path, members)
    shutil.rmtree(cache / "representations")
    pack(served / precomputed_asset("gtzan_ff", "mfcc").path, {"gtzan_ff/mfcc/x.npy": npy(np.zeros(3))})
    registry = {}
    for rep in ("clmr", "musicnn", "chroma", "mfcc"):
        a = precomputed_asset("gtzan_ff", rep)
        digest = hashlib.sha256((served / a.path).read_bytes()).hexdigest()
        registry[a.tag] = {"checksum": digest if rep != "mfcc" else "0" * 64}
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    return cache, served, tmp_path / "registry.json", originals


@pytest.mark.slow
def test_download_verify_unpack_and_probe(mirror, monkeypatch):
    cache, served, registry, originals = mirror
    monkeypatch.setenv("TUNEMIR_CACHE_DIR", str(cache))
    with FileServer(served) as server:
        args = ["data", "download-representations", "gtzan_ff", "clmr", "musicnn", "chroma", "mfcc",
                "--mirror", server.url, "--registry", registry]
        result = invoke(*args)
        assert result.exit_code == 1, result.output
        assert "gtzan_ff: 2 of 4 pre-computed representations ready" in result.output
        assert "FAILED PRECOMPUTED_GTZAN_FF_CHROMA" in result.output and "NaN or infinite" in result.output
        assert "FAILED PRECOMPUTED_GTZAN_FF_MFCC" in result.output
        requests = len(server.requests)
        again = invoke(*args[:4], "--mirror", server.url, "--registry", registry)  # clmr only: kept as it is
        assert again.exit_code == 0 and "already unpacked" in again.output
        assert len(server.requests) == requests  # verified in place, not fetched again
    reps = cache / "representations" / "gtzan_ff"
    assert sorted(p.name for p in reps.iterdir()) == ["clmr", "musicnn"]  # nothing half-written for the failures
    for rep in ("clmr", "musicnn"):
        got = {p.stem: np.load(p) for p in (reps / rep).glob("*.npy")}
        assert sorted(got) == sorted(originals[rep])
        for uid, vector in originals[rep].items():
            np.testing.assert_array_equal(got[uid], vector)
        manifest = json.loads((reps / rep / "tunemir-manifest.json").read_text())
        assert manifest["model"] == rep and manifest["source"] == "jukemir pre-computed" and manifest["dim"] == 8
    # Probed like any representation, reported beside the papers' rows.
    for rep in ("clmr", "musicnn"):
        assert invoke("probe", "grid", "gtzan_ff", rep, "--grid", "smoke").exit_code == 0
        result = invoke("probe", "train", "gtzan_ff", rep, "--device", "cpu")
        assert result.exit_code == 0, result.output
    result = invoke("probe", "report", "--output-dir", cache / "report")
    assert result.exit_code == 0, result.output
    table = (cache / "report" / "results.md").read_text()
    assert "(68.6)" in next(line for line in table.splitlines() if line.startswith("| clmr |"))
    assert "(79.0)" in next(line for line in table.splitlines() if line.startswith("| musicnn † |"))


def test_bad_archives_and_options_are_named(mirror, tmp_path, monkeypatch):
    cache, served, registry, _ = mirror
    monkeypatch.setenv("TUNEMIR_CACHE_DIR", str(cache))
    evil = served / "precomputed" / "evil.tar.gz"
    pack(evil, {"../../outside.npy": npy(np.zeros(4, np.float32))})
    flat = served / "precomputed" / "flat.tar.gz"
    pack(flat, {"gtzan_ff/jukebox/a.npy": npy(np.zeros(4, np.float32))})
    table = json.loads(registry.read_text())
    for rep, path in (("clmr", evil), ("musicnn", flat)):
        table[precomputed_asset("gtzan_ff", rep).tag] = {"checksum": hashlib.sha256(path.read_bytes()).hexdigest(),
                                                         "path": f"precomputed/{path.name}"}
    registry.write_text(json.dumps(table))
    with FileServer(served) as server:
        result = invoke("data", "download-representations", "gtzan_ff", "clmr", "musicnn", "--mirror", server.url,
                        "--registry", registry)
    assert result.exit_code == 1
    assert "member '../../outside.npy' points outside the archive" in result.output
    assert "member 'gtzan_ff/jukebox/a.npy' is not under gtzan_ff/musicnn/" in result.output
    assert not (tmp_path / "outside.npy").exists() and not (cache / "outside.npy").exists()
    # A folder of the user's own extraction is never overwritten.
    own = cache / "representations" / "gtzan_ff" / "chroma"
    own.mkdir(parents=True)
    (own / "tunemir-manifest.json").write_text('{"model": "chroma"}')
    table[precomputed_asset("gtzan_ff", "chroma").tag]["checksum"] = hashlib.sha256(
        (served / precomputed_asset("gtzan_ff", "chroma").path).read_bytes()).hexdigest()
    with FileServer(served) as server:
        result = invoke("data", "download-representations", "gtzan_ff", "chroma", "--mirror", server.url,
                        "--registry", registry)
    assert result.exit_code == 1 and f"{own} already holds tunemir's own extraction" in result.output
    assert "--prefix" in result.output and sorted(p.name for p in own.iterdir()) == ["tunemir-manifest.json"]
    for bad, message in ((["--prefix", "a/b"], "a folder name"), (["--url", "PRECOMPUTED_GTZAN_FF_CLMR=ftp//x"], "--url")):
        result = invoke("data", "download-representations", "gtzan_ff", "clmr", *bad)
        assert result.exit_code == 2 and message in result.output, result.output
    result = invoke("data", "download-representations", "gtzan_ff", "wav2vec")
    assert result.exit_code == 2 and "chroma" in result.output


def test_the_registry_is_jukemirs():
    # 6 representations x 4 datasets, with jukemir's published sha256 (two spot checks).
    assert len({precomputed_asset(d, r).tag for d in ("gtzan_ff", "magnatagatune", "giantsteps_clips", "emomusic")
                for r in PRECOMPUTED_REPRESENTATIONS}) == 24
    assert precomputed_asset("gtzan_ff", "jukebox").checksum.startswith("d3d619b9")
    assert precomputed_asset("emomusic", "choi").checksum == \
        "17d23d7211bd8513bcc6ed4d62cf819389030a3cc786c39e93c3e37df19fcfdc"
    assert precomputed_asset("emomusic", "choi").urls == (
        "https://nlp.stanford.edu/data/cdonahue/jukemir/precomputed/emomusic-choi.tar.gz",)


def test_without_processed_audio_the_canonical_metadata_is_written(mirror, tmp_path):
    _, served, registry, _ = mirror
    from tunemir.datasets.reference import packaged_reference

    empty = tmp_path / "empty-cache"
    with FileServer(served) as server:
        result = invoke("data", "download-representations", "gtzan_ff", "clmr", "--mirror", server.url,
                        "--registry", registry, "--cache-dir", empty, "--prefix", "jukemir-")
    assert result.exit_code == 0, result.output
    assert (empty / "representations" / "gtzan_ff" / "jukemir-clmr" / "tunemir-manifest.json").is_file()
    meta = empty / "processed" / "gtzan_ff" / "meta.json"
    assert "written from jukemir's canonical metadata" in result.output
    assert json.loads(meta.read_text()) == packaged_reference("gtzan_ff")


@pytest.mark.slow
def test_reproduce_123_then_probe_scripts(mirror, tmp_path):
    """reproduce/123_precomputed.sh natively, from a 127.0.0.1 mirror, then steps 4-6 on its
    vectors; Docker mode through the command it issues."""
    from test_reproduce import fake_docker, native_env, run

    cache, served, registry, _ = mirror
    env = native_env(cache, TUNEMIR_DATA_REGISTRY=str(registry), TUNEMIR_DATASETS="gtzan_ff synth_key",
                     TUNEMIR_PRECOMPUTED="clmr musicnn", TUNEMIR_REPRESENTATIONS="clmr musicnn")
    with FileServer(served) as server:
        result = run("123_precomputed.sh", {**env, "TUNEMIR_DATA_MIRROR": server.url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "synth_key is tunemir's synthetic corpus" in result.stdout
    assert sorted(p for p, _ in server.requests) == ["precomputed/gtzan_ff-clmr.tar.gz",
                                                     "precomputed/gtzan_ff-musicnn.tar.gz"]
    env["TUNEMIR_DATASETS"] = "gtzan_ff"
    for script in ("4_grid_config.sh", "5_grid_train_serial.sh", "6_evaluate.sh"):
        step = run(script, env)
        assert step.returncode == 0, script + step.stdout + step.stderr
    table = (cache / "reproduce" / "report" / "results.md").read_text()
    assert "| clmr |" in table and "| musicnn † |" in table

    docker_env, log = fake_docker(tmp_path)
    docker_env.update(TUNEMIR_CACHE_DIR=str(cache), TUNEMIR_DATASETS="gtzan_ff", TUNEMIR_PRECOMPUTED="jukebox",
                      TUNEMIR_PRECOMPUTED_PREFIX="jukemir-", TUNEMIR_DATA_MIRROR="http://127.0.0.1:9/m")
    assert run("123_precomputed.sh", docker_env).returncode == 0
    uid = f"{os.getuid()}:{os.getgid()}"
    assert log.read_text().splitlines() == [
        f"run --rm -u {uid} -v {cache}:/cache -e TUNEMIR_CACHE_DIR=/cache -e TUNEMIR_DATA_MIRROR tunemir/probe "
        f"data download-representations gtzan_ff jukebox --prefix jukemir-"]
