"""Results tables (Markdown, CSV) and a plot of validation scores for every probed grid."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from tunemir.fileio import atomic_path
from tunemir.probe.data import ProbeDirs
from tunemir.probe.grid import GridError, select_best
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
#: Published test scores (x100) with jukemir's probing protocol, in COLUMNS' order: the TUNe paper's
#: (Velez Vasquez & Burgoyne, ISMIR 2022) for tune, tune_plus and clmr; the jukemir paper's
#: (Castellon, Donahue & Liang, ISMIR 2021) for musicnn, its MSD_musicnn_big, and jukebox (the
#: representations of jukemir's pre-computed archives).
PAPER = {
    "tune": (90.3, 38.1, 67.6, 13.7, 60.5, 55.7),
    "tune_plus": (90.3, 38.0, 64.5, 15.5, 64.7, 45.9),
    "clmr": (89.4, 36.1, 68.6, 14.9, 67.8, 45.8),
    "musicnn": (90.6, 38.3, 79.0, 12.8, 70.3, 46.6),
    # The columns Papers with Code lists from the paper ("results from the paper"); its MTT numbers
    # were not reachable here, so they are left out rather than guessed.
    "jukebox": (None, None, 79.7, 66.7, 72.1, 61.7),
}
#: Which paper each row is from, as the report's note names it.
PAPER_SOURCE = {"tune": "TUNe", "tune_plus": "TUNe", "clmr": "TUNe", "musicnn": "jukemir", "jukebox": "jukemir"}
#: Rows transcribed without a copy of the paper's table to check them against (the jukemir paper's
#: musicnn row: no public copy of that table was reachable from this project's machines); the
#: report marks them so that nobody cites them from here.
UNVERIFIED = {"musicnn"}


def collect(dirs: ProbeDirs, datasets: tuple[str, ...] = (), representations: tuple[str, ...] = ()) -> list[dict]:
    """The best-on-valid config of every dataset/representation with trained probes (only those
    named, when `datasets` / `representations` are given)."""
    found = []
    if not dirs.probes.is_dir():
        return found
    for dataset_dir in sorted(p for p in dirs.probes.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if datasets and dataset_dir.name not in datasets:
            continue
        for rep_dir in sorted(p for p in dataset_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if representations and rep_dir.name not in representations:
                continue
            try:
                found.append(select_best(dataset_dir.name, rep_dir.name, dirs, split="test"))
            except GridError as err:
                log.info("skipping %s/%s: %s", dataset_dir.name, rep_dir.name, err)
    return found


def paper_model(dirs: ProbeDirs, representation: str, datasets: list[str]) -> str | None:
    """Which row of the TUNe paper a representation compares with: its own name if the paper
    reports it, else the model recorded in its features' manifest (`tunemir extract`'s), when
    that is a paper model at its output layer; so self-trained TUNe+ weights extracted as
    `mine` sit beside the paper's TUNe+ row."""
    if representation in PAPER:
        return representation
    for dataset in datasets:
        audio = load_task(dataset, dirs.dataset(dataset)).audio_from or dataset
        manifest = dirs.features(audio, representation) / "tunemir-manifest.json"
        if manifest.is_file():
            info = json.loads(manifest.read_text())
            if info.get("model") in PAPER and info.get("layer", 0) == 0:
                return info["model"]
    return None


