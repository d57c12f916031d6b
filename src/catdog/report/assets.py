"""The files a report shows: URLs relative to the report folder, copies, thumbnails, summary pictures.

The report folder is portable on its own: every picture it shows is inside it. The explain folders'
overlays and layers go to ``files/<experiment>/`` as hard links where the disk allows (no extra space;
they are bounded by overlay.max_size and the layer size), else as copies; other pictures are copied to
``assets/``. Only files inside their explain folder are ever linked or copied.
"""

from __future__ import annotations

import math
import os
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np

from catdog.overlay import save_image
from catdog.plots import confusion_counts, plot_confusion_matrix
from catdog.report.experiments import Experiment, restricted
from catdog.runs import contained

THUMB_SIZE = 220  # longest side of a gallery thumbnail made here (explain folders without layers), in pixels
FILES = "files"  # the explain folders' pictures inside the report: files/<experiment index>/<path in its folder>
TITLE_CHARS = 34  # a confusion matrix title wraps at this many characters: it fits the narrowest figure (4 in)


def url_of(out: Path, target: Path) -> str:
    """A relative, percent-encoded URL from the report folder to a file."""
    relative = os.path.relpath(Path(target).resolve(), Path(out).resolve())
    return "/".join(quote(part) for part in Path(relative).parts)


def asset(out: Path, source: Path, name: str) -> str:
    """A copy of a picture in the report's ``assets/``, and its URL."""
    target = out / "assets" / name
    shutil.copyfile(Path(source).resolve(), target)
    return url_of(out, target)


def publish(out: Path, source: Path, base: Path, experiment: int) -> str:
    """Put ``source`` (a resolved file inside the resolved folder ``base``) into the report, and return its URL.

    ``files/<experiment>/<its path inside base>``: a hard link where the disk allows (same file system; no
    copy of the bytes), else a copy. The path is taken from the resolved file, so no ``..`` in a
    user-edited predictions.csv can place it outside the report.
    """
    parts = (FILES, str(experiment), *source.relative_to(base).parts)
    target = out.joinpath(*parts)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:  # another file system, or one without hard links
            shutil.copyfile(source, target)
    return "/".join(quote(part) for part in parts)


def overlay_file(explain_dir: Path, relative: Any) -> Path | None:
    """The overlay file a predictions.csv row names, only if it lies inside the explain folder.

    predictions.csv is user-editable: an absolute path, ``..`` or a symlink leading out of the folder must
    never make the report copy (and so publish) another file.

    Returns:
        The resolved file, or None when the cell is empty, escapes the folder, or is not a file.
    """
    if relative is None or (isinstance(relative, float) and math.isnan(relative)) or str(relative) == "":
        return None
    return contained(explain_dir, str(relative))


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
            title = textwrap.fill(f"{exp.label}: accuracy {accuracy:.1%}", TITLE_CHARS, break_on_hyphens=False)
            plot_confusion_matrix(matrix, exp.class_names, target, title=title)
            confusion = url_of(out, target)
        # Only the run folder that holds this explain folder: a run_dir taken from summary.json (user-editable)
        # must not make the report copy a file from elsewhere.
        inside = exp.run_dir is not None and exp.explain_dir.resolve().is_relative_to(exp.run_dir.resolve())
        curves = contained(exp.run_dir, "curves.png") if inside else None
        result.append(
            {
                "confusion": confusion,
                "curves": asset(out, curves, f"curves_{e}.png") if curves is not None else None,
            }
        )
    return result
