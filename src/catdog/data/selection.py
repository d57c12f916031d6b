"""Which images a later stage (explain, evaluate, compare) looks at: a file or folder, or a split of the run.

A data concern shared by every stage that reads a trained run: the run's ``split.csv`` (written by
train) says which images were held out; a folder or file given as ``data.root``/``input`` overrides it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from catdog.data.demo import load_boxes
from catdog.data.index import SPLITS, dataset_root, index_for_inference
from catdog.data.masks import check_masks, find_masks
from catdog.errors import CatdogError
from catdog.readers import read_split_csv
from catdog.runs import contained

__all__ = [
    "EXPLAIN_SPLITS",
    "Annotations",
    "load_annotations",
    "sample_across_classes",
    "select_images",
    "split_csv_of",
]

log = logging.getLogger(__name__)

EXPLAIN_SPLITS = (*SPLITS, "all")  # data.split: one split of split.csv, or all of them


def select_images(
    source: str | None,
    split: str,
    class_names: list[str],
    data_hparams: dict[str, Any],
    run_dir: Path,
    remap_root: str | None = None,
    check_files: bool = True,
) -> pd.DataFrame:
    """Which images to explain: ``source`` (a file or folder) or one split of the run's split.csv.

    ``remap_root``: the dataset the run was trained on, moved to this folder; split.csv's paths below the
    recorded dataset folder are read from there (``check_files``: refuse a split none of whose images exists,
    which says the dataset moved). A ``source`` that holds the run's own training or validation
    images (same paths below the dataset folder) is used with a warning: its accuracy is not held out.

    Returns:
        Columns ``path`` (absolute) and ``label`` (class name, or None when unknown). Object mask files are
        among them: callers set them aside with :func:`catdog.data.masks.split_off_masks` (and say so).

    Raises:
        CatdogError: no split file, an unknown split name, no images, or none of the split's images exists.
    """
    if source:
        images = index_for_inference(source, class_names)[["path", "label"]]
        if split_csv_of(data_hparams, run_dir) is not None:
            _warn_training_images(images["path"].tolist(), source, _run_split(data_hparams, run_dir, remap_root))
    else:
        if split not in EXPLAIN_SPLITS:
            raise CatdogError(f"data.split={split} is not one of {', '.join(EXPLAIN_SPLITS)}")
        images = _run_split(data_hparams, run_dir, remap_root)
        if split != "all":
            images = images[images["split"] == split]
        images = images[["path", "label"]]
        if check_files:
            _check_exists(images["path"].tolist(), split, remap_root)
    images = images.astype({"path": str})
    images["label"] = images["label"].where(images["label"].notna(), None)
    if images.empty:
        where = source or f"the {split} split of {run_dir}"
        raise CatdogError(f"No images to explain in {where}: check the path or pick another data.split")
    return images


def split_csv_of(data_hparams: dict[str, Any], run_dir: Path) -> Path | None:
    """The run's split.csv: the path recorded at training time, else the run folder's own copy (only if it lies
    inside the run folder, not a link to another file); None without."""
    recorded = data_hparams.get("split_csv")
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    return contained(run_dir, "split.csv")


def _run_split(data_hparams: dict[str, Any], run_dir: Path, remap_root: str | None) -> pd.DataFrame:
    """The run's split.csv (path, label, split), its paths moved below ``remap_root`` when given."""
    split_csv = split_csv_of(data_hparams, run_dir)
    if split_csv is None:
        raise CatdogError(
            f"No split.csv next to the checkpoint (looked in {run_dir}): pass data.root=<folder> or "
            "input=<image> to choose the images to explain"
        )
    images = read_split_csv(split_csv, fix="it is written by scripts/train.py; train again or restore it")
    if remap_root:
        new = Path(remap_root).expanduser()
        if not new.is_dir():
            raise CatdogError(f"data.remap_root={remap_root} is not a folder: give the dataset's new folder")
        old = dataset_root(data_hparams, images["path"])
        images["path"] = [_moved(p, old, new.resolve()) for p in images["path"]]
    return images


def _moved(path: str, old: Path, new: Path) -> str:
    """``path`` below ``new`` instead of ``old`` (paths outside ``old`` stay)."""
    try:
        return os.fspath(new / Path(path).relative_to(old))
    except ValueError:
        return path


def _check_exists(paths: list[str], split: str, remap_root: str | None) -> None:
    """A moved dataset: none of the split's images is where split.csv says."""
    if paths and not any(os.path.exists(p) for p in paths):
        how = "check data.remap_root" if remap_root else "if the dataset moved, pass data.remap_root=<its new folder>"
        raise CatdogError(
            f"none of the {len(paths)} images of the {split} split exists (first: {paths[0]}): {how}"
        )


def _warn_training_images(paths: list[str], source: str, split: pd.DataFrame) -> None:
    """Warn when a folder given to evaluate or explain holds the model's training or validation images.

    An image counts when its path ends like one of split.csv's train/val paths below the dataset folder
    (so a moved or copied dataset is recognised too).
    """
    seen = split[split["split"].isin(("train", "val"))]["path"]
    if not len(seen):
        return
    base = Path(os.path.commonpath([os.path.dirname(p) for p in split["path"]]))
    keys = {Path(p).relative_to(base).parts for p in seen if Path(p).is_relative_to(base)}
    depths = sorted({len(k) for k in keys})
    hits = sum(1 for p in paths if any(Path(p).parts[-d:] in keys for d in depths))
    if hits:
        log.warning(
            "%d of the %d images in %s are the model's own training or validation images (same paths as in its "
            "split.csv): accuracy on them is not held out; to evaluate the held-out images of a moved dataset "
            "use data.remap_root=<its new folder> data.split=test instead",
            hits,
            len(paths),
            source,
        )


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


@dataclass(frozen=True)
class Annotations:
    """Where the objects are: boxes and (readable) mask files, by absolute image path."""

    boxes: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)  # inclusive x0,y0,x1,y1
    masks: dict[str, str] = field(default_factory=dict)


def load_annotations(
    source: str | None, data_hparams: dict[str, Any], paths: list[str], mask_object: tuple[int, ...] | None
) -> tuple[Annotations, pd.DataFrame]:
    """The boxes.csv and object masks (``<stem>_mask.png`` or masks.csv) of the folder the images come from
    (the source folder, else the training data root).

    Returns:
        The annotations, and ``path,reason`` rows for skipped.csv: masks that cannot be read (their images
        are explained without a mask, never left out).
    """
    root = Path(source) if source else (Path(data_hparams["root"]) if data_hparams.get("root") else None)
    root = root if root is not None and root.is_dir() else None
    masks, bad_masks = check_masks(find_masks(root, paths), mask_object)
    return Annotations(boxes=_boxes(root), masks=masks), bad_masks


def _boxes(root: Path | None) -> dict[str, list[tuple[float, float, float, float]]]:
    frame = load_boxes(root) if root is not None else None
    if frame is None:
        return {}
    # boxes.csv has exclusive x1, y1 (the object is image[y0:y1, x0:x1]); point_in_box is inclusive.
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    for row in frame.itertuples():
        boxes.setdefault(str(row.path), []).append((float(row.x0), float(row.y0), float(row.x1) - 1, float(row.y1) - 1))
    return boxes
