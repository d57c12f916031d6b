"""top_losses.png: justified rows without letterboxing, readable captions with the photo's file name."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from catdog.explain.render import draw_run_pictures
from catdog.overlay import save_image

GREEN = (0, 255, 0)


def mistakes(out: Path, shapes: list[tuple[int, int]]) -> pd.DataFrame:
    """Pure green overlays of the given (height, width) and their predictions.csv rows (cat taken for dog)."""
    rows = []
    for i, (height, width) in enumerate(shapes):
        rel = f"incorrect/cat_as_dog/{i:04d}_cat.jpg"  # an overlay name that lost the photo's number
        save_image(out / rel, np.full((height, width, 3), GREEN, np.uint8))
        rows.append(
            {
                "path": f"/photos/cat/cat.{169 + i}.jpg",
                "true": "cat",
                "pred": "dog",
                "p_cat": 0.12,
                "p_dog": 0.88,
                "loss": 2.5 - 0.1 * i,
                "correct": False,
                "overlay": rel,
            }
        )
    return pd.DataFrame(rows)


def test_top_losses_fills_its_area_with_the_pictures(tmp_path: Path) -> None:
    # Wide two-panel overlays and portrait photos: letterboxed into squares, about half of the area was padding.
    frame = mistakes(tmp_path, [(300, 600), (400, 300)] * 4)
    draw_run_pictures(frame, ["cat", "dog"], tmp_path, 16)
    picture = cv2.imread(str(tmp_path / "top_losses.png"))[..., ::-1]
    green = (picture[..., 1] > 200) & (picture[..., 0] < 80) & (picture[..., 2] < 80)
    assert green.mean() > 0.62  # the rest: captions and thin gaps (letterboxed: 0.56)
    # Every picture keeps its aspect ratio: the green blobs are 2:1 and 3:4 boxes, never squeezed.
    count, _, stats, _ = cv2.connectedComponentsWithStats(green.astype(np.uint8))
    aspects = sorted(w / h for _, _, w, h, area in stats[1:] if area > 100)
    assert aspects == pytest.approx([0.75] * 4 + [2.0] * 4, rel=0.03)


def test_top_losses_captions_name_the_photo_and_both_probabilities(tmp_path: Path) -> None:
    from catdog.explain.top_losses import FONT_PX, caption_lines

    row = mistakes(tmp_path, [(40, 40)]).iloc[0]
    assert caption_lines(row, 0.12) == ["cat.169.jpg", "true cat 12.0%", "pred dog 88.0%", "loss 2.50"]
    assert FONT_PX >= 16  # 8 px labels on large photos were unreadable


def test_top_losses_caption_text_is_readable_in_the_png(tmp_path: Path) -> None:
    frame = mistakes(tmp_path, [(1200, 1600)] * 3)  # large photos: the old labels shrank to ~8 px
    draw_run_pictures(frame, ["cat", "dog"], tmp_path, 16)
    picture = cv2.imread(str(tmp_path / "top_losses.png"))
    green = (picture[..., 1] > 200) & (picture[..., 0] < 80) & (picture[..., 2] < 80)
    below = np.flatnonzero(green.any(axis=1))[-1] + 1  # the caption band under the last row of pictures
    ink = (picture[below:].max(axis=2) < 90).any(axis=1)
    tallest = max(len(run) for run in "".join("x" if i else " " for i in ink).split())
    assert tallest >= 12  # a text line's ink, in pixels, at the PNG's own size


def test_justified_rows_fill_the_width_and_keep_aspects() -> None:
    from catdog.explain.top_losses import justified_rows

    aspects = [2.0, 0.75, 1.33, 2.0, 0.75, 1.0, 1.5]
    tiles = justified_rows(aspects, width=1000, row_height=200, gap=5)
    rows: dict[int, list] = {}
    for tile, aspect in zip(tiles, aspects):
        rows.setdefault(tile.y, []).append(tile)
        assert tile.width / tile.height == pytest.approx(aspect, rel=0.03)
    *full, last = sorted(rows.items())
    for _, row in full:
        assert row[-1].x + row[-1].width == pytest.approx(1000, abs=len(row))  # rounding only
    assert all(t.x + t.width <= 1000 for _, row in rows.items() for t in row)
