"""What explain reports: summary numbers, provenance and the totals printed at the end of a run.

:func:`write_reports` counts images, accuracy and the confusion matrix from the predictions table (and
draws confusion_matrix.png and top_losses.png); file hashes and library versions are the provenance that
summary.json records.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

import catdog
from catdog.models.imagenet import describe_topk
from catdog.quality.localization import (
    pointing_lines,
    summarize_faithfulness,
    summarize_pointing,
    summary_lines,
)
from catdog.explain.top_losses import write_top_losses
from catdog.plots import confusion_counts, plot_confusion_matrix


# ---------------------------------------------------------------------------------------------
# Summary numbers and pictures
# ---------------------------------------------------------------------------------------------
def write_reports(
    predictions: pd.DataFrame, skipped: pd.DataFrame, class_names: list[str], out_dir: Path, top_losses: int
) -> dict[str, Any]:
    """summary numbers, confusion_matrix.png and top_losses.png from the predictions table."""
    summary: dict[str, Any] = {"images": int(len(predictions)), "skipped": int(len(skipped))}
    labelled = predictions[predictions["true"].notna()] if len(predictions) else predictions
    summary["labelled"] = int(len(labelled))
    if len(labelled):
        matrix = confusion_counts(labelled["true"].tolist(), labelled["pred"].tolist(), class_names)
        correct = int(np.trace(matrix))
        summary.update(
            correct=correct,
            incorrect=int(len(labelled) - correct),
            accuracy=correct / len(labelled),
            confusion_matrix=matrix.tolist(),
        )
        plot_confusion_matrix(
            matrix, class_names, out_dir / "confusion_matrix.png", title=f"accuracy {correct / len(labelled):.1%}"
        )
        mistakes = labelled[labelled["true"] != labelled["pred"]].sort_values("loss", ascending=False)
        if len(mistakes) and top_losses > 0:
            write_top_losses(mistakes.head(top_losses), out_dir)
    summary["pointing_game"] = summarize_pointing(predictions)
    summary["faithfulness"] = summarize_faithfulness(predictions)
    return summary


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import pytorch_lightning
    import torchvision

    return {
        "catdog": catdog.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "opencv": cv2.__version__,
    }


# ---------------------------------------------------------------------------------------------
# Printed totals
# ---------------------------------------------------------------------------------------------
def _print_where(out_dir: Path, summary: dict[str, Any]) -> None:
    lines = [f"Explained {summary['images']} images ({summary['skipped']} skipped) in {out_dir}"]
    if summary.get("accuracy") is not None:
        lines.append(
            f"  accuracy {summary['accuracy']:.2%}: overlays in correct/ and incorrect/ (most confident first)"
        )
    else:
        lines.append("  overlays in unlabelled/<predicted class>/")
    if summary.get("pointing_game"):
        lines.extend("  " + line for line in pointing_lines(summary["pointing_game"]))
    lines.extend("  " + line for line in summary_lines(summary))
    lines.append("  predictions.csv, summary.json, confusion_matrix.png, top_losses.png")
    lines.append(f"  open {out_dir / 'report' / 'index.html'} in a browser to filter and sort them")
    print("\n".join(lines))


def _print_topk(predictions: pd.DataFrame, class_names: list[str], topk: int, limit: int = 20) -> None:
    """ImageNet mode: each image's top-k classes with their probabilities."""
    probs = predictions[[f"p_{name}" for name in class_names]].to_numpy(dtype=float)
    for path, row in zip(predictions["path"].head(limit), probs[:limit]):
        print(f"  {Path(path).name}: {describe_topk(class_names, row.tolist(), topk)}")
    if len(predictions) > limit:
        print(f"  ... {len(predictions) - limit} more in predictions.csv")
