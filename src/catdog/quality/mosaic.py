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

import cv2
import numpy as np
import pandas as pd
import torch

from catdog.data import BadImageError, load_rgb
from catdog.errors import CatdogError
from catdog.maps.explainers import Explainer
from catdog.maps.geometry import CellCentres
from catdog.quality.localization import mosaic_tile_columns, summarize_mosaic

__all__ = ["compose_mosaic", "mosaic_check"]


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


def mosaic_check(
    explainer: Explainer,
    transform: Callable[[np.ndarray], torch.Tensor],
    images: pd.DataFrame,
    class_names: list[str],
    centres: CellCentres,
    input_size: int,
    count: int = 50,
    grid: tuple[int, int] = (2, 2),
    seed: int = 0,
    batch_size: int = 16,
) -> tuple[pd.DataFrame, dict | None]:
    """Runs the mosaic check on labelled photos.

    Args:
        explainer: the method under test.
        transform: the model's eval transform (uint8 RGB -> normalised tensor).
        images: columns ``path`` and ``label`` (held-out photos; unlabelled rows are ignored).
        class_names: the model's classes.
        centres: the map geometry (peak and upsampling).
        input_size: the model input side (mosaics are made at this size).
        count: mosaics to make.
        grid: ``(rows, cols)`` of tiles; half the tiles (rounded down) show class A, the rest class B.
        seed: which photos and tile orders.
        batch_size: mosaics per forward pass.

    Returns:
        One row per (mosaic, class): ``mosaic, class, peak_on_own_tile, energy_on_own_tiles, chance, paths``;
        and the summary (:func:`catdog.quality.localization.summarize_mosaic`).

    Raises:
        CatdogError: fewer than two classes with enough labelled photos.
    """
    tiles_per = grid[0] * grid[1]
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
    rng = np.random.default_rng(seed)
    pairs = list(itertools.combinations(sorted(pools, key=class_names.index), 2))
    plans = []
    for n in range(count):
        a, b = pairs[n % len(pairs)]
        if rng.random() < 0.5:
            a, b = b, a
        chosen = list(rng.choice(pools[a], per_a, replace=False)) + list(
            rng.choice(pools[b], tiles_per - per_a, replace=False)
        )
        order = rng.permutation(tiles_per)
        paths = [chosen[i] for i in order]
        owners = [a if i < per_a else b for i in order]
        plans.append((n, a, b, paths, owners))

    rows: list[dict] = []
    to_index = {name: i for i, name in enumerate(class_names)}
    for start in range(0, len(plans), batch_size):
        batch = plans[start : start + batch_size]
        inputs, tile_maps, kept = [], [], []
        for plan in batch:
            try:
                photos = [load_rgb(p) for p in plan[3]]
            except BadImageError:
                continue  # an unreadable photo: skip this mosaic
            mosaic, tiles = compose_mosaic(photos, grid, input_size)
            inputs.append(transform(mosaic))
            tile_maps.append(tiles)
            kept.append(plan)
        if not kept:
            continue
        x = torch.stack(inputs)
        for role in (1, 2):  # class A's map, then class B's
            target = torch.tensor([to_index[plan[role]] for plan in kept])
            maps = explainer.explain(x, true_labels=target, topk=1).maps[:, -1].float()
            for plan, cam, tiles in zip(kept, maps, tile_maps):
                name = plan[role]
                own = [i for i, owner in enumerate(plan[4]) if owner == name]
                size = (input_size, input_size)
                cols = mosaic_tile_columns(centres.upsample(cam, size), centres.peak(cam, size), tiles, own, grid)
                rows.append({"mosaic": plan[0], "class": name, **cols, "paths": "|".join(plan[3])})
    columns = ["mosaic", "class", "peak_on_own_tile", "energy_on_own_tiles", "chance", "paths"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame, summarize_mosaic(frame)
