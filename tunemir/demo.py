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
PRETRAIN_EPOCHS = 6
#: Size of the demo's synthetic corpus (`tunemir data synth`): 70 % of it is the train split.
SYNTH_CLIPS, SYNTH_SECONDS = 120, 6.0


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


def demo_corpus(output_dir: Path) -> Path:
    """The synthetic corpus of the demo (`tunemir data synth`, small); returns its processed root."""
    from tunemir.datasets.synth import write_synth

    processed = output_dir / "cache" / "processed"
    write_synth(processed, clips=SYNTH_CLIPS, seconds=SYNTH_SECONDS)
    return processed


def run_pretrain_demo(output_dir: Path) -> dict:
    """Contrastive pretraining end to end on the synthetic corpus's train split: a small TUNe+
    (2 base channels) for a few epochs with the full augmentation chain, then extraction of the
    demo audio with its checkpoint. Returns the run folder, the first and last epoch's loss,
    the vectors and the checkpoint."""
    import json

    from tunemir.pretrain.config import load_config
    from tunemir.pretrain.module import read_loss, train

    audio_dir = output_dir / "audio"
    write_demo_audio(audio_dir)
    processed = demo_corpus(output_dir)
    config = load_config(overrides={
        "model": "tune_plus", "encoder_config": json.dumps({"channels": 2, "out_channels": 16}),
        "dataset": "synth", "split": "train", "datasets_dir": str(processed),
        "audio_cache_dir": str(output_dir / "cache" / "audio-cache"),
        "output_dir": str(output_dir / "pretrain"), "name": "tune_plus-small", "batch_size": 8,
        "max_epochs": PRETRAIN_EPOCHS, "checkpoint_every_n_epochs": 2, "learning_rate": 1e-3, "num_workers": 0,
        "log_every_n_steps": 1,
    })
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # device banners and tips
    folder = train(config, resume="last" if (output_dir / "pretrain" / "tune_plus-small" / "checkpoints"
                                              / "last.ckpt").is_file() else None, progress=False)
    _, _, _, epoch_loss = read_loss(folder / "csv")
    vectors = output_dir / "vectors" / "tune_plus-small-pretrained"
    checkpoint = folder / "checkpoints" / "last.ckpt"
    extract("tune_plus", audio_dir, vectors, checkpoint=checkpoint, progress=False)
    return {"run": folder, "first_loss": epoch_loss[0], "last_loss": epoch_loss[-1], "vectors": vectors,
            "checkpoint": checkpoint}


def run_probe_demo(output_dir: Path, checkpoint: Path | None = None) -> dict:
    """The probe job end to end on the synthetic corpus: extract chroma (and, given the pretraining
    demo's checkpoint, the small TUNe+) from its audio, train the smoke grid of its three tasks
    (key, instrument tags, tempo), pick the best config on valid and write the report."""
    from tunemir.probe import ProbeDirs, load_task, select_best, train_pending, write_grid
    from tunemir.probe.report import build_report

    processed = demo_corpus(output_dir)
    cache = processed.parent
    dirs = ProbeDirs(processed, cache / "representations", cache / "probes")
    representations = {"chroma": {}}
    if checkpoint is not None:
        representations["tune_plus-small"] = {"checkpoint": checkpoint}
    for rep, options in representations.items():
        extract("tune_plus" if options else rep, processed / "synth" / "wav", dirs.features("synth", rep),
                progress=False, **options)
        for task in ("synth_key", "synth_tags", "synth_tempo"):
            write_grid(task, rep, dirs, "smoke")
            summary = train_pending(task, rep, dirs, device="auto", progress=False)
            best = select_best(task, rep, dirs, split="test")
            log.info("%s/%s: %d configs trained (%d already), best on valid %s, test %s %.3f", task, rep,
                     len(summary.trained), summary.skipped, best["uid"][:10],
                     load_task(task, dirs.dataset(task)).primary, best["metrics"]["primary"])
    return build_report(dirs, output_dir / "probe-report")
