"""Start-up time of the `tunemir` commands the reproduce scripts run once per dataset x representation.

Builds a small cache once (a processed dataset, its features, a trained smoke grid), then times
whole processes of `tunemir --help`, `models`, `probe grid` (writes a fresh grid's configs) and
`probe report`, each RUNS times after one warm-up, and prints min/median/max wall seconds per
command as JSON lines. Another tree's tunemir (an older checkout, to compare) runs with
PYTHONPATH=/path/to/that/tree python benchmarks/startup.py. Usage: python benchmarks/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tunemir.probe.data import ProbeDirs
from tunemir.probe.runs import train_pending, write_grid
from tunemir.probe.tasks import BUILTIN_TASKS
from tunemir.testing import write_probe_dataset

COMMANDS = {
    "--help": ["--help"],
    "models": ["models"],
    "probe grid": ["probe", "grid", "gtzan_ff", "fresh", "--grid", "smoke"],
    "probe report": ["probe", "report", "--output-dir", "report"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunemir-bench-startup-"))
    try:
        sizes = {"train": 60, "valid": 30, "test": 30}
        write_probe_dataset(work, "gtzan_ff", "rep", BUILTIN_TASKS["gtzan_ff"], sizes, dim=4)
        dirs = ProbeDirs(work / "processed", work / "representations", work / "probes")
        write_grid("gtzan_ff", "rep", dirs, "smoke")
        assert train_pending("gtzan_ff", "rep", dirs, device="cpu", progress=False).ok
        env = {**os.environ, "TUNEMIR_CACHE_DIR": str(work)}
        for name, command in COMMANDS.items():
            seconds = []
            for run in range(args.runs + 1):  # run 0 warms the file cache and is not counted
                shutil.rmtree(dirs.runs("gtzan_ff", "fresh"), ignore_errors=True)  # `probe grid` writes every time
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "tunemir", *command], cwd=work, env=env, check=True,
                               stdout=subprocess.DEVNULL)
                if run:
                    seconds.append(time.perf_counter() - start)
            print(json.dumps({"command": f"tunemir {name}", "runs": args.runs, "min_s": round(min(seconds), 3),
                              "median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
