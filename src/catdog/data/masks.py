"""Object masks for localization metrics: a mask image beside each photo, or a masks.csv naming them.

Two ways to give an image's object mask (by default nonzero pixels are the object; trimaps that mark the
object with one value, e.g. the Oxford-IIIT Pet ones, name it with ``mask_object=[1]``; any size: it is
resized to the photo by nearest neighbour):

- ``<stem>_mask.png`` beside ``<stem>.jpg`` (any image extension for the mask); those mask files are
  not explained themselves;
- ``masks.csv`` in the folder explained, columns ``path,mask`` (relative to that folder, or absolute).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from catdog.data.images import IMAGE_EXTENSIONS, BadImageError, load_rgb
from catdog.data.index import absolute_path
from catdog.errors import CatdogError

__all__ = [
    "MASKS_FILE",
    "MASK_SUFFIX",
    "check_masks",
    "find_masks",
    "is_mask_file",
    "load_mask",
    "parse_mask_object",
    "photo_of_mask",
    "split_off_masks",
]

MASKS_FILE = "masks.csv"
MASK_SUFFIX = "_mask"


def is_mask_file(path: str | Path) -> bool:
    """Whether a file is an object mask: ``<stem>_mask.<ext>`` with its photo ``<stem>.<ext>`` beside it.

    A file named ``*_mask`` with no such photo is a photo itself (and is never any image's mask).
    """
    return photo_of_mask(path) is not None


def photo_of_mask(path: str | Path) -> Path | None:
    """The photo a ``<stem>_mask.<ext>`` file is the mask of (``<stem>.<any image ext>`` beside it), or None."""
    path = Path(path)
    if not path.stem.endswith(MASK_SUFFIX):
        return None
    stem = path.stem[: -len(MASK_SUFFIX)]
    for ext in sorted(IMAGE_EXTENSIONS):
        photo = path.with_name(f"{stem}{ext}")
        if _is_file(photo):
            return photo
    return None


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a name the file system refuses (longer than 255 bytes)."""
    try:
        return path.is_file()
    except OSError:
        return False


def split_off_masks(images: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Separate object mask files from the photos of an image table (rows with a ``path``).

    Returns:
        The photos, and ``path,reason`` rows for skipped.csv: each mask, and whose mask it is.
    """
    photos = [photo_of_mask(p) for p in images["path"]]
    is_mask = np.array([photo is not None for photo in photos], dtype=bool)
    skipped = pd.DataFrame(
        {
            "path": images["path"][is_mask].tolist(),
            "reason": [
                f"object mask of {photo.name} (named <stem>{MASK_SUFFIX}): rename it if it is a photo"
                for photo in photos
                if photo is not None
            ],
        }
    )
    return images[~is_mask].reset_index(drop=True), skipped


def check_masks(masks: dict[str, str], object_values: tuple[int, ...] | None) -> tuple[dict[str, str], pd.DataFrame]:
    """Drop the masks that cannot be read: their images are explained without a mask, never left out.

    Returns:
        The readable masks (image -> mask), and ``path,reason`` rows (the mask file) for skipped.csv.
    """
    good, problems = {}, []
    for image, mask in masks.items():
        try:
            load_mask(mask, object_values)
        except CatdogError as err:
            problems.append(
                (mask, f"unreadable object mask of {Path(image).name} ({err}): the image is used without it")
            )
            continue
        good[image] = mask
    return good, pd.DataFrame(problems, columns=["path", "reason"])


def find_masks(root: str | Path | None, paths: list[str]) -> dict[str, str]:
    """The mask file of each image that has one.

    Args:
        root: the folder explained (where a masks.csv may be), or None.
        paths: absolute image paths.

    Returns:
        Absolute image path -> absolute mask path.

    Raises:
        CatdogError: masks.csv lacks a column or names a mask that does not exist.
    """
    masks: dict[str, str] = {}
    for path in paths:
        image = Path(path)
        for ext in sorted(IMAGE_EXTENSIONS):
            candidate = image.with_name(f"{image.stem}{MASK_SUFFIX}{ext}")
            if _is_file(candidate):
                masks[path] = str(candidate)
                break
    file = Path(root).expanduser() / MASKS_FILE if root else None
    if file is not None and file.is_file():
        from catdog.readers import read_csv  # here: readers imports the data package

        fix = "it needs a header path,mask and one image and its mask per row"
        frame = read_csv(file, required=("path", "mask"), text=("path", "mask"), what="masks", fix=fix)
        blank = (frame["path"].str.strip() == "") | (frame["mask"].str.strip() == "")
        if blank.any():
            raise CatdogError(
                f"masks {file} has an empty cell in data row {int(blank.to_numpy().nonzero()[0][0]) + 1}: {fix}"
            )
        for row in frame.itertuples():
            mask = absolute_path(row.mask, file.parent)
            if not Path(mask).is_file():
                raise CatdogError(f"{file} names mask {row.mask}, which does not exist: fix the path")
            masks[absolute_path(row.path, file.parent)] = mask
    return masks


def load_mask(path: str | Path, object_values: tuple[int, ...] | None = None) -> np.ndarray:
    """A mask file as a boolean ``[H, W]`` array.

    Args:
        path: the mask image.
        object_values: the pixel values that mark the object (a trimap's object label, e.g. ``(1,)`` for
            Oxford-IIIT Pet trimaps, ``(0,)`` for the coral test mask); None: nonzero in any channel.

    Raises:
        CatdogError: the file cannot be read.
    """
    try:
        rgb = load_rgb(path)
    except BadImageError as err:
        raise CatdogError(f"cannot read mask {path}: {err}") from None
    gray = rgb.max(axis=2)
    if object_values is None:
        return gray > 0
    return np.isin(gray, np.asarray(object_values, dtype=gray.dtype))


def parse_mask_object(value: object) -> tuple[int, ...] | None:
    """The ``mask_object`` setting: null or "nonzero", one pixel value, or a list of them (0-255).

    Raises:
        CatdogError: a value is not an integer in 0-255.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "nonzero"):
        return None
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255 for v in values):
        raise CatdogError(
            f"mask_object={value!r} is not supported: use nonzero (the default), a pixel value 0-255 "
            "(mask_object=1) or a list of them (mask_object=[1,3])"
        )
    return tuple(values)
