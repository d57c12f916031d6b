"""Robust image decoding: any readable image file to an RGB uint8 array, broken files reported.

Real datasets contain odd-but-valid files (grayscale, CMYK, 16-bit, palette, transparency, rotated
phone photos) and broken ones (empty, truncated, not an image at all). `load_rgb` turns the first
kind into the one format the rest of catdog uses, and raises `BadImageError` with a short reason for
the second kind. `scan_images` runs it over a whole dataset before training, so that one broken file
is listed in skipped.csv instead of killing a run hours in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif"}
    | {".heic", ".heif", ".jp2", ".pbm", ".pgm", ".ppm", ".pnm"}
)
"""File name extensions (lowercase, with the dot) treated as images when listing folders. Files without an
extension are listed when their first bytes say image (:func:`looks_like_image`). Formats this Pillow cannot
decode (HEIC without a plugin) are listed too, so they land in skipped.csv with a reason, never vanish."""

# Extensions whose decoder is an optional Pillow plugin: the reason names it.
_PLUGIN_HINTS = {".heic": "pillow-heif", ".heif": "pillow-heif"}

# A truncated file must be reported, never silently decoded as a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

MAX_IMAGE_PIXELS = 100_000_000
"""Images with more pixels are refused before decoding ("too many pixels"): a decompression bomb (a small
file that decodes to gigabytes) must not exhaust memory. 100 MP is a large photo (12 MP phones, 50 MP
cameras); decoded as RGB it is 300 MB."""
# PIL's own guard (a warning above its limit, an error above twice that) is set to the same limit, so a
# format that decodes before catdog can look at the size is stopped too.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

# Below this many files a progress bar is just noise.
_PROGRESS_MIN_FILES = 200


class BadImageError(Exception):
    """An image file that cannot be decoded; the message is a short reason.

    Reasons: "file not found", "zero-byte file", "not an image file", "truncated image data",
    "cannot read: ..." (an OS error such as a permission problem) or "cannot decode: ...".
    """


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file fully into an RGB uint8 array.

    EXIF orientation is applied, so the array is upright as a photo viewer shows it. Conversions:
    grayscale (L, 1) is repeated on the three channels; 16-bit and 32-bit integer grayscale
    (I;16, I) is scaled from 0..65535 to 0..255; float (F) is taken as 0..1 when all values lie in
    that range, else as 0..255 (clipped); CMYK, YCbCr and palette images go through PIL's
    conversion; images with transparency (RGBA, LA, PA, palette with a transparent colour) are
    composited onto white. Animated images give their first frame.

    Args:
        path: Image file.

    Returns:
        Array of shape (H, W, 3), dtype uint8, RGB order, C-contiguous.

    Raises:
        BadImageError: The file is missing, empty, not an image, truncated, larger than
            `MAX_IMAGE_PIXELS` or otherwise undecodable. Its message is the short reason.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImageError("zero-byte file")
        with Image.open(path) as image:
            width, height = image.size  # from the header, before any pixel is decoded
            if width * height > MAX_IMAGE_PIXELS:
                raise BadImageError(
                    f"too many pixels ({width}x{height} > {MAX_IMAGE_PIXELS:,}): possible decompression bomb"
                )
            # load() decodes every byte, so truncated data raises here and not later.
            image.load()
            _apply_exif_orientation(image)
            return _to_rgb(image)
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError("file not found") from None
    except UnidentifiedImageError:
        plugin = _PLUGIN_HINTS.get(path.suffix.lower())
        if plugin:
            raise BadImageError(
                f"cannot decode {path.suffix} files: install {plugin} or convert them to JPEG"
            ) from None
        raise BadImageError("not an image file") from None
    except (OSError, EOFError) as exc:
        # PIL reports truncation as OSError("image file is truncated ...") or EOFError.
        if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
            raise BadImageError("truncated image data") from None
        if exc.errno is not None:
            raise BadImageError(f"cannot read: {exc.strerror}") from None
        raise BadImageError(f"cannot decode: {exc}") from None
    except Exception as exc:
        # Malformed files make decoders raise many types (SyntaxError, ValueError, struct.error,
        # DecompressionBombError...): all mean "skip this file", none may stop a whole scan.
        raise BadImageError(f"cannot decode: {type(exc).__name__}: {exc}") from None


def looks_like_image(path: str | Path) -> bool:
    """Whether a file's header is one Pillow recognises as an image (reads the header only, no pixels).

    For files without an extension: a photo saved without one is still an image to use.
    """
    try:
        with Image.open(path) as image:
            return bool(image.format)
    except Exception:  # noqa: BLE001 - not an image, unreadable, or a decoder's own error type: not one to list
        return False


def _apply_exif_orientation(image: Image.Image) -> None:
    """Turn the image upright as its EXIF orientation says; a malformed EXIF block is ignored."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:
        # The pixels decoded fine; only the orientation is unknown, so keep them as stored.
        pass


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image of any mode to an (H, W, 3) uint8 RGB array."""
    mode = image.mode
    if mode == "RGB":
        return np.array(image)  # a writable copy (np.asarray of a PIL image is read-only)
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I (16-bit PNG/TIFF): keep the full range
        values = np.asarray(image).astype(np.float32)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float32))
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in {"RGBA", "LA", "PA", "La", "RGBa"} or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        rgb, alpha = rgba[:, :, :3], rgba[:, :, 3:]
        # Integer alpha blend onto white: rgb * a + 255 * (1 - a), rounded.
        blended = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
        return blended.astype(np.uint8)
    return np.array(image.convert("RGB"))


def image_problem(path: str | Path) -> str | None:
    """Say why an image file cannot be used, by decoding it fully.

    Args:
        path: Image file.

    Returns:
        None when `load_rgb` succeeds, else the short reason (see `BadImageError`).
    """
    try:
        load_rgb(path)
    except BadImageError as exc:
        return str(exc)
    return None


def scan_images(
    paths: Sequence[str | Path], num_workers: int = 2, progress: bool = True
) -> tuple[list[str], pd.DataFrame]:
    """Decode every file once and separate the readable ones from the broken ones.

    Decoding runs in a thread pool (PIL releases the GIL while decoding). A progress bar is shown
    when `progress` is true and there are many files.

    Args:
        paths: Image files.
        num_workers: Number of decoding threads (at least 1 is used).
        progress: Whether a progress bar may be shown.

    Returns:
        The readable paths as str, in their original order, and a DataFrame with columns
        `path,reason` listing the skipped files (empty when none).
    """
    paths = [os.fspath(p) for p in paths]
    show = progress and len(paths) >= _PROGRESS_MIN_FILES
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        problems = list(
            tqdm(
                pool.map(image_problem, paths),
                total=len(paths),
                desc="Checking images",
                unit="img",
                disable=None if show else True,  # None: off without a terminal (no \r frames in logs)
            )
        )
    readable = [p for p, problem in zip(paths, problems) if problem is None]
    skipped = pd.DataFrame(
        [(p, problem) for p, problem in zip(paths, problems) if problem is not None],
        columns=["path", "reason"],
    )
    return readable, skipped
