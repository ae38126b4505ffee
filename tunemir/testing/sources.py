"""Tiny copies of the four datasets' downloads, laid out as the real ones are, for tests and CI.

Each writer puts files under `root/<asset path>` (the datasets-root layout, which is also
what a `--mirror` server serves) and returns registry entries (tag -> {"checksum": ...}) for
the static assets it wrote, since their real checksums cannot match. The contents are chosen
so each jukemir rule has a case; the tests derive the expected metadata from them by hand.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import soundfile as sf

from tunemir.datasets.assets import GIANTSTEPS_ARCHIVES, asset
from tunemir.testing import synthetic_signal

#: Bytes that no audio decoder accepts (a "corrupt" source).
GARBAGE = b"this is not audio " * 64


def _audio_bytes(seconds: float, rate: int, fmt: str, channels: int = 1, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    signal = synthetic_signal(seconds, rate, channels, seed)
    if fmt == "mp3":
        sf.write(buffer, signal, rate, format="MP3", subtype="MPEG_LAYER_III")
    else:
        sf.write(buffer, signal, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(root: Path, tag: str, data: bytes, registry: dict) -> None:
    path = root / asset(tag).path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    registry[tag] = {"checksum": _sha256(data)}


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A .tar.gz holding `members` (name -> bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _table(rows: list[dict], fields: list[str], delimiter: str, quote_all: bool = False) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, delimiter=delimiter, lineterminator="\n",
                            quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


# GTZAN: did -> split (None = in no list); "jazz.00054" is corrupt, as in some re-hosted copies.
GTZAN_FILES = {"blues.00000": "train", "blues.00001": "valid", "classical.00000": "test",
               "jazz.00054": "train", "pop.00003": "train", "reggae.00007": None}
GTZAN_CORRUPT = ("jazz.00054",)


def write_gtzan_ff(root: Path) -> dict:
    """genres.tar.gz (genres/<genre>/<did>.wav, 22.05 kHz mono) and the three split lists."""
    registry: dict = {}
    members = {}
    for i, did in enumerate(GTZAN_FILES):
        genre = did.split(".")[0]
        members[f"genres/{genre}/{did}.wav"] = GARBAGE if did in GTZAN_CORRUPT else _audio_bytes(1.0, 22050, "wav", seed=i)
    _write(root, "GTZAN", tar_gz(members), registry)
    for split in ("train", "valid", "test"):
        lines = [f"{did.split('.')[0]}/{did}.au" for did, s in GTZAN_FILES.items() if s == split]
        _write(root, f"GTZAN_{split.upper()}", ("\n".join(lines) + "\n").encode(), registry)
    return registry


# MTT: (clip_id, album url, track, segmentStart, segmentEnd, mp3 folder or "" for none).
MTT_CLIPS = [
    (2, "http://magnatune.example/a/", "01", 30, 59, "f"),
    (6, "http://magnatune.example/a/", "01", 59, 88, "0"),
    (10, "http://magnatune.example/a/", "01", 0, 29, "c"),
    (14, "http://magnatune.example/b/", "02", 0, 29, ""),
    (20, "http://magnatune.example/c/", "03", 0, 29, "b"),
    (21, "http://magnatune.example/c/", "04", 0, 29, "d"),
    (22, "http://magnatune.example/c/", "05", 0, 29, "e"),
    (23, "http://magnatune.example/c/", "06", 0, 29, "a"),
    (24, "http://magnatune.example/c/", "07", 0, 29, "9"),
    (25, "http://magnatune.example/c/", "08", 0, 29, "a"),
    (35644, "http://magnatune.example/d/", "08", 117, 146, "6"),
]
MTT_CORRUPT_NEW = (25,)  # not in jukemir's list: processing must report it and go on
#: 50 common tags (each on 2 or more clips, 3 slots of 10 annotated clips), plus two rare ones placed among them in the header.
MTT_TAGS = [f"tag{k:02d}" for k in range(25)] + ["rare a"] + [f"tag{k:02d}" for k in range(25, 50)] + ["rare b"]


def mtt_tags(clip_id: int) -> list[str]:
    """The fixture's tags of an annotated clip, in header order (clip 20 has none)."""
    annotated = [c[0] for c in MTT_CLIPS if c[5]]
    if clip_id == 20:
        return []
    slot = annotated.index(clip_id)
    tags = {f"tag{k:02d}" for k in range(50) if slot in (k % 10, (k + 3) % 10, (k + 6) % 10)}
    tags |= {"rare a"} if clip_id == 2 else {"rare b"} if clip_id == 6 else set()
    return [t for t in MTT_TAGS if t in tags]


