"""Benchmark pretraining throughput: clips per second with the full CLMR augmentation chain,
batched on the training device versus the same chain in CPU DataLoader workers, in one run.

Each mode trains the real Lightning module (`tunemir.pretrain.module`) on a synthetic audio
cache (30 s clips at 22.05 kHz, like MagnaTagATune's) for --warmup + --steps optimizer steps
and times the last --steps (data loading, augmentation, forward, backward, Adam). The
`none` mode (no augmentations) is the ceiling the model alone allows.

    python benchmarks/pretrain.py                               # GPU: batch 48, as the paper
    python benchmarks/pretrain.py --batch-size 8 --steps 3      # a small CPU

Goal on a GPU: device augmentation >= 5x the CPU-worker pipeline and >= 900 clips/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from tunemir.pretrain.config import load_config
from tunemir.pretrain.data import build_cache, folder_sources
from tunemir.pretrain.module import ContrastiveLearning, PretrainData
from tunemir.testing import write_audio


class StepTimer(pl.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def measure(mode: str, args, audio_dir: Path, cache_dir: Path) -> dict:
    config = load_config(overrides={
        "model": args.model, "audio_dir": str(audio_dir), "audio_cache_dir": str(cache_dir),
        "batch_size": args.batch_size, "augment_on": mode, "num_workers": args.workers,
        "precision": args.precision, "accelerator": "auto",
    })
    pl.seed_everything(0, verbose=False)
    timer = StepTimer(args.warmup)
    trainer = pl.Trainer(max_steps=args.warmup + args.steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         callbacks=[timer], precision=args.precision, devices=1)
    trainer.fit(ContrastiveLearning(config.to_dict()), datamodule=PretrainData(config))
    seconds = timer.end - timer.start
    rate = args.steps * args.batch_size / seconds
    print(f"  {mode:6s}: {rate:8.2f} clips/s ({1e3 * seconds / args.steps:.0f} ms per step of {args.batch_size} clips)")
    return {"mode": mode, "clips_per_s": rate, "seconds": seconds, "steps": args.steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tune_plus")
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clips", type=int, default=None, help="synthetic 30 s clips [default: 2 batches' worth]")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader workers in every mode")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--modes", default="device,cpu,none")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "pretrain.json")
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        audio_dir = Path(tmp) / "audio"
        for i in range(args.clips or 2 * args.batch_size):
            write_audio(audio_dir / f"{i:04d}.wav", 30.0, 22050, seed=i)
        build_cache(folder_sources(audio_dir), Path(tmp) / "cache", "bench", progress=False)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
        print(f"{args.model}, batch {args.batch_size} clips ({2 * args.batch_size} views), {device}, "
              f"{args.workers} workers, {args.precision}")
        rows = [measure(mode, args, audio_dir, Path(tmp) / "cache") for mode in args.modes.split(",")]
    rates = {row["mode"]: row["clips_per_s"] for row in rows}
    if "device" in rates and "cpu" in rates:
        print(f"device / cpu-worker augmentation: {rates['device'] / rates['cpu']:.2f}x")
    report = {"model": args.model, "batch_size": args.batch_size, "device": device, "workers": args.workers,
              "precision": args.precision, "torch": torch.__version__, "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d"), "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
