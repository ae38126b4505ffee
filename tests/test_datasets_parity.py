"""The builders reproduce jukemir's canonical metadata from the real annotation tables.

The canonical files keep every source row in `extra` (MTT's clip_info rows and tags, Emomusic's
six CSV rows), so the real tables can be rebuilt from them and run through our builders; the
result must match the canonical uids, splits, labels and clip fields exactly. (GiantSteps is
not covered: its metadata drops the filtered songs that take part in the artist split.)
"""

import csv
import graphlib
import io
import tarfile
import zipfile

import pytest

from tunemir.datasets import compare, packaged_reference
from tunemir.datasets.builders import build_emomusic, build_magnatagatune
from tunemir.datasets.sources import Sources, dataset_assets


def _write_table(path, rows, fields, delimiter):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fields, delimiter=delimiter, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _sources(root, dataset):
    return Sources(dataset, root, {a.tag: a for a in dataset_assets(dataset)})


@pytest.mark.slow
def test_magnatagatune_tables_rebuild_the_canonical_metadata(tmp_path):
    canonical = packaged_reference("magnatagatune")
    src = _sources(tmp_path, "magnatagatune")
    info_fields = ["clip_id", "track_number", "title", "artist", "album", "url", "segmentStart", "segmentEnd",
                   "original_url", "mp3_path"]
    entries = sorted(canonical.values(), key=lambda e: int(e["extra"]["clip_id"]))
    _write_table(src.path("MAGNATAGATUNE_CLIP_METADATA"), [e["extra"] for e in entries], info_fields, "\t")
    # The 188 tag columns in an order consistent with every clip's y_all (which lists tags in column order).
    order = graphlib.TopologicalSorter()
    for e in entries:
        tags = e["y_all"] or []
        for a, b in zip(tags, tags[1:]):
            order.add(b, a)
        for t in tags:
            order.add(t)
    columns = list(order.static_order())
    assert len(columns) == 188
    rows = [{"clip_id": e["extra"]["clip_id"], **{t: int(t in set(e["y_all"])) for t in columns},
             "mp3_path": e["extra"]["mp3_path"]} for e in entries if e["y_all"] is not None]
    _write_table(src.path("MAGNATAGATUNE_ANNOTATIONS"), rows, ["clip_id", *columns, "mp3_path"], "\t")
    empty = io.BytesIO()
    zipfile.ZipFile(empty, "w").close()
    data = empty.getvalue()
    for i, part in enumerate((data[:8], data[8:16], data[16:]), 1):  # no audio: an empty zip cut in three
        src.path(f"MAGNATAGATUNE_MP3_{i:03d}").write_bytes(part)
    built = build_magnatagatune(src)
    assert compare(built.meta, canonical) == {"missing": [], "unexpected": [], "split": [], "label": []}
    for uid, entry in canonical.items():
        clip = {k: v for k, v in entry["clip"].items() if k != "clip_duration"}
        assert built.meta[uid]["clip"] == clip, uid
        assert built.meta[uid]["y_all"] == entry["y_all"]
    assert sorted(built.skipped) == ["35644", "55753", "57881"]
    assert len(built.jobs) == 25860


def test_emomusic_tables_rebuild_the_canonical_metadata(tmp_path):
    canonical = packaged_reference("emomusic")
    src = _sources(tmp_path, "emomusic")
    members = {}
    for stem in ("songs_info", "static_annotations", "valence_cont_average", "valence_cont_std",
                 "arousal_cont_average", "arousal_cont_std"):
        rows = [canonical[u]["extra"][stem] for u in sorted(canonical)]
        fields = list(rows[0])
        for row in rows:
            fields += [k for k in row if k not in fields]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        members[f"{stem}.csv"] = buffer.getvalue().encode()
    for tag, files in (("EMOMUSIC_ANNOTATIONS", members), ("EMOMUSIC_CLIPS", {"clips_45seconds/.keep": b""})):
        path = src.path(tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w:gz") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    built = build_emomusic(src)
    assert compare(built.meta, canonical) == {"missing": [], "unexpected": [], "split": [], "label": []}
    for uid, entry in canonical.items():
        assert built.meta[uid]["y"] == pytest.approx(entry["y"], abs=1e-12)
        clip = {k: v for k, v in entry["clip"].items() if k != "clip_duration"}
        assert built.meta[uid]["clip"] == clip, uid
    counts = {s: sum(e["split"] == s for e in built.meta.values()) for s in ("train", "valid", "test")}
    assert counts == {"train": 504, "valid": 115, "test": 125}
