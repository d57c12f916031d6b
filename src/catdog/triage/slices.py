"""Failure slices: clusters of the embeddings whose accuracy is clearly below the average, and what sets them apart.

The embeddings are clustered with scikit-learn's KMeans (on their first principal components, which keeps
it to seconds); each cluster's accuracy uses the rows' judged predictions (out-of-sample heads, or the
run's own on the test split; ``prob_source`` says which). A cluster is a *slice below average* when its
accuracy is at least ``triage.slice_gap`` under the overall one. Its traits are the measurable properties
(photo size, aspect, brightness, grayscale, map area and object size where known) furthest from the
average, in standard deviations. Without labels the same is done with the mean confidence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from catdog.triage.duplicates import normalised

__all__ = ["SLICE_TRAITS", "find_slices"]

SLICE_TRAITS = ("width", "height", "aspect", "brightness", "grayscale", "map_area", "object_size")


def _cluster(embeddings: np.ndarray, count: int, seed: int) -> np.ndarray:
    x = normalised(embeddings)
    components = min(32, x.shape[0], x.shape[1])
    if components < x.shape[1]:
        x = PCA(n_components=components, random_state=seed).fit_transform(x)
    return KMeans(n_clusters=count, n_init=4, random_state=seed).fit_predict(x)


def _traits(members: pd.DataFrame, table: pd.DataFrame) -> str:
    """The two traits furthest from the whole dataset's average, e.g. ``brightness 0.21 vs 0.45 (-2.1 sd)``."""
    found = []
    for trait in SLICE_TRAITS:
        if trait not in table.columns:
            continue
        values, overall = members[trait].astype(float), table[trait].astype(float)
        spread = float(overall.std()) if overall.notna().sum() > 1 else 0.0
        if not values.notna().any() or not spread:
            continue
        z = (float(values.mean()) - float(overall.mean())) / spread
        found.append((abs(z), f"{trait} {values.mean():.3g} vs {overall.mean():.3g} ({z:+.1f} sd)"))
    return "; ".join(text for _, text in sorted(found, reverse=True)[:2])


def find_slices(table: pd.DataFrame, embeddings: np.ndarray, settings: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cluster the images; returns the table with a ``slice`` column, and one row per cluster (worst first)."""
    columns = ["slice", "size", "accuracy", "mean_confidence", "below_average", "traits", "worst_mistakes"]
    table = table.copy()
    count = settings.slices or int(np.clip(round(len(table) / 40), 4, 30))
    count = min(count, len(table))
    if count < 2:
        table["slice"] = 0
        return table, pd.DataFrame(columns=columns)
    table["slice"] = _cluster(embeddings, count, settings.seed)
    labelled = table["correct"].notna()
    by_accuracy = bool(labelled.any())
    overall = (
        float(table.loc[labelled, "correct"].astype(float).mean()) if by_accuracy else float(table["confidence"].mean())
    )
    rows = []
    for cluster, members in table.groupby("slice"):
        judged = members[members["correct"].notna()]
        accuracy = float(judged["correct"].astype(float).mean()) if len(judged) else np.nan
        level = accuracy if by_accuracy else float(members["confidence"].mean())
        mistakes = judged[~judged["correct"].astype(bool)].sort_values("confidence", ascending=False)
        rows.append(
            {
                "slice": int(cluster),
                "size": len(members),
                "accuracy": round(accuracy, 4) if not np.isnan(accuracy) else None,
                "mean_confidence": round(float(members["confidence"].mean()), 4),
                "below_average": bool(
                    len(members) >= settings.slice_min_size and level <= overall - settings.slice_gap
                ),
                "traits": _traits(members, table),
                "worst_mistakes": ";".join(mistakes["key"].head(settings.mistakes_per_slice)),
            }
        )
    slices = pd.DataFrame(rows, columns=columns)
    order = "accuracy" if by_accuracy else "mean_confidence"
    slices = slices.sort_values([order, "size"], ascending=[True, False], kind="stable").reset_index(drop=True)
    return table, slices
