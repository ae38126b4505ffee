"""Results tables (Markdown, CSV) and plots for every probed grid: test scores beside the papers',
mean and spread over seeds, bootstrap intervals, and the layer curve of every layer sweep."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import numpy as np

from tunemir.fileio import atomic_path
from tunemir.probe import summary as summaries
from tunemir.probe.data import ProbeDirs
from tunemir.probe.grid import GridError, natural_order
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


def collect(dirs: ProbeDirs, datasets: tuple[str, ...] = (), representations: tuple[str, ...] = (),
            with_logits: bool = True) -> list[summaries.Scored]:
    """Every dataset/representation with trained probes (only those named, when `datasets` /
    `representations` are given): each seed's best-on-valid config, and its test logits when
    `with_logits` and the features are there (for the intervals)."""
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
                found.append(summaries.score(dataset_dir.name, rep_dir.name, dirs, with_logits))
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


#: A layer of a sweep: `tunemir extract --layers` names layer K of representation X `X@K`.
#: The layer curve's R2 axis (x100) stops here; the table has the values below it.
R2_FLOOR = -100.0
LAYER_NAME = re.compile(r"^(?P<model>.+)@(?P<layer>\d+)$")


def build_report(dirs: ProbeDirs, output_dir: Path, datasets: tuple[str, ...] = (),
                 representations: tuple[str, ...] = (), n_boot: int = summaries.N_BOOT) -> dict[str, Path]:
    """Write results.md, results.csv, test_scores.png and valid_scores.png into `output_dir` (for
    the named datasets / representations, default all), and layers.png when a layer sweep was
    probed; returns their paths. `n_boot` resamples give the intervals (0: none)."""
    scored = collect(dirs, datasets, representations, with_logits=n_boot > 0)
    if not scored:
        asked = ", ".join(datasets + representations)
        trained = sorted({f"{r.dataset}/{r.representation}" for r in collect(dirs, with_logits=False)}) if asked else []
        raise GridError(f"no trained probes under {dirs.probes}" + (f" for {asked}" if asked else "")
                        + (f" (trained: {', '.join(trained)}; check --dataset/--representation)" if trained else "")
                        + "; train some with: tunemir probe train DATASET REP")
    probed = {r.dataset for r in scored}
    columns = [c for c in COLUMNS if c[0] in probed]  # the paper's columns that have results
    for r in scored:  # datasets beyond the paper's four get their primary metric as a column
        if not any(r.dataset == c[0] for c in columns):
            task = load_task(r.dataset, dirs.dataset(r.dataset))
            columns.append((r.dataset, task.primary, f"{r.dataset} {task.primary}"))
    by_key = {(r.dataset, r.representation): r for r in scored}
    weights: dict[str, np.ndarray | None] = dict.fromkeys(probed)  # one draw per dataset, shared by its rows
    for r in scored:
        if weights[r.dataset] is None:
            weights[r.dataset] = summaries.resampling_weights(r, n_boot)
    stats = {(r.dataset, r.representation, metric): r.summary(metric, weights[r.dataset])
             for r in scored for dataset, metric, _ in columns if dataset == r.dataset}
    representations = sorted({r.representation for r in scored}, key=natural_order)
    papers = {rep: paper_model(dirs, rep, sorted({r.dataset for r in scored if r.representation == rep}))
              for rep in representations}
    expected: dict[str, int] = {}  # the most configs trained per seed for each dataset
    for r in scored:
        expected[r.dataset] = max(expected.get(r.dataset, 0), r.selections[0]["num_runs"])
    many_seeds = any(len(r.seeds) > 1 for r in scored)
    header = ["representation"] + [title for _, _, title in columns]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    intervals = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    csv_rows = [["representation", "column", "dataset", "metric", "test_x100", "paper_model", "paper_x100",
                 "num_runs", "uid", "seeds", "std_x100", "ci_low_x100", "ci_high_x100"]]
    for rep in representations:
        paper_row = PAPER.get(papers[rep], (None,) * len(COLUMNS))
        named = papers[rep] in (rep, None) or not any(c in COLUMNS for c in columns)
        cells = [rep if named else f"{rep} (paper: {papers[rep]})"]
        if papers[rep] in UNVERIFIED:
            cells[0] += " †"
        spans = [cells[0]]
        for dataset, metric, title in columns:
            r = by_key.get((dataset, rep))
            paper = paper_row[COLUMNS.index((dataset, metric, title))] if (dataset, metric, title) in COLUMNS else None
            stat = stats.get((dataset, rep, metric)) or {}
            value = 100 * stat["mean"] if stat else None
            cell = "—" if value is None else f"{value:.1f}"
            if stat and stat["seeds"] > 1:
                cell += f" ± {100 * stat['std']:.1f}"
            runs = r.selections[0]["num_runs"] if r else 0
            if value is not None and runs < expected[dataset]:
                cell += f"* ({runs} runs)"
            if paper is not None:
                cell += f" ({paper:.1f})"
            cells.append(cell)
            spans.append(f"[{100 * stat['low']:.1f}, {100 * stat['high']:.1f}]" if stat.get("low") is not None
                         else "—")
            if r:
                csv_rows.append([rep, title, dataset, metric, "" if value is None else f"{value:.4f}",
                                 papers[rep] or "", "" if paper is None else paper, runs,
                                 " ".join(s["uid"] for s in r.selections), len(r.seeds),
                                 "" if not stat else f"{100 * stat['std']:.4f}",
                                 *(("", "") if stat.get("low") is None else
                                   (f"{100 * stat['low']:.4f}", f"{100 * stat['high']:.4f}"))])
        md.append("| " + " | ".join(cells) + " |")
        intervals.append("| " + " | ".join(spans) + " |")
    shown = sorted({papers[rep] for rep in representations if papers[rep] in PAPER})
    sources = {PAPER_SOURCE[model] for model in shown}
    where = " and the jukemir paper's (Castellon et al. 2021)" if "jukemir" in sources else ""
    seeds_text = " Under several seeds a cell is the mean ± standard deviation over seeds of each seed's " \
                 "selected config." if many_seeds else ""
    md += ["", "Test scores x100 of the config best on valid (jukemir protocol; ties on valid go to the lower valid "
           "loss, then the smaller config uid); in parentheses the TUNe paper's numbers where it reports them"
           f"{where}. `*` marks a grid with fewer trained configs than the others.{seeds_text}"]
    if any(model in UNVERIFIED for model in shown):
        md += ["", "†: the paper numbers of this row are transcribed and not yet checked against the paper's table; "
               "check them there before citing them."]
    if any(stat.get("low") is not None for stat in stats.values()):
        md += ["", f"## {summaries.LEVEL:.0%} bootstrap intervals", "", *intervals, "",
               f"Percentile intervals over {n_boot} resamples of the test set with replacement (clips; songs for "
               "GiantSteps; Emomusic's clips are songs), the same resamples for every representation of a dataset; "
               "under each resample the score is the mean over seeds of the selected configs' scores. They reflect "
               "test-set sampling, not the selection on valid."]
        missing = sorted(f"{r.dataset}/{r.representation}" for r in scored if r.logits is None)
        if missing:
            md += ["", f"No interval for {', '.join(missing)}: their test features could not be read."]
    sweeps = _layer_sweeps(representations)
    md += _layer_table(sweeps, columns, by_key, stats, weights)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": output_dir / "results.md", "csv": output_dir / "results.csv",
             "test_plot": output_dir / "test_scores.png", "plot": output_dir / "valid_scores.png"}
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="") as handle:
        csv.writer(handle).writerows(csv_rows)
    _plot_test(csv_rows, [title for _, _, title in columns], representations, paths["test_plot"])
    _plot(scored, paths["plot"])
    if sweeps:
        paths["layers_plot"] = output_dir / "layers.png"
        _plot_layers(sweeps, columns, stats, paths["layers_plot"])
    return paths


def _layer_sweeps(representations: list[str]) -> dict[str, list[tuple[int, str]]]:
    """model -> [(layer, representation)] for every model with two or more probed layers."""
    sweeps: dict[str, list[tuple[int, str]]] = {}
    for rep in representations:
        match = LAYER_NAME.match(rep)
        if match:
            sweeps.setdefault(match["model"], []).append((int(match["layer"]), rep))
    return {model: sorted(layers) for model, layers in sweeps.items() if len(layers) > 1}


def _layer_table(sweeps, columns, by_key, stats, weights) -> list[str]:
    """Per model and column: the best layer, and the layers a paired bootstrap cannot tell from it."""
    if not sweeps:
        return []
    lines = ["", "## Layers", "", "| model | column | best layer (x100) | layers not distinguishable from the best |",
             "|---|---|---|---|"]
    for model, layers in sweeps.items():
        for dataset, metric, title in columns:
            probed = [(k, rep) for k, rep in layers if stats.get((dataset, rep, metric))]
            if len(probed) < 2:
                continue
            best_k, best = max(probed, key=lambda kr: (stats[(dataset, kr[1], metric)]["mean"], -kr[0]))
            same = []
            if weights.get(dataset) is not None and by_key[(dataset, best)].logits is not None:
                for k, rep in probed:
                    if k != best_k and by_key[(dataset, rep)].logits is not None:
                        paired = summaries.compare(by_key[(dataset, best)], by_key[(dataset, rep)], metric,
                                                   weights=weights[dataset])
                        if paired["low"] <= 0:
                            same.append(str(k))
                tied = ", ".join(same) or "none"
            else:
                tied = "(no test features to compare)"
            lines.append(f"| {model} | {title} | {best_k} ({100 * stats[(dataset, best, metric)]['mean']:.1f}) "
                         f"| {tied} |")
    lines += ["", f"Layer K of a model is the representation `<model>@K` (`tunemir extract --layers`; 0 is the "
              f"output). A layer is not distinguishable from the best when the paired bootstrap's "
              f"{summaries.LEVEL:.0%} interval of (best - layer), on the same test resamples, reaches 0."]
    return lines


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
    _save(plt, fig, path)


def _plot(scored: list[summaries.Scored], path: Path) -> None:
    plt = _pyplot()
    datasets = sorted({r.dataset for r in scored})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for r in (r for r in scored if r.dataset == dataset):
            scores = sorted(r.selections[0]["valid_scores"], reverse=True)
            label = r.representation + (f" (seed {r.seeds[0]})" if len(r.seeds) > 1 else "")
            ax.plot(range(1, len(scores) + 1), scores, marker=".", markersize=3, label=label)
        _style(ax, dataset, "config rank (best first)", "valid primary metric")
    _save(plt, fig, path)


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _plot_layers(sweeps, columns, stats, path: Path) -> None:
    """The layer curve: test score x100 against layer, one line per model, one panel per column;
    error bars are the bootstrap intervals (the seeds' standard deviation where there is none)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    panels = [c for c in columns if any(stats.get((c[0], rep, c[1])) for layers in sweeps.values() for _, rep in layers)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (dataset, metric, title) in zip(axes[0], panels):
        lowest, highest = [], []
        for i, (model, layers) in enumerate(sweeps.items()):
            points = [(k, stats[(dataset, rep, metric)]) for k, rep in layers if stats.get((dataset, rep, metric))]
            if not points:
                continue
            ks = [k for k, _ in points]
            means = np.array([100 * st["mean"] for _, st in points])
            low = np.array([100 * (st["low"] if st["low"] is not None else st["mean"] - st["std"]) for _, st in points])
            high = np.array([100 * (st["high"] if st["high"] is not None else st["mean"] + st["std"])
                             for _, st in points])
            ax.errorbar(ks, means, yerr=[np.maximum(means - low, 0), np.maximum(high - means, 0)], color=f"C{i}",
                        marker="o", markersize=3, capsize=2, label=model)
            lowest.append(float(low.min()))
            highest.append(float(high.max()))
        if metric.endswith("r2") and lowest and min(lowest) < R2_FLOOR:
            top = min(100.0, max(highest))  # one layer's R2 of -7 would flatten every other layer's curve
            ax.set_ylim(R2_FLOOR, top + 0.05 * (top - R2_FLOOR))
            title += f" (cut at {R2_FLOOR / 100:g})"
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _style(ax, title, "layer (0 = output)", "test score x100")
    _save(plt, fig, path)
