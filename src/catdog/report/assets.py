"""The files a report shows: URLs relative to the report folder, copies, thumbnails, summary pictures.

A file that lives beside the report folder (an explain folder's own overlays) is linked relatively; any
other is copied into ``assets/``. Only files inside their explain folder are ever linked or copied.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np

from catdog.overlay import save_image
from catdog.plots import confusion_counts, plot_confusion_matrix
from catdog.report.experiments import Experiment, restricted

THUMB_SIZE = 220  # longest side of a gallery thumbnail, in pixels


def url_of(out: Path, target: Path) -> str:
    """A relative, percent-encoded URL from the report folder to a file."""
    relative = os.path.relpath(Path(target).resolve(), Path(out).resolve())
    return "/".join(quote(part) for part in Path(relative).parts)


def asset(out: Path, source: Path, name: str) -> str:
    """Reference a picture from the report: relatively if it lives beside the report folder, else a copy."""
    source = Path(source).resolve()
    if source.is_relative_to(out.parent.resolve()) and not source.is_relative_to(out.resolve()):
        return url_of(out, source)
    target = out / "assets" / name
    shutil.copyfile(source, target)
    return url_of(out, target)


def overlay_file(explain_dir: Path, relative: Any) -> Path | None:
    """The overlay file a predictions.csv row names, only if it lies inside the explain folder.

    predictions.csv is user-editable: an absolute path, ``..`` or a symlink leading out of the folder must
    never make the report copy (and so publish) another file.

    Returns:
        The resolved file, or None when the cell is empty, escapes the folder, or is not a file.
    """
    if relative is None or (isinstance(relative, float) and math.isnan(relative)) or str(relative) == "":
        return None
    base = Path(explain_dir).resolve()
    candidate = (base / str(relative)).resolve()
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


def thumbnail(source: Path, target: Path) -> bool:
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        return False
    height, width = image.shape[:2]
    scale = min(1.0, THUMB_SIZE / max(height, width))
    small = cv2.resize(
        image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
    )
    save_image(target, cv2.cvtColor(small, cv2.COLOR_BGR2RGB), quality=85)
    return True


def folder_linker(out: Path, folder: Path) -> Callable[[str, str], str]:
    """``link(rel, name)``: the URL of ``folder/rel`` from the report, as :func:`asset` makes it.

    Paths are resolved once per folder, not once per file (20,000 images: seconds saved).
    """
    base, out_resolved = Path(folder).resolve(), Path(out).resolve()
    if base.is_relative_to(out_resolved.parent) and not base.is_relative_to(out_resolved):
        prefix = [quote(part) for part in Path(os.path.relpath(base, out_resolved)).parts]
        return lambda rel, name: "/".join(prefix + [quote(part) for part in rel.split("/")])
    return lambda rel, name: asset(out, base / rel, name)


def summary_pictures(out: Path, experiments: Sequence[Experiment], paths: list[str]) -> list[dict[str, str | None]]:
    """Per experiment: a confusion matrix of exactly the shown images, and the run's training curves."""
    result = []
    for e, exp in enumerate(experiments):
        frame = restricted(exp, paths).predictions
        labelled = frame[frame["correct"].notna()]
        confusion = None
        if len(labelled):
            matrix = confusion_counts(labelled["true"].tolist(), labelled["pred"].tolist(), exp.class_names)
            accuracy = np.trace(matrix) / matrix.sum()
            target = out / "assets" / f"confusion_{e}.png"
            plot_confusion_matrix(matrix, exp.class_names, target, title=f"{exp.label}: accuracy {accuracy:.1%}")
            confusion = url_of(out, target)
        # Only the run folder that holds this explain folder: a run_dir taken from summary.json (user-editable)
        # must not make the report copy a file from elsewhere.
        inside = exp.run_dir is not None and exp.explain_dir.resolve().is_relative_to(exp.run_dir.resolve())
        curves = exp.run_dir / "curves.png" if inside else None
        result.append(
            {
                "confusion": confusion,
                "curves": asset(out, curves, f"curves_{e}.png") if curves is not None and curves.is_file() else None,
            }
        )
    return result
