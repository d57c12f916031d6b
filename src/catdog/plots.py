"""Matplotlib figures written as PNG files: training curves and confusion matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers, and no GUI toolkit needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path) -> Path | None:
    """Plot loss and accuracy per epoch (train and val) from Lightning's CSVLogger file.

    Args:
        metrics_csv: the ``metrics.csv`` written by ``CSVLogger``.
        out_png: where to write the figure.

    Returns:
        The PNG path, or None when the file holds no epoch-level metrics yet.
    """
    metrics = pd.read_csv(metrics_csv)
    if "epoch" not in metrics.columns:
        return None
    # CSVLogger writes one row per log call; rows of one epoch hold different columns: merge them.
    per_epoch = metrics.groupby("epoch").last(skipna=True)
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


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], out_png: str | Path, title: str = ""
) -> Path:
    """Draw a confusion matrix with counts, coloured by the fraction of each true class.

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
    n = len(class_names)
    size = max(4.0, 0.6 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    for i in range(n):
        for j in range(n):
            colour = "white" if fractions[i, j] > 0.5 else "black"
            ax.text(j, i, f"{counts[i, j]}\n{fractions[i, j]:.0%}", ha="center", va="center", color=colour)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
