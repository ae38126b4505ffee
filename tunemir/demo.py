"""`tunemir demo`: the extraction job end to end on a small synthetic dataset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tunemir.extract import extract
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
PRETRAIN_CLIPS, PRETRAIN_EPOCHS = 12, 6


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
    labelled), since no weights can be downloaded here.
    """
    audio_dir = output_dir / "audio"
    write_demo_audio(audio_dir)
    rows = []
    for name in DEMO_MODELS:
        info = get_info(name)
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


def run_pretrain_demo(output_dir: Path) -> dict:
    """Contrastive pretraining end to end on synthetic clips: a small TUNe+ (2 base channels)
    for a few epochs with the full augmentation chain, then extraction of the demo audio with
    its checkpoint. Returns the run folder, the first and last epoch's loss and the vectors."""
    import json

    from tunemir.pretrain.config import load_config
    from tunemir.pretrain.module import read_loss, train

    audio_dir, train_dir = output_dir / "audio", output_dir / "pretrain-audio"
    write_demo_audio(audio_dir)
    for i in range(PRETRAIN_CLIPS):
        if not (train_dir / f"clip{i:02d}.wav").exists():
            write_audio(train_dir / f"clip{i:02d}.wav", 6.0, 22050, seed=100 + i)
    config = load_config(overrides={
        "model": "tune_plus", "encoder_config": json.dumps({"channels": 2, "out_channels": 16}),
        "audio_dir": str(train_dir), "audio_cache_dir": str(output_dir / "audio-cache"),
        "output_dir": str(output_dir / "pretrain"), "name": "tune_plus-small", "batch_size": 4,
        "max_epochs": PRETRAIN_EPOCHS, "checkpoint_every_n_epochs": 2, "learning_rate": 1e-3, "num_workers": 0, "log_every_n_steps": 1,
    })
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # device banners and tips
    folder = train(config, resume="last" if (output_dir / "pretrain" / "tune_plus-small" / "checkpoints"
                                              / "last.ckpt").is_file() else None, progress=False)
    _, _, _, epoch_loss = read_loss(folder / "csv")
    vectors = output_dir / "vectors" / "tune_plus-small-pretrained"
    extract("tune_plus", audio_dir, vectors, checkpoint=folder / "checkpoints" / "last.ckpt", progress=False)
    return {"run": folder, "first_loss": epoch_loss[0], "last_loss": epoch_loss[-1], "vectors": vectors}


def run_probe_demo(output_dir: Path) -> dict:
    """The probe job end to end on synthetic features: smoke grid on a GTZAN-shaped dataset and
    an Emomusic-shaped one, best-on-valid selection, report. Returns the report's paths."""
    from tunemir.probe import BUILTIN_TASKS, ProbeDirs, select_best, train_pending, write_grid
    from tunemir.probe.report import build_report
    from tunemir.testing import write_probe_dataset

    root = output_dir / "probe-cache"
    dirs = ProbeDirs(root / "processed", root / "representations", root / "probes")
    sizes = {"train": 300, "valid": 100, "test": 100}
    for dataset in ("gtzan_ff", "emomusic"):
        if not (dirs.dataset(dataset) / "meta.json").exists():
            write_probe_dataset(root, dataset, "synthetic", BUILTIN_TASKS[dataset], sizes, dim=32, seed=1)
        write_grid(dataset, "synthetic", dirs, "smoke")
        summary = train_pending(dataset, "synthetic", dirs, device="auto", progress=False)
        best = select_best(dataset, "synthetic", dirs, split="test")
        log.info("%s: %d configs trained (%d already), best on valid %s, test %s %.3f", dataset,
                 len(summary.trained), summary.skipped, best["uid"][:10], BUILTIN_TASKS[dataset].primary,
                 best["metrics"]["primary"])
    return build_report(dirs, output_dir / "probe-report")
