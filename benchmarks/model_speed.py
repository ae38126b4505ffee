"""Encoder speed per frame by batch size: the encoder as defined upstream vs its InferenceEncoder
twin (BatchNorm folded, channels-last 2-D layers).

Backs the defaults of `tunemir extract` (frames per batch, InferenceEncoder):

    python benchmarks/model_speed.py --model tune_plus --device cpu
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tunemir.extract import resolve_device
from tunemir.models import load_model
from tunemir.models.base import InferenceEncoder


def ms_per_frame(model, frames: torch.Tensor, batch: int, device: torch.device, repeats: int) -> float:
    """Best of `repeats` passes over all frames, in milliseconds per frame."""
    best = float("inf")
    with torch.inference_mode():
        model(frames[:batch])
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            tick = time.perf_counter()
            for start in range(0, len(frames), batch):
                model(frames[start : start + batch])
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - tick)
    return best / len(frames) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tune_plus")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/model_speed.json"))
    args = parser.parse_args()

    device = resolve_device(args.device)
    model = load_model(args.model, random_init=True).to(device)
    variants = {"encoder": model, "InferenceEncoder": InferenceEncoder(model)}
    frames = torch.randn(args.frames, 1, 59049, device=device)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        row = {"batch": batch}
        for name, variant in variants.items():
            row[name] = ms_per_frame(variant, frames, batch, device, args.repeats)
        rows.append(row)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": args.model, "device": str(device), "rows": rows}, indent=2) + "\n")
    print(f"{args.model} on {device}, ms per frame (best of {args.repeats})")
    print(f"{'batch':>5s} " + " ".join(f"{name:>14s}" for name in variants))
    for row in rows:
        print(f"{row['batch']:5d} " + " ".join(f"{row[name]:14.2f}" for name in variants))


if __name__ == "__main__":
    main()
