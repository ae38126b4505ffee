"""Benchmark the vectorised probe grid against jukemir's loop run one config at a time.

Data: synthetic features with a learnable linear signal, shaped like the real datasets
(--dim features, 512 by default):
  mtt   : 18,706 / 1,825 / 5,329 clips, 50 tags (ROC-AUC early stopping)
  gtzan : 443 / 197 / 290 clips, 10 genres (accuracy early stopping)

serial : `tunemir.probe.serial.train_serial`, jukemir's algorithm as jukemir runs it
         (nn.Module, torch.optim.Adam, random.sample, scikit-learn metrics at every check),
         one config per (hidden, batch size) cell of the paper grid, each for --steps steps.
grid   : all 216 configs of the paper grid trained together by `tunemir.probe.train_grid`.
jukemir: with --jukemir CHECKOUT, jukemir's own `ProbeExperiment.train()` (imported from the
         checkout at run time, see benchmarks/jukemir_probe.py) on the same features, labels and
         splits written in its on-disk layout, one config per cell as for serial. Each cell's
         `max_num_epochs` is set so it stops after exactly --steps steps; the steps and
         evaluations it ran are counted and reported.

Under jukemir's protocol no config stops before 2048 steps (256 evaluations of patience), so
with --steps <= 2048 every config runs exactly --steps steps in both, and
    speedup = 54 * (sum of the four cells' serial times) / grid time
compares equal work (speedup_vs_jukemir likewise, with jukemir's cells). Over a whole run both
costs grow with the total number of steps, so the ratio carries over. --full trains the grid
to completion instead (a GPU job for MTT) and prices the serial loop (and jukemir's) at each
config's actual step count times its cell's measured cost.

    python benchmarks/probe.py --dataset gtzan --steps 512
    python benchmarks/probe.py --dataset gtzan --dim 128 --steps 512 --jukemir /path/to/jukemir
    python benchmarks/probe.py --dataset mtt --full --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from tunemir.probe.config import ProbeConfig, grid_configs
from tunemir.probe.serial import train_serial
from tunemir.probe.tasks import BUILTIN_TASKS
from tunemir.probe.train import train_grid
from tunemir.testing import synthetic_probe_data

from jukemir_probe import import_jukemir_probe, time_jukemir_cell, write_jukemir_layout

SHAPES = {
    "mtt": ("magnatagatune", {"train": 18706, "valid": 1825, "test": 5329}),
    "gtzan": ("gtzan_ff", {"train": 443, "valid": 197, "test": 290}),
}


def _cells(configs) -> dict:
    """One config per (hidden, batch) cell: lr 1e-3, dropout 0.5, no L2, standardised."""
    cells = {}
    for config in configs:
        if config["learning_rate"] == 1e-3 and config["dropout_p"] == 0.5 and config["l2_weight_decay"] is None \
                and config["data_standardization"]:
            cells[(config.hidden, config["batch_size"])] = config
    return dict(sorted(cells.items()))


def run_serial(data, configs, steps: int) -> list[dict]:
    """One config per (hidden, batch) cell, `steps` steps each, timed."""
    cells = _cells(configs)
    rows = []
    train_serial(data, next(iter(cells.values())), max_steps=16)  # warm-up: allocator, MKL, sklearn imports
    for (hidden, batch), config in cells.items():
        start = time.perf_counter()
        result = train_serial(data, config, max_steps=steps)
        seconds = time.perf_counter() - start
        rows.append({"hidden": list(hidden), "batch_size": batch, "steps": result.steps, "evals": result.evals,
                     "seconds": seconds, "ms_per_step_incl_eval": 1e3 * seconds / result.steps})
        print(f"  serial hidden={list(hidden)} bs={batch}: {seconds:.2f} s for {result.steps} steps "
              f"({result.evals} evals)", flush=True)
    return rows


def run_jukemir(jm, data, configs, steps: int) -> list[dict]:
    """jukemir's `ProbeExperiment.train()` (module `jm`) once per cell, exactly `steps` steps each, timed."""
    cells = _cells(configs)
    rows = []
    with tempfile.TemporaryDirectory(prefix="jukemir-probe-") as root:
        dirs = write_jukemir_layout(data, Path(root))
        warm = next(iter(cells.values()))  # warm-up: allocator, MKL, jukemir's imports
        time_jukemir_cell(jm, ProbeConfig({**warm, "max_num_epochs": _epochs(16, warm, data)}), dirs, data)
        for (hidden, batch), config in cells.items():
            config = ProbeConfig({**config, "max_num_epochs": _epochs(steps, config, data)})
            row = {"hidden": list(hidden), "batch_size": batch, **time_jukemir_cell(jm, config, dirs, data)}
            if row["steps"] != steps or not row["evals_every_8_steps"]:
                raise SystemExit(f"jukemir ran {row['steps']} steps / {row['evals']} evals for cell "
                                 f"{list(hidden)}-{batch}, not {steps} steps with an eval every 8: not equal work")
            row["ms_per_step_incl_eval"] = 1e3 * row["seconds"] / row["steps"]
            rows.append(row)
            print(f"  jukemir hidden={list(hidden)} bs={batch}: {row['seconds']:.2f} s for {row['steps']} steps "
                  f"({row['evals']} evals on {row['valid_rows_per_eval']} valid rows, {row['device']})", flush=True)
    return rows


