"""Exact and near duplicates (leaks across splits, label conflicts) and outliers, from the embeddings.

Exact duplicates share the SHA-256 of their bytes; near duplicates have centred embeddings at a cosine similarity
of at least ``triage.near_duplicate`` (scikit-learn's radius neighbours on the normalised embeddings, the
same measure cleanlab's Datalab uses; Datalab itself needs the Hugging Face ``datasets`` package, which
catdog does not otherwise need). A pair across train and test is a leak that inflates test accuracy.
Outliers are the least typical images by cleanlab's ``OutOfDistribution`` (mean distance to the
nearest neighbours in embedding space).
"""

from __future__ import annotations

import contextlib
import io
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from catdog.data.index import SPLITS

__all__ = ["DUPLICATE_COLUMNS", "find_duplicates", "find_outliers", "leak_free_accuracy", "normalised"]

DUPLICATE_COLUMNS = [
    "path_a", "key_a", "split_a", "label_a", "path_b", "key_b", "split_b", "label_b",
    "similarity", "exact", "cross_split", "leak", "label_conflict",
]


def normalised(embeddings: np.ndarray) -> np.ndarray:
    """Rows centred on the dataset's mean and scaled to unit length (cosine similarity = dot product).

    Centring first: pooled ReLU features all lie in one orthant, where any two photos have a high raw
    cosine; around the mean, only images alike in what sets them apart from the rest stay close.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    x = x - x.mean(axis=0, keepdims=True)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def _pair_row(table: pd.DataFrame, i: int, j: int, similarity: float, exact: bool) -> dict:
    a, b = table.iloc[i], table.iloc[j]
    cross = a["split"] != b["split"]
    conflict = a["label"] is not None and b["label"] is not None and a["label"] != b["label"]
    return {
        "path_a": a["path"], "key_a": a["key"], "split_a": a["split"], "label_a": a["label"],
        "path_b": b["path"], "key_b": b["key"], "split_b": b["split"], "label_b": b["label"],
        "similarity": round(similarity, 5), "exact": exact, "cross_split": bool(cross),
        "leak": bool(cross and a["split"] in SPLITS and b["split"] in SPLITS), "label_conflict": bool(conflict),
    }


def find_duplicates(table: pd.DataFrame, embeddings: np.ndarray, threshold: float) -> pd.DataFrame:
    """Every exact or near-duplicate pair once (a before b in image order), most similar first."""
    found: dict[tuple[int, int], tuple[float, bool]] = {}
    for _, group in table.groupby("sha256", sort=False):
        for i, j in combinations(sorted(group.index), 2):
            found[(i, j)] = (1.0, True)
    if len(table) >= 2:
        x = normalised(embeddings)
        neighbours = NearestNeighbors(radius=max(0.0, 1.0 - threshold) + 1e-6, metric="cosine").fit(x)
        distances, indices = neighbours.radius_neighbors(x)
        for i, (dist, idx) in enumerate(zip(distances, indices)):
            for d, j in zip(dist, idx):
                if j > i and (i, j) not in found:
                    found[(i, int(j))] = (float(1.0 - d), False)
    rows = [_pair_row(table, i, j, sim, exact) for (i, j), (sim, exact) in found.items()]
    frame = pd.DataFrame(rows, columns=DUPLICATE_COLUMNS)
    return frame.sort_values(["exact", "similarity"], ascending=False, kind="stable").reset_index(drop=True)


def find_outliers(table: pd.DataFrame, embeddings: np.ndarray, quantile: float) -> pd.DataFrame:
    """The least typical images (lowest cleanlab OutOfDistribution score), most atypical first."""
    columns = ["rank", "path", "key", "split", "label", "pred", "outlier_score"]
    if len(table) < 3 or quantile <= 0:
        return pd.DataFrame(columns=columns)
    from cleanlab.outlier import OutOfDistribution

    with contextlib.redirect_stdout(io.StringIO()):  # cleanlab prints its progress
        scores = OutOfDistribution().fit_score(features=normalised(embeddings))
    count = max(1, round(quantile * len(table)))
    order = np.argsort(scores, kind="stable")[:count]
    frame = table.iloc[order][["path", "key", "split", "label", "pred"]].copy()
    frame.insert(0, "rank", range(1, len(frame) + 1))
    frame["outlier_score"] = scores[order].round(6)
    return frame.reset_index(drop=True)


def leak_free_accuracy(table: pd.DataFrame, pairs: pd.DataFrame) -> dict | None:
    """Test accuracy with and without the test images that duplicate a train or val image."""
    test = table[(table["split"] == "test") & table["label"].notna()]
    if test.empty:
        return None
    column = "model_pred" if "model_pred" in table.columns else "pred"
    leaks = (
        pairs[pairs["leak"] & ((pairs["split_a"] == "test") ^ (pairs["split_b"] == "test"))] if len(pairs) else pairs
    )
    leaked = set(leaks["path_a"]) | set(leaks["path_b"]) if len(leaks) else set()
    correct = test[column] == test["label"]
    clean = ~test["path"].isin(leaked)
    return {
        "images": len(test),
        "accuracy": round(float(correct.mean()), 6),
        "leaked_images": int((~clean).sum()),
        "accuracy_without_leaked": round(float(correct[clean].mean()), 6) if clean.any() else None,
        "predictions": "the run's own" if column == "model_pred" else "out-of-sample heads",
    }
