"""Results tables (Markdown, CSV) and a plot of validation scores for every probed grid."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from tunemir.fileio import atomic_path
from tunemir.probe.data import ProbeDirs
from tunemir.probe.runs import GridError, select_best
from tunemir.probe.tasks import load_task

log = logging.getLogger(__name__)

#: (dataset, test metric, column title): the TUNe paper's table columns, in its order.
COLUMNS = (
    ("magnatagatune", "auc_roc", "MTT ROC-AUC"),
    ("magnatagatune", "ap", "MTT AP"),
    ("gtzan_ff", "accuracy", "GTZAN acc"),
    ("giantsteps_clips", "score", "GiantSteps score"),
    ("emomusic", "arousal_r2", "Emo arousal R2"),
    ("emomusic", "valence_r2", "Emo valence R2"),
)
#: Test scores (x100) reported in the TUNe paper (ISMIR 2022) with jukemir's probing protocol.
PAPER = {
    "tune": (90.3, 38.1, 67.6, 13.7, 60.5, 55.7),
    "tune_plus": (90.3, 38.0, 64.5, 15.5, 64.7, 45.9),
    "clmr": (89.4, 36.1, 68.6, 14.9, 67.8, 45.8),
}


def collect(dirs: ProbeDirs) -> list[dict]:
    """The best-on-valid config of every dataset/representation with trained probes."""
    found = []
    if not dirs.probes.is_dir():
        return found
    for dataset_dir in sorted(p for p in dirs.probes.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for rep_dir in sorted(p for p in dataset_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                found.append(select_best(dataset_dir.name, rep_dir.name, dirs, split="test"))
            except GridError as err:
                log.info("skipping %s/%s: %s", dataset_dir.name, rep_dir.name, err)
    return found


def build_report(dirs: ProbeDirs, output_dir: Path) -> dict[str, Path]:
    """Write results.md, results.csv and valid_scores.png into `output_dir`; returns their paths."""
    results = collect(dirs)
    if not results:
        raise GridError(f"no trained probes under {dirs.probes}; train some with: tunemir probe train DATASET REP")
    columns = list(COLUMNS)
    for r in results:  # datasets beyond the paper's four get their primary metric as a column
        if not any(r["dataset"] == c[0] for c in columns):
            task = load_task(r["dataset"], dirs.dataset(r["dataset"]))
            columns.append((r["dataset"], task.primary, f"{r['dataset']} {task.primary}"))
    by_key = {(r["dataset"], r["representation"]): r for r in results}
    representations = sorted({r["representation"] for r in results})
    expected: dict[str, int] = {}  # the most configs trained for each dataset
    for r in results:
        expected[r["dataset"]] = max(expected.get(r["dataset"], 0), r["num_runs"])
    header = ["representation"] + [title for _, _, title in columns]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    csv_rows = [["representation", "column", "dataset", "metric", "test_x100", "paper_x100", "num_runs", "uid"]]
    for rep in representations:
        cells = [rep]
        for i, (dataset, metric, title) in enumerate(columns):
            r = by_key.get((dataset, rep))
            paper = PAPER.get(rep, (None,) * len(COLUMNS))[i] if i < len(COLUMNS) else None
            value = 100 * r["metrics"][metric] if r and metric in r["metrics"] else None
            cell = "—" if value is None else f"{value:.1f}"
            if value is not None and r["num_runs"] < expected[dataset]:
                cell += f"* ({r['num_runs']} runs)"
            if paper is not None:
                cell += f" ({paper:.1f})"
            cells.append(cell)
            if r:
                csv_rows.append([rep, title, dataset, metric, "" if value is None else f"{value:.4f}",
                                 "" if paper is None else paper, r["num_runs"], r["uid"]])
        md.append("| " + " | ".join(cells) + " |")
    md += ["", "Test scores x100 of the config best on valid (jukemir protocol); in parentheses the TUNe "
           "paper's numbers where it reports them. `*` marks a grid with fewer trained configs than the others."]
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": output_dir / "results.md", "csv": output_dir / "results.csv",
             "plot": output_dir / "valid_scores.png"}
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="") as handle:
        csv.writer(handle).writerows(csv_rows)
    _plot(results, paths["plot"])
    return paths


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in results})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for r in (r for r in results if r["dataset"] == dataset):
            scores = sorted(r["valid_scores"], reverse=True)
            ax.plot(range(1, len(scores) + 1), scores, marker=".", markersize=3, label=r["representation"])
        ax.set_title(dataset)
        ax.set_xlabel("config rank (best first)")
        ax.set_ylabel("valid primary metric")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
