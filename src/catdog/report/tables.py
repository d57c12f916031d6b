"""The numbers of the report: per-experiment accuracy, recall, confidence and map-quality totals."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from catdog.report.experiments import Experiment


def confidence(predictions: pd.DataFrame) -> np.ndarray:
    """Probability of the predicted class of each row."""
    if predictions.empty:
        return np.zeros(0)
    result = np.full(len(predictions), np.nan)
    pred = predictions["pred"].to_numpy()
    for name in pd.unique(pred):  # one vectorised pick per class, not one pandas row per image
        column = f"p_{name}"
        if column in predictions.columns:
            mask = pred == name
            result[mask] = predictions[column].to_numpy(dtype=float)[mask]
    return result


RECALL_COLUMNS = 10
"""Up to this many classes the summary tables show one recall column per class; past it one column with the
lowest recalls (experiments.csv keeps every class's)."""


def lowest_recalls(row: dict[str, Any], classes: Sequence[str], count: int = 3) -> str:
    """``"cat 0.0%, dog 12.5%, ..."``: the ``count`` classes with the lowest recall in an experiment_table row."""
    values = [(row[f"recall_{c}"], c) for c in classes if math.isfinite(row.get(f"recall_{c}", math.nan))]
    return ", ".join(f"{name} {100 * value:.1f}%" for value, name in heapq.nsmallest(count, values)) or "–"


# Per-image map-quality columns of predictions.csv (catdog.quality.localization) shown in the image view and sortable.
PER_IMAGE_METRICS = ("energy_in_box", "deletion_auc", "insertion_auc", "drop", "sanity_rank_corr")
# Experiment-table columns from catdog.quality.localization and how the summary table heads them.
MAP_QUALITY_HEADS = {
    "pointing_strict": "Pointing strict",
    "centre_baseline": "Centre baseline",
    "energy_in_box": "Energy on object",
    "mosaic_peak": "Mosaic peak on own tiles",
    "deletion_auc": "Deletion AUC",
    "insertion_auc": "Insertion AUC",
    "drop": "Average drop",
    "sanity_rank_corr": "Sanity rank corr.",
}


def map_quality_columns(frame: pd.DataFrame, summary: dict[str, Any]) -> dict[str, float]:
    """An experiment's localization and faithfulness totals (NaN where not measured).

    Args:
        frame: its predictions (the images compared).
        summary: its summary.json (for the mosaic check, which has no per-image rows).
    """

    def mean(column: str) -> float:
        if column not in frame.columns:
            return math.nan
        values = pd.to_numeric(frame[column].map(lambda v: float(v) if v is not None else math.nan), errors="coerce")
        return float(values.mean()) if values.notna().any() else math.nan

    mosaic = summary.get("mosaic") or {}
    return {
        "pointing_strict": mean("in_box"),
        "centre_baseline": mean("centre_in_box"),
        "energy_in_box": mean("energy_in_box"),
        "mosaic_peak": float(mosaic["peak_on_own_tile"]) if mosaic.get("peak_on_own_tile") is not None else math.nan,
        "deletion_auc": mean("deletion_auc"),
        "insertion_auc": mean("insertion_auc"),
        "drop": mean("drop"),
        "sanity_rank_corr": mean("sanity_rank_corr"),
    }


def experiment_table(experiments: Sequence[Experiment]) -> pd.DataFrame:
    """One row per experiment: accuracy, per-class recall, mean confidence, pointing game, provenance.

    Computed on each experiment's ``predictions`` as given (compare passes the common images only).

    Args:
        experiments: the experiments.

    Returns:
        Columns experiment, images, labelled, accuracy, recall_<class>..., mean_confidence,
        pointing_game (NaN without boxes), arch, checkpoint, checkpoint_sha256, train_config, explain_dir.
    """
    rows = []
    for exp in experiments:
        frame = exp.predictions
        labelled = frame[frame["correct"].notna()] if len(frame) else frame
        row: dict[str, Any] = {
            "experiment": exp.label,
            "images": len(frame),
            "labelled": len(labelled),
            "accuracy": float(labelled["correct"].astype(bool).mean()) if len(labelled) else math.nan,
        }
        # One pass over the images, not one per class: time flat in the number of classes.
        hits = (labelled["pred"] == labelled["true"]).groupby(labelled["true"]).mean() if len(labelled) else {}
        row.update({f"recall_{name}": float(hits.get(name, math.nan)) for name in exp.class_names})
        row["mean_confidence"] = float(confidence(frame).mean()) if len(frame) else math.nan
        # explain's pointing_hit (with the pointing-game tolerance) when present; strict in_box otherwise
        column = "pointing_hit" if "pointing_hit" in frame.columns else "in_box"
        hits = frame[column].dropna() if column in frame.columns else pd.Series(dtype=object)
        row["pointing_game"] = float(hits.astype(bool).mean()) if len(hits) else math.nan
        row.update(map_quality_columns(frame, exp.summary))
        checkpoint = exp.summary.get("checkpoint") or {}
        config = exp.summary.get("train_config") or {}
        row.update(
            arch=exp.summary.get("arch"),
            checkpoint=checkpoint.get("path"),
            checkpoint_sha256=checkpoint.get("sha256"),
            train_config=config.get("path"),
            explain_dir=str(exp.explain_dir),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def pair_column(metric: str, a: str, b: str) -> str:
    """Name of a per-image column holding a pairwise metric, e.g. ``spearman [A | B]``."""
    return f"{metric} [{a} | {b}]"
