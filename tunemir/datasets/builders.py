"""jukemir's metadata for each dataset, built from its downloaded sources (spec section 2.4).

Each builder returns the meta.json entries (`uid -> {split, y, extra, [clip], [y_all]}`) and
the decoding jobs: which source file yields which uid's audio, and where its clip starts.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import zipfile
from pathlib import Path, PurePath

import numpy as np

from tunemir.datasets.assets import GIANTSTEPS_ARCHIVES
from tunemir.datasets.mpeg import MpegError, mpeg_duration
from tunemir.datasets.sources import DatasetError, Sources, find_one, read_table, read_text, unpack

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
#: MTT clips whose MP3s are corrupt in the official archive; jukemir gives them no split.
MTT_CORRUPT = ("35644", "55753", "57881")
#: GiantSteps songs are cut into clips of this many seconds (jukemir's giantsteps_clips).
GIANTSTEPS_CLIP_S = 30.0
_FLATS = {"C#": "Db", "D#": "Eb", "F#": "Gb", "G#": "Ab", "A#": "Bb"}


@dataclasses.dataclass(frozen=True)
class Clip:
    """One output WAV: the uid, and the excerpt of its source (None = the whole file)."""

    uid: str
    offset: float | None = None
    duration: float | None = None


@dataclasses.dataclass(frozen=True)
class Job:
    """Decode `source` once and write each of its clips."""

    source: Path
    clips: tuple[Clip, ...]


@dataclasses.dataclass
class Built:
    meta: dict[str, dict]
    jobs: list[Job]
    #: uid -> why its audio is left out on purpose (known-corrupt sources).
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)


def _sha(text: str, algorithm: str) -> int | str:
    digest = hashlib.new(algorithm, text.encode("utf-8")).hexdigest()
    return digest if algorithm == "sha256" else int(digest, 16)


def build_gtzan_ff(src: Sources) -> Built:
    """GTZAN with the fault-filtered split of Kereliuk et al. 2015 (coreyker/dnn-mgr lists):
    uid = sha256 of the file stem (`blues.00000`), label = genre folder, unlisted files dropped."""
    src.require()
    did_split = {}
    for split in SPLITS:
        for line in read_text(src.path(f"GTZAN_{split.upper()}")).split():
            did = PurePath(line.strip()).stem
            if did in did_split:
                raise DatasetError(f"{did} is in both the {did_split[did]} and {split} lists of GTZAN")
            did_split[did] = split
    folder = unpack([src.path("GTZAN")], src.work / "genres")
    meta, jobs = {}, []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".au")):
        did = path.stem
        if did not in did_split:
            continue
        uid = _sha(did, "sha256")
        meta[uid] = {"split": did_split[did], "y": path.parent.name, "extra": {"id": did, "uid": uid}}
        jobs.append(Job(path, (Clip(uid),)))
    return Built(meta, jobs)


def build_magnatagatune(src: Sources) -> Built:
    """MagnaTagATune: uid = 5-digit clip id, split by the first character of the MP3 folder
    (0-9, a, b train; c valid; d-f test), labels = the clip's tags among the 50 most frequent
    over all clips, in annotation-column order. Clips without MP3 (and the 3 corrupt ones) get
    no split; clips without an annotation row get `y = null`."""
    src.require()
    rows = {}
    track_clips = collections.defaultdict(list)
    for row in read_table(src.path("MAGNATAGATUNE_CLIP_METADATA"), "\t",
                          columns=("clip_id", "url", "track_number", "mp3_path", "segmentStart", "segmentEnd")):
        uid = str(int(row["clip_id"])).zfill(5)
        rows[uid] = row
        track_clips[(row["url"].strip(), row["track_number"].strip())].append(uid)
    tags, counts = {}, collections.Counter()
    for row in read_table(src.path("MAGNATAGATUNE_ANNOTATIONS"), "\t", columns=("clip_id",)):
        uid = str(int(row["clip_id"])).zfill(5)
        tags[uid] = [k for k, v in row.items() if k not in ("clip_id", "mp3_path") and v == "1"]
        counts.update(tags[uid])
    # Stable sort: ties keep first-seen order, as jukemir's sorted(Counter.items()) does.
    top50 = {t for t, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:50]}
    mp3_dir = unpack([src.path(f"MAGNATAGATUNE_MP3_{i:03d}") for i in (1, 2, 3)], src.work / "mp3")
    meta, jobs, skipped = {}, [], {}
    for clips in track_clips.values():
        clips.sort(key=lambda u: int(rows[u]["segmentStart"]))
    for uid, row in rows.items():
        audio_uid = (row["url"].strip(), row["track_number"].strip())
        siblings = track_clips[audio_uid]
        mp3 = row["mp3_path"].strip()
        split = None
        if mp3 and uid not in MTT_CORRUPT:
            folder = mp3.split("/")[0]
            split = "train" if folder in "0123456789ab" else "valid" if folder == "c" else "test"
        elif mp3:
            skipped[uid] = f"known corrupt MP3 {mp3} (jukemir leaves it out)"
        clip_tags = tags.get(uid)
        meta[uid] = {
            "split": split,
            "clip": {"audio_uid": list(audio_uid), "clip_idx": siblings.index(uid),
                     "audio_duration": max(float(rows[u]["segmentEnd"]) for u in siblings),
                     "clip_offset": float(row["segmentStart"])},
            "y": None if clip_tags is None else [t for t in clip_tags if t in top50],
            "y_all": clip_tags,
            "extra": row,
        }
        if split is not None:
            jobs.append(Job(mp3_dir / mp3, (Clip(uid),)))
    return Built(meta, jobs, skipped)


def _minutes_seconds(text: str) -> float:
    """Emomusic's "min.sec" times: "1.5" is 1 min 50 s (one digit after the dot means tens)."""
    minutes, _, seconds = text.partition(".")
    return float(minutes) * 60 + (float(seconds.ljust(2, "0")) if seconds else 0.0)


