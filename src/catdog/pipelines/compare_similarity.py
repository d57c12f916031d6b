"""Compare's numbers: images aligned across experiments, flips, and how much their maps agree.

Map agreement per image and pair: the Spearman rank correlation of the maps and the IoU of their hottest
regions (the top :data:`TOP_FRACTION` of pixels), with quartiles per pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from catdog.errors import CatdogError
from catdog.maps.cam import upsample_cams
from catdog.quality.localization import spearman
from catdog.report import (
    Experiment,
    confidence,
    experiment_table,
    pair_column,
    restrict_to_paths,
)

TOP_FRACTION = 0.2  # the "hottest region" of a map for the IoU: its top 20% of pixels


def align(experiments: Sequence[Experiment], paths: Sequence[str] | None = None) -> list[str]:
    """Restrict every experiment's predictions to the same images, in the same order (matched by path).

    Args:
        experiments: modified in place: ``predictions`` keeps only the shared rows, ordered by path.
        paths: the wanted images; default: all. Images a run could not read are left out for all.

    Returns:
        The shared paths, sorted.

    Raises:
        CatdogError: no image is shared.
    """
    shared = set(paths) if paths is not None else None
    for exp in experiments:
        present = set(exp.predictions["path"])
        shared = present if shared is None else shared & present
    if not shared:
        raise CatdogError("The experiments share no explained image: compare them on the same images (data.root=...)")
    ordered = sorted(shared)
    for exp in experiments:
        exp.predictions = restrict_to_paths(exp.predictions, ordered)
    return ordered


def flip_counts(correct_a: Sequence[bool | None], correct_b: Sequence[bool | None]) -> tuple[int, int]:
    """How many images went right -> wrong and wrong -> right from A to B (unlabelled images ignored)."""
    to_wrong = sum(1 for a, b in zip(correct_a, correct_b, strict=True) if a is True and b is False)
    to_right = sum(1 for a, b in zip(correct_a, correct_b, strict=True) if a is False and b is True)
    return to_wrong, to_right


def class_names_index(class_names: Sequence[str], name: str) -> int:
    """Index of a class name (the predictions table stores names)."""
    return list(class_names).index(name)


def to_common_size(maps: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Bilinearly resize ``[N, h, w]`` stacks of different architectures to the largest h and w."""
    height = max(m.shape[1] for m in maps)
    width = max(m.shape[2] for m in maps)
    return [
        m if m.shape[1:] == (height, width) else upsample_cams(torch.from_numpy(m), (height, width)).numpy()
        for m in maps
    ]


def top_region_iou(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """IoU of the hottest regions of each pair of maps.

    The region is the ``ceil(fraction * h * w)`` highest pixels of a map (ties broken by position,
    so both regions always have the same size).

    Args:
        a: maps ``[N, h, w]``.
        b: maps of the same shape.
        fraction: share of pixels in the region.

    Returns:
        ``[N]`` in [0, 1].
    """
    flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    k = max(1, math.ceil(fraction * flat_a.shape[1]))

    def top(flat: np.ndarray) -> np.ndarray:
        mask = np.zeros(flat.shape, dtype=bool)
        np.put_along_axis(mask, np.argsort(-flat, axis=1, kind="stable")[:, :k], True, axis=1)
        return mask

    mask_a, mask_b = top(flat_a), top(flat_b)
    return (mask_a & mask_b).sum(axis=1) / (mask_a | mask_b).sum(axis=1)


def _quartiles(values: np.ndarray, name: str) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return {f"{name}_{s}": math.nan for s in ("mean", "q25", "median", "q75")}
    q25, median, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
    return {
        f"{name}_mean": float(finite.mean()),
        f"{name}_q25": float(q25),
        f"{name}_median": float(median),
        f"{name}_q75": float(q75),
    }


def compare_tables(
    experiments: Sequence[Experiment], cams: Sequence[np.ndarray]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three tables of a comparison, from aligned experiments and their predicted-class maps.

    Args:
        experiments: aligned (see :func:`align`): same paths in the same order.
        cams: per experiment ``[N, h, w]`` maps in that order (any h, w).

    Returns:
        experiments table, pairs table, per-image table.
    """
    first = experiments[0].predictions
    maps = to_common_size(cams)
    per_image = pd.DataFrame({"path": first["path"], "true": first["true"]})
    for exp in experiments:
        per_image[f"pred [{exp.label}]"] = exp.predictions["pred"].to_numpy()
        per_image[f"confidence [{exp.label}]"] = confidence(exp.predictions)
        per_image[f"correct [{exp.label}]"] = exp.predictions["correct"].to_numpy()
    outcomes = [
        set(v for v in values if v is not None) for values in zip(*(e.predictions["correct"] for e in experiments))
    ]
    per_image["flipped"] = [len(o) > 1 for o in outcomes]

    pair_rows, rhos = [], []
    for i in range(len(experiments)):
        for j in range(i + 1, len(experiments)):
            a, b = experiments[i], experiments[j]
            rho, iou = spearman(maps[i], maps[j]), top_region_iou(maps[i], maps[j])
            per_image[pair_column("spearman", a.label, b.label)] = rho
            per_image[pair_column("iou_top20", a.label, b.label)] = iou
            rhos.append(rho)
            to_wrong, to_right = flip_counts(list(a.predictions["correct"]), list(b.predictions["correct"]))
            pair_rows.append(
                {
                    "a": a.label,
                    "b": b.label,
                    "images": len(first),
                    "correct_to_incorrect": to_wrong,
                    "incorrect_to_correct": to_right,
                    "same_prediction": float(
                        (a.predictions["pred"].to_numpy() == b.predictions["pred"].to_numpy()).mean()
                    ),
                    **_quartiles(rho, "spearman"),
                    **_quartiles(iou, "iou_top20"),
                }
            )
    if rhos:
        with np.errstate(invalid="ignore"):
            per_image["cam_disagreement"] = (
                1.0 - np.nanmean(np.vstack(rhos), axis=0) if len(rhos) > 1 else 1.0 - rhos[0]
            )
    else:
        per_image["cam_disagreement"] = math.nan
    pairs = pd.DataFrame(pair_rows) if pair_rows else pd.DataFrame(columns=["a", "b", "images"])
    return experiment_table(experiments), pairs, per_image
