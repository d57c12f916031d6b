"""Numbers that say whether a map is right: pure functions over maps, boxes, masks and predictions tables.

Per-image functions return the columns explain writes into predictions.csv; ``summarize_*`` functions
turn those columns into the totals of summary.json. Explain, compare and the report read the same
columns and keys, so a metric is defined once, here.

Localization (boxes or masks), always on the map of the image's *true* class (Zhang et al., ECCV 2016;
unlabelled images: the predicted class):

- ``in_box``: the map's peak lies on the object (strict); ``pointing_hit``: within a tolerance margin;
- ``centre_in_box`` / ``centre_hit``: the same for the image centre, the baseline any map must beat;
- ``energy_in_box``: share of the map's positive part that lies on the object (energy-based pointing
  game, Score-CAM, Wang et al. 2020).

Mosaic check (:func:`mosaic_tile_columns`): on a mosaic of photos of different classes, each class's map
should peak in (and put its energy on) that class's tiles; no annotation needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from catdog.maps.cam import point_in_box

__all__ = [
    "Box",
    "energy_share",
    "localization_columns",
    "mosaic_tile_columns",
    "object_region",
    "pointing_columns",
    "pointing_lines",
    "spearman",
    "summarize_faithfulness",
    "summarize_mosaic",
    "summarize_pointing",
    "summary_lines",
]

Box = tuple[float, float, float, float]  # (x_min, y_min, x_max, y_max), inclusive, image pixels


def pointing_columns(
    peak_xy: tuple[float, float], boxes: Sequence[Box], size: tuple[int, int], tolerance: float
) -> dict[str, Any]:
    """Pointing-game columns of one point: a point on any of the image's objects counts.

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


def _mask_pointing(peak_xy: tuple[float, float], mask: np.ndarray, tolerance: float) -> dict[str, bool]:
    """Pointing-game columns against a boolean object mask (the tolerance is a window around the peak)."""
    height, width = mask.shape
    x = int(np.clip(round(peak_xy[0]), 0, width - 1))
    y = int(np.clip(round(peak_xy[1]), 0, height - 1))
    mx, my = int(math.floor(tolerance * width)), int(math.floor(tolerance * height))
    window = mask[max(0, y - my) : y + my + 1, max(0, x - mx) : x + mx + 1]
    return {"in_box": bool(mask[y, x]), "pointing_hit": bool(window.any())}


def object_region(size: tuple[int, int], boxes: Sequence[Box] = (), mask: np.ndarray | None = None) -> np.ndarray:
    """The object's pixels as a boolean ``[H, W]`` array: the mask when there is one, else the union of the boxes.

    Args:
        size: the image's ``(H, W)``.
        boxes: inclusive boxes in image pixels.
        mask: a mask of any shape (resized to ``size`` by nearest neighbour), nonzero on the object.

    Returns:
        Boolean array of shape ``size``.
    """
    height, width = size
    if mask is not None:
        mask = np.asarray(mask)
        if mask.ndim == 3:
            mask = mask.max(axis=2)
        if mask.shape != (height, width):
            import cv2

            mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        return mask > 0
    region = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        xa, ya = max(0, int(math.ceil(x0))), max(0, int(math.ceil(y0)))
        xb, yb = min(width - 1, int(math.floor(x1))), min(height - 1, int(math.floor(y1)))
        region[ya : yb + 1, xa : xb + 1] = True
    return region


def energy_share(cam_hw: Tensor | np.ndarray, region: np.ndarray) -> float:
    """Share of the map's positive part inside the region (energy-based pointing game, Score-CAM).

    Args:
        cam_hw: one map at the region's resolution ``[H, W]`` (raw, signed).
        region: boolean ``[H, W]``.

    Returns:
        ``sum(relu(map) * region) / sum(relu(map))`` in ``[0, 1]``; NaN when the map has no positive part.
    """
    cam = torch.as_tensor(cam_hw).double().clamp_min(0)
    total = float(cam.sum())
    if total <= 0:
        return math.nan
    return float((cam * torch.as_tensor(region, dtype=torch.float64)).sum()) / total


