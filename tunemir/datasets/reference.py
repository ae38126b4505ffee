"""jukemir's canonical metadata (shipped in the package, MIT) and the check of a build against it."""

from __future__ import annotations

import gzip
import json
import math
from importlib import resources
from pathlib import Path

from tunemir.datasets.sources import DatasetError

#: Counts of the canonical metadata: all uids, and uids with a split (i.e. with audio).
CANONICAL_COUNTS = {"gtzan_ff": (930, 930), "magnatagatune": (31382, 25860),
                    "giantsteps_clips": (7035, 7035), "emomusic": (744, 744)}


class MetadataMismatchError(DatasetError):
    """A built meta.json disagrees with the reference on uids, splits or labels."""


def packaged_reference(dataset: str) -> dict[str, dict]:
    """jukemir's `metadata/<dataset>.json.gz` as shipped with tunemir."""
    resource = resources.files("tunemir.datasets") / "metadata" / f"{dataset}.json.gz"
    if not resource.is_file():
        raise DatasetError(f"no canonical metadata for {dataset!r}; pass a reference file or skip the check")
    with resource.open("rb") as handle:
        return json.loads(gzip.decompress(handle.read()))


def read_reference(path: Path) -> dict[str, dict]:
    """A meta.json (or .json.gz) to check a build against: an object of uid -> entry."""
    fix = "Pass a meta.json(.gz) written by `tunemir data process`, or --no-reference to skip the check."
    try:
        data = Path(path).read_bytes()
        meta = json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    except (OSError, EOFError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
        raise DatasetError(f"reference metadata {path} is not readable JSON ({err}). {fix}") from None
    if not isinstance(meta, dict) or not all(isinstance(v, dict) for v in meta.values()):
        raise DatasetError(f"reference metadata {path}: expected a JSON object of uid -> {{split, y, ...}}. {fix}")
    return meta


def _same(a, b, tol: float = 1e-9) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=0, abs_tol=tol)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    return a == b


def compare(meta: dict[str, dict], reference: dict[str, dict]) -> dict[str, list]:
    """Differences in uids, splits and labels: `{"missing": [uid], "unexpected": [uid],
    "split": [[uid, built, reference]], "label": [[uid, built, reference]]}` (empty lists = equal).
    Labels compare exactly except floats (Emomusic's z-scores), which may differ by 1e-9."""
    missing = sorted(set(reference) - set(meta))
    unexpected = sorted(set(meta) - set(reference))
    split, label = [], []
    for uid in sorted(set(meta) & set(reference)):
        built, ref = meta[uid], reference[uid]
        if built.get("split") != ref.get("split"):
            split.append([uid, built.get("split"), ref.get("split")])
        if not _same(built.get("y"), ref.get("y")):
            label.append([uid, built.get("y"), ref.get("y")])
    return {"missing": missing, "unexpected": unexpected, "split": split, "label": label}


def check(dataset: str, meta: dict[str, dict], reference: dict[str, dict], report: Path) -> None:
    """Raise `MetadataMismatchError` when `meta` differs from `reference`; the full list of
    differing uids is written to `report`, the message names the first few of each kind."""
    diff = compare(meta, reference)
    if not any(diff.values()):
        report.unlink(missing_ok=True)
        return
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(diff, indent=1, sort_keys=True) + "\n")
    parts = []
    for kind, what in (("missing", "in the reference but not built"), ("unexpected", "built but not in the reference"),
                       ("split", "with another split"), ("label", "with another label")):
        if diff[kind]:
            first = [d if isinstance(d, str) else f"{d[0]} ({d[1]!r} vs {d[2]!r})" for d in diff[kind][:3]]
            parts.append(f"{len(diff[kind])} uid(s) {what} (e.g. {', '.join(first)})")
    raise MetadataMismatchError(
        f"{dataset}: the metadata built from the downloaded sources differs from jukemir's canonical "
        f"metadata: {'; '.join(parts)}. Full list: {report}. Nothing was decoded. Usual causes: a source "
        "re-hosted with files missing or renamed (check the archive), or an annotation file of another "
        "version. Pass --reference to check against another file, or --no-reference to accept the build.")
