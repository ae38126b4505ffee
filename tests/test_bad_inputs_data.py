"""Bad inputs of `tunemir data download/process/synth` and `tunemir weights fetch`: each exits
cleanly with a message naming the option or file at fault and the fix.

Downloads go to a real HTTP server on 127.0.0.1 that serves the whole pytest temp root, so each
case serves the files its setup wrote under its own folder; no case reaches another host.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tunemir.testing.bad_inputs import BadInput, check_bad_input
from tunemir.testing.http import FileServer, dead_url
from tunemir.testing.sources import write_sources
from tunemir.weights import RELEASES

SERVER: FileServer | None = None
_IMMUTABLE: list[Path] = []  # folders made immutable by a setup, made mutable again after the case
GTZAN_TAGS = ("GTZAN", "GTZAN_TRAIN", "GTZAN_VALID", "GTZAN_TEST")
TUNE_PLUS = RELEASES["tune_plus"].filename


@pytest.fixture(scope="module", autouse=True)
def server(tmp_path_factory):
    global SERVER
    with FileServer(tmp_path_factory.getbasetemp()) as SERVER:
        yield SERVER
    SERVER = None


def _url(path: Path) -> str:
    """The test server's URL of a file under the pytest temp root."""
    return f"{SERVER.url}/{path.relative_to(SERVER.root).as_posix()}"


# --- setups -----------------------------------------------------------------------------------

def a_file(tmp: Path) -> None:
    (tmp / "file").write_text("a regular file\n")


def _immutable(folder: Path) -> None:
    """Make `folder` a folder nobody may write in, root included: `chattr +i` (root ignores
    permission bits; a read-only mount needs CAP_SYS_ADMIN, this only CAP_LINUX_IMMUTABLE and an
    ext4/xfs/btrfs temp folder). The test undoes it after the case."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("chattr +i is not possible here (not root, or a filesystem without the flag)")
    _IMMUTABLE.append(folder)


def immutable_cache(tmp: Path) -> None:
    _immutable(tmp / "ro")


def downloads_read_only(tmp: Path) -> None:
    """gtzan_ff downloaded, not unpacked yet, in a folder nobody may write to."""
    gtzan_sources()(tmp)
    _immutable(tmp / "cache" / "datasets" / "gtzan_ff")


def cache_read_only(tmp: Path) -> None:
    """gtzan_ff downloaded, but no processed/ can be made in the cache."""
    gtzan_sources()(tmp)
    _immutable(tmp / "cache")


def dataset_folder_is_file(tmp: Path) -> None:
    (tmp / "cache" / "datasets").mkdir(parents=True)
    (tmp / "cache" / "datasets" / "gtzan_ff").write_text("not a folder")


def registry(entries) -> callable:
    """A setup writing `entries` (any JSON value, or bytes) as {tmp}/registry.json."""
    def setup(tmp: Path) -> None:
        data = entries if isinstance(entries, bytes) else json.dumps(entries).encode()
        (tmp / "registry.json").write_bytes(data)
    return setup


def served_gtzan(fault: str | None = None) -> callable:
    """gtzan_ff's four files served from {tmp}/served with a registry pointing at them, with one
    fault on GTZAN: "404" (not served), "checksum" (other bytes), "truncated" (every response cut
    short), "dead" (a host that refuses connections)."""
    def setup(tmp: Path) -> None:
        entries = {}
        for tag in GTZAN_TAGS:
            path = tmp / "served" / f"{tag}.bin"
            path.parent.mkdir(exist_ok=True)
            data = tag.encode() * 5000
            path.write_bytes(data)
            entries[tag] = {"urls": [_url(path)], "checksum": hashlib.sha256(data).hexdigest()}
        gtzan = tmp / "served" / "GTZAN.bin"
        if fault == "404":
            gtzan.unlink()
        elif fault == "checksum":
            gtzan.write_bytes(b"other bytes")
        elif fault == "truncated":
            SERVER.cut_after = _EveryTime({**SERVER.cut_after, _url(gtzan).split("/", 3)[3]: 1000})
        elif fault == "dead":
            entries["GTZAN"]["urls"] = [dead_url("genres.tar.gz")]
        (tmp / "registry.json").write_text(json.dumps(entries))
    return setup


class _EveryTime(dict):
    """FileServer pops a path's cut once; this keeps it, so every response is cut short."""

    def pop(self, key, default=None):
        return self.get(key, default)


