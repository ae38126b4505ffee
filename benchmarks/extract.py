"""Benchmark `tunemir extract` against a straightforward per-file loop and the model alone.

Writes N synthetic 30-second 44.1 kHz stereo WAVs, then measures audio-seconds per second for
  loop     : per file, load -> mean -> soxr resample -> frame -> encode -> save (model loaded
             once and run as the upstream code defines it)
  extract  : tunemir.extract.extract (decode workers, cross-file frame batches)
  model    : the encoder as extract runs it (InferenceEncoder) alone on pre-decoded frames of
             the same files, batched like extract
Passes alternate (loop, extract, loop, extract, ...) so machine noise hits both; the best pass
of each is reported with all passes in the JSON.

    python benchmarks/extract.py --files 8 --model tune_plus --device auto
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from tunemir.audio import SAMPLE_RATE, frame_signal, load_mono
from tunemir.extract import default_frames_per_batch, extract, resolve_device
from tunemir.models import load_model
from tunemir.models.base import InferenceEncoder
from tunemir.testing import write_audio


def per_file_loop(model, files: list[Path], out: Path, device: torch.device) -> float:
    """The straightforward loop the research code uses; returns audio seconds processed."""
    seconds = 0.0
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = soxr.resample(audio.mean(axis=1), rate, SAMPLE_RATE, quality="HQ")
        frames = frame_signal(mono)
        with torch.inference_mode():
            reps = model(torch.from_numpy(frames).to(device).unsqueeze(1))
        np.save(out / f"{path.stem}.npy", reps.mean(dim=0).cpu().numpy())
        seconds += len(audio) / rate
    return seconds


def model_only(model, frames: torch.Tensor, batch: int, device: torch.device) -> float:
    """Seconds the encoder takes over all pre-decoded frames (already on the device)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    tick = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(frames), batch):
            model(frames[start : start + batch].unsqueeze(1))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--model", default="tune_plus")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--frames-per-batch", type=int, default=None)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/extract.json"))
    args = parser.parse_args()

    device = resolve_device(args.device)
    model = load_model(args.model, random_init=True).to(device)
    batch = args.frames_per_batch or default_frames_per_batch(device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = [write_audio(tmp / "in" / f"{i:03d}.wav", args.seconds, 44100, 2, seed=i) for i in range(args.files)]
        total_audio = sum(sf.info(f).duration for f in files)
        frames = torch.from_numpy(np.concatenate([frame_signal(load_mono(f)) for f in files])).to(device)
        fused = InferenceEncoder(model)
        model_only(fused, frames[:batch], batch, device)  # warm-up: allocator, kernels, threads

        passes = {"loop": [], "extract": [], "model": []}
        for index in range(args.passes):
            tick = time.perf_counter()
            per_file_loop(model, files, tmp / f"loop{index}", device)
            passes["loop"].append(total_audio / (time.perf_counter() - tick))
            tick = time.perf_counter()
            summary = extract(args.model, tmp / "in", tmp / f"extract{index}", random_init=True, device=args.device,
                              workers=args.workers, frames_per_batch=args.frames_per_batch, progress=False)
            assert summary.ok and summary.written == len(files)
            passes["extract"].append(total_audio / (time.perf_counter() - tick))
            passes["model"].append(total_audio / model_only(fused, frames, batch, device))

    best = {name: max(rates) for name, rates in passes.items()}
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "model": args.model, "files": args.files, "seconds_per_file": args.seconds,
        "frames": len(frames), "frames_per_batch": batch, "workers": args.workers,
        "audio_seconds_per_s": passes, "best": best,
        "extract_over_loop": best["extract"] / best["loop"],
        "extract_over_model_only": best["extract"] / best["model"],
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':10s}{'audio-s/s (best)':>18s}   passes")
    for name in ("loop", "extract", "model"):
        print(f"{name:10s}{best[name]:18.1f}   {', '.join(f'{r:.1f}' for r in passes[name])}")
    print(f"extract / loop = {result['extract_over_loop']:.2f}x; "
          f"extract / model-only = {result['extract_over_model_only']:.0%}  ({result['device']}, {frames.shape[0]} frames)")


if __name__ == "__main__":
    main()
