"""Benchmark the vectorised probe grid against jukemir's loop run one config at a time.

Data: synthetic features with a learnable linear signal, shaped like the real datasets:
  mtt   : 512-d, 18,706 / 1,825 / 5,329 clips, 50 tags (ROC-AUC early stopping)
  gtzan : 512-d, 443 / 197 / 290 clips, 10 genres (accuracy early stopping)

serial : `tunemir.probe.serial.train_serial`, jukemir's algorithm as jukemir runs it
         (nn.Module, torch.optim.Adam, random.sample, scikit-learn metrics at every check),
         one config per (hidden, batch size) cell of the paper grid, each for --steps steps.
grid   : all 216 configs of the paper grid trained together by `tunemir.probe.train_grid`.

Under jukemir's protocol no config stops before 2048 steps (256 evaluations of patience), so
with --steps <= 2048 every config runs exactly --steps steps in both, and
    speedup = 54 * (sum of the four cells' serial times) / grid time
compares equal work. Over a whole run both costs grow with the total number of steps, so
the ratio carries over. --full trains the grid to completion instead (a GPU job for MTT) and
prices the serial loop at each config's actual step count times its cell's measured cost.

    python benchmarks/probe.py --dataset gtzan --steps 512
    python benchmarks/probe.py --dataset mtt --full --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from tunemir.probe.config import ProbeConfig, grid_configs
from tunemir.probe.serial import train_serial
from tunemir.probe.tasks import BUILTIN_TASKS
from tunemir.probe.train import train_grid
from tunemir.testing import synthetic_probe_data

SHAPES = {
    "mtt": ("magnatagatune", {"train": 18706, "valid": 1825, "test": 5329}),
    "gtzan": ("gtzan_ff", {"train": 443, "valid": 197, "test": 290}),
}


def run_serial(data, configs, steps: int) -> list[dict]:
    """One config per (hidden, batch) cell, `steps` steps each, timed."""
    cells = {}
    for config in configs:
        if config["learning_rate"] == 1e-3 and config["dropout_p"] == 0.5 and config["l2_weight_decay"] is None \
                and config["data_standardization"]:
            cells[(config.hidden, config["batch_size"])] = config
    rows = []
    train_serial(data, next(iter(cells.values())), max_steps=16)  # warm-up: allocator, MKL, sklearn imports
    for (hidden, batch), config in sorted(cells.items()):
        start = time.perf_counter()
        result = train_serial(data, config, max_steps=steps)
        seconds = time.perf_counter() - start
        rows.append({"hidden": list(hidden), "batch_size": batch, "steps": result.steps, "evals": result.evals,
                     "seconds": seconds, "ms_per_step_incl_eval": 1e3 * seconds / result.steps})
        print(f"  serial hidden={list(hidden)} bs={batch}: {seconds:.1f} s for {result.steps} steps "
              f"({result.evals} evals)", flush=True)
    return rows


def run_grid(data, configs, device, steps: int | None) -> dict:
    if steps is not None:  # every config of the paper grid runs at least 2048 steps
        configs = [ProbeConfig({**c, "max_num_epochs": _epochs(steps, c, data)}) for c in configs]
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    results = list(train_grid(data, configs, device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    total_steps = sum(r.steps for r in results)
    per_cell: dict[str, int] = {}
    for r in results:
        key = f"{list(r.config.hidden)}-{r.config['batch_size']}"
        per_cell[key] = per_cell.get(key, 0) + r.steps
    return {"configs": len(results), "seconds": seconds, "total_steps": total_steps, "steps_per_cell": per_cell,
            "max_steps": max(r.steps for r in results),
            "stop_reasons": sorted({r.stop_reason for r in results}),
            "best_valid": max(r.best_score for r in results)}


def _epochs(steps: int, config, data) -> float:
    # jukemir stops at the first step with step * B / N > max_num_epochs: exactly `steps` steps.
    n = len(data.splits["train"].uids)
    return (steps - 0.5) * min(config["batch_size"], n) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(SHAPES), default="gtzan")
    parser.add_argument("--steps", type=int, default=512, help="steps per config (<= 2048 for equal work)")
    parser.add_argument("--full", action="store_true", help="train the grid to completion (no serial run)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    name, sizes = SHAPES[args.dataset]
    data = synthetic_probe_data(BUILTIN_TASKS[name], sizes, dim=512, seed=0, representation="synthetic")
    configs = grid_configs(name, "synthetic", "paper")
    report = {"dataset": args.dataset, "sizes": sizes, "device": str(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    if args.full:
        print(f"serial: jukemir's loop, {args.steps} steps per cell, CPU (for the cost per step)", flush=True)
        report["serial"] = run_serial(data, configs, args.steps)
        print(f"grid: {len(configs)} configs to completion on {device}", flush=True)
        report["grid"] = run_grid(data, configs, device, None)
        # The serial loop's cost for the same run: every config's steps at its cell's measured cost.
        cost = {f"{row['hidden']}-{row['batch_size']}": row["seconds"] / row["steps"] for row in report["serial"]}
        serial_total = sum(steps * cost[cell] for cell, steps in report["grid"]["steps_per_cell"].items())
        report["serial_216_estimate_s"] = serial_total
        report["speedup"] = serial_total / report["grid"]["seconds"]
        print(f"  grid: {report['grid']['seconds']:.1f} s, {report['grid']['total_steps']} config-steps; "
              f"serial for the same steps: {serial_total:.0f} s; speedup {report['speedup']:.1f}x", flush=True)
    else:
        if args.steps > 2048:
            parser.error("--steps above 2048 would let configs stop at different times; use --full")
        print(f"serial: jukemir's loop, {args.steps} steps per config, CPU", flush=True)
        report["serial"] = run_serial(data, configs, args.steps)
        print(f"grid: all {len(configs)} configs, {args.steps} steps each, on {device}", flush=True)
        report["grid"] = run_grid(data, configs, device, args.steps)
        serial_216 = 54 * sum(row["seconds"] for row in report["serial"])
        report["serial_216_estimate_s"] = serial_216
        report["speedup"] = serial_216 / report["grid"]["seconds"]
        print(f"  grid: {report['grid']['seconds']:.1f} s; serial x 216: {serial_216:.0f} s; "
              f"speedup {report['speedup']:.1f}x", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"probe-{args.dataset}-{'full' if args.full else args.steps}-{device.type}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
