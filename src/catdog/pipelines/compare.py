"""Compare pipeline: several experiments -> the same images -> tables, grids and an HTML report.

Inputs are run folders, explain folders or checkpoints (or a whole sweep folder). Each experiment is
read from an explain folder that covers ONE common image set: by default the images in the held-out
split of every run (their intersection), or ``data.root``. A run without such an explain folder is
explained again (``pipelines.explain.explain``, the usual explain folder inside the run folder).

Compare folder (default ``compare/<timestamp>``)::

    experiments.csv     one row per experiment: accuracy, per-class recall, confidence, pointing game, provenance
    pairs.csv           one row per pair: flips both ways, same-prediction share, CAM similarity statistics
    per_image.csv       one row per image: each experiment's prediction, flips, pairwise CAM similarity
    cam_similarity.png  histograms of the pairwise CAM similarities
    flipped.png, cam_disagreement.png, confident_mistakes_<experiment>.png   one row of overlays per image
    report/index.html   the browsable report (catdog.report)

This module is the orchestration and the terminal tables; its parts live in
:mod:`catdog.pipelines.compare_sources` (inputs, their explain folders and raw maps, re-explaining, labels),
:mod:`catdog.pipelines.compare_similarity` (alignment, flips, map agreement numbers) and
:mod:`catdog.pipelines.compare_pictures` (overlay grids, similarity histogram).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from catdog.errors import CatdogError
from catdog.names import distinct_labels
from catdog.pipelines.compare_pictures import (
    overlay_rows_grid,
    similarity_histogram,
    write_pictures,
)
from catdog.pipelines.compare_similarity import (
    align,
    class_names_index,
    compare_tables,
    flip_counts,
    spearman,
    to_common_size,
    top_region_iou,
)
from catdog.pipelines.compare_sources import (
    Source,
    _explain_again,
    check_class_names,
    common_images,
    experiment_labels,
    load_class_cams,
    method_labels,
    read_run_settings,
    resolve_source,
    source_class_names,
    usable_explain_dir,
)
from catdog.report import MAP_QUALITY_HEADS, Experiment, read_explain_dir, write_report
from catdog.report.tables import RECALL_COLUMNS, lowest_recalls
from catdog.runs import check_output_dir, staged_output_dir, sweep_runs, timestamped_dir

log = logging.getLogger(__name__)

# The pipeline and its parts: importable from here as from the modules that define them.
__all__ = [
    "Source",
    "align",
    "check_class_names",
    "common_images",
    "compare",
    "compare_tables",
    "experiment_labels",
    "flip_counts",
    "method_labels",
    "overlay_rows_grid",
    "print_tables",
    "read_run_settings",
    "resolve_source",
    "similarity_histogram",
    "source_class_names",
    "spearman",
    "sweep_runs",
    "to_common_size",
    "top_region_iou",
    "usable_explain_dir",
    "write_pictures",
]


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------
def compare(cfg: DictConfig) -> dict[str, Any]:
    """Compare experiments on one common image set and write tables, grids and the HTML report.

    Args:
        cfg: the composed ``conf/compare.yaml`` config.

    Returns:
        ``out_dir``, ``labels``, ``explain_dirs`` and the ``experiments`` and ``pairs`` tables as records.

    Raises:
        CatdogError: bad inputs (missing folders, different classes, no common image).
    """
    given = _given_runs(cfg)
    sources = [resolve_source(g) for g in given]
    check_class_names(given, [source_class_names(s) for s in sources])
    common = common_images(sources, cfg.data.root, cfg.data.split)
    final_dir = Path(cfg.out_dir).expanduser() if cfg.out_dir else timestamped_dir(Path("compare"))
    keep = [*given, *([cfg.data.root] if cfg.data.root else [])]  # inputs: never replaced
    check_output_dir(final_dir, bool(cfg.overwrite), keep)  # before re-explaining, not after
    print(f"Comparing {len(sources)} experiments on {len(common)} common images")

    explain_dirs = []
    for source in sources:
        found = usable_explain_dir(source, common)
        if found is None:
            found = _explain_again(source, cfg)
        explain_dirs.append(found)
    labels = _labels(sources, explain_dirs)
    experiments = [read_explain_dir(d, label) for d, label in zip(explain_dirs, labels)]
    paths = align(experiments, common)
    if len(paths) < len(common):
        log.warning(
            "%d of the %d common images could not be read by every run: left out", len(common) - len(paths), len(common)
        )
    table, pairs, per_image = compare_tables(experiments, _reference_class_cams(experiments, paths))
    keep += explain_dirs
    with staged_output_dir(final_dir, overwrite=bool(cfg.overwrite), keep=keep) as out_dir:
        table.to_csv(out_dir / "experiments.csv", index=False)
        pairs.to_csv(out_dir / "pairs.csv", index=False)
        per_image.to_csv(out_dir / "per_image.csv", index=False)
        pictures = write_pictures(experiments, per_image, pairs, out_dir, int(cfg.grid_rows))
        write_report(out_dir / "report", experiments, pairs=pairs, per_image=per_image, pictures=pictures)
    out_dir = final_dir
    report = out_dir / "report" / "index.html"
    print_tables(table, pairs, experiments[0].class_names)
    print(f"Compare folder: {out_dir}\n  report: {report}\n  experiments.csv, pairs.csv, per_image.csv, grids (*.png)")
    return {
        "out_dir": str(out_dir),
        "labels": labels,
        "explain_dirs": [str(d) for d in explain_dirs],
        "experiments": table.to_dict("records"),
        "pairs": pairs.to_dict("records"),
        "report": str(report),
    }


def _given_runs(cfg: DictConfig) -> list[str]:
    """The folders or checkpoints to compare: ``cfg.runs``, then the jobs of ``cfg.sweep``.

    Raises:
        CatdogError: neither names anything.
    """
    given = [str(r) for r in (cfg.runs or [])]
    if cfg.sweep:
        given += [str(p) for p in sweep_runs(cfg.sweep)]
    if not given:
        raise CatdogError(
            "Nothing to compare: pass runs=[runs/A,runs/B] (run/explain folders or checkpoints) "
            "or sweep=<multirun folder>"
        )
    return given


def _labels(sources: list[Source], explain_dirs: list[Path]) -> list[str]:
    """One distinct label per experiment: what differs between the runs' settings, or the explain method/layer."""
    names = [(s.run_dir.name if s.run_dir is not None else Path(s.given).name) for s in sources]
    labels = experiment_labels(names, [read_run_settings(s.run_dir) for s in sources])
    by_method = method_labels(explain_dirs)
    if by_method is not None:  # explain folders of different methods/layers are experiments named by them
        same_run = len({str(s.run_dir) for s in sources}) == 1
        labels = distinct_labels(by_method if same_run else [f"{a} {b}" for a, b in zip(labels, by_method)])
    return labels


