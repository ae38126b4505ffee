"""Does `--precision bf16` change what the probing protocol selects? fp32 against bf16, over seeds.

For each task, the same grid is trained under seeds 0..N-1 in both precisions; per seed the
config best on valid is selected (ties: lower valid loss, then uid) and scored on test with the
exact metrics. The report gives both precisions' mean, standard deviation and range over seeds,
the time each took, and whether every bf16 seed's selected test score falls inside the fp32
seeds' range widened by one fp32 standard deviation on each side (the spread the issue asks
bf16 to stay within).

Tasks: synthetic features shaped like GTZAN (443 / 197 / 290 clips, 10 genres), Emomusic
(504 / 115 / 125, arousal and valence), GiantSteps (songs of 1-4 clips, 24 keys) and a small
MagnaTagATune (2,000 / 500 / 500, 50 tags); with --corpus CACHE_DIR also the synthetic corpus's
three tasks on the features of REP (e.g. tune_plus@0 from `tunemir extract --layers`).

    python benchmarks/precision.py --seeds 3
    python benchmarks/precision.py --seeds 3 --corpus ~/.tunemir --rep tune_plus@0
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tunemir.probe.config import grid_configs
from tunemir.probe.data import ProbeDirs, load_probe_data
from tunemir.probe.metrics import evaluate
from tunemir.probe.tasks import BUILTIN_TASKS
from tunemir.probe.train import probe_logits, train_grid
from tunemir.testing import synthetic_probe_data

#: Both architectures at two learning rates, jukemir's dropout, and a shorter patience than the
#: paper's 256 evaluations so the whole comparison takes minutes.
GRID = {"hidden_layer_sizes": [[], [512]], "learning_rate": [1e-4, 1e-3], "dropout_p": [0.5],
        "early_stopping_boredom": [32]}
SHAPED = {
    "gtzan": ("gtzan_ff", {"train": 443, "valid": 197, "test": 290}),
    "emomusic": ("emomusic", {"train": 504, "valid": 115, "test": 125}),
    "giantsteps": ("giantsteps_clips", {"train": 900, "valid": 240, "test": 600}),
    "mtt-small": ("magnatagatune", {"train": 2000, "valid": 500, "test": 500}),
}


def selected_scores(data, seeds: int, precision: str) -> tuple[list[float], float]:
    """Per seed, the test primary metric of the config best on valid; and the seconds it took."""
    configs = [c for seed in range(seeds) for c in grid_configs(data.dataset, data.representation, GRID, seed=seed)]
    start = time.perf_counter()
    results = list(train_grid(data, configs, "cpu", precision=precision))
    seconds = time.perf_counter() - start
    valid, test = data.splits["valid"], data.splits["test"]
    scores = []
    for seed in range(seeds):
        rows = []
        for r in (r for r in results if r.config["seed"] == seed):
            metrics = evaluate(data.task, valid.uids, valid.targets, probe_logits(r, valid.features))
            rows.append((-metrics["primary"], metrics["loss"], r.config.uid(), r, metrics.get("strategy")))
        _, _, _, best, strategy = min(rows, key=lambda row: row[:3])
        scores.append(evaluate(data.task, test.uids, test.targets, probe_logits(best, test.features),
                               strategy=strategy)["primary"])
    return scores, seconds


def compare(name: str, data, seeds: int) -> dict:
    row = {"task": name, "dataset": data.dataset, "dim": data.dim,
           "sizes": {k: len(v.uids) for k, v in data.splits.items()}}
    for precision in ("fp32", "bf16"):
        scores, seconds = selected_scores(data, seeds, precision)
        row[precision] = {"scores": scores, "mean": float(np.mean(scores)), "std": float(np.std(scores, ddof=1)),
                          "seconds": seconds}
    fp32 = row["fp32"]
    low, high = min(fp32["scores"]) - fp32["std"], max(fp32["scores"]) + fp32["std"]
    row["bf16_inside_fp32_spread"] = all(low <= s <= high for s in row["bf16"]["scores"])
    print(f"{name}: fp32 {100 * fp32['mean']:.2f} ± {100 * fp32['std']:.2f} in {fp32['seconds']:.1f} s; "
          f"bf16 {100 * row['bf16']['mean']:.2f} ± {100 * row['bf16']['std']:.2f} in {row['bf16']['seconds']:.1f} s; "
          f"bf16 inside the fp32 spread: {row['bf16_inside_fp32_spread']}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dim", type=int, default=128, help="feature size of the shaped tasks")
    parser.add_argument("--tasks", nargs="*", default=sorted(SHAPED), choices=sorted(SHAPED))
    parser.add_argument("--corpus", type=Path, help="a cache folder holding the synthetic corpus and REP's features")
    parser.add_argument("--rep", default="tune_plus@0", help="the corpus representation to probe")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    report = {"seeds": args.seeds, "grid": GRID, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "tasks": []}
    for name in args.tasks:
        dataset, sizes = SHAPED[name]
        data = synthetic_probe_data(BUILTIN_TASKS[dataset], sizes, dim=args.dim, seed=0, representation="synthetic")
        report["tasks"].append(compare(name, data, args.seeds))
    if args.corpus:
        dirs = ProbeDirs.resolve(args.corpus / "processed", args.corpus / "representations", args.corpus / "probes")
        for dataset in ("synth_key", "synth_tags", "synth_tempo"):
            report["tasks"].append(compare(f"{dataset} ({args.rep})", load_probe_data(dataset, args.rep, dirs),
                                           args.seeds))
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"precision-{args.seeds}seeds.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