def _mtt_path(clip) -> str:
    clip_id, _, track, start, end, folder = clip
    return f"{folder}/artist_{clip_id}-album-{track}-title-{start}-{end}.mp3" if folder else ""


def write_magnatagatune(root: Path) -> dict:
    """clip_info_final.csv (quoted TSV), annotations_final.csv (TSV) and mp3.zip cut in 3 parts."""
    registry: dict = {}
    info, notes, mp3s = [], [], {}
    for i, clip in enumerate(MTT_CLIPS):
        clip_id, url, track, start, end, folder = clip
        path = _mtt_path(clip)
        info.append({"clip_id": clip_id, "track_number": track, "title": f"Title {clip_id}", "artist": "Artist",
                     "album": "Album", "url": url, "segmentStart": start, "segmentEnd": end,
                     "original_url": f"http://he3.example/{clip_id}.mp3" if path else "", "mp3_path": path})
        if path:
            tags = set(mtt_tags(clip_id))
            notes.append({"clip_id": clip_id, **{t: int(t in tags) for t in MTT_TAGS}, "mp3_path": path})
            corrupt = clip_id in MTT_CORRUPT_NEW or clip_id == 35644
            mp3s[path] = GARBAGE if corrupt else _audio_bytes(1.0, 16000, "mp3", seed=i)
    fields = ["clip_id", "track_number", "title", "artist", "album", "url", "segmentStart", "segmentEnd",
              "original_url", "mp3_path"]
    _write(root, "MAGNATAGATUNE_CLIP_METADATA", _table(info, fields, "\t", quote_all=True), registry)
    _write(root, "MAGNATAGATUNE_ANNOTATIONS", _table(notes, ["clip_id", *MTT_TAGS, "mp3_path"], "\t"), registry)
    archive = _zip(mp3s)
    third = len(archive) // 3
    for part, chunk in enumerate((archive[:third], archive[third:2 * third], archive[2 * third:]), 1):
        _write(root, f"MAGNATAGATUNE_MP3_{part:03d}", chunk, registry)
    return registry


# Emomusic: song_id, artist, title, start, end ("min.sec"), MediaEval set, mean arousal, mean valence, rate.
EMOMUSIC_SONGS = [
    (2, "The Band Alpha", "Song A", "0.48", "1.33", "development", 3.1, 3.0, 44100),
    (3, "The Band India", "Song B", "1.5", "2.35", "development", 5.0, 6.2, 44100),
    (5, "The Band  Lima!", "Song C", "0.15", "1.0", "development", 6.4, 4.1, 48000),
    (7, "The Band Bravo", "Song D", "0.30", "1.15", "development", 4.2, 5.5, 44100),
    (11, "The Band India", "Song E", "0.0", "0.45", "evaluation", 2.0, 2.5, 44100),
]


def write_emomusic(root: Path) -> dict:
    """annotations.tar.gz (six CSVs at its root) and clips_45sec.tar.gz (clips_45seconds/<id>.mp3)."""
    registry: dict = {}
    info_fields = ["song_id", "file_name", "Artist", "Song title", "start of the segment (min.sec)",
                   "end of the segment (min.sec)", "Genre", "Mediaeval 2013 set"]
    info = [dict(zip(info_fields, [s[0], f"{s[0]}.mp3", s[1], s[2], s[3], s[4], "Rock", s[5]])) for s in EMOMUSIC_SONGS]
    static = [{"song_id": s[0], "mean_arousal": f" {s[6]}", "std_arousal": "1.0", "mean_valence": s[7],
               "std_valence": "0.9"} for s in EMOMUSIC_SONGS]
    cont = [{"song_id": s[0], "sample_15000ms": 0.1 * i, "sample_15500ms": 0.2 * i} for i, s in enumerate(EMOMUSIC_SONGS)]
    members = {"songs_info.csv": _table(info, info_fields, ","),
               "static_annotations.csv": _table(static, list(static[0]), ",")}
    for stem in ("valence_cont_average", "valence_cont_std", "arousal_cont_average", "arousal_cont_std"):
        members[f"{stem}.csv"] = _table(cont, list(cont[0]), ",")
    _write(root, "EMOMUSIC_ANNOTATIONS", tar_gz(members), registry)
    clips = {f"clips_45seconds/{s[0]}.mp3": _audio_bytes(1.5, s[8], "mp3", channels=2, seed=s[0])
             for s in EMOMUSIC_SONGS}
    _write(root, "EMOMUSIC_CLIPS", tar_gz(clips), registry)
    return registry


