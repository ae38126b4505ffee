"""Downloads against a real HTTP server on 127.0.0.1: resume, checksums, fallback, overrides."""

import hashlib
import json
import subprocess

import pytest
from click.testing import CliRunner

from tunemir.cli import main
from tunemir.datasets import (Asset, DatasetError, candidate_urls, dataset_assets, download_assets,
                              giantsteps_audio_assets, load_registry, static_assets)
from tunemir.testing.http import FileServer, dead_url
from tunemir.testing.sources import GIANTSTEPS_TEST, GIANTSTEPS_TRAIN, giantsteps_mp3, write_sources

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def _asset(path="data/file.bin", data=PAYLOAD, urls=(), algorithm="sha256"):
    return Asset("FILE", path, tuple(urls), hashlib.new(algorithm, data).hexdigest())


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "server"
    (root / "data").mkdir(parents=True)
    (root / "data" / "file.bin").write_bytes(PAYLOAD)
    with FileServer(root) as server:
        yield server


def test_download_verifies_and_skips_when_present(served, tmp_path):
    a = _asset(urls=[f"{served.url}/data/file.bin"])
    first = download_assets([a], tmp_path / "out", progress=False)
    assert first.ok and first.outcomes[0].status == "downloaded"
    assert (tmp_path / "out" / "data" / "file.bin").read_bytes() == PAYLOAD
    second = download_assets([a], tmp_path / "out", progress=False)
    assert second.outcomes[0].status == "verified"
    assert len(served.requests) == 1  # nothing fetched the second time


def test_interrupted_transfer_resumes_with_range(served, tmp_path):
    served.cut_after["data/file.bin"] = 300_000
    a = _asset(urls=[f"{served.url}/data/file.bin"])
    summary = download_assets([a], tmp_path / "out", progress=False)
    assert summary.ok
    assert (tmp_path / "out" / "data" / "file.bin").read_bytes() == PAYLOAD
    assert served.requests == [("data/file.bin", None), ("data/file.bin", "bytes=300000-")]
    assert served.sent["data/file.bin"] == len(PAYLOAD)  # the first 300 kB were not sent twice


def test_part_file_of_a_killed_run_is_resumed(served, tmp_path):
    out = tmp_path / "out" / "data"
    out.mkdir(parents=True)
    (out / "file.bin.part").write_bytes(PAYLOAD[:123_456])
    summary = download_assets([_asset(urls=[f"{served.url}/data/file.bin"])], tmp_path / "out", progress=False)
    assert summary.ok and (out / "file.bin").read_bytes() == PAYLOAD
    assert served.requests == [("data/file.bin", "bytes=123456-")]
    assert not (out / "file.bin.part").exists()


def test_bad_part_is_discarded_and_fetched_from_scratch(served, tmp_path):
    out = tmp_path / "out" / "data"
    out.mkdir(parents=True)
    (out / "file.bin.part").write_bytes(b"\0" * 1000)  # wrong bytes kept from some earlier run
    summary = download_assets([_asset(urls=[f"{served.url}/data/file.bin"])], tmp_path / "out", progress=False)
    assert summary.ok and (out / "file.bin").read_bytes() == PAYLOAD
    assert served.requests == [("data/file.bin", "bytes=1000-"), ("data/file.bin", None)]