def _artist_key(name: str) -> str:
    kept = "".join(c for c in name.lower() if ord(c) < 128 and (c.isalpha() or c.isspace()))
    return " ".join(kept.split())


_EMOMUSIC_COLUMNS = {
    "songs_info": ("song_id", "start of the segment (min.sec)", "end of the segment (min.sec)", "Mediaeval 2013 set",
                   "Artist", "Song title"),
    "static_annotations": ("song_id", "mean_arousal", "mean_valence"),
}


def build_emomusic(src: Sources) -> Built:
    """Emomusic (MediaEval 2013): uid = 4-digit song id; "evaluation" songs are test, the
    development songs split 80/20 by artist (sha1 of the normalised name mod 10); y =
    [arousal, valence] z-scored with the development songs' mean and population std."""
    src.require()
    notes = unpack([src.path("EMOMUSIC_ANNOTATIONS")], src.work / "annotations")
    meta = {}
    for stem in ("songs_info", "static_annotations", "valence_cont_average", "valence_cont_std",
                 "arousal_cont_average", "arousal_cont_std"):
        for row in read_table(find_one(notes, f"{stem}.csv"), columns=_EMOMUSIC_COLUMNS.get(stem, ("song_id",))):
            row = {k: (v or "").strip() for k, v in row.items()}
            uid = str(int(row["song_id"])).zfill(4)
            if stem == "songs_info":
                start = _minutes_seconds(row["start of the segment (min.sec)"])
                end = _minutes_seconds(row["end of the segment (min.sec)"])
                meta[uid] = {"split": "test" if row["Mediaeval 2013 set"] == "evaluation" else "train",
                             "clip": {"audio_uid": [row["Artist"], row["Song title"]], "audio_duration": end,
                                      "clip_idx": 0, "clip_offset": start},
                             "y": None, "extra": {}}
            elif uid not in meta:
                raise DatasetError(f"{stem}.csv: song_id {row['song_id']} is not in songs_info.csv")
            meta[uid]["extra"][stem] = row
            if stem == "static_annotations":
                meta[uid]["y"] = [float(row["mean_arousal"]), float(row["mean_valence"])]
    development = np.array([m["y"] for m in meta.values() if m["split"] == "train"])
    mean, std = development.mean(0), development.std(0)
    for entry in meta.values():
        entry["y"] = [(entry["y"][i] - mean[i]) / std[i] for i in range(2)]
        if entry["split"] == "train":
            artist = _artist_key(entry["extra"]["songs_info"]["Artist"])
            entry["split"] = "valid" if _sha(artist, "sha1") % 10 >= 8 else "train"
    clips = find_one(unpack([src.path("EMOMUSIC_CLIPS")], src.work / "clips"), "clips_45seconds")
    jobs = [Job(clips / f"{int(uid)}.mp3", (Clip(uid),)) for uid in meta]
    return Built(meta, jobs)


def _archive_files(path: Path) -> dict[str, bytes]:
    """Files of a GitHub archive zip keyed by their path below the top folder."""
    with zipfile.ZipFile(path) as archive:
        return {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()
                if "/" in name and not name.endswith("/")}


def _read(files: dict[str, bytes], folder: str, track: int, ext: str) -> str | None:
    for name in (f"{track}.LOFI.{ext}", f"{track:07d}.LOFI.{ext}"):
        if f"annotations/{folder}/{name}" in files:
            return files[f"annotations/{folder}/{name}"].decode("utf-8")
    return None