def run_grid(data, configs, device, steps: int | None, precision: str = "fp32") -> dict:
    if steps is not None:  # every config of the paper grid runs at least 2048 steps
        configs = [ProbeConfig({**c, "max_num_epochs": _epochs(steps, c, data)}) for c in configs]
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    results = list(train_grid(data, configs, device, precision=precision))
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
    # (jukemir's B there is the configured batch size even when N < B; run_jukemir's step count
    # check would catch that mismatch, which none of SHAPES has.)
    n = len(data.splits["train"].uids)
    return (steps - 0.5) * min(config["batch_size"], n) / n


def _priced(cells: list[dict], grid: dict) -> float:
    """A one-config-at-a-time loop's cost for the grid's run: every config's steps at its cell's measured cost."""
    cost = {f"{row['hidden']}-{row['batch_size']}": row["seconds"] / row["steps"] for row in cells}
    return sum(steps * cost[cell] for cell, steps in grid["steps_per_cell"].items())


def _jukemir_summary(report: dict, jukemir_216: float) -> None:
    report["jukemir_216_estimate_s"] = jukemir_216
    report["speedup_vs_jukemir"] = jukemir_216 / report["grid"]["seconds"]
    print(f"  jukemir x 216: {jukemir_216:.0f} s; speedup vs jukemir {report['speedup_vs_jukemir']:.1f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(SHAPES), default="gtzan")
    parser.add_argument("--steps", type=int, default=512, help="steps per config (<= 2048 for equal work)")
    parser.add_argument("--full", action="store_true",
                        help="train the grid to completion; serial and jukemir priced per step")
    parser.add_argument("--dim", type=int, default=512, help="feature size (the jukemir comparison used 128)")
    parser.add_argument("--jukemir", type=Path, metavar="CHECKOUT",
                        help="also time jukemir's own probe code, imported from this folder (holds `jukemir/`)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="the grid's training products")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    jm = import_jukemir_probe(args.jukemir) if args.jukemir else None  # a wrong path fails before any timing
    name, sizes = SHAPES[args.dataset]
    data = synthetic_probe_data(BUILTIN_TASKS[name], sizes, dim=args.dim, seed=0, representation="synthetic")
    configs = grid_configs(name, "synthetic", "paper")
    report = {"dataset": args.dataset, "sizes": sizes, "dim": args.dim, "device": str(device), "precision": args.precision,
              "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    if args.full:
        print(f"serial: jukemir's loop, {args.steps} steps per cell, CPU (for the cost per step)", flush=True)
        report["serial"] = run_serial(data, configs, args.steps)
        if args.jukemir:
            print(f"jukemir: its ProbeExperiment.train(), {args.steps} steps per cell (for the cost per step)",
                  flush=True)
            report["jukemir"] = run_jukemir(jm, data, configs, args.steps)
        print(f"grid: {len(configs)} configs to completion on {device}", flush=True)
        report["grid"] = run_grid(data, configs, device, None, args.precision)
        serial_total = _priced(report["serial"], report["grid"])
        report["serial_216_estimate_s"] = serial_total
        report["speedup"] = serial_total / report["grid"]["seconds"]
        print(f"  grid: {report['grid']['seconds']:.1f} s, {report['grid']['total_steps']} config-steps; "
              f"serial for the same steps: {serial_total:.0f} s; speedup {report['speedup']:.1f}x", flush=True)
        if args.jukemir:
            _jukemir_summary(report, _priced(report["jukemir"], report["grid"]))
    else:
        if args.steps > 2048:
            parser.error("--steps above 2048 would let configs stop at different times; use --full")
        print(f"serial: jukemir's loop, {args.steps} steps per config, CPU", flush=True)
        report["serial"] = run_serial(data, configs, args.steps)
        if args.jukemir:
            print(f"jukemir: its ProbeExperiment.train(), {args.steps} steps per config", flush=True)
            report["jukemir"] = run_jukemir(jm, data, configs, args.steps)
        print(f"grid: all {len(configs)} configs, {args.steps} steps each, on {device}", flush=True)
        report["grid"] = run_grid(data, configs, device, args.steps, args.precision)
        serial_216 = 54 * sum(row["seconds"] for row in report["serial"])
        report["serial_216_estimate_s"] = serial_216
        report["speedup"] = serial_216 / report["grid"]["seconds"]
        print(f"  grid: {report['grid']['seconds']:.1f} s; serial x 216: {serial_216:.0f} s; "
              f"speedup {report['speedup']:.1f}x", flush=True)
        if args.jukemir:
            _jukemir_summary(report, 54 * sum(row["seconds"] for row in report["jukemir"]))
    args.output.mkdir(parents=True, exist_ok=True)
    dim = "" if args.dim == 512 else f"-d{args.dim}"
    precision = "" if args.precision == "fp32" else f"-{args.precision}"
    path = args.output / f"probe-{args.dataset}-{'full' if args.full else args.steps}{dim}-{device.type}{precision}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