def localization_columns(
    peak_xy: tuple[float, float],
    cam_image: Tensor | None,
    size: tuple[int, int],
    *,
    boxes: Sequence[Box] = (),
    mask: np.ndarray | None = None,
    tolerance: float,
) -> dict[str, Any]:
    """Localization columns of one image: true-class pointing game, centre baseline, energy in the object.

    Args:
        peak_xy: the peak of the true class's map in image pixels (see :mod:`catdog.maps.geometry`).
        cam_image: that map upsampled to the image ``[H, W]`` (for the energy), or None to skip it.
        size: the image's ``(H, W)``.
        boxes: the image's object boxes (inclusive), if known.
        mask: the image's object mask, if known (preferred over boxes).
        tolerance: pointing-game margin as a fraction of the image size.

    Returns:
        ``in_box, pointing_hit, centre_in_box, centre_hit, energy_in_box``; ``{}`` without boxes or mask.
    """
    if not boxes and mask is None:
        return {}
    height, width = size
    centre = ((width - 1) / 2, (height - 1) / 2)
    region = object_region(size, boxes, mask) if (mask is not None or cam_image is not None) else None
    if mask is not None:
        hits, centre_hits = _mask_pointing(peak_xy, region, tolerance), _mask_pointing(centre, region, tolerance)
    else:
        hits, centre_hits = pointing_columns(peak_xy, boxes, size, tolerance), pointing_columns(
            centre, boxes, size, tolerance
        )
    row = dict(hits, centre_in_box=centre_hits["in_box"], centre_hit=centre_hits["pointing_hit"])
    if cam_image is not None:
        row["energy_in_box"] = energy_share(cam_image, region)
    return row


def _rate(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.astype(bool).mean()) if len(values) else None


def _mean(values: pd.Series) -> float | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.mean()) if len(values) else None


def _pointing_totals(scored: pd.DataFrame) -> dict[str, Any]:
    totals: dict[str, Any] = {
        "hits": int(scored["pointing_hit"].astype(bool).sum()),
        "images": int(len(scored)),
        "hit_rate": _rate(scored["pointing_hit"]),
        "strict_hit_rate": _rate(scored["in_box"]),
    }
    if "centre_hit" in scored.columns:
        totals["centre_hit_rate"] = _rate(scored["centre_hit"])
        totals["centre_strict_hit_rate"] = _rate(scored["centre_in_box"])
    if "energy_in_box" in scored.columns:
        totals["energy_in_box"] = _mean(scored["energy_in_box"])
    return totals


def summarize_pointing(predictions: pd.DataFrame) -> dict[str, Any] | None:
    """summary.json's ``pointing_game`` from the per-image columns, or None when no image has boxes.

    Returns:
        ``hits, images, hit_rate, strict_hit_rate`` (true-class map), the centre baseline
        ``centre_hit_rate, centre_strict_hit_rate``, the mean ``energy_in_box``, and the same per true
        class under ``per_class``.
    """
    if not len(predictions) or "pointing_hit" not in predictions.columns:
        return None
    scored = predictions[predictions["pointing_hit"].notna()]
    summary = _pointing_totals(scored)
    labelled = int(scored["true"].notna().sum()) if "true" in scored.columns else 0
    # Unlabelled images are scored on their predicted class's map (the last map is the prediction then).
    summary["map"] = (
        "true class" if labelled == len(scored) else "predicted class" if labelled == 0
        else "true class (predicted class where unlabelled)"
    )
    if labelled:
        summary["per_class"] = {
            str(name): _pointing_totals(group) for name, group in scored.groupby("true", sort=True)
        }
    return summary


