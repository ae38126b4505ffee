"""The checks .ci/images.sh makes of what the containers wrote, against native tunemir.

    python .ci/images_check.py inputs DIR            the mixed input folder (formats, rates, a corrupt file)
    python .ci/images_check.py weights DIR           tiny checkpoints named and laid out as the releases
    python .ci/images_check.py musicnn-folder DIR PINS  a random MSD_musicnn_big in DIR, its sha256 pins in PINS
    python .ci/images_check.py same NATIVE IMAGE --uid U [--skipped N] [--subset]
    python .ci/images_check.py results A B           B's reproduce/results are A's (some of them)

`same` exits 1 with the difference when the image's outputs are not the native ones: every
vector equal within 1e-5 and finite, the same failed files for the same reasons (the container
names them under /input), outputs owned by uid U and readable by every user, and (with
--skipped) a last run that found N files done and wrote none. With --subset NATIVE holds some of
IMAGE's files (one shard), and only their vectors are compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np

BOOKKEEPING = (".tunemir-sources", "tunemir-")  # source records, manifest, run reports


def write_inputs(folder: Path) -> None:
    from tunemir.testing import write_audio

    write_audio(folder / "a.wav", 3.0, seed=1)
    write_audio(folder / "b.flac", 4.0, sample_rate=44100, channels=2, seed=2)
    write_audio(folder / "sub" / "c.ogg", 2.5, sample_rate=48000, seed=3)
    write_audio(folder / "d.wave", 2.0, sample_rate=16000, seed=4)
    write_audio(folder / "e.oga", 2.0, sample_rate=32000, channels=2, seed=5)
    write_audio(folder / "f.mp3", 3.0, sample_rate=44100, seed=6)
    write_audio(folder / "g.wav", 1.0, sample_rate=8000, subtype="pcm24", seed=7)  # shorter than a frame
    (folder / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")  # a truncated header
    (folder / "notes.txt").write_text("not audio\n")


def write_weights(folder: Path) -> None:
    """One tiny release per model in `folder`, and the checkpoint in it (CLMR's is inside a zip)
    in `folder`/native; prints `MODEL FILE SHA256 CHECKPOINT` lines for the shell."""
    import zipfile

    from tunemir.testing import write_released_weights
    from tunemir.weights import release

    for seed, model in enumerate(("tune", "tune_plus", "clmr")):
        path, _ = write_released_weights(folder, model, seed=seed)
        checkpoint = folder / "native" / path.name
        checkpoint.parent.mkdir(exist_ok=True)
        member = release(model).member
        if member is None:
            checkpoint.write_bytes(path.read_bytes())
        else:
            with zipfile.ZipFile(path) as archive:
                checkpoint = checkpoint.with_name(Path(member).name)
                checkpoint.write_bytes(archive.read(member))
        print(model, path.name, hashlib.sha256(path.read_bytes()).hexdigest(), checkpoint)


def write_musicnn_folder(folder: Path, pins: Path) -> None:
    """musicnn's release is a folder of TF checkpoint files (MSD_musicnn_big), pinned by git blob
    ids that random weights cannot match: write one of random weights, and a pin file with their
    sha256 (the image builds with --build-arg PIN_FILE)."""
    from tunemir.models import MUSICNN_BIG_FILES
    from tunemir.testing import write_musicnn_folder as write

    if folder.exists():
        raise SystemExit(f"images_check: {folder} exists (a real MSD_musicnn_big?); CI writes test weights only "
                         f"into a fresh clone")
    write(folder, seed=5)
    pins.write_text("".join(f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n"
                            for name, _ in MUSICNN_BIG_FILES))


def vectors(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*.npy"))
            if not any(part.startswith(BOOKKEEPING) for part in p.relative_to(folder).parts)}


def run_reports(folder: Path) -> list[dict]:
    """The run reports of `folder` (one per shard), oldest first."""
    reports = sorted(folder.glob("tunemir-run-*.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        raise SystemExit(f"{folder}: no run report (tunemir-run-*.json)")
    return [json.loads(p.read_text()) for p in reports]


def failures(folder: Path) -> list[tuple[str, str]]:
    """(file, why) of each failed file in the run reports (one per shard, rewritten by a rerun);
    the reason's leading path (the input folder as the process saw it: /input in a container) is
    left out."""
    return sorted({(item["file"], item["reason"].split(": ", 1)[-1])
                   for report in run_reports(folder) for item in report["files"]["failed"]})


def same(native: Path, image: Path, uid: int, skipped: int | None, subset: bool) -> list[str]:
    problems = []
    want, got = vectors(native), vectors(image)
    if subset:
        got = {k: v for k, v in got.items() if k in want}
    if not want or sorted(want) != sorted(got):
        problems.append(f"files differ: native {sorted(want)}, image {sorted(got)}")
    for name in sorted(set(want) & set(got)):
        x, y = np.load(want[name]), np.load(got[name])
        if x.shape != y.shape or not np.isfinite(y).all() or not np.allclose(x, y, rtol=1e-5, atol=1e-5):
            problems.append(f"{name}: image vector differs (max |diff| "
                            f"{np.abs(x - y).max() if x.shape == y.shape else 'shape'})")
    for path in [*got.values(), *image.glob("tunemir-*.json")]:
        st = path.stat()
        if st.st_uid != uid or st.st_mode & 0o444 != 0o444:
            problems.append(f"{path}: owner {st.st_uid} mode {oct(st.st_mode & 0o777)}; want uid {uid}, readable by all")
    if not subset and (not failures(native) or failures(native) != failures(image)):
        problems.append(f"failed files differ: native {failures(native)}, image {failures(image)}")
    last = run_reports(image)[-1]["files"]
    if skipped is not None and (last["skipped"], last["written"]) != (skipped, 0):
        problems.append(f"the rerun found {last['skipped']} files done, not {skipped}, and wrote {last['written']}")
    return problems


def results(a: Path, b: Path) -> list[str]:
    problems = []
    names = sorted(p.name for p in b.glob("*.json"))
    if not names or not set(names) <= {p.name for p in a.glob("*.json")}:
        return [f"the results in {b} ({names}) are not some of those in {a}"]
    for name in names:
        x, y = json.loads((a / name).read_text()), json.loads((b / name).read_text())
        for key, value in x["metrics"].items():
            other = y["metrics"].get(key)
            if not (isinstance(value, float) and math.isfinite(value)) or other is None \
                    or not math.isclose(value, other, rel_tol=1e-6, abs_tol=1e-6):
                problems.append(f"{name} {key}: {value} / {other}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("inputs").add_argument("folder", type=Path)
    sub.add_parser("weights").add_argument("folder", type=Path)
    p = sub.add_parser("musicnn-folder")
    p.add_argument("folder", type=Path)
    p.add_argument("pins", type=Path)
    p = sub.add_parser("same")
    p.add_argument("native", type=Path)
    p.add_argument("image", type=Path)
    p.add_argument("--uid", type=int, required=True)
    p.add_argument("--skipped", type=int)
    p.add_argument("--subset", action="store_true")
    p = sub.add_parser("results")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "inputs":
        write_inputs(args.folder)
        return
    if args.command == "weights":
        write_weights(args.folder)
        return
    if args.command == "musicnn-folder":
        write_musicnn_folder(args.folder, args.pins)
        return
    if args.command == "same":
        problems = same(args.native, args.image, args.uid, args.skipped, args.subset)
        what = f"{args.image} == {args.native}"
    else:
        problems = results(args.a, args.b)
        what = f"{args.b} == {args.a}"
    for problem in problems:
        print(f"images_check: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(f"images_check: FAILED {what}")
    print(f"images_check: ok {what}")


if __name__ == "__main__":
    main()