def gtzan_sources(change: str | None = None) -> callable:
    """gtzan_ff's downloads (test-sized, real layout) in {tmp}/cache/datasets, with one change:
    "archive" (genres.tar.gz is garbage), "not-utf8" (a split list is binary), "missing" (a list gone)."""
    def setup(tmp: Path) -> None:
        root = tmp / "cache" / "datasets"
        write_sources(root, ["gtzan_ff"])
        if change == "archive":
            (root / "gtzan_ff" / "genres.tar.gz").write_bytes(b"\x1f\x8bnot really gzip" * 10)
        elif change == "not-utf8":
            (root / "gtzan_ff" / "train_filtered.txt").write_bytes(b"\xff\xfe\x00\x01 binary")
        elif change == "missing":
            (root / "gtzan_ff" / "valid_filtered.txt").unlink()
    return setup


_MTT_HEADER = "clip_id\ttrack_number\ttitle\tartist\talbum\turl\tsegmentStart\tsegmentEnd\toriginal_url\tmp3_path"


def mtt_tables(clip_info: str) -> callable:
    """MagnaTagATune's downloads in {tmp}/cache/datasets with this clip_info_final.csv (the tables
    are read before the MP3 archive is opened, so its parts can stay empty)."""
    def setup(tmp: Path) -> None:
        folder = tmp / "cache" / "datasets" / "magnatagatune"
        folder.mkdir(parents=True)
        for part in ("001", "002", "003"):
            (folder / f"mp3.zip.{part}").write_bytes(b"")
        (folder / "clip_info_final.csv").write_text(clip_info)
        (folder / "annotations_final.csv").write_text("clip_id\tguitar\tmp3_path\n2\t1\tf/x.mp3\n")
    return setup


def giantsteps_archives_garbage(tmp: Path) -> None:
    folder = tmp / "cache" / "datasets" / "giantsteps_clips"
    folder.mkdir(parents=True)
    for name in ("giantsteps-mtg-key-dataset.zip", "giantsteps-key-dataset.zip"):
        (folder / name).write_bytes(b"PK\x03\x04 but no zip")


def reference(data: bytes) -> callable:
    def setup(tmp: Path) -> None:
        gtzan_sources()(tmp)
        (tmp / "ref.json").write_bytes(data)
    return setup


def pin(text: str | bytes) -> callable:
    def setup(tmp: Path) -> None:
        data = text if isinstance(text, bytes) else text.encode()
        (tmp / "weights.sha256").write_bytes(data)
    return setup


def served_release(data: bytes, name: str = TUNE_PLUS) -> callable:
    """`name` with these bytes served from {tmp}/served and lying in {tmp}/context; {url} is its URL."""
    def setup(tmp: Path) -> dict:
        for folder in ("served", "context"):
            (tmp / folder).mkdir()
            (tmp / folder / name).write_bytes(data)
        return {"url": _url(tmp / "served" / name), "sha": hashlib.sha256(data).hexdigest()}
    return setup


# --- the table --------------------------------------------------------------------------------

CACHE = ("--cache-dir", "{tmp}/cache")
HOME = {"TUNEMIR_CACHE_DIR": "{tmp}/cache", "TUNEMIR_WEIGHTS_DIR": "{tmp}/weights"}  # never the real ~
REG = ("--registry", "{tmp}/registry.json")
SHA = "ab" * 32
OUT = ("--output", "{tmp}/w/out.safetensors")


