"""Overlay pictures: blending, labels, panels, grids, file names and writing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from catdog.errors import CatdogError
from catdog.overlay import (
    draw_label,
    heatmap_overlay,
    image_grid,
    label_text,
    save_image,
    side_by_side,
)


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(48, 80, 3), dtype=np.uint8)


@pytest.fixture
def cam01() -> np.ndarray:
    # Horizontal ramp: coldest at the left column, hottest at the right column.
    return np.tile(np.linspace(0.0, 1.0, 80), (48, 1))


def test_heatmap_overlay_blending(image: np.ndarray, cam01: np.ndarray) -> None:
    out = heatmap_overlay(image, cam01)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(heatmap_overlay(image, cam01, alpha=0.0), image)

    pure = heatmap_overlay(image, cam01, alpha=1.0)
    expected = cv2.applyColorMap(np.rint(cam01 * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    np.testing.assert_array_equal(pure, expected)
    hot, cold = pure[0, -1].astype(int), pure[0, 0].astype(int)
    assert hot[0] > hot[2] + 100  # RGB order: red-ish at the peak
    assert cold[2] > cold[0] + 100  # blue-ish at the minimum

    with pytest.raises(ValueError, match="upsample"):
        heatmap_overlay(image, cam01[:10])
    with pytest.raises(ValueError, match="RGB uint8"):
        heatmap_overlay(image.astype(np.float32), cam01)


def test_label_text_and_draw_label_changes_top_band_only(image: np.ndarray) -> None:
    assert label_text("dog", 0.975, "cat") == "dog 97.5% | true: cat"
    assert label_text("dog", 0.975, None) == "dog 97.5%"

    big = np.full((300, 400, 3), 128, dtype=np.uint8)
    out = draw_label(big, label_text("dog", 0.975, "cat"))
    assert out.shape == big.shape and out.dtype == np.uint8
    changed_rows = np.flatnonzero((out != big).any(axis=(1, 2)))
    assert changed_rows.size and changed_rows.max() < 40  # a band at the top only
    band = out[: changed_rows.max() + 1]
    assert (band == 255).all(axis=2).any()  # white text pixels
    assert (band == 0).all(axis=2).any()  # on a dark band
    np.testing.assert_array_equal(big, 128)  # the input is not modified
    mine = big.copy()
    assert draw_label(mine, label_text("dog", 0.975, "cat"), inplace=True) is mine  # drawn on the caller's picture
    np.testing.assert_array_equal(mine, out)

    # Long or non-ASCII text still fits and does not spill below the band.
    out = draw_label(image, "Chihuahua – très long label " * 5)
    assert not (out[20:] != image[20:]).any()


def test_side_by_side(image: np.ndarray) -> None:
    taller = np.zeros((96, 40, 3), dtype=np.uint8)  # resized to height 48, width 20
    out = side_by_side([image, taller, image], ["original", "dog", "cat"], gap=4)
    assert out.shape == (48, 80 + 20 + 80 + 2 * 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(side_by_side([image]), image)
    with pytest.raises(ValueError, match="titles"):
        side_by_side([image, image], ["one"])


def test_image_grid_size_arithmetic(image: np.ndarray) -> None:
    tiles = [image, image.transpose(1, 0, 2).copy(), image, image, image]
    grid = image_grid(tiles, [f"tile {i}" for i in range(5)], ncols=2, tile_size=32, gap=2)
    one = image_grid(tiles[:1], ["tile 0"], ncols=4, tile_size=32, gap=2)
    caption_h = one.shape[0] - 32
    assert caption_h > 0 and one.shape[1] == 32  # columns = min(ncols, tiles)
    assert grid.shape == (3 * (32 + caption_h) + 2 * 2, 2 * 32 + 2, 3)  # 3 rows, 2 columns

    two_lines = image_grid(tiles[:1], ["pred: dog\ntrue: cat"], ncols=4, tile_size=32, gap=2)
    assert two_lines.shape[0] > one.shape[0]  # second caption line adds height

    # Letterbox: an 80x48 tile fills the width and is padded above and below.
    only = image_grid([image], ["x"], ncols=1, tile_size=80, gap=0)
    np.testing.assert_array_equal(only[0, :80], np.full((80, 3), 24, dtype=np.uint8))
    assert not (only[16:64, :80] == 24).all()
    with pytest.raises(ValueError, match="captions"):
        image_grid(tiles, ["one"], ncols=2)


def test_save_image_roundtrip(tmp_path: Path, image: np.ndarray) -> None:
    png = save_image(tmp_path / "sub dir" / "chat_é.PNG", image)
    assert png.is_file()
    decoded = cv2.imdecode(np.frombuffer(png.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded[..., ::-1], image)

    jpg = save_image(tmp_path / "a.jpg", image, quality=95)
    assert jpg.read_bytes()[:2] == b"\xff\xd8"
    with pytest.raises(CatdogError, match=r"\.png"):
        save_image(tmp_path / "a.gif", image)


def test_narrow_images_put_label_parts_on_separate_lines() -> None:
    image = np.zeros((112, 112, 3), dtype=np.uint8)
    one_part = draw_label(image, "cat 87.0%")
    two_parts = draw_label(image, "cat 87.0% | true: dog")

    def band_rows(labelled: np.ndarray) -> int:
        return int(np.flatnonzero((labelled != 0).any(axis=(1, 2))).max())

    assert band_rows(two_parts) > 2 * band_rows(one_part)  # a second line, not a cut one
    wide = np.zeros((112, 600, 3), dtype=np.uint8)  # wide: one line ("|" reaches a little lower than digits)
    assert band_rows(draw_label(wide, "cat 87.0% | true: dog")) < 1.5 * band_rows(draw_label(wide, "cat 87.0%"))