def build_report(dirs: ProbeDirs, output_dir: Path, datasets: tuple[str, ...] = (),
                 representations: tuple[str, ...] = ()) -> dict[str, Path]:
    """Write results.md, results.csv, test_scores.png and valid_scores.png into `output_dir`
    (for the named datasets / representations, default all); returns their paths."""
    results = collect(dirs, datasets, representations)
    if not results:
        asked = ", ".join(datasets + representations)
        trained = sorted({f"{r['dataset']}/{r['representation']}" for r in collect(dirs)}) if asked else []
        raise GridError(f"no trained probes under {dirs.probes}" + (f" for {asked}" if asked else "")
                        + (f" (trained: {', '.join(trained)}; check --dataset/--representation)" if trained else "")
                        + "; train some with: tunemir probe train DATASET REP")
    probed = {r["dataset"] for r in results}
    columns = [c for c in COLUMNS if c[0] in probed]  # the paper's columns that have results
    for r in results:  # datasets beyond the paper's four get their primary metric as a column
        if not any(r["dataset"] == c[0] for c in columns):
            task = load_task(r["dataset"], dirs.dataset(r["dataset"]))
            columns.append((r["dataset"], task.primary, f"{r['dataset']} {task.primary}"))
    by_key = {(r["dataset"], r["representation"]): r for r in results}
    representations = sorted({r["representation"] for r in results})
    papers = {rep: paper_model(dirs, rep, sorted({r["dataset"] for r in results if r["representation"] == rep}))
              for rep in representations}
    expected: dict[str, int] = {}  # the most configs trained for each dataset
    for r in results:
        expected[r["dataset"]] = max(expected.get(r["dataset"], 0), r["num_runs"])
    header = ["representation"] + [title for _, _, title in columns]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    csv_rows = [["representation", "column", "dataset", "metric", "test_x100", "paper_model", "paper_x100",
                 "num_runs", "uid"]]
    for rep in representations:
        paper_row = PAPER.get(papers[rep], (None,) * len(COLUMNS))
        named = papers[rep] in (rep, None) or not any(c in COLUMNS for c in columns)
        cells = [rep if named else f"{rep} (paper: {papers[rep]})"]
        if papers[rep] in UNVERIFIED:
            cells[0] += " †"
        for dataset, metric, title in columns:
            r = by_key.get((dataset, rep))
            paper = paper_row[COLUMNS.index((dataset, metric, title))] if (dataset, metric, title) in COLUMNS else None
            value = 100 * r["metrics"][metric] if r and metric in r["metrics"] else None
            cell = "—" if value is None else f"{value:.1f}"
            if value is not None and r["num_runs"] < expected[dataset]:
                cell += f"* ({r['num_runs']} runs)"
            if paper is not None:
                cell += f" ({paper:.1f})"
            cells.append(cell)
            if r:
                csv_rows.append([rep, title, dataset, metric, "" if value is None else f"{value:.4f}",
                                 papers[rep] or "", "" if paper is None else paper, r["num_runs"], r["uid"]])
        md.append("| " + " | ".join(cells) + " |")
    shown = sorted({papers[rep] for rep in representations if papers[rep] in PAPER})
    sources = {PAPER_SOURCE[model] for model in shown}
    where = " and the jukemir paper's (Castellon et al. 2021)" if "jukemir" in sources else ""
    md += ["", "Test scores x100 of the config best on valid (jukemir protocol); in parentheses the TUNe "
           f"paper's numbers where it reports them{where}. `*` marks a grid with fewer trained configs than the "
           "others."]
    if any(model in UNVERIFIED for model in shown):
        md += ["", "†: the paper numbers of this row are transcribed and not yet checked against the paper's table; "
               "check them there before citing them."]
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": output_dir / "results.md", "csv": output_dir / "results.csv",
             "test_plot": output_dir / "test_scores.png", "plot": output_dir / "valid_scores.png"}
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="") as handle:
        csv.writer(handle).writerows(csv_rows)
    _plot_test(csv_rows, [title for _, _, title in columns], representations, paths["test_plot"])
    _plot(results, paths["plot"])
    return paths


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_test(csv_rows: list[list], titles: list[str], representations: list[str], path: Path) -> None:
    """Grouped bars of the test scores, one group per table column, with the paper's as marks."""
    plt = _pyplot()
    rows = [dict(zip(csv_rows[0], row)) for row in csv_rows[1:]]
    titles = [t for t in titles if any(r["column"] == t and r["test_x100"] != "" for r in rows)]
    width = 0.8 / max(1, len(representations))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(titles) * max(1, len(representations)) ** 0.5), 3.8))
    for k, rep in enumerate(representations):
        for i, title in enumerate(titles):
            row = next((r for r in rows if r["representation"] == rep and r["column"] == title), None)
            if row is None or row["test_x100"] == "":
                continue
            x = i - 0.4 + width * (k + 0.5)
            ax.bar(x, float(row["test_x100"]), width, color=f"C{k}", label=rep)
            if row["paper_x100"] != "":
                ax.plot([x - width / 2, x + width / 2], [float(row["paper_x100"])] * 2, color="black", lw=2)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xticks(range(len(titles)), titles, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test score x100" + (" (black: paper)" if any(r["paper_x100"] != "" for r in rows) else ""))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _plot(results: list[dict], path: Path) -> None:
    plt = _pyplot()
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
