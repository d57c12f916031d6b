"""Compare's pictures: rows of the experiments' overlays side by side, and the map-similarity histogram."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from catdog.overlay import image_grid, safe_name, save_image
from catdog.plots import plain_text
from catdog.report import Experiment, confidence, overlay_file, pair_column


def _overlay(exp: Experiment, path: str) -> np.ndarray | None:
    rel = exp.predictions.loc[exp.predictions["path"] == path, "overlay"]
    file = overlay_file(exp.explain_dir, rel.iloc[0]) if len(rel) else None  # only files inside the folder
    image = cv2.imread(str(file), cv2.IMREAD_COLOR) if file is not None else None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image is not None else None


def overlay_rows_grid(experiments: Sequence[Experiment], paths: Sequence[str], out_png: Path) -> Path | None:
    """One row per image, one column per experiment: the overlays explain wrote (they carry the label).

    Returns:
        The PNG written, or None when there is nothing to show.
    """
    tiles, captions = [], []
    for path in paths:
        row = [_overlay(exp, path) for exp in experiments]
        if any(tile is None for tile in row):
            continue
        tiles += row
        captions += [f"{exp.label}\n{Path(path).name}" for exp in experiments]
    if not tiles:
        return None
    return save_image(out_png, image_grid(tiles, captions, ncols=len(experiments), tile_size=256))


def similarity_histogram(per_image: pd.DataFrame, pairs: pd.DataFrame, out_png: Path) -> Path:
    """Histograms of the per-image Spearman and top-20% IoU of every pair."""
    with plain_text():  # labels are user text: "$" must not start matplotlib mathtext
        return _similarity_histogram(per_image, pairs, out_png)


def _similarity_histogram(per_image: pd.DataFrame, pairs: pd.DataFrame, out_png: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for metric, ax, title, low in (
        ("spearman", axes[0], "CAM Spearman correlation", -1.0),
        ("iou_top20", axes[1], "IoU of the top-20% regions", 0.0),
    ):
        for a, b in zip(pairs["a"], pairs["b"]):
            values = per_image[pair_column(metric, a, b)].to_numpy(dtype=float)
            ax.hist(
                values[np.isfinite(values)],
                bins=20,
                range=(low, 1.0),
                histtype="step",
                linewidth=2,
                label=f"{a} vs {b}",
            )
        ax.set_title(title)
        ax.set_xlabel("per image (1 = same map)")
        ax.set_ylabel("images")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def write_pictures(
    experiments: Sequence[Experiment], per_image: pd.DataFrame, pairs: pd.DataFrame, out_dir: Path, rows: int
) -> list[tuple[str, Path, str]]:
    """The grids of the images that matter most, and the similarity histogram.

    Returns:
        (title, PNG, explanation) of each picture written, for the report.
    """
    pictures: list[tuple[str, Path, str]] = []
    if len(pairs):
        pictures.append(
            (
                "CAM similarity per image",
                similarity_histogram(per_image, pairs, out_dir / "cam_similarity.png"),
                "How similar the experiments' maps are on each image; mass near 1 means they look at the same regions.",
            )
        )
        by_disagreement = per_image.sort_values("cam_disagreement", ascending=False)
        flipped = by_disagreement[by_disagreement["flipped"]]
        grid = overlay_rows_grid(experiments, flipped["path"].head(rows).tolist(), out_dir / "flipped.png")
        if grid:
            pictures.append(
                (
                    "Flipped images",
                    grid,
                    "Right in one experiment and wrong in another; one row per image, one column per experiment.",
                )
            )
        grid = overlay_rows_grid(
            experiments, by_disagreement["path"].head(rows).tolist(), out_dir / "cam_disagreement.png"
        )
        if grid:
            pictures.append(
                (
                    "Where the CAMs disagree most",
                    grid,
                    "Images whose maps differ most between experiments (lowest Spearman).",
                )
            )
    for exp in experiments:
        frame = exp.predictions.assign(confidence=confidence(exp.predictions))
        mistakes = frame[frame["correct"].eq(False)].sort_values("confidence", ascending=False)
        name = f"confident_mistakes_{safe_name(exp.label)}.png"
        grid = overlay_rows_grid(experiments, mistakes["path"].head(rows).tolist(), out_dir / name)
        if grid:
            pictures.append(
                (
                    f"Most confident mistakes of {exp.label}",
                    grid,
                    "Its wrong predictions, most confident first, next to the other experiments' maps.",
                )
            )
    return pictures
