"""What explain reports: summary.json, assembled here and only here, and the totals printed at the end.

:func:`assemble_summary` counts images, accuracy and the confusion matrix from the predictions table and
adds localization and faithfulness means, the map geometry, the run's statistics, the settings that shape
the numbers and the provenance (checkpoint hashes, library versions).
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

import catdog
from catdog.explain.settings import ExplainSettings
from catdog.maps.geometry import CellCentres
from catdog.models.imagenet import describe_topk
from catdog.plots import confusion_counts, confusion_record
from catdog.quality.localization import (
    pointing_lines,
    summarize_faithfulness,
    summarize_pointing,
    summary_lines,
)


# ---------------------------------------------------------------------------------------------
# summary.json
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SummaryParts:
    """What one explain folder's summary.json records beyond its predictions table."""

    settings: ExplainSettings
    centres: CellCentres  # where the map cells sit (geometry)
    run: dict[str, Any]  # the engine's statistics (precision, speed, processes, self-check)
    method: dict[str, Any]  # the explainer's description (method, layer)
    folding: dict[str, Any]  # BatchNorm folding record
    provenance: dict[str, Any]  # checkpoint and train config hashes (and imagenet in ImageNet mode)
    arch: str
    source: str  # which images: the folder, or the run's split
    mosaic: dict[str, Any] | None = None  # localization=mosaic
    grids: list[str] | None = None  # grid=true


def count_predictions(predictions: pd.DataFrame, skipped: pd.DataFrame, class_names: list[str]) -> dict[str, Any]:
    """Images, skipped, labelled and, when some are labelled, correct, incorrect, accuracy and confusion matrix."""
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
            **confusion_record(matrix),
        )
    return summary


def assemble_summary(
    predictions: pd.DataFrame, skipped: pd.DataFrame, class_names: list[str], parts: SummaryParts
) -> dict[str, Any]:
    """The content of summary.json (key order is the file's)."""
    settings = parts.settings
    summary = count_predictions(predictions, skipped, class_names)
    summary["pointing_game"] = summarize_pointing(predictions)
    if summary["pointing_game"]:
        summary["pointing_game"]["tolerance"] = settings.pointing_tolerance
    summary["faithfulness"] = summarize_faithfulness(predictions)
    summary["align"] = settings.align
    summary["cell_centres"] = {"x": [round(v, 1) for v in parts.centres.x], "y": [round(v, 1) for v in parts.centres.y]}
    if "mosaic" in settings.localization:
        summary["mosaic"] = parts.mosaic
    summary.update(parts.run)
    summary.update(parts.method)
    summary["display"] = settings.display
    summary["batchnorm_folding"] = parts.folding
    summary["threshold"] = settings.threshold
    if settings.grid:
        summary["grids"] = parts.grids
    summary.update(parts.provenance)
    summary["arch"] = parts.arch
    summary["class_names"] = class_names
    summary["source"] = parts.source
    summary["versions"] = _versions()
    return summary


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------
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
# Files explain may write, in the order the closing summary lists them (only those that exist are listed).
_OUTPUT_FILES = ("predictions.csv", "summary.json", "confusion_matrix.png", "top_losses.png", "cams.npz",
                 "mosaic.csv", "skipped.csv")
_ONE_BY_ONE = 5  # up to this many images, the summary names each one's prediction and overlay


def _print_where(
    out_dir: Path,
    summary: dict[str, Any],
    predictions: pd.DataFrame | None = None,
    warnings: Sequence[str] = (),
    topk: int = 1,
) -> None:
    """The closing summary: what was explained, each image's prediction (at least its top 3 classes, or
    ``topk``) and overlay when there are few, the files that were actually written, the report, and warnings
    (e.g. label folders that are not classes)."""
    count = summary["images"]
    lines = [f"Explained {count} image{'s' if count != 1 else ''} ({summary['skipped']} skipped) in {out_dir}"]
    if predictions is not None and 0 < len(predictions) <= _ONE_BY_ONE:
        lines.extend("  " + line for line in _image_lines(out_dir, predictions, summary, max(3, topk)))
    if summary.get("accuracy") is not None:
        lines.append(
            f"  accuracy {summary['accuracy']:.2%} on {summary['labelled']} labelled: overlays in correct/ and "
            "incorrect/ (most confident first)"
        )
    elif count > _ONE_BY_ONE:
        lines.append("  overlays in unlabelled/<predicted class>/")
    if summary.get("pointing_game"):
        lines.extend("  " + line for line in pointing_lines(summary["pointing_game"]))
    lines.extend("  " + line for line in summary_lines(summary))
    written = [name for name in _OUTPUT_FILES if (out_dir / name).is_file()]
    lines.append("  " + ", ".join(written))
    if summary.get("grids"):
        lines.append(f"  grid/: {', '.join(Path(g).name for g in summary['grids'])} (methods x layers)")
    if (out_dir / "report" / "index.html").is_file():
        lines.append(f"  open {out_dir / 'report' / 'index.html'} in a browser to filter and sort them")
    lines.extend(f"Warning: {warning}" for warning in warnings)
    print("\n".join(lines))


def label_folder_warning(folders: Sequence[str], class_names: Sequence[str], root: str | Path) -> str | None:
    """The warning for class-like sub-folders that are not the model's classes (``cats/`` vs class ``cat``)."""
    if not folders:
        return None
    shown = ", ".join(f"{name}/" for name in folders[:6]) + (" ..." if len(folders) > 6 else "")
    return (
        f"the folders {shown} in {root} are not the model's classes ({', '.join(class_names)}): their images were "
        f"explained as unlabelled (no accuracy, no mistakes); rename the folders to the class names to score them"
    )


def _image_lines(out_dir: Path, predictions: pd.DataFrame, summary: dict[str, Any], classes: int) -> list[str]:
    """``cat.169.jpg: cat 97.1% | dog 2.9% -> <out_dir>/unlabelled/cat/cat.169.jpg`` per image (its file name),
    with the ``classes`` most likely classes."""
    class_names = list(summary.get("class_names") or [c[2:] for c in predictions.columns if c.startswith("p_")])
    shown = min(len(class_names), classes)
    lines = []
    for record in predictions.to_dict("records"):
        probs = [float(record.get(f"p_{name}", 0.0)) for name in class_names]
        truth = f" (true: {record['true']})" if isinstance(record.get("true"), str) and record["true"] else ""
        overlay = record.get("overlay")
        where = f" -> {out_dir / overlay}" if isinstance(overlay, str) and overlay else ""
        lines.append(f"{Path(record['path']).name}: {describe_topk(class_names, probs, shown)}{truth}{where}")
    return lines


def _print_topk(predictions: pd.DataFrame, class_names: list[str], topk: int, limit: int = 20) -> None:
    """ImageNet mode: each image's top-k classes with their probabilities."""
    probs = predictions[[f"p_{name}" for name in class_names]].to_numpy(dtype=float)
    for path, row in zip(predictions["path"].head(limit), probs[:limit]):
        print(f"  {Path(path).name}: {describe_topk(class_names, row.tolist(), topk)}")
    if len(predictions) > limit:
        print(f"  ... {len(predictions) - limit} more in predictions.csv")