# GiantSteps MTG-key (train/valid): id, beatport ARTIST, MANUAL KEY, confidence C, seconds of audio.
# Beatport order matters for the two-hop closure: 104 comes before 103.
GIANTSTEPS_TRAIN = [
    (101, "DJ Alpha", "D# minor", 2, 65.0),
    (102, "DJ Kilo", "A major", 2, 31.0),
    (104, "DJ Charlie, DJ Bravo", "C minor", 2, 31.0),
    (103, "DJ Bravo, DJ Kilo", "F# major", 2, 31.0),
    (106, "DJ Alpha", "G minor", 1, 31.0),
    (107, "DJ Alpha", "C minor / F# minor", 2, 31.0),
    (108, "DJ Delta", "E major", 2, 29.0),
]
# GiantSteps key (test): id, key, seconds.
GIANTSTEPS_TEST = [(201, "Bb minor", 95.0), (202, "E major", 40.0)]
GIANTSTEPS_RATE = 22050


def giantsteps_mp3(track: int) -> bytes:
    seconds = {t[0]: t[4] for t in GIANTSTEPS_TRAIN} | {t[0]: t[2] for t in GIANTSTEPS_TEST}
    return _audio_bytes(seconds[track], GIANTSTEPS_RATE, "mp3", seed=track)


def write_giantsteps_clips(root: Path) -> dict:
    """The two annotation archives (GitHub zips) and audio/<id>.LOFI.mp3, whose md5s they list."""
    registry: dict = {}
    for tag, (repo, commit, _) in GIANTSTEPS_ARCHIVES.items():
        top = f"{repo}-{commit}/"
        train = "MTG" in tag
        members = {}
        rows = GIANTSTEPS_TRAIN if train else [(t, "", k, 2, s) for t, k, s in GIANTSTEPS_TEST]
        for track, artist, key, confidence, _ in rows:
            mp3 = giantsteps_mp3(track)
            audio = root / "giantsteps_clips" / "audio" / f"{track}.LOFI.mp3"
            audio.parent.mkdir(parents=True, exist_ok=True)
            audio.write_bytes(mp3)
            members[f"{top}md5/{track:07d}.LOFI.md5"] = (hashlib.md5(mp3).hexdigest() + "\n").encode()
            members[f"{top}annotations/genre/{track}.LOFI.genre"] = b"techno\n"
            members[f"{top}annotations/giantsteps/{track}.LOFI.genre"] = b"tag\t0\ttechno\n"
            members[f"{top}annotations/giantsteps/{track}.LOFI.key"] = f"key\t0\t{key}\n".encode()
            if train:
                members[f"{top}annotations/key/{track}.LOFI.key"] = f"{key.lower()}\t{confidence}\t\n".encode()
            else:
                members[f"{top}annotations/key/{track}.LOFI.key"] = f"{key}\n".encode()
                members[f"{top}annotations/jams/{track}.LOFI.jams"] = json.dumps({"file_metadata": {"title": track}}).encode()
        if train:
            beatport = [{"ID": t, "ARTIST": a, "BP BPM": "128", "BP GENRE": "Techno", "BP KEY": k, "LABEL": "L",
                         "MIX": "Original Mix", "SONG TITLE": f"Song {t}"} for t, a, k, _, _ in GIANTSTEPS_TRAIN]
            members[f"{top}annotations/beatport_metadata.txt"] = _table(beatport, list(beatport[0]), "\t")
            notes = [{"ID": t, "MANUAL KEY": k, "C": c} for t, _, k, c, _ in GIANTSTEPS_TRAIN]
            members[f"{top}annotations/annotations.txt"] = _table(notes, ["ID", "MANUAL KEY", "C"], "\t")
        _write(root, tag, _zip(members), registry)
    return registry


WRITERS = {"gtzan_ff": write_gtzan_ff, "magnatagatune": write_magnatagatune, "emomusic": write_emomusic,
           "giantsteps_clips": write_giantsteps_clips}


def write_sources(root: Path, datasets=tuple(WRITERS)) -> Path:
    """Write the fixtures of `datasets` under `root` and their registry as `root/registry.json`."""
    registry: dict = {}
    for name in datasets:
        registry.update(WRITERS[name](root))
    path = root / "registry.json"
    path.write_text(json.dumps(registry, indent=2, sort_keys=True))
    return path
