"""`tunemir data process` on fixtures with each source's real layout; expectations derived by hand."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from tunemir.cli import main
from tunemir.datasets import MetadataMismatchError, process_dataset
from tunemir.datasets.mpeg import mpeg_duration, mpeg_frames
from tunemir.testing.sources import write_sources


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    registry = write_sources(cache / "datasets")
    summaries = {ds: process_dataset(ds, cache, jobs=2, reference=None, registry=registry, progress=False)
                 for ds in ("gtzan_ff", "magnatagatune", "emomusic", "giantsteps_clips")}
    return cache, registry, summaries


def meta(cache, dataset):
    return json.loads((cache / "processed" / dataset / "meta.json").read_text())


def pcm(path):
    return sf.read(str(path), dtype="float64")


def assert_decodes_to(wav, source, start_s=0.0, seconds=None):
    """The WAV is the source's channel mean (from soundfile's own decode) to within 1 LSB."""
    signal, rate = sf.read(str(source), dtype="float64", always_2d=True)
    start = int(round(start_s * rate))
    expected = signal.mean(1)[start:start + int(round(seconds * rate)) if seconds else None]
    written, written_rate = pcm(wav)
    assert written_rate == rate and len(written) == len(expected)
    assert np.abs(written - expected).max() <= 1.01 / 32768
    assert sf.info(str(wav)).subtype == "PCM_16" and sf.info(str(wav)).channels == 1


@pytest.mark.slow
def test_gtzan_ff(processed):
    cache, _, summaries = processed
    m = meta(cache, "gtzan_ff")
    # reggae.00007 is in no fault-filtered list, so it is dropped.
    expected = {sha256("blues.00000"): ("train", "blues"), sha256("blues.00001"): ("valid", "blues"),
                sha256("classical.00000"): ("test", "classical"), sha256("jazz.00054"): ("train", "jazz"),
                sha256("pop.00003"): ("train", "pop")}
    assert {u: (e["split"], e["y"]) for u, e in m.items()} == expected
    assert m[sha256("pop.00003")]["extra"] == {"id": "pop.00003", "uid": sha256("pop.00003")}
    summary = summaries["gtzan_ff"]
    assert list(summary.failed) == [sha256("jazz.00054")] and "jazz.00054.wav" in summary.failed[sha256("jazz.00054")]
    assert summary.written == 4 and not summary.ok
    wav_dir = cache / "processed" / "gtzan_ff" / "wav"
    source = next((cache / "datasets" / "gtzan_ff" / "unpacked").rglob("blues.00000.wav"))
    assert np.array_equal(sf.read(str(wav_dir / f"{sha256('blues.00000')}.wav"), dtype="int16")[0],
                          sf.read(str(source), dtype="int16")[0])  # 16-bit mono source: bit-exact
    assert not (wav_dir / f"{sha256('jazz.00054')}.wav").exists()


@pytest.mark.slow
def test_magnatagatune(processed):
    cache, _, summaries = processed
    m = meta(cache, "magnatagatune")
    splits = {u: e["split"] for u, e in m.items()}
    assert splits == {"00002": "test", "00006": "train", "00010": "valid", "00014": None, "00020": "train",
                      "00021": "test", "00022": "test", "00023": "train", "00024": "train", "00025": "train",
                      "35644": None}
    # Track a/01 has clips starting at 30 (uid 2), 59 (uid 6) and 0 (uid 10): ordered by start.
    assert [m[u]["clip"]["clip_idx"] for u in ("00010", "00002", "00006")] == [0, 1, 2]
    assert {m[u]["clip"]["audio_duration"] for u in ("00010", "00002", "00006")} == {88.0}
    assert m["00002"]["clip"]["audio_uid"] == ["http://magnatune.example/a/", "01"]
    # Clip 2 (annotation slot 0) has tags k with 0 in (k, k + 3, k + 6) mod 10, plus "rare a",
    # which is not among the 50 most frequent tags: y drops it, y_all keeps it (header order).
    common = [f"tag{k:02d}" for k in range(50) if 0 in (k % 10, (k + 3) % 10, (k + 6) % 10)]
    assert m["00002"]["y"] == common
    assert m["00002"]["y_all"] == [t for t in common if t < "tag25"] + ["rare a"] + [t for t in common if t >= "tag25"]
    assert m["00020"]["y"] == [] and m["00020"]["y_all"] == []  # no tags: kept with all-zero targets
    assert m["00014"]["y"] is None and m["00014"]["y_all"] is None  # no MP3, no annotation row
    assert m["00002"]["extra"]["title"] == "Title 2" and m["00002"]["clip"]["clip_duration"] == 1.0
    summary = summaries["magnatagatune"]
    assert list(summary.skipped) == ["35644"] and list(summary.failed) == ["00025"]
    assert summary.written == 8
    mp3 = cache / "datasets" / "magnatagatune" / "unpacked" / "mp3" / m["00006"]["extra"]["mp3_path"]
    assert_decodes_to(cache / "processed" / "magnatagatune" / "wav" / "00006.wav", mp3)
    assert sf.info(str(cache / "processed" / "magnatagatune" / "wav" / "00006.wav")).samplerate == 16000


@pytest.mark.slow
def test_emomusic(processed):
    cache, _, summaries = processed
    m = meta(cache, "emomusic")
    assert {u: e["split"] for u, e in m.items()} == {
        "0002": "train", "0003": "valid", "0005": "valid", "0007": "train", "0011": "test"}
    # z-scores use the four development songs (2, 3, 5, 7) with the population std.
    arousal, valence = np.array([3.1, 5.0, 6.4, 4.2]), np.array([3.0, 6.2, 4.1, 5.5])
    for uid, a, v in (("0002", 3.1, 3.0), ("0005", 6.4, 4.1), ("0011", 2.0, 2.5)):
        assert m[uid]["y"] == pytest.approx([(a - arousal.mean()) / arousal.std(), (v - valence.mean()) / valence.std()],
                                            abs=1e-12)
    # "min.sec" times: "1.5" is 1:50, "0.48" is 0:48.
    assert (m["0003"]["clip"]["clip_offset"], m["0003"]["clip"]["audio_duration"]) == (110.0, 155.0)
    assert (m["0002"]["clip"]["clip_offset"], m["0002"]["clip"]["audio_duration"]) == (48.0, 93.0)
    assert m["0002"]["extra"]["static_annotations"]["mean_arousal"] == "3.1"  # values are stripped
    assert set(m["0002"]["extra"]) == {"songs_info", "static_annotations", "valence_cont_average",
                                       "valence_cont_std", "arousal_cont_average", "arousal_cont_std"}
    assert summaries["emomusic"].ok and summaries["emomusic"].written == 5
    wav = cache / "processed" / "emomusic" / "wav"
    assert sf.info(str(wav / "0005.wav")).samplerate == 48000 and sf.info(str(wav / "0002.wav")).samplerate == 44100
    assert_decodes_to(wav / "0007.wav", cache / "datasets" / "emomusic" / "unpacked" / "clips" / "clips_45seconds" / "7.mp3")
    assert m["0007"]["clip"]["clip_duration"] == pytest.approx(1.5)


@pytest.mark.slow
def test_giantsteps_clips(processed):
    cache, _, summaries = processed
    m = meta(cache, "giantsteps_clips")
    # 101 (65 s) -> 2 clips; 102/103/104 (31 s) -> 1; 106 low confidence, 107 two keys: dropped;
    # 108 (29 s) too short for one clip; test 201 (95 s) -> 3, 202 (40 s) -> 1.
    # DJ Kilo hashes to valid (sha1 mod 116 = 102); 103 (Bravo, Kilo) makes DJ Bravo valid, and
    # the second pass makes DJ Charlie valid through 104 (Charlie, Bravo), listed before 103.
    assert {u: (e["split"], e["y"]) for u, e in m.items()} == {
        "0000101-0": ("train", "Eb minor"), "0000101-1": ("train", "Eb minor"),
        "0000102-0": ("valid", "A major"), "0000103-0": ("valid", "Gb major"), "0000104-0": ("valid", "C minor"),
        "0000201-0": ("test", "Bb minor"), "0000201-1": ("test", "Bb minor"), "0000201-2": ("test", "Bb minor"),
        "0000202-0": ("test", "E major")}
    audio = cache / "datasets" / "giantsteps_clips" / "audio"
    clip = m["0000201-2"]["clip"]
    assert clip["clip_offset"] == 60.0 and clip["clip_idx"] == 2 and clip["audio_uid"] == "0000201"
    assert clip["audio_duration"] == mpeg_duration(audio / "201.LOFI.mp3") and clip["clip_duration"] == 30.0
    assert m["0000101-0"]["extra"]["annotations"] == {"ID": "101", "MANUAL KEY": "D# minor", "C": "2"}
    assert m["0000201-0"]["extra"]["jams"] == {"file_metadata": {"title": 201}}
    assert summaries["giantsteps_clips"].ok and summaries["giantsteps_clips"].written == 9
    assert_decodes_to(cache / "processed" / "giantsteps_clips" / "wav" / "0000201-2.wav", audio / "201.LOFI.mp3",
                      start_s=60.0, seconds=30.0)


@pytest.mark.slow
def test_rerun_keeps_finished_files_and_redoes_broken_ones(processed, tmp_path):
    cache, registry, _ = processed
    work = tmp_path / "cache"
    shutil.copytree(cache, work)
    wav = work / "processed" / "emomusic" / "wav"
    (wav / "0003.wav").write_bytes(b"RIFF half-written")  # a file some other tool cut short
    (wav / "0011.wav").unlink()
    before = (wav / "0002.wav").stat().st_mtime_ns
    summary = process_dataset("emomusic", work, jobs=1, reference=None, registry=registry, progress=False)
    assert (summary.written, summary.kept) == (2, 3)
    assert (wav / "0002.wav").stat().st_mtime_ns == before
    assert sf.info(str(wav / "0003.wav")).frames > 0
    assert json.loads((work / "processed" / "emomusic" / "meta.json").read_text()) == meta(cache, "emomusic")


@pytest.mark.slow
def test_reference_mismatch_names_the_uids_and_decodes_nothing(processed, tmp_path):
    cache, registry, _ = processed
    reference = meta(cache, "emomusic")
    reference["0002"]["split"] = "valid"
    reference["0007"]["y"] = [0.0, 0.0]
    reference["0099"] = reference.pop("0011")
    ref_path = tmp_path / "ref.json"
    ref_path.write_text(json.dumps(reference))
    work = tmp_path / "cache"
    shutil.copytree(cache / "datasets", work / "datasets")
    with pytest.raises(MetadataMismatchError) as err:
        process_dataset("emomusic", work, reference=ref_path, registry=registry, progress=False)
    message = str(err.value)
    for part in ("1 uid(s) in the reference but not built (e.g. 0099)", "1 uid(s) built but not in the reference (e.g. 0011)",
                 "0002 ('train' vs 'valid')", "with another label (e.g. 0007"):
        assert part in message
    report = json.loads((work / "processed" / "emomusic" / "mismatch.json").read_text())
    assert report["missing"] == ["0099"] and report["unexpected"] == ["0011"]
    assert not (work / "processed" / "emomusic" / "wav").exists()
    assert not (work / "processed" / "emomusic" / "meta.json").exists()


@pytest.mark.slow
def test_cli_process_checks_canonical_metadata_by_default(processed, tmp_path):
    cache, registry, _ = processed
    work = tmp_path / "cache"
    shutil.copytree(cache / "datasets", work / "datasets")
    args = ["data", "process", "gtzan_ff", "--cache-dir", str(work), "--registry", str(registry)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "differs from jukemir's canonical metadata" in result.output
    assert "925 uid(s) in the reference but not built" in result.output  # 930 canonical, 5 in the fixture
    result = CliRunner().invoke(main, args + ["--no-reference", "--jobs", "1"])
    assert result.exit_code == 1  # the corrupt jazz.00054 is reported, the rest is done
    assert "4 written" in result.output and "FAILED" in result.output and "jazz.00054" in result.output


def test_missing_downloads_say_how_to_fix(tmp_path):
    with pytest.raises(Exception, match=r"Run `tunemir data download magnatagatune` first"):
        process_dataset("magnatagatune", tmp_path, reference=None, progress=False)


def test_mpeg_frame_count_with_and_without_xing(tmp_path):
    signal = np.random.default_rng(0).standard_normal(44100 * 2).astype(np.float32) * 0.1
    sf.write(str(tmp_path / "a.mp3"), signal, 44100, format="MP3")
    frames, samples, rate = mpeg_frames(tmp_path / "a.mp3")
    assert (samples, rate) == (1152, 44100)
    assert frames * samples >= sf.info(str(tmp_path / "a.mp3")).frames  # whole frames hold the gapless audio
    data = (tmp_path / "a.mp3").read_bytes()
    for tag in (b"Xing", b"Info"):
        data = data.replace(tag, b"Nope")
    (tmp_path / "b.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x0a" + b"\0" * 10 + data + b"TAG" + b"\0" * 125)
    # Without the header the info frame counts as an audio frame; the ID3 tags are skipped.
    assert mpeg_frames(tmp_path / "b.mp3") == (frames + 1, 1152, 44100)
    (tmp_path / "c.mp3").write_bytes(b"not an mp3")
    with pytest.raises(ValueError, match="no MPEG audio frame"):
        mpeg_frames(tmp_path / "c.mp3")
