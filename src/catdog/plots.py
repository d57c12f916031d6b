"""Matplotlib figures written as PNG files: training curves and confusion matrices.

Every text on them may come from a user (class names, experiment labels): it is drawn as plain text
(:func:`plain_text`), so a ``$`` in a class name never starts matplotlib's mathtext parser.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers, and no GUI toolkit needed
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from catdog.readers import read_csv


@contextmanager
def plain_text() -> Iterator[None]:
    """Figures made inside the block draw ``$`` and ``\\`` literally (no mathtext): for user-supplied text."""
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        yield


def confusion_counts(true: Sequence[str], pred: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """Confusion matrix of class-name pairs: rows the true class, columns the predicted one.

    Args:
        true: true class name of each image.
        pred: predicted class name of each image.
        class_names: the classes in index order; names outside it are an error.

    Returns:
        int64 counts ``[C, C]``.

    Raises:
        ValueError: a name is not in ``class_names``.
    """
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({str(n) for n in [*true, *pred] if n not in index})
    if unknown:
        raise ValueError(f"class name(s) {unknown} are not among {list(class_names)}")
    matrix = np.zeros((len(index), len(index)), dtype=np.int64)
    np.add.at(matrix, ([index[n] for n in true], [index[n] for n in pred]), 1)
    return matrix


CONFUSION_DENSE_CLASSES = 100
"""Up to this many classes summary.json holds the whole confusion matrix; past it only its non-zero cells
(``confusion_pairs``: true index, predicted index, count), so the file grows with the images, not classes squared."""


def confusion_record(matrix: np.ndarray) -> dict[str, Any]:
    """The confusion matrix for a JSON summary: ``confusion_matrix`` (dense) or ``confusion_pairs`` (sparse)."""
    if len(matrix) <= CONFUSION_DENSE_CLASSES:
        return {"confusion_matrix": matrix.tolist()}
    true, pred = np.nonzero(matrix)
    return {"confusion_pairs": [[int(i), int(j), int(matrix[i, j])] for i, j in zip(true, pred)]}


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path) -> Path | None:
    """Plot loss and accuracy per epoch (train and val) from Lightning's CSVLogger file.

    Args:
        metrics_csv: the ``metrics.csv`` written by ``CSVLogger``.
        out_png: where to write the figure.

    Returns:
        The PNG path, or None when the file holds no epoch-level metrics yet.
    """
    metrics = read_csv(metrics_csv, what="metrics", fix="it is written by the training logger")
    if "epoch" not in metrics.columns or metrics["epoch"].dtype == object:
        return None
    # CSVLogger writes one row per log call; rows of one epoch hold different columns: merge them.
    per_epoch = metrics.groupby("epoch").last(skipna=True)
    with plain_text():
        return _draw_curves(per_epoch, Path(out_png))


def _draw_curves(per_epoch: pd.DataFrame, out_png: Path) -> Path | None:
    panels = [("loss", "Loss"), ("acc", "Accuracy")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for ax, (metric, title) in zip(axes, panels):
        for stage, style in (("train", "-o"), ("val", "-s")):
            column = f"{stage}/{metric}"
            if column in per_epoch.columns and per_epoch[column].notna().any():
                series = per_epoch[column].dropna()
                ax.plot(series.index, series.values, style, label=stage)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if not drawn:
        plt.close(fig)
        return None
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


CONFUSION_MAX_CLASSES = 30
"""Most classes a confusion figure shows: past it, the most confused ones (the figure and its memory stay bounded
whatever the number of classes; the full matrix is in the JSON next to it)."""
CONFUSION_TEXT_CLASSES = 20  # counts are written in the cells up to this many classes (text is what costs time)
_LABEL_CHARS = 32  # tick labels are cut to this many characters (the full names are in the tables)


def most_confused(counts: np.ndarray, limit: int) -> np.ndarray:
    """The indices (sorted) of at most ``limit`` classes with the most mistakes, as the true or the predicted class.

    Ties (and classes without mistakes) go by index, so the choice is deterministic.
    """
    n = len(counts)
    if n <= limit:
        return np.arange(n)
    off = counts - np.diag(np.diag(counts))
    errors = off.sum(axis=0) + off.sum(axis=1)
    order = np.lexsort((np.arange(n), -errors))  # most mistakes first, then by index
    return np.sort(order[:limit])


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], out_png: str | Path, title: str = ""
) -> Path:
    """Draw a confusion matrix with counts, coloured by the fraction of each true class.

    With more than :data:`CONFUSION_MAX_CLASSES` classes only the most confused ones are drawn (their rows and
    columns; fractions still of each whole true class), so the figure's size does not grow with the classes.

    Args:
        matrix: counts, rows = true class, columns = predicted class.
        class_names: names in index order.
        out_png: where to write the figure.
        title: shown above the matrix.

    Returns:
        The PNG path.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    row_sums = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_sums, out=np.zeros(counts.shape, dtype=float), where=row_sums > 0)
    shown = most_confused(counts, CONFUSION_MAX_CLASSES)
    if len(shown) < len(counts):
        note = f"the {len(shown)} most confused of {len(counts)} classes"
        title = f"{title}\n{note}" if title else note
    names = [_short(str(class_names[i])) for i in shown]
    grid = np.ix_(shown, shown)
    with plain_text():
        return _draw_confusion(counts[grid], fractions[grid], names, Path(out_png), title)


def _short(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "…"


def _draw_confusion(
    counts: np.ndarray, fractions: np.ndarray, class_names: Sequence[str], out_png: Path, title: str
) -> Path:
    n = len(class_names)
    size = max(4.0, 0.5 * n + 2.5)  # n <= CONFUSION_MAX_CLASSES: at most 17.5 inches
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    for i in range(n if n <= CONFUSION_TEXT_CLASSES else 0):
        for j in range(n):
            colour = "white" if fractions[i, j] > 0.5 else "black"
            ax.text(j, i, f"{counts[i, j]}\n{fractions[i, j]:.0%}", ha="center", va="center", color=colour)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
