"""Benchmark pretraining throughput: clips per second with the full CLMR augmentation chain,
batched on the training device versus the same chain in CPU DataLoader workers, in one run.

Each mode trains the real Lightning module (`tunemir.pretrain.module`) on a synthetic audio
cache (30 s clips at 22.05 kHz, like MagnaTagATune's) for --warmup + --steps optimizer steps
and times the last --steps (data loading, augmentation, forward, backward, Adam). The
`none` mode (no augmentations) is the ceiling the model alone allows. `--chain-repeats` also
times the augmentation chain alone on one step's views (2 x batch crops of 59,049 samples), in
full and with only the pitch shift or only the reverb on (as drawn, 60 % of views), and each one's share of a
device step; it uses only `CLMRAugment`'s public interface, so running this file with
PYTHONPATH pointing at an older checkout measures that checkout's chain the same way.

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

from tunemir.pretrain.augment import AugmentConfig, CLMRAugment
from tunemir.pretrain.config import load_config
from tunemir.pretrain.data import build_cache, folder_sources
from tunemir.pretrain.module import ContrastiveLearning, PretrainData
from tunemir.testing import synthetic_signal, write_audio


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


def measure_chain(args) -> list[dict]:
    """Milliseconds per step's views through the whole chain and through the pitch shift or reverb alone."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    views = 2 * args.batch_size
    x = torch.from_numpy(synthetic_signal(views * 59049 / 22050, 22050)[:views * 59049, 0]).view(views, 59049)
    x = x.to(device)
    augment = CLMRAugment(AugmentConfig())
    rows = []
    for part in ("chain", "pitch", "reverb"):
        times = []
        for repeat in range(1 + args.chain_repeats):  # the first is a warm-up
            gen = torch.Generator(device).manual_seed(repeat)
            params = augment.sample(views, device, gen)
            if part != "chain":  # only this transform on, as drawn
                params = {k: (torch.zeros_like(v) if k.startswith("apply_") and k != f"apply_{part}" else v)
                          for k, v in params.items()}
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            augment(x, gen, params)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        ms = 1e3 * sum(times[1:]) / args.chain_repeats
        print(f"  {part:6s}: {ms:8.1f} ms per step's {views} views alone ({device.type})")
        rows.append({"part": part, "ms_per_step": ms, "views": views, "repeats": args.chain_repeats})
    return rows


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
    parser.add_argument("--chain-repeats", type=int, default=5, help="timed runs of the chain alone (0: skip)")
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
        rows = [measure(mode, args, audio_dir, Path(tmp) / "cache") for mode in args.modes.split(",") if mode]
    rates = {row["mode"]: row["clips_per_s"] for row in rows}
    chain = measure_chain(args) if args.chain_repeats > 0 else []
    step_ms = {row["mode"]: 1e3 * row["seconds"] / row["steps"] for row in rows}
    for row in chain:
        if "device" in step_ms:
            row["share_of_device_step"] = row["ms_per_step"] / step_ms["device"]
            print(f"  {row['part']} alone / device step: {100 * row['share_of_device_step']:.0f} %")
    if "device" in rates and "cpu" in rates:
        print(f"device / cpu-worker augmentation: {rates['device'] / rates['cpu']:.2f}x")
    report = {"model": args.model, "batch_size": args.batch_size, "device": device, "workers": args.workers,
              "precision": args.precision, "torch": torch.__version__, "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d"), "rows": rows, "chain": chain}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
