"""Annotation-free localization check: mosaics of photos of two classes (``localization=mosaic``).

A mosaic is a grid of held-out photos, half of them of class A and half of class B, in random tiles.
A class-specific map of A must peak in (and put its energy on) A's tiles, and B's map in B's; a map
that only says "the salient thing in the picture" or "not B" fails. No boxes or masks are needed, so
it tells a user with no annotations whether their maps are class-specific. Pairs of classes cycle
through all pairs, so every class of an N-class model is checked.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
import torch

from catdog.data import BadImageError, load_rgb
from catdog.errors import CatdogError
from catdog.maps.explainers import Explainer
from catdog.maps.geometry import CellCentres
from catdog.quality.localization import mosaic_tile_columns, summarize_mosaic

__all__ = ["MosaicOptions", "compose_mosaic", "mosaic_check"]


def compose_mosaic(tiles: list[np.ndarray], grid: tuple[int, int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resizes photos into the tiles of a square mosaic.

    Args:
        tiles: ``rows * cols`` RGB uint8 photos, row-major.
        grid: ``(rows, cols)``.
        size: side of the mosaic in pixels (the model input size).

    Returns:
        The ``[size, size, 3]`` uint8 mosaic and a ``[size, size]`` int array of each pixel's tile index.
    """
    rows, cols = grid
    mosaic = np.zeros((size, size, 3), dtype=np.uint8)
    index = np.zeros((size, size), dtype=np.int64)
    ys = np.linspace(0, size, rows + 1).round().astype(int)
    xs = np.linspace(0, size, cols + 1).round().astype(int)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, cols)
        (y0, y1), (x0, x1) = ys[r : r + 2], xs[c : c + 2]
        mosaic[y0:y1, x0:x1] = cv2.resize(tile, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        index[y0:y1, x0:x1] = n
    return mosaic, index


@dataclass(frozen=True)
class MosaicOptions:
    """How many mosaics the check makes, and how.

    Attributes:
        input_size: the model input side (mosaics are made at this size).
        count: mosaics to make.
        grid: ``(rows, cols)`` of tiles; half the tiles (rounded down) show class A, the rest class B.
        seed: which photos and tile orders.
        batch_size: mosaics per forward pass.
    """

    input_size: int
    count: int = 50
    grid: tuple[int, int] = (2, 2)
    seed: int = 0
    batch_size: int = 16


@dataclass(frozen=True)
class _Plan:
    """One mosaic: its number, classes A and B, its photos (row-major) and which class each tile shows."""

    number: int
    a: str
    b: str
    paths: list[str]
    owners: list[str]


def mosaic_check(
    explainer: Explainer,
    transform: Callable[[np.ndarray], torch.Tensor],
    images: pd.DataFrame,
    class_names: list[str],
    centres: CellCentres,
    options: MosaicOptions,
) -> tuple[pd.DataFrame, dict | None]:
    """Runs the mosaic check on labelled photos.

    Args:
        explainer: the method under test.
        transform: the model's eval transform (uint8 RGB -> normalised tensor).
        images: columns ``path`` and ``label`` (held-out photos; unlabelled rows are ignored).
        class_names: the model's classes.
        centres: the map geometry (peak and upsampling).
        options: input size, count, grid, seed and batch size (see :class:`MosaicOptions`).

    Returns:
        One row per (mosaic, class): ``mosaic, class, peak_on_own_tile, energy_on_own_tiles, chance, paths``;
        and the summary (:func:`catdog.quality.localization.summarize_mosaic`).

    Raises:
        CatdogError: fewer than two classes with enough labelled photos.
    """
    plans = _plan_mosaics(images, class_names, options)
    rows: list[dict] = []
    for start in range(0, len(plans), options.batch_size):
        batch = plans[start : start + options.batch_size]
        rows += _check_batch(explainer, transform, batch, class_names, centres, options)
    columns = ["mosaic", "class", "peak_on_own_tile", "energy_on_own_tiles", "chance", "paths"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame, summarize_mosaic(frame)


def _plan_mosaics(images: pd.DataFrame, class_names: list[str], options: MosaicOptions) -> list[_Plan]:
    """Which photos go into which tiles of each mosaic (pairs of classes cycle through all pairs).

    Raises:
        CatdogError: fewer than two classes with enough labelled photos.
    """
    tiles_per = options.grid[0] * options.grid[1]
    per_a = tiles_per // 2
    labelled = images[images["label"].notna()]
    pools = {
        name: labelled.loc[labelled["label"] == name, "path"].tolist()
        for name in class_names
        if (labelled["label"] == name).sum() >= tiles_per - per_a
    }
    if len(pools) < 2:
        raise CatdogError(
            "localization=mosaic needs labelled photos of at least two classes "
            f"({tiles_per - per_a} each): explain a labelled split or folder"
        )
    rng = np.random.default_rng(options.seed)
    pairs = list(itertools.combinations(sorted(pools, key=class_names.index), 2))
    plans = []
    for n in range(options.count):
        a, b = pairs[n % len(pairs)]
        if rng.random() < 0.5:
            a, b = b, a
        chosen = list(rng.choice(pools[a], per_a, replace=False)) + list(
            rng.choice(pools[b], tiles_per - per_a, replace=False)
        )
        order = rng.permutation(tiles_per)
        paths = [chosen[i] for i in order]
        owners = [a if i < per_a else b for i in order]
        plans.append(_Plan(n, a, b, paths, owners))
    return plans


def _check_batch(
    explainer: Explainer,
    transform: Callable[[np.ndarray], torch.Tensor],
    batch: list[_Plan],
    class_names: list[str],
    centres: CellCentres,
    options: MosaicOptions,
) -> list[dict]:
    """The rows of one forward pass's mosaics (those whose photos all decode): A's map, then B's."""
    inputs, tile_maps, kept = [], [], []
    for plan in batch:
        try:
            photos = [load_rgb(p) for p in plan.paths]
        except BadImageError:
            continue  # an unreadable photo: skip this mosaic
        mosaic, tiles = compose_mosaic(photos, options.grid, options.input_size)
        inputs.append(transform(mosaic))
        tile_maps.append(tiles)
        kept.append(plan)
    if not kept:
        return []
    x = torch.stack(inputs)
    to_index = {name: i for i, name in enumerate(class_names)}
    size = (options.input_size, options.input_size)
    rows = []
    for role in ("a", "b"):  # class A's map, then class B's
        target = torch.tensor([to_index[getattr(plan, role)] for plan in kept])
        maps = explainer.explain(x, true_labels=target, topk=1).maps[:, -1].float()
        for plan, cam, tiles in zip(kept, maps, tile_maps):
            name = getattr(plan, role)
            own = [i for i, owner in enumerate(plan.owners) if owner == name]
            cols = mosaic_tile_columns(centres.upsample(cam, size), centres.peak(cam, size), tiles, own, options.grid)
            rows.append({"mosaic": plan.number, "class": name, **cols, "paths": "|".join(plan.paths)})
    return rows