def pointing_lines(game: dict[str, Any]) -> list[str]:
    """Human-readable lines of a ``pointing_game`` summary (what explain prints)."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    which = "true-class" if game.get("map", "true class") == "true class" else "predicted-class"
    if game.get("map", "").startswith("true class ("):
        which = "true-class (predicted where unlabelled)"

    def line(name: str, totals: dict[str, Any]) -> str:
        text = (
            f"{name}: {which} peak strictly on the object {pct(totals['strict_hit_rate'])}, "
            f"with tolerance {pct(totals['hit_rate'])} of {totals['images']}"
        )
        if "centre_strict_hit_rate" in totals:
            text += f" (centre baseline {pct(totals['centre_strict_hit_rate'])} / {pct(totals['centre_hit_rate'])})"
        if totals.get("energy_in_box") is not None:
            text += f", energy on the object {pct(totals['energy_in_box'])}"
        return text

    lines = [line("pointing game", game)]
    for name, totals in (game.get("per_class") or {}).items():
        lines.append("    " + line(name, totals))
    return lines


def mosaic_tile_columns(
    cam_hw: Tensor, peak_xy: tuple[float, float], tiles: np.ndarray, own: Sequence[int], grid: tuple[int, int]
) -> dict[str, Any]:
    """Mosaic check of one class's map on one mosaic.

    Args:
        cam_hw: the class's map upsampled to the mosaic ``[H, W]``.
        peak_xy: the map's peak ``(x, y)`` in mosaic pixels.
        tiles: ``[H, W]`` int array, the tile index of each pixel.
        own: the indices of the tiles showing this class.
        grid: ``(rows, cols)`` of tiles.

    Returns:
        ``peak_on_own_tile`` (bool), ``energy_on_own_tiles`` (float, NaN without positive part) and
        ``chance`` (share of the mosaic that is this class's tiles).
    """
    height, width = tiles.shape
    x = int(np.clip(round(peak_xy[0]), 0, width - 1))
    y = int(np.clip(round(peak_xy[1]), 0, height - 1))
    region = np.isin(tiles, list(own))
    return {
        "peak_on_own_tile": bool(region[y, x]),
        "energy_on_own_tiles": energy_share(cam_hw, region),
        "chance": len(own) / (grid[0] * grid[1]),
    }


def summarize_mosaic(rows: pd.DataFrame) -> dict[str, Any] | None:
    """summary.json's ``mosaic`` from one row per (mosaic, class): overall and per class."""
    if not len(rows):
        return None

    def totals(frame: pd.DataFrame) -> dict[str, Any]:
        return {
            "maps": int(len(frame)),
            "peak_on_own_tile": _rate(frame["peak_on_own_tile"]),
            "energy_on_own_tiles": _mean(frame["energy_on_own_tiles"]),
            "chance": _mean(frame["chance"]),
        }

    summary = totals(rows)
    summary["mosaics"] = int(rows["mosaic"].nunique())
    summary["per_class"] = {str(name): totals(group) for name, group in rows.groupby("class", sort=True)}
    return summary


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks (1-based) of each row of ``[N, P]``, ties sharing their average rank (as in Spearman's rho)."""
    n, p = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    ordered = np.take_along_axis(x, order, axis=1)
    starts = np.ones((n, p), dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = np.cumsum(starts.ravel()) - 1  # one id per run of equal values, across all rows
    position = np.tile(np.arange(1, p + 1, dtype=np.float64), n)
    mean_rank = np.bincount(group, weights=position) / np.bincount(group)
    ranks = np.empty((n, p))
    np.put_along_axis(ranks, order, mean_rank[group].reshape(n, p), axis=1)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps, pixel by pixel.

    Args:
        a: maps ``[N, h, w]``.
        b: maps of the same shape.

    Returns:
        ``[N]`` in [-1, 1]; NaN where a map is constant (it ranks nothing).
    """
    ra = _average_ranks(a.reshape(len(a), -1).astype(np.float64))
    rb = _average_ranks(b.reshape(len(b), -1).astype(np.float64))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / denominator, np.nan)


FAITHFULNESS_COLUMNS = ("deletion_auc", "insertion_auc", "drop", "increase", "sanity_rank_corr")


def summarize_faithfulness(predictions: pd.DataFrame) -> dict[str, Any] | None:
    """summary.json's ``faithfulness``: the mean of each faithfulness column present (None when none is)."""
    present = [c for c in FAITHFULNESS_COLUMNS if c in predictions.columns]
    if not present or not len(predictions):
        return None
    summary: dict[str, Any] = {column: _mean(predictions[column]) for column in present}
    summary["images"] = int(len(predictions))
    return summary


def _share(value: float | None) -> str:
    """A rate as a percentage, or "n/a" where it could not be measured (a class with no map energy)."""
    return "n/a" if value is None else f"{value:.1%}"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """Human-readable lines of the mosaic check and the faithfulness metrics of a summary (explain prints them)."""
    lines: list[str] = []
    mosaic = summary.get("mosaic")
    if mosaic:
        lines.append(
            f"mosaic check ({mosaic['mosaics']} mosaics): a class's map peaks on its own tiles "
            f"{_share(mosaic['peak_on_own_tile'])} (chance {mosaic['chance']:.0%}), energy on them "
            f"{_share(mosaic['energy_on_own_tiles'])}"
        )
        for name, totals in mosaic["per_class"].items():
            lines.append(
                f"    {name}: peak on own tiles {_share(totals['peak_on_own_tile'])}, "
                f"energy {_share(totals['energy_on_own_tiles'])} ({totals['maps']} maps)"
            )
    faith = summary.get("faithfulness")
    if faith:
        names = {
            "deletion_auc": "deletion AUC (lower is better)",
            "insertion_auc": "insertion AUC (higher is better)",
            "drop": "average drop",
            "increase": "increase in confidence",
            "sanity_rank_corr": "rank correlation with a randomised model's map (lower is better)",
        }
        parts = [f"{names[k]} {v:.3f}" for k, v in faith.items() if k in names and v is not None]
        lines.append(f"faithfulness ({faith['images']} images): " + ", ".join(parts))
    return lines
