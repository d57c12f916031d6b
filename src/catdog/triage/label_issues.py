"""Suspected label errors by confident learning (cleanlab), and the corrected manifest.

cleanlab's ``find_label_issues`` (Northcutt et al. 2021) estimates the joint distribution of given and
true labels from out-of-sample probabilities and flags the images whose given label is least likely;
``get_label_quality_scores`` ranks them. Nothing here re-implements it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from catdog.data.index import SPLITS

__all__ = ["ISSUE_COLUMNS", "label_issue_table", "relabelled_manifest"]

ISSUE_COLUMNS = [
    "rank",
    "path",
    "key",
    "split",
    "given",
    "suggested",
    "label_quality",
    "p_given",
    "p_suggested",
    "prob_source",
]


def label_issue_table(table: pd.DataFrame, probs: np.ndarray, class_names: list[str], filter_by: str) -> pd.DataFrame:
    """The suspected label errors, worst first.

    Args:
        table: one row per image: ``path``, ``key``, ``split``, ``label`` (None: unlabelled), ``prob_source``.
        probs: ``[N, C]`` out-of-sample probabilities over the model's classes (NaN rows: none).
        class_names: the model's classes.
        filter_by: cleanlab's ``filter_by`` method.

    Returns:
        Columns :data:`ISSUE_COLUMNS`; ``label_quality`` is cleanlab's self-confidence score (low: suspect).
    """
    to_index = {name: i for i, name in enumerate(class_names)}
    given = np.array([to_index.get(label, -1) if label is not None else -1 for label in table["label"]])
    usable = np.flatnonzero((given >= 0) & ~np.isnan(probs).any(axis=1))
    present = sorted(set(given[usable].tolist()))
    if len(present) < 2 or len(usable) < 2:
        return pd.DataFrame(columns=ISSUE_COLUMNS)
    # cleanlab wants classes 0..K-1 all present: restrict to the classes this data has, renormalised.
    remap = {c: i for i, c in enumerate(present)}
    sub = probs[np.ix_(usable, present)]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    labels = np.array([remap[c] for c in given[usable]])
    ranked = find_label_issues(labels, sub, filter_by=filter_by, return_indices_ranked_by="self_confidence")
    scores = get_label_quality_scores(labels, sub, method="self_confidence")
    rows = []
    for rank, position in enumerate(ranked, start=1):
        row = table.iloc[usable[position]]
        suggested = int(np.argmax(sub[position]))
        rows.append(
            {
                "rank": rank,
                "path": row["path"],
                "key": row["key"],
                "split": row["split"],
                "given": row["label"],
                "suggested": class_names[present[suggested]],
                "label_quality": round(float(scores[position]), 6),
                "p_given": round(float(sub[position, labels[position]]), 6),
                "p_suggested": round(float(sub[position, suggested]), 6),
                "prob_source": row["prob_source"],
            }
        )
    return pd.DataFrame(rows, columns=ISSUE_COLUMNS)


def relabelled_manifest(table: pd.DataFrame, issues: pd.DataFrame, fix: str) -> pd.DataFrame:
    """``path,label[,split]`` of every labelled image, the suspected errors relabelled or dropped.

    ``data=csv data.manifest=relabelled.csv`` trains on it directly. The split column is written when
    every row has a train/val/test split (a folder audit without split folders lets train split again).
    """
    labelled = table[table["label"].notna()][["path", "label", "split"]].copy()
    if fix == "drop":
        labelled = labelled[~labelled["path"].isin(set(issues["path"]))]
    else:
        suggested = dict(zip(issues["path"], issues["suggested"]))
        labelled["label"] = [suggested.get(path, label) for path, label in zip(labelled["path"], labelled["label"])]
    if not labelled["split"].isin(SPLITS).all():
        labelled = labelled.drop(columns=["split"])
    return labelled.reset_index(drop=True)
