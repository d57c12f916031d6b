"""Which images triage audits: every image of the run's dataset (split.csv), or a folder (``data.root``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from catdog.data.index import SPLITS
from catdog.data.selection import select_images
from catdog.errors import CatdogError

__all__ = ["images_to_audit", "object_sizes", "relative_key"]

FOLDER_SPLIT = "folder"  # the split recorded for a data.root folder without train/val/test sub-folders


def images_to_audit(
    root: str | None, class_names: list[str], data_hparams: dict[str, Any], run_dir: Path
) -> pd.DataFrame:
    """Columns ``path`` (absolute), ``label`` (class name or None), ``split`` and ``key`` (path relative to the root).

    Raises:
        CatdogError: no split.csv and no ``data.root``, no images, or a run whose dataset moved (none of
            split.csv's files exists: pass ``data.root``).
    """
    if root:
        images = select_images(root, "all", class_names, data_hparams, run_dir)
        base = Path(root).expanduser().resolve()
        images["split"] = [_split_from_folders(path, base) for path in images["path"]]
    else:
        images = _split_rows(class_names, data_hparams, run_dir)
        base = Path(data_hparams["root"]) if data_hparams.get("root") else None
        if base is None or not all(Path(p).is_relative_to(base) for p in images["path"]):
            # a csv manifest's images elsewhere: keys relative to their common folder
            base = Path(os.path.commonpath(images["path"].tolist())) if len(images) > 1 else None
    images["key"] = [relative_key(path, base) for path in images["path"]]
    return images.reset_index(drop=True)


def _split_rows(class_names: list[str], data_hparams: dict[str, Any], run_dir: Path) -> pd.DataFrame:
    """Every row of the run's split.csv, with its split; a one-line error when its files moved."""
    from catdog.readers import read_split_csv

    split_csv = Path(data_hparams.get("split_csv") or run_dir / "split.csv")
    if not split_csv.is_file():
        split_csv = run_dir / "split.csv"
    if not split_csv.is_file():
        raise CatdogError(f"No split.csv in {run_dir}: pass data.root=<folder of images> to choose the images to audit")
    table = read_split_csv(split_csv, fix="it is written by scripts/train.py; train again or pass data.root=<folder>")
    if table.empty:
        raise CatdogError(f"{split_csv} lists no images: pass data.root=<folder of images>")
    present = [os.path.exists(path) for path in table["path"]]
    if not any(present):
        raise CatdogError(
            f"the run's dataset moved: none of the {len(table)} images of {split_csv} exists (first: "
            f"{table['path'].iloc[0]}): pass data.root=<the folder the images are in now>"
        )
    table["label"] = table["label"].where(table["label"].notna(), None)
    return table[["path", "label", "split"]].copy()


def _split_from_folders(path: str, base: Path) -> str:
    """``train``/``val``/``test`` when a folder below the root is named so, else ``folder``."""
    parts = Path(path).relative_to(base).parts[:-1] if Path(path).is_relative_to(base) else ()
    return next((part for part in parts if part in SPLITS), FOLDER_SPLIT)


def relative_key(path: str, base: Path | None) -> str:
    """The path relative to the dataset root (the key explain, compare and triage tables join on), else as is."""
    if base is not None and Path(path).is_relative_to(base):
        return Path(path).relative_to(base).as_posix()
    return str(path)


def object_sizes(table: pd.DataFrame, root: str | None) -> pd.Series:
    """Each image's largest object box as a share of the photo (boxes.csv beside the images), NaN without one."""
    from catdog.data import load_boxes

    boxes = load_boxes(root) if root and Path(root).expanduser().is_dir() else None
    if boxes is None or boxes.empty:
        return pd.Series(np.nan, index=table.index)
    boxes = boxes.assign(area=(boxes["x1"] - boxes["x0"]) * (boxes["y1"] - boxes["y0"]))
    largest = boxes.groupby("path")["area"].max()
    area = table["path"].map(largest).astype(float)
    return (area / (table["width"].astype(float) * table["height"].astype(float))).round(4)
