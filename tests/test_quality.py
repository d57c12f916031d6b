"""Localization, mosaic and faithfulness metrics, and identifiable maps, against hand-computed references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ChannelNet
from scipy.stats import spearmanr
from torch import nn

from catdog.data.masks import find_masks, load_mask, parse_mask_object
from catdog.errors import CatdogError
from catdog.maps.cam import class_activation_maps, contrast_weights
from catdog.maps.explainers import ExactCAM
from catdog.maps.geometry import grid_centres
from catdog.quality.faithfulness import Faithfulness, _blur, curve_auc, randomized_copy
from catdog.quality.localization import (
    energy_share,
    localization_columns,
    pointing_lines,
    spearman,
    summarize_pointing,
)
from catdog.quality.mosaic import MosaicOptions, compose_mosaic, mosaic_check


def test_localization_columns_with_box_mask_centre_and_energy() -> None:
    size = (40, 60)  # H, W
    box = (10.0, 5.0, 19.0, 14.0)  # inclusive
    cam = torch.zeros(size)
    cam[5:15, 10:20] = 3.0  # 100 px inside the box
    cam[30:35, 40:50] = 1.0  # 50 px outside
    cam[0:2, 0:2] = -5.0  # negative evidence does not count
    cols = localization_columns((15.0, 9.0), cam, size, boxes=[box], tolerance=0.1)
    assert cols["in_box"] and cols["pointing_hit"]
    assert cols["energy_in_box"] == pytest.approx(300 / 350)
    # The image centre (29.5, 19.5) is neither in the box nor within 6 x 4 px of it.
    assert not cols["centre_in_box"] and not cols["centre_hit"]
    near = localization_columns((24.0, 9.0), None, size, boxes=[box], tolerance=0.1)  # 5 px right of the box
    assert (near["in_box"], near["pointing_hit"]) == (False, True) and "energy_in_box" not in near
    # A mask is used instead of the boxes: an L-shaped object whose bounding box holds (15, 9).
    mask = np.zeros(size, dtype=bool)
    mask[5:15, 10:12] = mask[13:15, 10:20] = True
    by_mask = localization_columns((15.0, 9.0), cam, size, boxes=[box], mask=mask, tolerance=0.0)
    assert not by_mask["in_box"]
    assert by_mask["energy_in_box"] == pytest.approx(3 * (20 + 16) / 350)
    assert localization_columns((15.0, 9.0), cam, size, tolerance=0.1) == {}
    assert math.isnan(energy_share(-cam.abs(), mask))


def test_summary_reports_true_class_rates_per_class_and_centre_baseline() -> None:
    predictions = pd.DataFrame(
        {
            "true": ["cat", "cat", "dog", "dog", None],
            "in_box": [True, False, True, True, None],
            "pointing_hit": [True, True, True, True, None],
            "centre_in_box": [False, False, True, False, None],
            "centre_hit": [True, False, True, False, None],
            "energy_in_box": [0.5, 0.1, 0.9, 0.7, None],
        }
    )
    game = summarize_pointing(predictions)
    assert game["images"] == 4 and game["strict_hit_rate"] == 0.75 and game["centre_strict_hit_rate"] == 0.25
    assert game["per_class"]["cat"]["strict_hit_rate"] == 0.5 and game["per_class"]["dog"]["strict_hit_rate"] == 1.0
    assert game["per_class"]["dog"]["energy_in_box"] == pytest.approx(0.8)
    assert game["per_class"]["cat"]["centre_hit_rate"] == 0.5
    assert game["map"] == "true class" and "true-class peak" in pointing_lines(game)[0]


def test_unlabelled_images_are_said_to_be_scored_on_the_predicted_class() -> None:
    rows = {"in_box": [True, False], "pointing_hit": [True, True], "energy_in_box": [0.5, 0.1]}
    game = summarize_pointing(pd.DataFrame({"true": [None, None], **rows}))
    assert game["map"] == "predicted class" and "per_class" not in game
    assert pointing_lines(game)[0].startswith("pointing game: predicted-class peak strictly on the object 50.0%")
    mixed = summarize_pointing(pd.DataFrame({"true": ["cat", None], **rows}))
    assert mixed["map"] == "true class (predicted class where unlabelled)"
    assert "true-class (predicted where unlabelled) peak" in pointing_lines(mixed)[0]


def test_sanity_rank_correlation_gives_tied_cells_their_average_rank() -> None:
    # Spearman's rho as scipy (and compare's map similarity) computes it: tied cells share their mean rank.
    # Ranks broken by position gave 1.0 here: a flat region ranked as if ordered.
    from types import SimpleNamespace

    from catdog.quality.faithfulness import Faithfulness

    tied = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 3.0], [0.0, 5.0, 5.0]])
    ordered = torch.arange(9, dtype=torch.float32).view(3, 3)
    randomised = SimpleNamespace(explain=lambda x, true_labels, topk: SimpleNamespace(maps=ordered[None, None]))
    explained = SimpleNamespace(
        class_idx=torch.zeros(1, 1, dtype=torch.long), maps=tied[None, None], logits=torch.zeros(1, 2)
    )
    faith = Faithfulness(nn.Identity(), ["sanity"], random_explainer=randomised)
    rho = faith.columns(torch.zeros(1, 3, 6, 6), explained)[0]["sanity_rank_corr"]
    assert rho == pytest.approx(spearmanr(tied.flatten(), ordered.flatten()).statistic, abs=1e-4)


def test_spearman_matches_scipy() -> None:
    a, b = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    b[1] = a[1] * 2 + 1
    ours = torch.from_numpy(spearman(a.numpy(), b.numpy()))
    for i in range(3):
        assert ours[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-9)


def test_contrast_maps_are_differences_of_exact_maps() -> None:
    features, weight = torch.randn(2, 6, 3, 3), torch.randn(4, 6)
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 1.0, 0.0]])
    idx = torch.tensor([[1, 3], [0, 2]])
    every = class_activation_maps(features, weight, torch.arange(4).repeat(2, 1))  # [B, 4, h, w]
    exact = class_activation_maps(features, weight, idx)
    mean_rows, _ = contrast_weights(weight, idx, logits, "mean")
    mean_maps = class_activation_maps(features, weight, idx, weights=mean_rows)
    torch.testing.assert_close(mean_maps, exact - every.mean(dim=1, keepdim=True))
    runner_rows, ref = contrast_weights(weight, idx, logits, "runner_up")
    assert ref.tolist() == [[3, 1], [2, 0]]  # the best other class: 1's runner-up is 3, 3's is the top, 1
    runner = class_activation_maps(features, weight, idx, weights=runner_rows)
    torch.testing.assert_close(runner[0, 0], every[0, 1] - every[0, 3])
    torch.testing.assert_close(runner[1, 1], every[1, 2] - every[1, 0])


def _solid(colour: tuple[int, int, int], size: int = 20) -> np.ndarray:
    return np.full((size, size, 3), colour, dtype=np.uint8)


def test_mosaic_check_finds_each_class_in_its_own_tiles(tmp_path) -> None:
    import cv2

    rows = []
    for name, colour in (("red", (255, 0, 0)), ("green", (0, 255, 0)), ("blue", (0, 0, 255))):
        (tmp_path / name).mkdir()
        for i in range(2):
            path = tmp_path / name / f"{i}.png"
            cv2.imwrite(str(path), cv2.cvtColor(_solid(colour), cv2.COLOR_RGB2BGR))
            rows.append((str(path), name))
    images = pd.DataFrame(rows, columns=["path", "label"])
    mosaic, tiles = compose_mosaic([_solid((255, 0, 0)), _solid((0, 0, 255))] * 2, (2, 2), 32)
    assert tiles[0, 0] == 0 and tiles[0, 31] == 1 and tiles[31, 0] == 2 and (mosaic[0, 31] == (0, 0, 255)).all()

    def transform(rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255

    net = ChannelNet().eval()
    explainer = ExactCAM(net, "features", "fc")
    names = ["red", "green", "blue"]
    centres = grid_centres((4, 4), (32, 32))
    frame, summary = mosaic_check(explainer, transform, images, names, centres, MosaicOptions(32, count=6))
    assert len(frame) == 12 and set(frame["class"]) == set(names)  # every pair of the 3 classes
    # Energy: bilinear upsampling leaks a little across each tile border (cells 8 px, tiles 16 px).
    assert summary["peak_on_own_tile"] == 1.0 and 0.9 < summary["energy_on_own_tiles"] < 1.0
    assert summary["per_class"]["green"]["maps"] == 4 and summary["chance"] == 0.5
    # A map of "anything but this class" (the negative of its own channel) fails the check.
    with torch.no_grad():
        net.fc.weight.copy_(-torch.eye(3) * 4)
    _, wrong = mosaic_check(explainer, transform, images, names, centres, MosaicOptions(32, count=6))
    assert wrong["peak_on_own_tile"] == 0.0
    with pytest.raises(CatdogError, match="at least two classes"):
        mosaic_check(explainer, transform, images[images["label"] == "red"], names, centres, MosaicOptions(32))


def test_deletion_insertion_drop_and_sanity_on_a_model_that_reads_one_quadrant() -> None:
    # Class 1's logit is the energy of the top-left 8x8 quadrant; class 0's is 0. The input is a +-1
    # checkerboard: deleting (0) or blurring (insertion's start) a pixel removes its energy.
    class Quadrant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            score = 4 * x[:, :, :8, :8].pow(2).mean(dim=(1, 2, 3))
            return torch.stack([torch.zeros_like(score), score], dim=1)

    board = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1
    x = board.expand(2, 3, 16, 16).clone()
    logits = Quadrant()(x)
    good = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # a 2x2 map: the top-left cell is the evidence
    bad = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    from catdog.maps.explainers import Explanation

    maps = torch.stack([good, bad])[:, None].repeat(1, 2, 1, 1)
    explained = Explanation(logits, torch.tensor([[1, 1], [1, 1]]), maps)
    faith = Faithfulness(
        Quadrant(), ["deletion", "insertion", "drop_increase"], grid_centres((2, 2), (16, 16)), steps=4
    )
    rows = faith.columns(x, explained)
    # Deletion of the right map removes the quadrant in the first quarter: the curve drops at once.
    assert rows[0]["deletion_auc"] < rows[1]["deletion_auc"]
    assert rows[0]["insertion_auc"] > rows[1]["insertion_auc"]
    p = torch.sigmoid(torch.tensor(4.0)).item()  # p(class 1) of the intact image
    # The "bad" map scales the quadrant by ~0 (its weights fall off towards the top-left): a drop to ~0.5.
    assert rows[1]["drop"] > 0.3 and rows[1]["increase"] is False
    assert rows[0]["drop"] < rows[1]["drop"]
    assert curve_auc(torch.tensor([[p, p, p]])).item() == pytest.approx(p)
    assert curve_auc(torch.tensor([[1.0, 0.0, 0.0]])).item() == pytest.approx(np.trapezoid([1, 0, 0], dx=0.5))


def test_sanity_check_compares_with_a_randomised_model() -> None:
    net = nn.Sequential()
    torch.manual_seed(0)
    from torchvision.models import resnet18

    net = resnet18(num_classes=2).eval()
    copy = randomized_copy(net, seed=1)
    assert not torch.equal(copy.fc.weight, net.fc.weight) and copy.conv1.weight.shape == net.conv1.weight.shape
    x = torch.randn(2, 3, 64, 64)
    explainer = ExactCAM(net, "layer4", "fc")
    explained = explainer.explain(x, topk=1)
    same = Faithfulness(net, ["sanity"], random_explainer=ExactCAM(net, "layer4", "fc")).columns(x, explained)
    assert [r["sanity_rank_corr"] for r in same] == [1.0, 1.0]  # the same model: identical maps
    with pytest.raises(CatdogError, match="unknown"):
        Faithfulness(net, ["deletion", "magic"])


def test_masks_beside_images_or_in_masks_csv(tmp_path) -> None:
    import cv2

    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.jpg").write_bytes(b"")
    mask = np.zeros((4, 6), dtype=np.uint8)
    mask[1:3, 2:5] = 255
    cv2.imwrite(str(tmp_path / "a_mask.png"), mask)
    cv2.imwrite(str(tmp_path / "other.png"), mask)
    pd.DataFrame({"path": ["b.jpg"], "mask": ["other.png"]}).to_csv(tmp_path / "masks.csv", index=False)
    found = find_masks(tmp_path, [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")])
    assert found == {
        str(tmp_path / "a.jpg"): str(tmp_path / "a_mask.png"),
        str(tmp_path / "b.jpg"): str(tmp_path / "other.png"),
    }
    assert (load_mask(found[str(tmp_path / "a.jpg")]) == (mask > 0)).all()
    pd.DataFrame({"path": ["b.jpg"], "mask": ["missing.png"]}).to_csv(tmp_path / "masks.csv", index=False)
    with pytest.raises(CatdogError, match="does not exist"):
        find_masks(tmp_path, [])


def test_trimap_masks_name_their_object_value(tmp_path) -> None:
    import cv2

    # An Oxford-IIIT-style trimap shifted to 0 = object, 1 = background, 2 = border (the coral test mask).
    trimap = np.ones((6, 8), dtype=np.uint8)
    trimap[1:4, 2:6] = 0
    trimap[0, :] = 2
    cv2.imwrite(str(tmp_path / "t_mask.png"), trimap)
    assert (load_mask(tmp_path / "t_mask.png", parse_mask_object([0])) == (trimap == 0)).all()
    assert (load_mask(tmp_path / "t_mask.png", parse_mask_object([0, 2])) == (trimap != 1)).all()
    assert (load_mask(tmp_path / "t_mask.png", parse_mask_object("nonzero")) == (trimap > 0)).all()
    assert parse_mask_object(None) is None and parse_mask_object(1) == (1,)
    for bad in ["dog", 256, [], [1.5], True]:
        with pytest.raises(CatdogError, match=r"mask_object=.* is not supported: use nonzero"):
            parse_mask_object(bad)


def test_insertion_blur_is_float32_under_bf16_autocast() -> None:
    # precision=auto runs explain under CPU bf16 autocast: the long depthwise blur must not run in bf16
    # (minutes per batch, and 8-bit mantissa start images).
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reference = _blur(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        blurred = _blur(x)
    assert blurred.dtype == torch.float32
    assert torch.equal(blurred, reference)


def test_faithfulness_metrics_run_under_bf16_autocast() -> None:
    # precision=auto explains under CPU bf16 autocast; pytorch-grad-cam's confidence metric calls .numpy()
    # on the model's outputs, which has no bfloat16.
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    x = torch.randn(2, 3, 16, 16)
    explainer = ExactCAM(net, "0", "4")
    faith = Faithfulness(net, ["deletion", "insertion", "drop_increase"], grid_centres((16, 16), (16, 16)), steps=4)
    reference = faith.columns(x, explainer.explain(x, topk=1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rows = faith.columns(x, explainer.explain(x, topk=1))
    for row, ref in zip(rows, reference):
        assert row["drop"] == pytest.approx(ref["drop"], abs=0.05)
        assert row["deletion_auc"] == pytest.approx(ref["deletion_auc"], abs=0.05)


def test_summary_lines_say_n_a_for_a_mosaic_class_without_energy():
    """A class whose maps hold no energy (the demo's "none") has energy None: printed as n/a, not a crash."""
    from catdog.quality.localization import summary_lines

    mosaic = {
        "mosaics": 4,
        "peak_on_own_tile": 0.5,
        "chance": 0.25,
        "energy_on_own_tiles": None,
        "per_class": {"none": {"peak_on_own_tile": 0.25, "energy_on_own_tiles": None, "maps": 4}},
    }
    lines = summary_lines({"mosaic": mosaic})
    assert lines[0].endswith("energy on them n/a")
    assert lines[1] == "    none: peak on own tiles 25.0%, energy n/a (4 maps)"
