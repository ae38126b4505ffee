"""Every layer of a model: `tunemir extract --layers all` (one decoding and one encoder pass per
file) against one `extract --layer K` run per layer, the way a layer sweep was done before.

Writes CLIPS synthetic clips of SECONDS at 22.05 kHz, saves a full-size model with random weights
(the work per frame is the released model's), and times both ways in this process, RUNS times each
(fresh output folders every time), printing min/median/max seconds and the median ratio as JSON.
Usage: python benchmarks/layers.py [--model tune_plus] [--clips 4] [--seconds 10] [--runs 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tunemir.checkpoints import save_checkpoint
from tunemir.extract import extract
from tunemir.models import build_model, get_info
from tunemir.testing import randomize_batchnorm, write_audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tune_plus")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunemir-layers-bench-"))
    try:
        wavs = work / "wavs"
        for i in range(args.clips):
            write_audio(wavs / f"clip{i}.wav", args.seconds, 22050, seed=i)
        torch.manual_seed(0)
        model = build_model(args.model)
        randomize_batchnorm(model)
        ckpt = work / "model.safetensors"
        save_checkpoint(ckpt, model.state_dict(), model=args.model, config=dataclasses.asdict(get_info(args.model).config))
        layers = get_info(args.model).spec.num_layers
        options = dict(checkpoint=ckpt, device=args.device, progress=False)

        def one_pass(out: Path) -> None:
            summary = extract(args.model, wavs, out / "rep", layers="all", **options)
            assert summary.ok and summary.written == args.clips

        def per_layer(out: Path) -> None:
            for k in range(layers):
                summary = extract(args.model, wavs, out / f"rep@{k}", layer=k, **options)
                assert summary.ok and summary.written == args.clips

        times = {"one pass (--layers all)": [], f"{layers} runs (--layer K)": []}
        for run in range(args.runs + 1):  # the first of each is a warm-up
            for name, fn in zip(times, (one_pass, per_layer)):
                out = work / f"out-{run}-{len(times[name])}-{name[:3]}"
                tick = time.perf_counter()
                fn(out)
                if run:
                    times[name].append(time.perf_counter() - tick)
                shutil.rmtree(out)
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            print(json.dumps({"model": args.model, "layers": layers, "clips": args.clips, "seconds": args.seconds,
                              "device": args.device, "way": name, "min_s": round(min(t), 3),
                              "median_s": round(statistics.median(t), 3), "max_s": round(max(t), 3)}))
        slow, fast = medians[f"{layers} runs (--layer K)"], medians["one pass (--layers all)"]
        print(json.dumps({"speedup_median": round(slow / fast, 2)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
