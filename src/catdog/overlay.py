"""Pictures for error analysis: CAM heatmaps, labels, side-by-side panels, grids.

All images are RGB ``uint8`` arrays ``[H, W, 3]`` in and out; OpenCV's BGR order is
only used inside this module. Maps come from :mod:`catdog.maps.cam`, already upsampled to
the image's own resolution and scaled to ``[0, 1]`` for display. Text is drawn with
OpenCV's Hershey fonts, which only cover ASCII: other characters are transliterated
when possible (``é`` -> ``e``) and shown as ``?`` otherwise.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from pathlib import Path

import cv2
import numpy as np

from catdog.errors import CatdogError
from catdog.names import (
    safe_name,  # re-exported: the one naming helper lives in catdog.names
)

__all__ = [
    "draw_contour",
    "draw_label",
    "heatmap_overlay",
    "image_grid",
    "label_text",
    "safe_name",
    "save_image",
    "side_by_side",
]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MIN_FONT_SCALE = 0.35
_TEXT_COLOR = (255, 255, 255)
_BAND_COLOR = (0, 0, 0)
_BACKGROUND = (24, 24, 24)  # gaps between panels and letterbox padding


def _check_rgb(image: np.ndarray, name: str = "image_rgb") -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"{name} must be an RGB uint8 array [H, W, 3], got shape {shape} and dtype {dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {image.shape}")


@functools.cache
def _diverging_lut() -> np.ndarray:
    """256 RGB colours of matplotlib's ``RdBu_r``: blue (negative), white (zero), red (positive)."""
    from matplotlib import colormaps

    rgb = np.rint(colormaps["RdBu_r"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    return rgb.reshape(256, 1, 3)


@functools.cache
def _jet_lut() -> np.ndarray:
    """OpenCV's JET colours as a ``[256, 1, 3]`` RGB table, so drawing needs no BGR->RGB pass."""
    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_JET)
    return np.ascontiguousarray(bgr[..., ::-1])


def heatmap_overlay(
    image_rgb: np.ndarray, cam01: np.ndarray, alpha: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """Blends a coloured map on the image at the image's resolution.

    Args:
        image_rgb: The original picture, RGB uint8 ``[H, W, 3]``.
        cam01: Map ``[H, W]`` scaled to ``[0, 1]`` (values outside are clipped).
        alpha: Weight of the heatmap: 0 gives the image, 1 the pure colormap.
        colormap: ``"jet"`` (red = high) or ``"diverging"`` (blue < 0.5 = white < red; for signed maps).

    Returns:
        RGB uint8 ``[H, W, 3]``.

    Raises:
        ValueError: If shapes differ, the map has NaN/inf or ``alpha`` is outside ``[0, 1]``.
    """
    cam01 = np.asarray(cam01)
    if not np.isfinite(cam01).all():
        raise ValueError("cam01 contains NaN or inf values")
    levels = np.rint(np.clip(cam01, 0.0, 1.0) * 255).astype(np.uint8)
    return blend_heatmap(image_rgb, levels, alpha, colormap)


def blend_heatmap(image_rgb: np.ndarray, levels: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """:func:`heatmap_overlay` from the map's colour levels (``uint8 [H, W]``, 0..255), e.g. from
    :func:`catdog.maps.cam.display_levels`: two passes over the pixels (colour table, blend).

    Raises:
        ValueError: If shapes differ, the image is not RGB uint8 or ``alpha`` is outside ``[0, 1]``.
    """
    _check_rgb(image_rgb)
    if levels.shape != image_rgb.shape[:2] or levels.dtype != np.uint8:
        raise ValueError(
            f"map of shape {levels.shape} ({levels.dtype}) for an image of {image_rgb.shape[:2]}; "
            "upsample the map to the image size first (catdog.maps.cam.upsample_cams)"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if colormap not in ("jet", "diverging"):
        raise ValueError(f"colormap must be 'jet' or 'diverging', got {colormap!r}")
    heat = cv2.applyColorMap(np.ascontiguousarray(levels), _diverging_lut() if colormap == "diverging" else _jet_lut())
    return cv2.addWeighted(heat, alpha, np.ascontiguousarray(image_rgb), 1.0 - alpha, 0.0)


def draw_contour(image_rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Draws the outline of a boolean region (e.g. :func:`catdog.maps.cam.strongest_region`) on a copy of the image.

    Args:
        image_rgb: RGB uint8 ``[H, W, 3]``.
        mask: Boolean ``[H, W]`` region; an empty mask draws nothing.
        color: RGB colour of the line (its width grows with the image).

    Returns:
        RGB uint8 ``[H, W, 3]``.

    Raises:
        ValueError: If the mask's shape differs from the image's.
    """
    _check_rgb(image_rgb)
    if mask.shape != image_rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from the image's {image_rgb.shape[:2]}")
    out = np.ascontiguousarray(image_rgb).copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, max(1, round(max(image_rgb.shape[:2]) / 200)), cv2.LINE_AA)
    return out


def label_text(pred: str, prob: float, true: str | None = None) -> str:
    """Formats a prediction label such as ``"dog 97.5% | true: cat"``.

    Args:
        pred: Predicted class name.
        prob: Predicted probability in ``[0, 1]``.
        true: True class name, or None when unknown.

    Returns:
        The label text; the ``| true: ...`` part only when the true class is known.
    """
    text = f"{pred} {100 * prob:.1f}%"
    return text if true is None else f"{text} | true: {true}"


def _ascii(text: str) -> str:
    """Hershey fonts draw ASCII only: strip accents, replace the rest with '?'."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return "".join(ch if " " <= ch <= "~" else "?" for ch in kept)


def _thickness(scale: float) -> int:
    return max(1, round(scale * 1.5))


def _text_width(text: str, scale: float) -> int:
    (width, _), _ = cv2.getTextSize(text, _FONT, scale, _thickness(scale))
    return width


def _fit_line(line: str, max_width: int, scale: float) -> tuple[str, float]:
    """Shrinks the font down to a minimum, then truncates with '...', to fit the width."""
    width = _text_width(line, scale)
    if width > max_width:
        scale = max(_MIN_FONT_SCALE, scale * max_width / width)
    while len(line) > 1 and _text_width(line, scale) > max_width:
        line = line[:-4] + "..." if len(line) > 4 else line[:-1]
    return line, scale


def _line_metrics(scale: float) -> tuple[int, int, int]:
    """Ascent, descent and padding in pixels of one line at this font scale."""
    (_, ascent), descent = cv2.getTextSize("Ag", _FONT, scale, _thickness(scale))
    return ascent, descent, max(2, round(4 * scale))


def _text_band(text: str, width: int, scale: float, height: int | None = None) -> np.ndarray:
    """Renders (multi-line) text in white on a dark band of the given width."""
    lines = [_ascii(line) for line in text.split("\n")]
    ascent, descent, pad = _line_metrics(scale)
    line_height = ascent + descent + pad
    band = np.full((height or pad + len(lines) * line_height, width, 3), _BAND_COLOR, dtype=np.uint8)
    for i, line in enumerate(lines):
        fitted, line_scale = _fit_line(line, max(1, width - 2 * pad), scale)
        baseline = pad + i * line_height + ascent
        cv2.putText(band, fitted, (pad, baseline), _FONT, line_scale, _TEXT_COLOR, _thickness(line_scale), cv2.LINE_AA)
    return band


_NARROW = 300  # pixels: below this width a label's ' | ' parts go on separate lines


def draw_label(image_rgb: np.ndarray, text: str, inplace: bool = False) -> np.ndarray:
    """Writes text on a dark band at the top of a copy of the image (of the image itself if ``inplace``).

    The font scales with the image width and shrinks (then truncates) so that each
    line fits; ``"\\n"`` starts a new line, and on narrow images so does ``" | "``.

    Args:
        image_rgb: RGB uint8 ``[H, W, 3]``.
        text: Label, e.g. from :func:`label_text`.
        inplace: draw on ``image_rgb`` itself (a picture the caller owns) instead of a copy.

    Returns:
        RGB uint8 array of the same shape; only the top band differs from the input.

    Raises:
        ValueError: If the image is not RGB uint8.
    """
    _check_rgb(image_rgb)
    height, width = image_rgb.shape[:2]
    if width < _NARROW:  # small images: "pred | true" on two lines rather than a truncated one
        text = text.replace(" | ", "\n")
    band = _text_band(text, width, scale=max(_MIN_FONT_SCALE, width / 600))
    out = image_rgb if inplace else image_rgb.copy()
    rows = min(height, band.shape[0])
    out[:rows] = band[:rows]
    return out


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def side_by_side(images: list[np.ndarray], titles: list[str] | None = None, gap: int = 4) -> np.ndarray:
    """Concatenates panels horizontally, e.g. original | predicted-class CAM | true-class CAM.

    Panels are resized (aspect kept) to the first panel's height.

    Args:
        images: RGB uint8 ``[H, W, 3]`` panels.
        titles: Optional title per panel, drawn with :func:`draw_label`.
        gap: Width in pixels of the dark separator between panels.

    Returns:
        RGB uint8 ``[H, sum(W_i) + gap * (n - 1), 3]``.

    Raises:
        ValueError: If the list is empty, a panel is not RGB uint8 or titles do not match.
    """
    if not images:
        raise ValueError("side_by_side needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    for image in images:
        _check_rgb(image, "each image")
    height = images[0].shape[0]
    panels = []
    for i, image in enumerate(images):
        if image.shape[0] != height:
            image = _resize(image, max(1, round(image.shape[1] * height / image.shape[0])), height)
        panels.append(draw_label(image, titles[i]) if titles is not None else image)
    separator = np.full((height, gap, 3), _BACKGROUND, dtype=np.uint8)
    pieces = [piece for panel in panels for piece in (separator, panel)][1:]
    return np.concatenate(pieces, axis=1)


def _letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Fits the image in a ``size`` square, keeping its aspect ratio, centered."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    square = np.full((size, size, 3), _BACKGROUND, dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    square[top : top + new_h, left : left + new_w] = _resize(image, new_w, new_h)
    return square


def image_grid(
    tiles: list[np.ndarray], captions: list[str], ncols: int, tile_size: int = 224, gap: int = 4
) -> np.ndarray:
    """A "top losses" style grid: letterboxed square tiles with a caption band under each.

    Captions may hold several lines separated by ``"\\n"``; all bands get the height of
    the tallest one. The grid has ``cols = min(ncols, len(tiles))`` columns and
    ``rows = ceil(len(tiles) / cols)`` rows; unused cells stay dark.

    Args:
        tiles: RGB uint8 ``[H, W, 3]`` images (e.g. CAM overlays), any sizes.
        captions: One caption per tile.
        ncols: Maximum number of columns.
        tile_size: Side of the square each tile is letterboxed into.
        gap: Pixels between cells.

    Returns:
        RGB uint8 ``[rows * (tile_size + caption_h) + (rows - 1) * gap,
        cols * tile_size + (cols - 1) * gap, 3]``.

    Raises:
        ValueError: If there are no tiles, captions do not match or sizes are not positive.
    """
    if not tiles:
        raise ValueError("image_grid needs at least one tile")
    if len(captions) != len(tiles):
        raise ValueError(f"got {len(captions)} captions for {len(tiles)} tiles")
    if ncols < 1 or tile_size < 1 or gap < 0:
        raise ValueError(f"need ncols >= 1, tile_size >= 1 and gap >= 0, got {ncols}, {tile_size}, {gap}")
    for tile in tiles:
        _check_rgb(tile, "each tile")
    scale = max(_MIN_FONT_SCALE, tile_size / 500)
    ascent, descent, pad = _line_metrics(scale)
    caption_h = pad + max(caption.count("\n") + 1 for caption in captions) * (ascent + descent + pad)
    cols = min(ncols, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    cell_h = tile_size + caption_h
    grid = np.full(
        (rows * cell_h + (rows - 1) * gap, cols * tile_size + (cols - 1) * gap, 3), _BACKGROUND, dtype=np.uint8
    )
    for i, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        top, left = (i // cols) * (cell_h + gap), (i % cols) * (tile_size + gap)
        grid[top : top + tile_size, left : left + tile_size] = _letterbox(tile, tile_size)
        grid[top + tile_size : top + cell_h, left : left + tile_size] = _text_band(caption, tile_size, scale, caption_h)
    return grid


_ENCODE_PARAMS = {".jpg": cv2.IMWRITE_JPEG_QUALITY, ".jpeg": cv2.IMWRITE_JPEG_QUALITY, ".png": None}


def save_image(path: str | Path, image_rgb: np.ndarray, quality: int = 90) -> Path:
    """Writes a JPEG or PNG chosen by the file suffix, creating parent folders.

    Encodes in memory and writes the bytes with Python, so non-ASCII paths work
    (``cv2.imwrite`` fails on them on Windows).

    Args:
        path: Destination ending in ``.jpg``, ``.jpeg`` or ``.png`` (any case).
        image_rgb: RGB uint8 ``[H, W, 3]``.
        quality: JPEG quality in ``[0, 100]``; PNG is lossless and ignores it.

    Returns:
        The path written.

    Raises:
        CatdogError: If the suffix is not a supported image format.
        ValueError: If the image is not RGB uint8 or the quality is out of range.
        RuntimeError: If OpenCV fails to encode the image.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _ENCODE_PARAMS:
        raise CatdogError(f"cannot save {path.name!r}: use a .jpg, .jpeg or .png file name")
    _check_rgb(image_rgb)
    if not 0 <= quality <= 100:
        raise ValueError(f"quality must be in [0, 100], got {quality}")
    flag = _ENCODE_PARAMS[suffix]
    params = [] if flag is None else [flag, int(quality)]
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.tobytes())
    return path
