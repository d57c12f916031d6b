"""load_rgb converts odd-but-valid images and reports broken ones; scan_images sorts them."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from catdog.data import images as images_module
from catdog.data.images import BadImageError, load_rgb, scan_images


def _gradient(height: int = 24, width: int = 32) -> np.ndarray:
    """An RGB test image whose every pixel differs, so orientation mistakes show."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 7 % 256, y * 9 % 256, (x + y) * 3 % 256], axis=2).astype(np.uint8)


def _noise(height: int, width: int) -> np.ndarray:
    """Random RGB pixels: they compress badly, so a cut PNG loses pixel data, not just its end."""
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _jpeg_bytes(array: np.ndarray, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95, **save_args)
    return buffer.getvalue()


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_rgb_jpeg_shape_dtype_and_pixels(tmp_path: Path) -> None:
    array = _gradient()
    result = load_rgb(_write(tmp_path / "a.jpg", _jpeg_bytes(array)))
    assert result.shape == (24, 32, 3) and result.dtype == np.uint8
    assert result.flags.c_contiguous and result.flags.writeable
    assert np.abs(result.astype(int) - array).mean() < 6  # JPEG is lossy


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    result = load_rgb(_write(tmp_path / "g.png", _png_bytes(Image.fromarray(gray, "L"))))
    assert result.shape == (24, 32, 3)
    for channel in range(3):
        np.testing.assert_array_equal(result[:, :, channel], gray)


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = _write(tmp_path / "deep.png", _png_bytes(Image.fromarray(values)))
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(load_rgb(path)[0, :, 0], [0, 1, 128, 255])


def test_float_image_in_unit_range_is_scaled(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(values, "F").save(path)
    np.testing.assert_array_equal(load_rgb(path)[0, :, 1], [0, 128, 255])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    red = Image.new("RGB", (16, 16), (220, 30, 30)).convert("CMYK")
    path = tmp_path / "cmyk.jpg"
    red.save(path, "JPEG", quality=95)
    assert Image.open(path).mode == "CMYK"
    pixel = load_rgb(path)[8, 8].astype(int)
    assert np.abs(pixel - [220, 30, 30]).max() < 12


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent becomes white
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black becomes mid grey
    result = load_rgb(_write(tmp_path / "a.png", _png_bytes(Image.fromarray(rgba, "RGBA"))))
    np.testing.assert_array_equal(result[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(result[0, 1], [255, 255, 255])
    np.testing.assert_array_equal(result[1, 0], [127, 127, 127])


def test_palette_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (4, 2), 0)
    image.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    image.putpixel((3, 1), 1)
    image.info["transparency"] = 0  # colour 0 (blue) is transparent
    path = tmp_path / "p.png"
    image.save(path, transparency=0)
    result = load_rgb(path)
    np.testing.assert_array_equal(result[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(result[1, 3], [0, 255, 0])


def test_palette_without_transparency(tmp_path: Path) -> None:
    image = Image.fromarray(_gradient()).quantize(16)
    path = tmp_path / "p.gif"
    image.save(path)
    result = load_rgb(path)
    np.testing.assert_array_equal(result, np.asarray(Image.open(path).convert("RGB")))


def test_exif_rotated_jpeg_is_turned_upright(tmp_path: Path) -> None:
    upright = _gradient(24, 32)
    # The camera stored the pixels turned 90 degrees clockwise and recorded orientation 8, which
    # tells viewers to turn them 90 degrees counter-clockwise: that shows `upright`.
    stored = np.rot90(upright, k=-1)
    exif = Image.Exif()
    exif[0x0112] = 8
    path = _write(tmp_path / "phone.jpg", _jpeg_bytes(np.ascontiguousarray(stored), exif=exif))
    result = load_rgb(path)
    assert result.shape == upright.shape
    assert np.abs(result.astype(int) - upright).mean() < 6


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("empty.jpg", lambda: b"", "zero-byte file"),
        ("notes.jpg", lambda: b"these are my notes, not a photo\n" * 10, "not an image file"),
        ("cut.jpg", lambda: _jpeg_bytes(_gradient(64, 64))[:-300], "truncated image data"),
        (
            "cut.png",
            lambda: _png_bytes(Image.fromarray(_noise(64, 64)))[:5000],
            "truncated image data",
        ),
    ],
)
def test_broken_files_raise_with_reason(tmp_path: Path, name: str, make, reason: str) -> None:
    with pytest.raises(BadImageError) as info:
        load_rgb(_write(tmp_path / name, make()))
    assert str(info.value) == reason


def test_corrupt_png_data_cannot_be_decoded(tmp_path: Path) -> None:
    data = bytearray(_png_bytes(Image.fromarray(_gradient(64, 64))))
    data[60:200] = bytes(140)  # zero out the start of the compressed pixel data
    with pytest.raises(BadImageError, match=r"^cannot decode: "):
        load_rgb(_write(tmp_path / "corrupt.png", bytes(data)))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="^file not found$"):
        load_rgb(tmp_path / "nope.jpg")


def test_scan_images_keeps_order_and_lists_skipped(tmp_path: Path) -> None:
    good = [_write(tmp_path / f"good{i}.jpg", _jpeg_bytes(_gradient())) for i in range(3)]
    empty = _write(tmp_path / "empty.png", b"")
    text = _write(tmp_path / "text.jpg", b"hello")
    cut = _write(tmp_path / "cut.jpg", _jpeg_bytes(_gradient(64, 64))[:-300])
    paths = [good[0], empty, good[1], text, cut, good[2]]
    readable, skipped = scan_images(paths, num_workers=2, progress=False)
    assert readable == [str(p) for p in good]
    assert list(skipped.columns) == ["path", "reason"]
    assert dict(zip(skipped["path"], skipped["reason"])) == {
        str(empty): "zero-byte file",
        str(text): "not an image file",
        str(cut): "truncated image data",
    }


def test_scan_images_with_nothing_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "ok.png", _png_bytes(Image.fromarray(_gradient())))
    readable, skipped = scan_images([path], progress=False)
    assert readable == [str(path)]
    assert skipped.empty and list(skipped.columns) == ["path", "reason"]


def test_malformed_exif_keeps_the_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_exif(*args, **kwargs):
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr("catdog.data.images.ImageOps.exif_transpose", broken_exif)
    array = _gradient()
    result = load_rgb(_write(tmp_path / "a.jpg", _jpeg_bytes(array)))
    assert np.abs(result.astype(int) - array).mean() < 6


def test_any_decoder_exception_becomes_bad_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "a.png", _png_bytes(Image.fromarray(_gradient())))

    def exploding_load(self):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(Image.Image, "load", exploding_load)
    with pytest.raises(BadImageError, match=r"^cannot decode: error: unpack requires"):
        load_rgb(path)


def test_decompression_bomb_limit_is_explicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    assert images_module.MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS == 100_000_000
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), np.zeros((50, 40, 3), np.uint8))
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 1999)
    with pytest.raises(BadImageError, match="too many pixels"):
        load_rgb(path)
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 2000)
    assert load_rgb(path).shape == (50, 40, 3)
