"""Map geometry: measured cell centres against hand-computed receptive fields, upsampling against torch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catdog.maps.geometry import cell_centres, grid_centres, measure_centres


def _ones_conv(kernel: int, stride: int, padding: int) -> nn.Module:
    """One 3->1 conv with all-ones weights: d cell / d input is 1 on the cell's (clipped) window."""
    conv = nn.Conv2d(3, 1, kernel, stride=stride, padding=padding, bias=False)
    nn.init.ones_(conv.weight)
    return nn.Sequential(conv)


def test_grid_centres_upsample_is_bilinear_align_corners_false() -> None:
    cams = torch.randn(2, 3, 4, 5)
    centres = grid_centres((4, 5), (64, 80))
    expected = F.interpolate(cams, size=(37, 53), mode="bilinear", align_corners=False)
    torch.testing.assert_close(centres.upsample(cams, (37, 53)), expected, atol=1e-5, rtol=1e-5)
    # The peak is the strongest cell's centre on the (n + 0.5) * stride grid, in the image's frame.
    cam = torch.zeros(4, 5)
    cam[1, 3] = 1.0
    assert centres.peak(cam, (40, 50)) == (3.5 * 10 - 0.5, 1.5 * 10 - 0.5)


def test_measured_centres_follow_the_receptive_field_at_the_borders() -> None:
    # 16 px, kernel 5, stride 4, padding 2: cell n reads pixels 4n-2 .. 4n+2, clipped to 0..15.
    model = _ones_conv(5, 4, 2)
    centres = measure_centres(model, "0", (16, 16), samples=1)
    # Each cell's input gradient is |w| = 1 on its window (times |sign(feature)| = 1), so the centroid is
    # the window's middle: cell 0 -> mean(0, 1, 2) = 1, cells 1-3 -> 4n (their windows are inside).
    torch.testing.assert_close(torch.tensor(centres.x), torch.tensor([1.0, 4.0, 8.0, 12.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor(centres.y), torch.tensor([1.0, 4.0, 8.0, 12.0]), atol=1e-6, rtol=0)
    assert grid_centres((4, 4), (16, 16)).x == (1.5, 5.5, 9.5, 13.5)  # the assumption it replaces


def test_receptive_field_upsample_places_each_cell_at_its_centre(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path))
    model = _ones_conv(5, 4, 2)
    centres = cell_centres(model, "0", (16, 16), "receptive_field", arch="toy", probe_weights="model")
    assert list((tmp_path / "geometry").glob("toy-0-16x16-*.json"))  # cached
    assert cell_centres(model, "0", (16, 16), "receptive_field", arch="toy", probe_weights="model") == centres
    assert centres.x == (1.0, 4.0, 8.0, 12.0)
    cams = torch.arange(16.0).view(4, 4)
    up = centres.upsample(cams, (16, 16))
    # At a cell's centre the upsampled map is the cell's value; half-way between two centres, their mean;
    # before the first centre it is flat.
    assert up[1, 1] == cams[0, 0] and up[4, 8] == cams[1, 2] and up[12, 12] == cams[3, 3]
    assert torch.isclose(up[4, 6], (cams[1, 1] + cams[1, 2]) / 2)
    assert up[0, 0] == cams[0, 0] and up[15, 15] == cams[3, 3]
    # An image twice the input size: centres scale with the pixel frame ((c + 0.5) * 2 - 0.5).
    peak_cell = torch.zeros(4, 4)
    peak_cell[2, 0] = 1.0  # row 2 (centre 8), column 0 (centre 1)
    assert centres.peak(peak_cell, (32, 32)) == ((1 + 0.5) * 2 - 0.5, (8 + 0.5) * 2 - 0.5)
    assert cell_centres(model, "0", (16, 16), "cell") == grid_centres((4, 4), (16, 16))


def test_receptive_field_upsample_equals_grid_sample_on_uneven_centres() -> None:
    # Independent reference: grid_sample with each pixel's fractional cell index (the former implementation).
    from catdog.maps.geometry import CellCentres

    centres = CellCentres(x=(3.0, 9.5, 20.0, 26.0), y=(2.0, 15.0, 27.5), input_size=(32, 32))
    cams = torch.randn(2, 3, 4)
    size = (45, 61)
    cx, cy = centres.scaled(size)
    fx = torch.tensor(np.interp(np.arange(size[1]), cx, np.arange(4)), dtype=torch.float32)
    fy = torch.tensor(np.interp(np.arange(size[0]), cy, np.arange(3)), dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(2 * fx / 3 - 1, 2 * fy / 2 - 1, indexing="xy"), dim=-1)[None]
    expected = F.grid_sample(cams[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    torch.testing.assert_close(centres.upsample(cams, size), expected, atol=1e-5, rtol=1e-5)


def test_upsample_stays_float32_under_bf16_autocast() -> None:
    cams = torch.randn(2, 7, 7)
    centres = grid_centres((7, 7), (224, 224))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        up = centres.upsample(cams, (50, 60))
    assert up.dtype == torch.float32
    torch.testing.assert_close(up, centres.upsample(cams, (50, 60)))
