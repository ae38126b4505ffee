"""What an output folder records: the manifest of settings, and a report per run."""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import resource
from pathlib import Path

import torch

from tunemir import __version__
from tunemir.audio import FRAME_LENGTH, RESAMPLE_QUALITY, SAMPLE_RATE
from tunemir.checkpoints import weights_sha256
from tunemir.fileio import atomic_path, sha256_file
from tunemir.models import Encoder, HandcraftedFeature, default_weights_path, get_info

log = logging.getLogger(__name__)

MANIFEST_NAME = "tunemir-manifest.json"
#: Manifest entries that must agree before new vectors are added to an output folder.
SETTINGS_KEYS = ("model", "config", "weights_sha256", "layer", "dim", "sample_rate", "frame_length",
                 "framing", "random_init")
FRAMING = "non-overlapping; incomplete tail dropped; shorter than one frame: zero-padded to one"


class ManifestMismatchError(ValueError):
    """The output folder holds vectors made with other settings."""


def build_manifest(model: str, rep: Encoder | HandcraftedFeature, checkpoint: Path | None, layer: int,
                   dim: int, random_init: bool) -> dict:
    """Everything that determines the vectors, plus provenance (tunemir version, checkpoint file)."""
    manifest = {
        "tunemir_version": __version__, "model": model, "layer": layer, "dim": dim,
        "sample_rate": SAMPLE_RATE, "frame_length": FRAME_LENGTH, "framing": FRAMING,
        "resampler": f"soxr {RESAMPLE_QUALITY}", "random_init": random_init,
        "checkpoint": None, "checkpoint_sha256": None, "weights_sha256": None,
    }
    if isinstance(rep, Encoder):
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
    """Write the manifest into a new folder; in an existing one, refuse other settings."""
    if not path.exists():
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ManifestMismatchError(f"{path} is unreadable ({err}); move the folder aside and start over") from None
    differing = [k for k in SETTINGS_KEYS if existing.get(k) != manifest[k]]
    if differing:
        details = "; ".join(f"{k}: folder has {existing.get(k)!r}, this run {manifest[k]!r}" for k in differing)
        raise ManifestMismatchError(
            f"{path.parent} holds vectors made with other settings ({details}). "
            f"Use another output folder, or delete this one to start over"
        )
    if existing.get("tunemir_version") != __version__:
        log.warning("%s was written by tunemir %s; this is %s", path, existing.get("tunemir_version"), __version__)


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
