"""What an output folder records: the manifest of settings, and a report per run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import resource
from pathlib import Path

import torch

from tunemir import __version__
from tunemir.audio import RESAMPLE_QUALITY
from tunemir.checkpoints import weights_sha256
from tunemir.fileio import NAME_MAX, atomic_path, create_exclusive, sha256_file
from tunemir.models import ModelSpec, default_weights_path, get_info

log = logging.getLogger(__name__)

MANIFEST_NAME = "tunemir-manifest.json"
#: Manifest entries that must agree before new vectors are added to an output folder.
SETTINGS_KEYS = ("model", "config", "weights_sha256", "layer", "dim", "sample_rate", "frame_length",
                 "framing", "random_init", "model_source")


class ManifestMismatchError(ValueError):
    """The output folder holds vectors made with other settings."""


def build_manifest(model: str, rep, spec: ModelSpec, checkpoint: Path | None, layer: int, dim: int,
                   random_init: bool, source: dict | None = None) -> dict:
    """Everything that determines the vectors, plus provenance (tunemir version, checkpoint file).

    The audio settings come from the model's declarations (`spec`). `source` is where a custom
    model's code came from (its file and sha256, or its entry point): a changed file is other
    settings. A folder written before `model_source` existed reads it as None, as for every
    registry model.
    """
    manifest = {
        "tunemir_version": __version__, "model": model, "layer": layer, "dim": dim,
        "sample_rate": spec.sample_rate, "frame_length": spec.frame_length, "framing": spec.framing,
        "resampler": f"soxr {RESAMPLE_QUALITY}", "random_init": random_init, "spec": spec.as_dict(),
        "checkpoint": None, "checkpoint_sha256": None, "weights_sha256": None, "model_source": source,
    }
    if source is not None:  # a custom model: its declarations are its configuration
        manifest.update(config=spec.as_dict(), weights_sha256=weights_sha256(rep.state_dict()))
    elif spec.framed:  # a neural encoder of the registry, with weights from a file or untrained
        path = checkpoint if checkpoint else (None if random_init else default_weights_path(model))
        manifest.update(
            config=json.loads(json.dumps(dataclasses.asdict(rep.config))),
            weights_sha256=weights_sha256(rep.state_dict()),
            checkpoint=str(path) if path else None,
            checkpoint_sha256=sha256_file(path) if path else None,
        )
    else:
        manifest["config"] = {"feature": rep.kind, "summary": get_info(model).summary}
    return manifest


def check_or_write_manifest(path: Path, manifest: dict) -> None:
    """Write the manifest into a new folder; in an existing one, refuse other settings.

    Shards starting together race to create it: the complete file is hard-linked into place,
    which fails if another got there first, so exactly one wins and the others check the
    winner's settings against their own.
    """
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if not path.exists() and create_exclusive(path, text.encode()):
        return
    check_manifest(path, manifest)


def check_manifest(path: Path, manifest: dict) -> None:
    """Raise ManifestMismatchError unless `path` is a manifest with the same settings as `manifest`."""
    existing = _read_manifest(path)
    differing = [k for k in SETTINGS_KEYS if existing.get(k) != manifest.get(k)]  # absent reads as None
    if differing:
        details = "; ".join(f"{k}: folder has {existing.get(k)!r}, this run {manifest.get(k)!r}" for k in differing)
        raise ManifestMismatchError(
            f"{path.parent} holds vectors made with other settings ({details}). "
            f"Use another output folder, or delete this one to start over"
        )
    if existing.get("tunemir_version") != __version__:
        log.warning("%s was written by tunemir %s; this is %s", path, existing.get("tunemir_version"), __version__)


def _read_manifest(path: Path) -> dict:
    fix = "move the folder aside (or delete it) and extract again"
    try:
        existing = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ManifestMismatchError(f"{path} is not a tunemir manifest (not text); {fix}") from None
    except ValueError as err:
        raise ManifestMismatchError(f"{path} is not valid JSON ({err}); {fix}") from None
    except OSError as err:
        raise ManifestMismatchError(f"{path} cannot be read ({err.strerror}); {fix}") from None
    if not isinstance(existing, dict) or "model" not in existing:
        raise ManifestMismatchError(
            f"{path} is not a tunemir manifest (a JSON {type(existing).__name__} without a model); {fix}")
    return existing


def write_run_report(output_dir: Path, batch_idx: int | None, report: dict) -> Path:
    """`tunemir-run-<shard>.json` beside the outputs: the run's numbers plus memory and versions."""
    report = {
        **report,
        "peak_host_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0,
        "versions": {"tunemir": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    path = output_dir / f"tunemir-run-{'all' if batch_idx is None else f'batch{batch_idx}'}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return path


#: Hidden folder of per-vector source records: `<SOURCES_DIR>/<vector's relative path>.json`.
#: One small file per vector, so shards running at once never write the same record.
SOURCES_DIR = ".tunemir-sources"


def source_stamp(source: Path) -> dict:
    """What a vector is computed from, cheaply: the audio file's size and modification time.

    A content digest would also catch a same-size rewrite that kept the old mtime, but checking
    it means reading every input again on each rerun (measured in the notes: 6.8 ms per 5 MB
    WAV, against 2 us for a stat). A `touch` re-extracts that one file, harmlessly.
    """
    info = source.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def record_path(output_dir: Path, target: Path) -> Path:
    """Where the source record of the vector `target` lives (its name cut to fit NAME_MAX)."""
    rel = target.relative_to(output_dir)
    name = f"{rel.name}.json"
    if len(os.fsencode(name)) > NAME_MAX:
        digest = hashlib.sha256(os.fsencode(rel.name)).hexdigest()[:16]
        name = f"{os.fsencode(rel.name)[:200].decode(errors='ignore')}~{digest}.json"
    return output_dir / SOURCES_DIR / rel.parent / name


def read_source_record(path: Path) -> dict | None:
    """A source record (see `write_source_record`), or None if there is no readable one."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_source_record(path: Path, rel: str, stamp: dict) -> None:
    """Record (after the vector is in place) which input, at which size and mtime, it came from."""
    with atomic_path(path, durable=False) as tmp:
        tmp.write_text(json.dumps({"source": rel, **stamp}) + "\n")