def test_wrong_local_file_is_refetched(served, tmp_path):
    out = tmp_path / "out" / "data"
    out.mkdir(parents=True)
    (out / "file.bin").write_bytes(b"corrupted")
    summary = download_assets([_asset(urls=[f"{served.url}/data/file.bin"])], tmp_path / "out", progress=False)
    assert summary.outcomes[0].status == "downloaded" and (out / "file.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_fails_and_leaves_no_file(served, tmp_path):
    a = Asset("FILE", "data/file.bin", (f"{served.url}/data/file.bin",), "0" * 32)  # md5 that cannot match
    summary = download_assets([a], tmp_path / "out", progress=False)
    assert not summary.ok
    detail = summary.failed[0].detail
    assert "md5" in detail and hashlib.md5(PAYLOAD).hexdigest() in detail and "0" * 32 in detail
    assert not list((tmp_path / "out").rglob("file.bin*"))  # no final file, no part


def test_dead_primary_falls_back_to_mirror(served, tmp_path):
    a = _asset(urls=[dead_url("genres.tar.gz"), f"{served.url}/missing.bin", f"{served.url}/data/file.bin"])
    summary = download_assets([a], tmp_path / "out", progress=False)
    outcome = summary.outcomes[0]
    assert outcome.status == "downloaded" and outcome.url.endswith("/data/file.bin")
    assert served.requests == [("missing.bin", None), ("data/file.bin", None)]


def test_full_disk_is_reported_and_not_retried(served, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True)
    if mount.returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        url = f"{served.url}/data/file.bin"
        summary = download_assets([_asset(urls=[url, url + "?again"])], small, progress=False)
    finally:
        subprocess.run(["umount", str(small)], check=True)
    detail = summary.failed[0].detail
    assert "No space left on device" in detail and "free some space" in detail and "file.bin.part" in detail
    assert len(served.requests) == 1  # neither retried nor tried at the second URL


def test_server_errors_are_retried_then_reported(served, tmp_path):
    served.status["data/file.bin"] = 503
    summary = download_assets([_asset(urls=[f"{served.url}/data/file.bin"])], tmp_path / "out", progress=False)
    assert not summary.ok and summary.failed[0].detail.count("HTTP 503") == 3
    assert len(served.requests) == 3


def test_one_failure_does_not_stop_the_others(served, tmp_path):
    good = _asset(urls=[f"{served.url}/data/file.bin"])
    bad = Asset("OTHER", "data/other.bin", (dead_url(),), "1" * 64)
    optional = Asset("OPT", "data/opt.bin", (dead_url(),), "2" * 64, optional=True)
    summary = download_assets([bad, good, optional], tmp_path / "out", jobs=3, progress=False)
    assert {o.asset.tag: o.status for o in summary.outcomes} == {"FILE": "downloaded", "OTHER": "failed", "OPT": "failed"}
    assert not summary.ok
    assert download_assets([good, optional], tmp_path / "out", progress=False).ok  # optional failure is fine


def test_url_overrides_and_mirror(monkeypatch):
    gtzan = static_assets("gtzan_ff")[0]
    assert candidate_urls(gtzan)[0].startswith("http://opihi.cs.uvic.ca")
    assert "web.archive.org" in candidate_urls(gtzan)[1]  # the known mirror of the dead host
    monkeypatch.setenv("TUNEMIR_DATA_MIRROR", "http://lab.example/datasets/")
    monkeypatch.setenv("TUNEMIR_URL_GTZAN", "http://env.example/g.tgz")
    assert candidate_urls(gtzan)[:2] == ["http://env.example/g.tgz", "http://lab.example/datasets/gtzan_ff/genres.tar.gz"]
    urls = candidate_urls(gtzan, overrides={"GTZAN": "http://flag.example/g.tgz"})
    assert urls[0] == "http://flag.example/g.tgz" and urls[-2:] == list(gtzan.urls)


def test_registry_checksums_follow_the_spec():
    # jukemir's asset table: md5 for per-track files, sha256 for the rest.
    tags = {a.tag: a for ds in ("gtzan_ff", "magnatagatune", "emomusic", "giantsteps_clips") for a in static_assets(ds)}
    assert tags["GTZAN"].checksum == "24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6"
    assert tags["MAGNATAGATUNE_MP3_003"].checksum.startswith("83a68982")
    assert all(a.algorithm == "sha256" for a in tags.values())
    assert len(tags) == 14


@pytest.mark.slow
def test_giantsteps_audio_assets_come_from_the_archives(tmp_path):
    write_sources(tmp_path, ["giantsteps_clips"])
    assets = {a.tag: a for a in giantsteps_audio_assets(tmp_path)}
    tracks = [t[0] for t in GIANTSTEPS_TRAIN] + [t[0] for t in GIANTSTEPS_TEST]
    assert len(assets) == len(tracks)
    a = assets["GIANTSTEPS_MTG_KEY_101"]
    assert a.algorithm == "md5" and a.checksum == hashlib.md5(giantsteps_mp3(101)).hexdigest()
    assert a.urls == ("http://www.cp.jku.at/datasets/giantsteps/mtg_key_backup/101.LOFI.mp3",)
    assert assets["GIANTSTEPS_KEY_201"].urls[0].endswith("/giantsteps/backup/201.LOFI.mp3")


@pytest.mark.slow
def test_cli_downloads_giantsteps_from_a_mirror(tmp_path):
    server_root = tmp_path / "server" / "datasets"
    registry = write_sources(server_root, ["giantsteps_clips"])
    (server_root / "giantsteps_clips" / "audio" / "202.LOFI.mp3").write_bytes(b"not the published file")
    cache = tmp_path / "cache"
    with FileServer(tmp_path / "server") as server:
        args = ["data", "download", "giantsteps_clips", "--cache-dir", str(cache), "--registry", str(registry),
                "--mirror", f"{server.url}/datasets", "--jobs", "3"]
        result = CliRunner().invoke(main, args)
        # A track tag can only be checked once the archives are in: they list no track 99999.
        typo = CliRunner().invoke(main, args + ["--url", f"GIANTSTEPS_KEY_99999={server.url}/x.mp3"])
    assert typo.exit_code == 2 and "GIANTSTEPS_KEY_99999: the annotation archives list no such track" in typo.output
    assert result.exit_code == 1, result.output
    assert "11 files, 0 already verified, 10 downloaded and verified, 1 failed" in result.output
    assert "FAILED GIANTSTEPS_KEY_202 (required)" in result.output and "does not match" in result.output
    audio = cache / "datasets" / "giantsteps_clips" / "audio"
    assert sorted(p.name for p in audio.iterdir()) == sorted(
        f"{t}.LOFI.mp3" for t in [t[0] for t in GIANTSTEPS_TRAIN] + [201])
    assert json.loads(registry.read_text())  # the registry the fixtures wrote is valid JSON


def test_cli_url_overrides_are_fetched_first(tmp_path, monkeypatch):
    """`--url TAG=URL` for each asset is what gets fetched; variables for other datasets' assets
    and for weights do not disturb this dataset's download (only unknown tags are refused)."""
    served = tmp_path / "served"
    registry = write_sources(served, ["gtzan_ff"])
    entries = json.loads(registry.read_text())
    for tag in entries:  # no other URL: a fetch that ignored --url would fail
        entries[tag]["urls"] = []
    registry.write_text(json.dumps(entries))
    monkeypatch.setenv("TUNEMIR_URL_EMOMUSIC_CLIPS", "http://elsewhere.example/clips.tgz")
    monkeypatch.setenv("TUNEMIR_URL_WEIGHTS_CLMR", "http://elsewhere.example/clmr.zip")
    with FileServer(served) as server:
        urls = [f"{a.tag}={server.url}/{a.path}" for a in static_assets("gtzan_ff")]
        args = ["data", "download", "gtzan_ff", "--cache-dir", str(tmp_path / "cache"), "--registry", str(registry)]
        result = CliRunner().invoke(main, args + [a for u in urls for a in ("--url", u)])
        assert result.exit_code == 0, result.output
        assert "4 downloaded and verified, 0 failed" in result.output
        assert sorted(p for p, _ in server.requests) == sorted(a.path for a in static_assets("gtzan_ff"))
        monkeypatch.setenv("TUNEMIR_URL_GTZAN_TRIAN", f"{server.url}/gtzan_ff/train_filtered.txt")
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "TUNEMIR_URL_GTZAN_TRAIN" in result.output, result.output
    assert len(server.requests) == 4  # the typo was refused before anything was fetched


def test_registry_entries_are_checked_and_normalised(tmp_path):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"GTZAN": {"checksum": "AB" * 32, "urls": []},
                                "EXTRA": {"path": "gtzan_ff/extra.txt", "checksum": "cd" * 16, "optional": True}}))
    assets = {a.tag: a for a in dataset_assets("gtzan_ff", load_registry(path))}
    assert assets["GTZAN"].checksum == "ab" * 32 and assets["GTZAN"].urls == ()
    assert assets["GTZAN"].path == "gtzan_ff/genres.tar.gz"  # fields left out keep the built-in value
    assert assets["EXTRA"] == Asset("EXTRA", "gtzan_ff/extra.txt", (), "cd" * 16, optional=True)
    assert assets["EXTRA"].algorithm == "md5"
    path.write_text(json.dumps({"GTZAN": {"urls": "http://host/genres.tar.gz"}}))  # once split into letters
    with pytest.raises(DatasetError, match='"urls" must be a list'):
        load_registry(path)
