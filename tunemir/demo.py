"""`tunemir demo`: a tour of extraction, every model on a folder of mixed audio formats. (`make demo`
runs the whole pipeline, `reproduce/demo.sh`.)"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tunemir.extract import extract
from tunemir.extras import missing
from tunemir.models import default_weights_path, get_info
from tunemir.testing import write_audio

log = logging.getLogger(__name__)

#: (relative path, seconds, sample rate, channels, subtype): formats a real corpus mixes.
DEMO_FILES = [
    ("rock/riff_44k_stereo.wav", 12.0, 44100, 2, "pcm16"),
    ("rock/solo_48k.flac", 9.0, 48000, 2, "pcm24"),
    ("jazz/ballad_32k.ogg", 10.0, 32000, 2, "pcm16"),
    ("jazz/standard.mp3", 8.0, 44100, 2, "pcm16"),
    ("ambient/drone_16k_float.wav", 14.0, 16000, 1, "float"),
    ("ambient/blip_short.wav", 1.5, 22050, 1, "pcm16"),
]
DEMO_MODELS = ("tune", "tune_plus", "clmr", "chroma", "mfcc")


def write_demo_audio(folder: Path) -> list[Path]:
    """Write the synthetic demo dataset (skipping files already there)."""
    paths = []
    for seed, (rel, seconds, rate, channels, subtype) in enumerate(DEMO_FILES):
        path = folder / rel
        if not path.exists():
            write_audio(path, seconds, rate, channels, subtype, seed=seed)
        paths.append(path)
    return paths


def run_demo(output_dir: Path, workers: int | None = None) -> list[dict]:
    """Extract every demo model's vectors under `output_dir`; one summary row per model.

    Models with baked-in weights use them; the others run with untrained weights (clearly
    labelled), since no weights can be downloaded here. Without the `handcrafted` extra the
    chroma and mfcc baselines are left out, with a warning saying how to install them.
    """
    audio_dir = output_dir / "audio"
    write_demo_audio(audio_dir)
    rows = []
    for name in DEMO_MODELS:
        info = get_info(name)
        if not info.needs_weights and missing("handcrafted"):
            log.warning("skipping %s: it needs librosa, pip install 'tunemir[handcrafted]'", name)
            continue
        untrained = info.needs_weights and not default_weights_path(name).is_file()
        out = output_dir / "vectors" / (f"{name}-untrained" if untrained else name)
        summary = extract(name, audio_dir, out, random_init=untrained, workers=workers, progress=False)
        vectors = np.stack([np.load(p) for p in sorted(out.rglob("*.npy"))])
        rows.append({
            "model": name, "weights": "untrained (--random-init)" if untrained else "released" if info.needs_weights else "none needed",
            "files": summary.written + summary.skipped, "failed": len(summary.failed), "dim": vectors.shape[1],
            "audio_s_per_s": summary.audio_seconds / max(summary.elapsed_s, 1e-9), "folder": str(out),
        })
    return rows
