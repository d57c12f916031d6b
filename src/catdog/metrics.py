"""Numbers that say whether a map is right: pure functions over maps, boxes and predictions tables.

Per-image functions return the columns explain writes into predictions.csv; ``summarize_*`` functions
turn those columns into the totals of summary.json. Explain, compare and the report read the same
columns and keys, so a metric is defined once, here.

Localization (boxes): the pointing game (Zhang et al., ECCV 2016) asks whether the map's peak lies on
the object; ``in_box`` is strict, ``pointing_hit`` allows a tolerance margin around the box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from catdog.cam import point_in_box

__all__ = ["Box", "pointing_columns", "summarize_pointing"]

Box = tuple[float, float, float, float]  # (x_min, y_min, x_max, y_max), inclusive, image pixels


def pointing_columns(
    peak_xy: tuple[float, float], boxes: Sequence[Box], size: tuple[int, int], tolerance: float
) -> dict[str, Any]:
    """Pointing-game columns of one image: a peak on any of its objects counts.

    Args:
        peak_xy: the map's peak ``(x, y)`` in image pixels.
        boxes: the image's object boxes; empty when none are known (no columns then).
        size: the image's ``(H, W)``.
        tolerance: margin around each box as a fraction of the image size.

    Returns:
        ``{"in_box": bool, "pointing_hit": bool}``, or ``{}`` without boxes.
    """
    if not boxes:
        return {}
    x, y = peak_xy
    height, width = size
    mx, my = tolerance * width, tolerance * height
    return {
        "in_box": any(point_in_box(x, y, box) for box in boxes),
        "pointing_hit": any(point_in_box(x, y, (x0 - mx, y0 - my, x1 + mx, y1 + my)) for x0, y0, x1, y1 in boxes),
    }


def summarize_pointing(predictions: pd.DataFrame) -> dict[str, Any] | None:
    """summary.json's ``pointing_game`` from the per-image columns, or None when no image has boxes."""
    if not len(predictions) or "pointing_hit" not in predictions.columns:
        return None
    scored = predictions[predictions["pointing_hit"].notna()]
    return {
        "hits": int(scored["pointing_hit"].astype(bool).sum()),
        "images": int(len(scored)),
        "hit_rate": float(scored["pointing_hit"].astype(bool).mean()) if len(scored) else None,
        "strict_hit_rate": float(scored["in_box"].astype(bool).mean()) if len(scored) else None,
    }
