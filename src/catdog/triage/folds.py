"""Out-of-sample probabilities for every labelled image: K-fold logistic-regression heads on the embeddings.

A model's predictions on its own training images are not out-of-sample: it has fitted their labels,
the wrong ones included, and confident learning would then find nothing. Each fold's head is trained on
the other folds' embeddings and labels, and predicts its own fold (scikit-learn's ``cross_val_predict``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["OutOfSample", "out_of_sample_probs", "row_probabilities"]


@dataclass
class OutOfSample:
    """``probs[i, c]``: probability of class ``classes[c]`` (indices into the model's classes) for labelled row i."""

    probs: np.ndarray | None
    classes: list[int]
    folds: int
    note: str | None  # why fewer folds than asked, or why there are no probabilities
    c: float | None = None  # the heads' C (chosen when head_c=auto)
    log_loss: dict[str, float] | None = None  # out-of-fold log-loss per C tried


def out_of_sample_probs(
    embeddings: np.ndarray, labels: np.ndarray, folds: int, c: float | tuple[float, ...], seed: int
) -> OutOfSample:
    """Stratified K-fold heads over ``embeddings`` of the rows with ``labels >= 0``.

    Args:
        embeddings: ``[N, D]``, the labelled rows only.
        labels: ``[N]`` class indices (>= 0).
        folds: K; fewer when the smallest class has fewer images (at least 2).
        c: inverse L2 regularisation strength of the heads, or several: the one whose out-of-fold
            probabilities have the lowest log-loss on the given labels (no true labels needed; on the noisy
            photos of bench/RESULTS.md the C that predicts the given labels best also finds the errors best).
        seed: fold assignment.

    Returns:
        Probabilities over the classes present (columns in ``classes`` order), or None with the reason.
    """
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        return OutOfSample(None, classes.tolist(), 0, "only one class is labelled: label issues need at least two")
    smallest = int(counts.min())
    if smallest < 2:
        return OutOfSample(
            None,
            classes.tolist(),
            0,
            f"class index {int(classes[counts.argmin()])} has 1 labelled image: label issues need at least 2 per class",
        )
    used = min(folds, smallest)
    note = f"{used} folds instead of {folds}: the smallest class has {smallest} images" if used < folds else None
    x = np.asarray(embeddings, dtype=np.float32)
    cv = StratifiedKFold(used, shuffle=True, random_state=seed)
    tried: dict[float, tuple[float, np.ndarray]] = {}
    for value in (c,) if isinstance(c, (int, float)) else c:
        head = make_pipeline(StandardScaler(), LogisticRegression(C=value, max_iter=500))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a few hundred iterations are plenty for a ranking
            probs = cross_val_predict(head, x, labels, cv=cv, method="predict_proba").astype(np.float64)
        probs /= probs.sum(axis=1, keepdims=True)  # exactly 1 per row in float64
        tried[float(value)] = (float(log_loss(labels, probs, labels=classes)), probs)
    best = min(tried, key=lambda value: tried[value][0])
    losses = {str(value): round(loss, 5) for value, (loss, _) in tried.items()}
    return OutOfSample(tried[best][1], classes.tolist(), used, note, best, losses)


def row_probabilities(
    embeddings: np.ndarray,
    given: np.ndarray,
    num_classes: int,
    model_probs: np.ndarray | None,
    use_model: np.ndarray,
    settings: Any,
    source: str,
) -> tuple[np.ndarray, list[str], dict[str, object]]:
    """The probabilities each row is judged by, and where they come from (``prob_source``).

    Labelled rows: their K-fold out-of-sample head (``kfold:<source>``), or the run's own prediction where
    ``use_model`` allows it (the held-out test split, ``model``). Unlabelled rows: a head trained on every
    labelled row (``head:<source>``: they were not among its training rows), else the run's own prediction.

    Args:
        embeddings: ``[N, D]``; given: ``[N]`` class index (-1 unlabelled, or a class the model lacks).
        model_probs: ``[N, C]`` the run's softmax, or None (the feature net is not the run's network).
        use_model: ``[N]`` bool, rows that take the run's own prediction when there is one.
        num_classes: the model's classes.
        settings: :class:`~catdog.triage.settings.TriageSettings` (folds, head_c, seed).
        source: what embedded (``checkpoint`` or ``pretrained``).

    Returns:
        ``[N, C]`` probabilities (NaN rows: none available), per-row source, and a record for summary.json.
    """
    n = len(given)
    grid = settings.head_c if settings.head_c is not None else settings.head_c_grid
    probs = np.full((n, num_classes), np.nan)
    sources = ["none"] * n
    labelled = np.flatnonzero(given >= 0)
    oos = (
        out_of_sample_probs(embeddings[labelled], given[labelled], settings.folds, grid, settings.seed)
        if len(labelled)
        else None
    )
    if oos is not None and oos.probs is not None:
        full = np.zeros((len(labelled), probs.shape[1]))
        full[:, oos.classes] = oos.probs
        probs[labelled] = full
        for i in labelled:
            sources[i] = f"kfold:{source}"
        unlabelled = np.flatnonzero(given < 0)
        if len(unlabelled):
            head = make_pipeline(StandardScaler(), LogisticRegression(C=oos.c, max_iter=500))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                head.fit(embeddings[labelled], given[labelled])
            probs[np.ix_(unlabelled, oos.classes)] = head.predict_proba(embeddings[unlabelled])
            probs[unlabelled] = np.nan_to_num(probs[unlabelled], nan=0.0)
            for i in unlabelled:
                sources[i] = f"head:{source}"
    if model_probs is not None:
        take = use_model | np.array([s == "none" for s in sources])
        probs[take] = model_probs[take]
        for i in np.flatnonzero(take):
            sources[i] = "model"
    record = {
        "folds": oos.folds if oos else 0,
        "note": oos.note if oos else "no labelled images",
        "head_c": oos.c if oos else None,
        "log_loss_by_c": oos.log_loss if oos else None,
    }
    return probs, sources, record