def case(id, args, mentions, exit_code=2, setup=None, env=None) -> BadInput:
    return BadInput(id, tuple(args), tuple(mentions), exit_code, setup, {**HOME, **(env or {})})


CASES = [
    # data synth: numbers
    case("synth-seconds-nan", ["data", "synth", "--seconds", "nan", *CACHE], ["--seconds", "from 1 to 600"]),
    case("synth-seconds-inf", ["data", "synth", "--seconds", "inf", *CACHE], ["--seconds", "1.0<=x<=600.0"]),
    case("synth-seconds-minus-inf", ["data", "synth", "--seconds", "-inf", *CACHE], ["--seconds", "1.0<=x"]),
    case("synth-seconds-negative", ["data", "synth", "--seconds", "-1", *CACHE], ["--seconds", "1.0<=x"]),
    case("synth-seconds-zero", ["data", "synth", "--seconds", "0", *CACHE], ["--seconds", "1.0<=x"]),
    case("synth-seconds-word", ["data", "synth", "--seconds", "eight", *CACHE], ["--seconds", "not a valid float"]),
    case("synth-seconds-huge", ["data", "synth", "--seconds", "1e12", *CACHE], ["--seconds", "x<=600"]),
    case("synth-clips-zero", ["data", "synth", "--clips", "0", *CACHE], ["--clips", "x>=20"]),
    case("synth-clips-float", ["data", "synth", "--clips", "2.5", *CACHE], ["--clips", "not a valid integer"]),
    case("synth-sample-rate-zero", ["data", "synth", "--sample-rate", "0", *CACHE], ["--sample-rate", "8000"]),
    case("synth-sample-rate-huge", ["data", "synth", "--sample-rate", "1000000000", *CACHE],
         ["--sample-rate", "192000"]),
    case("synth-seed-negative", ["data", "synth", "--seed", "-1", *CACHE], ["--seed", "x>=0"]),
    # data synth: where it writes
    case("synth-cache-dir-is-file", ["data", "synth", "--cache-dir", "{tmp}/file"], ["--cache-dir", "is a file"],
         setup=a_file),
    case("synth-cache-dir-below-file", ["data", "synth", "--cache-dir", "{tmp}/file/cache"],
         ["--cache-dir", "{tmp}/file is a file, not a folder", "write to"], setup=a_file),
    case("synth-cache-env-below-file", ["data", "synth"],
         ["$TUNEMIR_CACHE_DIR", "{tmp}/file is a file", "--cache-dir"], setup=a_file,
         env={"TUNEMIR_CACHE_DIR": "{tmp}/file/cache"}),
    case("synth-cache-dir-read-only", ["data", "synth", "--cache-dir", "{tmp}/ro"],
         ["--cache-dir", "cannot write in {tmp}/ro", "a folder you can write to"], setup=immutable_cache),
    # data download: options
    case("download-unknown-dataset", ["data", "download", "gtzan", *CACHE], ["gtzan_ff", "not one of"]),
    case("download-jobs-zero", ["data", "download", "gtzan_ff", "--jobs", "0", *CACHE], ["--jobs", "x>=1"]),
    case("download-jobs-word", ["data", "download", "gtzan_ff", "--jobs", "many", *CACHE], ["--jobs", "integer"]),
    case("download-url-no-equals", ["data", "download", "gtzan_ff", "--url", "GTZAN", *CACHE],
         ["--url", "expected TAG=URL"]),
    case("download-url-empty-url", ["data", "download", "gtzan_ff", "--url", "GTZAN=", *CACHE],
         ["--url", "expected TAG=URL"]),
    case("download-url-empty-tag", ["data", "download", "gtzan_ff", "--url", "=http://host/g.tgz", *CACHE],
         ["--url", "expected TAG=URL"]),
    case("download-url-unknown-tag", ["data", "download", "gtzan_ff", "--url", "GTZN=http://host/g.tgz", *CACHE],
         ["--url", "no asset tagged 'GTZN'", "did you mean GTZAN"]),
    case("download-url-lower-case-tag", ["data", "download", "gtzan_ff", "--url", "gtzan=http://host/g.tgz", *CACHE],
         ["--url", "did you mean GTZAN", "GTZAN_TRAIN"]),
    case("download-url-other-datasets-tag",
         ["data", "download", "emomusic", "--url", "GTZAN=http://host/g.tgz", *CACHE],
         ["--url", "GTZAN is an asset of gtzan_ff, not of emomusic"]),
    case("download-url-giantsteps-bad-tag",
         ["data", "download", "giantsteps_clips", "--url", "GIANTSTEPS_101=http://host/101.mp3", *CACHE],
         ["--url", "GIANTSTEPS_MTG_KEY_<track id>"]),
    case("download-url-not-a-url", ["data", "download", "gtzan_ff", "--url", "GTZAN=genres.tar.gz", *CACHE],
         ["--url", "is not a url", "https://"]),
    case("download-url-no-host", ["data", "download", "gtzan_ff", "--url", "GTZAN=https:///genres.tar.gz", *CACHE],
         ["--url", "names no host"]),
    case("download-url-twice",
         ["data", "download", "gtzan_ff", "--url", "GTZAN=http://a/g.tgz", "--url", "GTZAN=http://b/g.tgz", *CACHE],
         ["--url", "given twice", "keep one"]),
    case("download-mirror-not-a-url", ["data", "download", "gtzan_ff", "--mirror", "lab-server/datasets", *CACHE],
         ["--mirror", "is not a url", "base url"]),
    case("download-mirror-env-not-a-url", ["data", "download", "gtzan_ff", *CACHE],
         ["$TUNEMIR_DATA_MIRROR", "is not a url", "unset TUNEMIR_DATA_MIRROR"],
         env={"TUNEMIR_DATA_MIRROR": "/srv/datasets"}),
    case("download-env-url-unknown-tag", ["data", "download", "gtzan_ff", *CACHE],
         ["$TUNEMIR_URL_GTZN", "no dataset has an asset tagged 'GTZN'", "TUNEMIR_URL_GTZAN", "unset"],
         env={"TUNEMIR_URL_GTZN": "http://host/g.tgz"}),
    case("download-env-url-not-a-url", ["data", "download", "gtzan_ff", *CACHE],
         ["$TUNEMIR_URL_GTZAN", "is not a url", "unset TUNEMIR_URL_GTZAN"],
         env={"TUNEMIR_URL_GTZAN": "genres.tar.gz"}),
    case("download-cache-dir-is-file", ["data", "download", "gtzan_ff", "--cache-dir", "{tmp}/file"],
         ["--cache-dir", "is a file"], setup=a_file),
    case("download-cache-dir-below-file", ["data", "download", "gtzan_ff", "--cache-dir", "{tmp}/file/c"],
         ["--cache-dir", "{tmp}/file is a file, not a folder"], setup=a_file),
    case("download-cache-dir-read-only", ["data", "download", "gtzan_ff", "--cache-dir", "{tmp}/ro"],
         ["--cache-dir", "cannot write in {tmp}/ro/datasets"], setup=immutable_cache),
    case("download-dataset-folder-is-file", ["data", "download", "gtzan_ff", *CACHE],
         ["--cache-dir", "{tmp}/cache/datasets/gtzan_ff is a file, not a folder"], setup=dataset_folder_is_file),
    # data download: the registry
    case("download-registry-missing", ["data", "download", "gtzan_ff", *REG], ["--registry", "does not exist"]),
    case("download-registry-is-folder", ["data", "download", "gtzan_ff", "--registry", "{tmp}", *CACHE],
         ["--registry", "is a directory"]),
    case("download-registry-env-missing", ["data", "download", "gtzan_ff", *CACHE],
         ["{tmp}/nope.json (from $TUNEMIR_DATA_REGISTRY) does not exist", "point --registry"], 1,
         env={"TUNEMIR_DATA_REGISTRY": "{tmp}/nope.json"}),
    case("download-registry-env-folder", ["data", "download", "gtzan_ff", *CACHE],
         ["$TUNEMIR_DATA_REGISTRY", "is a folder, not a JSON file"], 1, env={"TUNEMIR_DATA_REGISTRY": "{tmp}"}),
    case("download-registry-bad-json", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["registry file {tmp}/registry.json", "not readable json", "fix the file"], 1, registry(b"{'GTZAN': 1")),
    case("download-registry-not-utf8", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["{tmp}/registry.json", "utf-8", "fix the file"], 1, registry(b"\xff\xfe{}")),
    case("download-registry-empty-file", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["{tmp}/registry.json", "not readable json"], 1, registry(b"")),
    case("download-registry-list", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["{tmp}/registry.json", "expected a json object", "got a list"], 1, registry([{"GTZAN": {}}])),
    case("download-registry-entry-string", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["entry 'GTZAN'", "expected an object"], 1, registry({"GTZAN": "http://host/g.tgz"})),
    case("download-registry-urls-string", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["entry 'GTZAN'", '"urls" must be a list'], 1, registry({"GTZAN": {"urls": "http://host/g.tgz"}})),
    case("download-registry-url-not-a-url", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["entry 'GTZAN'", "'host/g.tgz' is not a url"], 1, registry({"GTZAN": {"urls": ["host/g.tgz"]}})),
    case("download-registry-bad-checksum", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["entry 'GTZAN'", '"checksum"', "64 hex digits"], 1, registry({"GTZAN": {"checksum": "abc123"}})),
    case("download-registry-path-escapes", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["entry 'GTZAN'", '"path"', "relative path below a dataset folder"], 1,
         registry({"GTZAN": {"path": "gtzan_ff/../../etc/genres.tar.gz"}})),
    case("download-registry-path-absolute", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["entry 'GTZAN'", '"path"', "<dataset>/<file>"], 1, registry({"GTZAN": {"path": "/tmp/genres.tar.gz"}})),
    case("download-registry-unknown-field", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["entry 'GTZAN'", "unknown field(s) sha256", "path, urls, checksum, optional"], 1,
         registry({"GTZAN": {"sha256": "0" * 64}})),
    case("download-registry-new-tag-incomplete", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["entry 'EXTRA'", 'needs a "path"', '"checksum"'], 1, registry({"EXTRA": {"path": "gtzan_ff/extra.txt"}})),
    case("download-registry-optional-string", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["entry 'GTZAN'", '"optional" must be true or false'], 1, registry({"GTZAN": {"optional": "yes"}})),
    # data download: what the server answers
    case("download-404", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["FAILED GTZAN (required)", "HTTP Error 404", "--url TAG=URL", "3 downloaded and verified"], 1,
         served_gtzan("404")),
    case("download-wrong-checksum", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["FAILED GTZAN (required)", "does not match", "--mirror URL"], 1, served_gtzan("checksum")),
    case("download-truncated-body", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["FAILED GTZAN (required)", "connection closed after 1000 of 25000 bytes", "rerun to resume"], 1,
         served_gtzan("truncated")),
    case("download-dead-host", ["data", "download", "gtzan_ff", *REG, *CACHE],
         ["FAILED GTZAN (required)", "connection refused", "--url TAG=URL"], 1, served_gtzan("dead")),
    # data process
    case("process-unknown-dataset", ["data", "process", "mtt", *CACHE], ["magnatagatune", "not one of"]),
    case("process-jobs-zero", ["data", "process", "gtzan_ff", "--jobs", "0", *CACHE], ["--jobs", "x>=1"]),
    case("process-reference-and-no-reference",
         ["data", "process", "gtzan_ff", "--reference", "{tmp}/file", "--no-reference", *CACHE],
         ["--reference and --no-reference exclude each other", "keep one"], setup=a_file),
    case("process-reference-missing", ["data", "process", "gtzan_ff", "--reference", "{tmp}/ref.json", *CACHE],
         ["--reference", "does not exist"]),
    case("process-nothing-downloaded", ["data", "process", "gtzan_ff", *CACHE],
         ["{tmp}/cache/datasets/gtzan_ff does not exist", "tunemir data download gtzan_ff", "--cache-dir"], 1),
    case("process-cache-dir-is-file", ["data", "process", "gtzan_ff", "--cache-dir", "{tmp}/file"],
         ["--cache-dir", "is a file"], setup=a_file),
    case("process-dataset-folder-is-file", ["data", "process", "gtzan_ff", *CACHE],
         ["{tmp}/cache/datasets/gtzan_ff is a file, not a folder", "tunemir data download gtzan_ff"], 1,
         dataset_folder_is_file),
    case("process-cache-read-only", ["data", "process", "gtzan_ff", "--no-reference", *CACHE],
         ["--cache-dir", "cannot write in {tmp}/cache/processed", "a folder you can write to"],
         setup=cache_read_only),
    case("process-downloads-read-only", ["data", "process", "gtzan_ff", "--no-reference", *CACHE],
         ["cannot unpack genres.tar.gz into {tmp}/cache/datasets/gtzan_ff/unpacked/genres",
          "make that folder writable"],
         1, downloads_read_only),
    case("process-a-download-missing", ["data", "process", "gtzan_ff", "--no-reference", *CACHE],
         ["1 downloaded file(s) missing", "valid_filtered.txt", "tunemir data download gtzan_ff"], 1,
         gtzan_sources("missing")),
    case("process-corrupt-archive", ["data", "process", "gtzan_ff", "--no-reference", *CACHE],
         ["cannot unpack {tmp}/cache/datasets/gtzan_ff/genres.tar.gz", "download again"], 1,
         gtzan_sources("archive")),
    case("process-giantsteps-archive-not-zip", ["data", "process", "giantsteps_clips", "--no-reference", *CACHE],
         ["giantsteps_clips/giantsteps-mtg-key-dataset.zip is not a zip archive",
          "tunemir data download giantsteps_clips"], 1, giantsteps_archives_garbage),
    case("process-list-not-utf8", ["data", "process", "gtzan_ff", "--no-reference", *CACHE],
         ["{tmp}/cache/datasets/gtzan_ff/train_filtered.txt is not UTF-8", "tunemir data download"], 1,
         gtzan_sources("not-utf8")),
    case("process-canonical-mismatch", ["data", "process", "gtzan_ff", *CACHE],
         ["differs from jukemir's canonical metadata", "mismatch.json", "--no-reference"], 1, gtzan_sources()),
    case("process-reference-bad-json", ["data", "process", "gtzan_ff", "--reference", "{tmp}/ref.json", *CACHE],
         ["reference metadata {tmp}/ref.json is not readable json", "--no-reference"], 1, reference(b"{uid: 1}")),
    case("process-reference-list", ["data", "process", "gtzan_ff", "--reference", "{tmp}/ref.json", *CACHE],
         ["{tmp}/ref.json", "expected a json object of uid", "--no-reference"], 1, reference(b"[1, 2]")),
    case("process-reference-truncated-gzip",
         ["data", "process", "gtzan_ff", "--reference", "{tmp}/ref.json", *CACHE],
         ["{tmp}/ref.json is not readable json", "--no-reference"], 1,
         reference(gzip.compress(json.dumps({"a": {"split": "train"}}).encode())[:20])),
    case("process-registry-env-bad-json", ["data", "process", "gtzan_ff", *CACHE],
         ["$TUNEMIR_DATA_REGISTRY", "not readable json"], 1, reference(b""),
         env={"TUNEMIR_DATA_REGISTRY": "{tmp}/ref.json"}),
    case("process-table-missing-column", ["data", "process", "magnatagatune", "--no-reference", *CACHE],
         ["clip_info_final.csv has no column 'clip_id'", "tunemir data download"], 1,
         mtt_tables("id\turl\n2\thttp://x/\n")),
    case("process-table-extra-field", ["data", "process", "magnatagatune", "--no-reference", *CACHE],
         ["clip_info_final.csv line 2 has more fields than the header", "tunemir data download"], 1,
         mtt_tables(f"{_MTT_HEADER}\n2\t01\tt\ta\tb\thttp://x/\t0\t29\thttp://o\tf/x.mp3\tsurplus\n")),
    case("process-table-bad-value", ["data", "process", "magnatagatune", "--no-reference", *CACHE],
         ["do not have the expected contents", "invalid literal for int", "tunemir data download magnatagatune"], 1,
         mtt_tables(f"{_MTT_HEADER}\ntwo\t01\tt\ta\tb\thttp://x/\t0\t29\thttp://o\tf/x.mp3\n")),
    # weights fetch
    case("weights-unknown-model", ["weights", "fetch", "clmr2", "--sha256", SHA], ["clmr", "not one of"]),
    case("weights-sha256-short", ["weights", "fetch", "clmr", "--sha256", "abc123", *OUT],
         ["--sha256 must be 64 hex digits", "sha256sum"]),
    case("weights-sha256-not-hex", ["weights", "fetch", "clmr", "--sha256", "z" * 64, *OUT],
         ["--sha256 must be 64 hex digits"]),
    case("weights-pin-file-missing", ["weights", "fetch", "tune_plus", "--pin-file", "{tmp}/weights.sha256", *OUT],
         ["--pin-file {tmp}/weights.sha256 does not exist", "--sha256"]),
    case("weights-pin-file-is-folder", ["weights", "fetch", "tune_plus", "--pin-file", "{tmp}", *OUT],
         ["--pin-file", "is a directory"]),
    case("weights-pin-file-empty", ["weights", "fetch", "tune_plus", "--pin-file", "{tmp}/weights.sha256", *OUT],
         [f"no sha256 is pinned for {TUNE_PLUS}", "pin it in {tmp}/weights.sha256", "sha256sum"], 1, pin("")),
    case("weights-pin-file-malformed", ["weights", "fetch", "tune_plus", "--pin-file", "{tmp}/weights.sha256", *OUT],
         ["{tmp}/weights.sha256:2: not a sha256sum line", "fix or delete the line"], 1,
         pin(f"# pins\n{SHA[:40]}  {TUNE_PLUS}\n")),
    case("weights-pin-file-no-line", ["weights", "fetch", "tune_plus", "--pin-file", "{tmp}/weights.sha256", *OUT],
         [f"no sha256 is pinned for {TUNE_PLUS}", "pin it in {tmp}/weights.sha256"], 1,
         pin(f"{SHA}  tune_5_tail_epoch_10000.ckpt\n")),
    case("weights-pin-file-not-utf8", ["weights", "fetch", "tune_plus", "--pin-file", "{tmp}/weights.sha256", *OUT],
         ["pin file {tmp}/weights.sha256", "not utf-8", "sha256sum lines"], 1, pin(b"\xff\xfe\x00\x01")),
    case("weights-search-dir-is-file", ["weights", "fetch", "tune_plus", "--sha256", SHA, "--search-dir",
                                        "{tmp}/file", *OUT], ["--search-dir", "is a file"], setup=a_file),
    case("weights-search-dir-missing", ["weights", "fetch", "tune_plus", "--sha256", SHA, "--search-dir",
                                        "{tmp}/nowhere", *OUT],
         ["{tmp}/nowhere (does not exist)", "drive.google.com", "put it there"], 1),
    case("weights-search-dir-wrong-sha", ["weights", "fetch", "tune_plus", "--sha256", SHA, "--search-dir",
                                          "{tmp}/context", *OUT],
         [f"{{tmp}}/context/{TUNE_PLUS} has sha256", f"but {SHA} is pinned", "replace the file"], 1,
         served_release(b"not the released checkpoint")),
    case("weights-output-is-folder", ["weights", "fetch", "clmr", "--sha256", SHA, "--output", "{tmp}"],
         ["--output", "is a directory"]),
    case("weights-output-below-file", ["weights", "fetch", "clmr", "--sha256", SHA, "--output", "{tmp}/file/w.st"],
         ["--output {tmp}/file/w.st", "{tmp}/file is a file, not a folder", "give another --output"], setup=a_file),
    case("weights-output-read-only", ["weights", "fetch", "clmr", "--sha256", SHA, "--output", "{tmp}/ro/w.st"],
         ["--output {tmp}/ro/w.st", "cannot write in {tmp}/ro"], setup=immutable_cache),
    case("weights-weights-dir-env-below-file", ["weights", "fetch", "clmr", "--sha256", SHA],
         ["$TUNEMIR_WEIGHTS_DIR", "{tmp}/file is a file", "--output"], setup=a_file,
         env={"TUNEMIR_WEIGHTS_DIR": "{tmp}/file/weights"}),
    case("weights-url-not-a-url", ["weights", "fetch", "tune_plus", "--sha256", SHA, "--url", "weights.ckpt", *OUT],
         ["--url", "'weights.ckpt' is not a url"]),
    case("weights-env-url-unknown-model", ["weights", "fetch", "clmr", "--sha256", SHA, *OUT],
         ["$TUNEMIR_URL_WEIGHTS_CLRM", "TUNEMIR_URL_WEIGHTS_CLMR", "unset"],
         env={"TUNEMIR_URL_WEIGHTS_CLRM": "http://host/clmr.zip"}),
    case("weights-env-url-not-a-url", ["weights", "fetch", "clmr", "--sha256", SHA, *OUT],
         ["$TUNEMIR_URL_WEIGHTS_CLMR", "is not a url"], env={"TUNEMIR_URL_WEIGHTS_CLMR": "clmr.zip"}),
    case("weights-url-404", ["weights", "fetch", "tune_plus", "--sha256", SHA, "--url", "{url}.missing", *OUT],
         [f"could not fetch {TUNE_PLUS}", "HTTP Error 404"], 1, served_release(b"x")),
    case("weights-url-wrong-sha", ["weights", "fetch", "tune_plus", "--sha256", SHA, "--url", "{url}", *OUT],
         [f"could not fetch {TUNE_PLUS}", f"does not match {SHA}"], 1, served_release(b"other bytes")),
    case("weights-url-dead-host", ["weights", "fetch", "tune_plus", "--sha256", SHA, "--url", dead_url(), *OUT],
         [f"could not fetch {TUNE_PLUS}", "connection refused"], 1),
    case("weights-no-url-no-file", ["weights", "fetch", "tune", "--sha256", SHA, *OUT],
         ["no direct download url", "drive.google.com", "--search-dir"], 1),
    case("weights-pinned-file-is-no-zip", ["weights", "fetch", "clmr", "--sha256", "{sha}", "--search-dir",
                                           "{tmp}/context", *OUT],
         [RELEASES["clmr"].filename, "does not hold", "fix the pin"], 1,
         served_release(b"pinned, but not a zip", RELEASES["clmr"].filename)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: BadInput, tmp_path: Path) -> None:
    try:
        check_bad_input(case, tmp_path)
    finally:
        while _IMMUTABLE:
            subprocess.run(["chattr", "-i", str(_IMMUTABLE.pop())], check=False)
        if isinstance(SERVER.cut_after, _EveryTime):
            SERVER.cut_after = {}


def test_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
