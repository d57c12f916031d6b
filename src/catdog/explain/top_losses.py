"""top_losses.png: the mistakes with the highest loss, packed in justified rows with readable captions.

Each overlay keeps its aspect ratio (no letterboxing): a row's pictures share one height and fill the
row's width exactly, like a photo gallery. Under each picture a caption in a real font (DejaVu Sans,
shipped with matplotlib) names the photo's file, the true and predicted classes with their
probabilities, and the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont

from catdog.overlay import save_image

WIDTH = 1600  # pixels of the whole picture
ROW_HEIGHT = 300  # target height of a row of pictures before it is stretched to the full width
FONT_PX = 18  # caption font size: readable when the PNG is shown at half size
GAP = 6
BACKGROUND = (245, 246, 248)
INK = (29, 29, 31)


@dataclass(frozen=True)
class Tile:
    """Where one picture and its caption go: ``x, y, width, height`` of the picture; the caption is under it."""

    x: int
    y: int
    width: int
    height: int


def caption_lines(row: pd.Series, true_p: float | None) -> list[str]:
    """File name, true class, predicted class (each with its probability), loss: short lines that fit a
    narrow picture. The photo's own file name, never the overlay's."""
    true_text = f"{row['true']} {_pct(true_p)}" if true_p is not None else str(row["true"])
    pred_p = row.get(f"p_{row['pred']}")
    return [
        Path(str(row["path"])).name,
        f"true {true_text}",
        f"pred {row['pred']} {_pct(pred_p)}",
        f"loss {row['loss']:.2f}",
    ]


def _pct(value: object) -> str:
    try:
        return f"{100 * float(value):.1f}%"
    except (TypeError, ValueError):
        return "?"


def justified_rows(
    aspects: list[float], width: int = WIDTH, row_height: int = ROW_HEIGHT, gap: int = GAP
) -> list[Tile]:
    """Pack pictures of the given aspect ratios (width / height) in rows that fill ``width`` exactly.

    A row takes pictures while their widths at ``row_height`` fit; then its height is scaled so they fill
    the width. The last row keeps ``row_height`` (stretching two pictures to the full width would make
    them huge).
    Positions are relative to the top of the pictures' area, without captions.
    """
    tiles: list[Tile] = []
    y, start = 0, 0
    while start < len(aspects):
        end, used = start, 0.0
        while end < len(aspects) and (end == start or used + aspects[end] * row_height + gap * (end - start) <= width):
            used += aspects[end] * row_height
            end += 1
        room = width - gap * (end - start - 1)
        total = sum(aspects[start:end])
        # Full rows fill the width (at most twice as tall as planned); the last row is not stretched.
        height = min(round(room / total), 2 * row_height if end < len(aspects) else row_height)
        x = 0
        for aspect in aspects[start:end]:
            w = max(1, min(round(aspect * height), width - x))
            tiles.append(Tile(x, y, w, height))
            x += w + gap
        y += height + gap
        start = end
    return tiles


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int) -> str:
    """The text, shortened in the middle with "…" until it fits ``width`` pixels (file names keep both ends)."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 1:
        keep -= 1
        short = text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2 :]
        if draw.textlength(short, font=font) <= width:
            return short
    return "…"


def top_losses_picture(pictures: list[np.ndarray], captions: list[list[str]], width: int = WIDTH) -> np.ndarray:
    """Pictures (RGB uint8) in justified rows, each with its caption lines under it; RGB uint8."""
    font = _font(FONT_PX)
    line = FONT_PX + 5
    band = max(len(lines) for lines in captions) * line + 4
    # Small overlays (a 112 px demo) are not blown up: rows are planned at most as tall as the tallest picture.
    row_height = min(ROW_HEIGHT, max(p.shape[0] for p in pictures))
    tiles = justified_rows([p.shape[1] / p.shape[0] for p in pictures], width, row_height)
    rows = sorted({t.y for t in tiles})
    shift = {y: i * band for i, y in enumerate(rows)}  # each row moves down by the caption bands above it
    height = max(t.y + t.height for t in tiles) + band * len(rows)
    canvas = Image.new("RGB", (max(t.x + t.width for t in tiles), height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for picture, lines, tile in zip(pictures, captions, tiles):
        top = tile.y + shift[tile.y]
        resized = cv2.resize(picture, (tile.width, tile.height), interpolation=cv2.INTER_AREA)
        canvas.paste(Image.fromarray(resized), (tile.x, top))
        for k, text in enumerate(lines):
            draw.text((tile.x + 2, top + tile.height + 2 + k * line), _fit(draw, text, font, tile.width - 4), INK, font)
    return np.asarray(canvas)


def write_top_losses(mistakes: pd.DataFrame, out_dir: Path) -> Path | None:
    """top_losses.png of these mistakes (highest loss first) from their overlay files; None when none is readable."""
    pictures, captions = [], []
    for _, row in mistakes.iterrows():
        tile = cv2.imread(str(out_dir / str(row["overlay"])), cv2.IMREAD_COLOR)
        if tile is None:
            continue
        pictures.append(cv2.cvtColor(tile, cv2.COLOR_BGR2RGB))
        true_p = row.get(f"p_{row['true']}")
        captions.append(caption_lines(row, float(true_p) if true_p is not None and pd.notna(true_p) else None))
    if not pictures:
        return None
    return save_image(out_dir / "top_losses.png", top_losses_picture(pictures, captions))
