"""Which images a later stage (explain, evaluate, compare) looks at: a file or folder, or a split of the run.

A data concern shared by every stage that reads a trained run: the run's ``split.csv`` (written by
train) says which images were held out; a folder or file given as ``data.root``/``input`` overrides it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from catdog.data.index import SPLITS, index_for_inference
from catdog.errors import CatdogError
from catdog.readers import read_csv

__all__ = ["EXPLAIN_SPLITS", "sample_across_classes", "select_images"]

EXPLAIN_SPLITS = (*SPLITS, "all")  # data.split: one split of split.csv, or all of them


def select_images(
    source: str | None, split: str, class_names: list[str], data_hparams: dict[str, Any], run_dir: Path
) -> pd.DataFrame:
    """Which images to explain: ``source`` (a file or folder) or one split of the run's split.csv.

    Returns:
        Columns ``path`` (absolute) and ``label`` (class name, or None when unknown). Object mask files are
        among them: callers set them aside with :func:`catdog.data.masks.split_off_masks` (and say so).

    Raises:
        CatdogError: no split file, an unknown split name, or no images.
    """
    if source:
        images = index_for_inference(source, class_names)[["path", "label"]]
    else:
        if split not in EXPLAIN_SPLITS:
            raise CatdogError(f"data.split={split} is not one of {', '.join(EXPLAIN_SPLITS)}")
        # The path recorded at training time, else the run folder's own copy (a moved run folder).
        split_csv = Path(data_hparams.get("split_csv") or run_dir / "split.csv")
        if not split_csv.is_file():
            split_csv = run_dir / "split.csv"
        if not split_csv.is_file():
            raise CatdogError(
                f"No split.csv next to the checkpoint (looked in {run_dir}): pass data.root=<folder> or "
                "input=<image> to choose the images to explain"
            )
        # Text as written: classes called "0", "1", "NA" or "None" stay class names.
        images = read_csv(
            split_csv,
            required=("path", "label", "split"),
            text=("path", "split"),
            optional_text=("label",),
            what="split file",
            fix="it is written by scripts/train.py; train again or restore it",
        )
        if split != "all":
            images = images[images["split"] == split]
        images = images[["path", "label"]]
    images = images.astype({"path": str})
    images["label"] = images["label"].where(images["label"].notna(), None)
    if images.empty:
        where = source or f"the {split} split of {run_dir}"
        raise CatdogError(f"No images to explain in {where}: check the path or pick another data.split")
    return images


def sample_across_classes(images: pd.DataFrame, count: int, seed: int = 0) -> pd.DataFrame:
    """At most ``count`` images, taken in turn from each class (unlabelled images form one group).

    Within a class the images are drawn in a seeded random order, so the same table and count always give
    the same images, and every class is present when ``count`` is at least the number of classes. The
    result keeps the table's order.

    Args:
        images: columns ``path`` and ``label`` (None when unknown).
        count: how many to keep (at least 1).
        seed: the random order within each class.

    Returns:
        The chosen rows, with a fresh index.

    Raises:
        CatdogError: ``count`` is below 1.
    """
    if count < 1:
        raise CatdogError(f"data.max_images={count} must be at least 1 (or null for all images)")
    if count >= len(images):
        return images.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    keys = images["label"].map(lambda v: "\0unlabelled" if v is None else str(v))
    queues = [rng.permutation(np.flatnonzero((keys == key).to_numpy())).tolist() for key in sorted(set(keys))]
    chosen: list[int] = []
    while len(chosen) < count:
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return images.iloc[sorted(chosen)].reset_index(drop=True)


def unmatched_label_folders(source: str | Path | None, images: pd.DataFrame) -> list[str]:
    """The top-level sub-folders of a ``source`` folder whose images got no label: folders that look like
    class folders but are not named like any of the model's classes (``cats/`` for class ``cat``)."""
    if not source or not Path(source).expanduser().is_dir():
        return []
    root = Path(source).expanduser().resolve()
    folders = set()
    for path in images.loc[images["label"].isna(), "path"]:
        try:
            parts = Path(path).relative_to(root).parts
        except ValueError:
            continue
        if len(parts) > 1:
            folders.add(parts[0])
    return sorted(folders)
