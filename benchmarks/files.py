"""The costs behind issue 13's file choices: how to know an input changed, what fsync costs, how
fast checkpoints are read without torch's unpickler.

  source check : os.stat (size + mtime, what extraction records) against sha256 of the file, on a
                 30 s MP3 (MagnaTagATune-like) and a 30 s 44.1 kHz stereo WAV, page cache warm
  vector write : one 512-float .npy through fileio.atomic_path, durable (fsync file and folder)
                 or not (what extraction uses for vectors; manifests and checkpoints are durable)
  checkpoint   : a full-size TUNe+ Lightning checkpoint read by tunemir.safe_pickle against
                 torch.load(weights_only=True), which can read this plain layout too

    python benchmarks/files.py --repeats 20 --output benchmarks/results/files.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tunemir import safe_pickle
from tunemir.fileio import atomic_path
from tunemir.models import build_model
from tunemir.testing import write_audio


def timed(fn, repeats: int) -> dict:
    """min / median / max seconds of `repeats` calls (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"min_s": min(times), "median_s": statistics.median(times), "max_s": max(times)}


def sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_vector(path: Path, vector: np.ndarray, durable: bool) -> None:
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, vector)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    results: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                                 "cpus": os.cpu_count(), "platform": platform.platform()}}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:  # the disk the user's data is on, not a tmpfs
        tmp = Path(tmp)
        for suffix, channels in ((".mp3", 2), (".wav", 2)):
            audio = write_audio(tmp / f"clip{suffix}", 30.0, 44100, channels)
            results[f"source_check{suffix}"] = {
                "bytes": audio.stat().st_size,
                "stat": timed(lambda: audio.stat(), args.repeats),
                "sha256": timed(lambda: sha256(audio), args.repeats),
            }
        vector = np.random.default_rng(0).standard_normal(512).astype(np.float32)
        results["vector_write"] = {
            name: timed(lambda: write_vector(tmp / "v.npy", vector, durable), args.repeats)
            for name, durable in (("durable", True), ("not_durable", False))
        }
        model = build_model("tune_plus")
        ckpt = tmp / "tune_plus.ckpt"
        torch.save({"pytorch-lightning_version": "2.6.0", "epoch": 1, "global_step": 2,
                    "state_dict": {f"model.encoder.{k}": v for k, v in model.state_dict().items()},
                    "hyper_parameters": {"model": "tune_plus"}}, ckpt)
        results["checkpoint_read"] = {
            "bytes": ckpt.stat().st_size,
            "safe_pickle": timed(lambda: safe_pickle.load(ckpt), args.repeats),
            "torch_weights_only": timed(lambda: torch.load(ckpt, map_location="cpu", weights_only=True),
                                        args.repeats),
        }
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