def _reference_class_cams(experiments: list[Experiment], paths: list[str]) -> list[np.ndarray]:
    """Each experiment's maps of the same class per image: the first experiment's predicted class."""
    reference = np.array([class_names_index(experiments[0].class_names, p) for p in experiments[0].predictions["pred"]])
    cams, lacking = [], 0
    for exp in experiments:
        maps, missing = load_class_cams(exp.explain_dir, paths, reference)
        cams.append(maps)
        lacking = max(lacking, missing)
    if lacking:
        log.warning("%d image(s): an experiment has no map of the reference class; its predicted map is used", lacking)
    return cams


def print_tables(table: pd.DataFrame, pairs: pd.DataFrame, class_names: Sequence[str]) -> None:
    """The experiments and pairs tables, readable in a terminal and whole when piped or redirected."""
    console = Console()
    if not console.is_terminal:  # a file or pipe has no width: Rich's 80 columns would cut the tables
        console = Console(width=10_000)
    numbers = Table(title="Experiments (on the common images)")
    # Many classes: one column of the lowest recalls instead of one per class (experiments.csv has them all).
    per_class = [f"recall_{c}" for c in class_names] if len(class_names) <= RECALL_COLUMNS else ["lowest_recall"]
    table = table.assign(lowest_recall=[lowest_recalls(row, class_names) for row in table.to_dict("records")])
    columns = ["experiment", "images", "accuracy", *per_class, "mean_confidence"]
    if table["pointing_game"].notna().any():
        columns.append("pointing_game")
    # Localization and faithfulness totals (catdog.quality.localization), where measured.
    columns += [c for c in MAP_QUALITY_HEADS if c in table.columns and table[c].notna().any()]
    for column in columns:
        if column == "experiment":  # labels are what the reader needs: wrap them, never cut them
            widest = int(table["experiment"].str.len().max())
            numbers.add_column("experiment", overflow="fold", min_width=min(30, widest))
        else:
            numbers.add_column(escape(column.replace("_", " ")), justify="right")  # class names are not markup
    for row in table.to_dict("records"):
        numbers.add_row(*[escape(_cell(row[c])) for c in columns])
    console.print(numbers)
    if len(pairs):
        pair_table = Table(title=escape("Pairs: flips and CAM similarity (mean [q25, median, q75])"))
        for column in ("A", "B", "A right→B wrong", "A wrong→B right", "same pred", "Spearman", "top-20% IoU"):
            if column in ("A", "B"):
                pair_table.add_column(
                    column, overflow="fold", min_width=min(20, int(table["experiment"].str.len().max()))
                )
            else:
                pair_table.add_column(column, justify="right")
        for row in pairs.to_dict("records"):
            pair_table.add_row(
                escape(row["a"]),
                escape(row["b"]),
                str(row["correct_to_incorrect"]),
                str(row["incorrect_to_correct"]),
                _cell(row["same_prediction"]),
                _stats(row, "spearman"),
                _stats(row, "iou_top20"),
            )
        console.print(pair_table)


def _cell(value: Any) -> str:
    """Shares as percentages, counts and names as they are."""
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{100 * value:.1f}%"
    return str(value)


def _stats(row: dict[str, Any], name: str) -> str:
    """``mean [q25, median, q75]``; a dash when no image had a usable map (e.g. flat or overflowed maps)."""
    if not math.isfinite(row.get(f"{name}_mean", math.nan)):
        return "–"
    return escape(
        f"{row[f'{name}_mean']:.2f} [{row[f'{name}_q25']:.2f}, {row[f'{name}_median']:.2f}, {row[f'{name}_q75']:.2f}]"
    )