def _tracks(files: dict[str, bytes]) -> list[int]:
    return sorted(int(PurePath(n).name.split(".")[0]) for n in files if n.startswith("md5/") and n.endswith(".md5"))


def _artist_splits(beatport: list[dict[str, str]]) -> dict[str, str]:
    """jukemir's artist-level split of GiantSteps MTG-key: sha1(artist) mod 116 < 100 is train;
    then, twice, every collaborator of a valid artist becomes valid (a two-hop closure)."""
    split = {}
    for row in beatport:
        for artist in (a.strip() for a in row["ARTIST"].strip().split(",")):
            split[artist] = "train" if _sha(artist.lower(), "sha1") % 116 < 100 else "valid"
    for _ in range(2):
        for row in beatport:
            artists = [a.strip() for a in row["ARTIST"].strip().split(",")]
            if any(split[a] == "valid" for a in artists):
                split.update({a: "valid" for a in artists})
    return split


def build_giantsteps_clips(src: Sources, audio: dict[int, Path]) -> Built:
    """GiantSteps key in 30-second clips: train/valid from GiantSteps MTG-key (confidence 2,
    one key, sharps spelled as flats, artist split), test from GiantSteps key; clips start at
    0, 30, 60 ... s while a full 30 s remain (of the MPEG frame duration); uid `<7-digit id>-<k>`.
    `audio` maps track id to its MP3."""
    src.require()
    meta, jobs = {}, []
    for tag in GIANTSTEPS_ARCHIVES:
        files = _archive_files(src.path(tag))
        train = "MTG" in tag
        if train:
            beatport = read_table(files["annotations/beatport_metadata.txt"], "\t",
                                  f"{src.path(tag)}: annotations/beatport_metadata.txt", ("ID", "ARTIST"))
            beatport_by_id = {int(r["ID"]): r for r in beatport}
            artist_split = _artist_splits(beatport)
            notes = {int(r["ID"]): r for r in read_table(files["annotations/annotations.txt"], "\t",
                                                         f"{src.path(tag)}: annotations/annotations.txt",
                                                         ("ID", "MANUAL KEY", "C"))}
        for track in _tracks(files):
            extra = {"id": track}
            if train:
                extra["beatport_metadata"], extra["annotations"] = beatport_by_id[track], notes[track]
            for name, (folder, ext) in {"genre": ("genre", "genre"), "key": ("key", "key"),
                                        "giantsteps.genre": ("giantsteps", "genre"),
                                        "giantsteps.key": ("giantsteps", "key")}.items():
                extra[name] = _read(files, folder, track, ext)
            if train:
                key = extra["annotations"]["MANUAL KEY"]
                if int(extra["annotations"]["C"]) != 2 or "/" in key:
                    continue  # low confidence or several keys (Korzeniowski & Widmer 2018)
                artists = {artist_split[a.strip()] for a in extra["beatport_metadata"]["ARTIST"].strip().split(",")}
                if len(artists) != 1:
                    raise DatasetError(f"GiantSteps track {track}: its artists fall in different splits")
                split = artists.pop()
            else:
                jams = _read(files, "jams", track, "jams")
                extra["jams"] = json.loads(jams) if jams is not None else None
                if extra["key"] is None:
                    raise DatasetError(f"GiantSteps key track {track} has no annotations/key file")
                key, split = extra["key"], "test"
            tonic, mode = key.split()[:2]
            label = f"{_FLATS.get(tonic, tonic)} {mode}"
            if track not in audio:
                raise DatasetError(f"GiantSteps track {track} has no MP3; run `tunemir data download "
                                   "giantsteps_clips` to fetch it")
            try:
                duration = mpeg_duration(audio[track])
            except (MpegError, OSError) as err:
                raise DatasetError(f"{audio[track]}: {err}. Delete it and download again.") from None
            song = str(track).zfill(7)
            clips = []
            for k, offset in enumerate(np.arange(0, duration, GIANTSTEPS_CLIP_S)):
                if min(duration - offset, GIANTSTEPS_CLIP_S) < GIANTSTEPS_CLIP_S:
                    continue
                uid = f"{song}-{k}"
                meta[uid] = {"split": split, "y": label, "extra": extra,
                             "clip": {"audio_uid": song, "audio_duration": duration, "clip_idx": k,
                                      "clip_offset": float(offset)}}
                clips.append(Clip(uid, float(offset), GIANTSTEPS_CLIP_S))
            if clips:
                jobs.append(Job(audio[track], tuple(clips)))
    return Built(meta, jobs)
