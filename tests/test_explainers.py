"""The method seam: pytorch-grad-cam methods as raw-map explainers, layers, guards, display helpers.

References are independent of catdog's adapter: pytorch-grad-cam's own ``__call__`` output, the exact CAM
identity of a GAP + Linear head, and the position of a synthetic object.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from catdog.errors import CatdogError
from catdog.maps.cam import display_maps, parse_threshold, strongest_region
from catdog.maps.explainers import (
    GRADIENT_METHODS,
    ExactCAM,
    Explainer,
    Explanation,
    GradCAMFamily,
    _grad_cam_classes,
    build_explainer,
)
from catdog.models import arch_spec, resolve_layer, tokens_to_grid
from catdog.overlay import draw_contour, heatmap_overlay


class TinyNet(nn.Module):
    """features -> global average pool -> fc: the head exact CAM decomposes."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.fc = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def explain_classes(explainer: Explainer, images: torch.Tensor, class_idx: torch.Tensor) -> Explanation:
    """Maps of given classes (``class_idx[b, m]``: image b's m-th map) through the explainer's one code path."""

    def given(logits: torch.Tensor) -> torch.Tensor:
        if class_idx.shape[0] != images.shape[0]:
            raise CatdogError("one target per image")
        return class_idx

    return explainer._run(images, given)


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.features[1].running_mean.uniform_(-0.2, 0.2)
        model.features[1].running_var.uniform_(0.5, 1.5)
    return model.eval(), torch.randn(4, 3, 32, 32)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_each_method_matches_pytorch_grad_cam_for_mixed_targets(method: str, tiny) -> None:
    model, x = tiny
    class_idx = torch.tensor([[0, 2], [1, 1], [2, 0], [1, 2]])  # a different class per image and column
    explainer = GradCAMFamily(model, method, "features")
    out = explain_classes(explainer, x, class_idx)
    assert out.maps.shape == (4, 2, 16, 16) and out.maps.dtype == torch.float32
    assert torch.equal(out.class_idx, class_idx)
    for column in range(2):
        targets = [ClassifierOutputTarget(int(c)) for c in class_idx[:, column]]
        reference = _grad_cam_classes()[method](model, [model.features])(x, targets=targets)  # [B, 32, 32] scaled
        ours = scale_cam_image(np.maximum(out.maps[:, column].numpy(), 0), (32, 32))
        ours = scale_cam_image(np.maximum(ours, 0))  # the library's aggregation step rescales once more
        np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


def test_raw_maps_keep_sign_and_scale(tiny) -> None:
    model, x = tiny
    maps = GradCAMFamily(model, "gradcam", "features").explain(x, topk=1).maps
    assert (maps < 0).any() and (maps > 0).any()  # not ReLU'd
    assert not torch.allclose(maps.amax(dim=(-2, -1)), torch.ones(4, 1))  # not min-max scaled


def test_gradcam_before_relu_is_exact_cam_over_hw_on_a_gap_linear_head(tiny) -> None:
    model, x = tiny
    labels = torch.tensor([2, -1, 0, 1])
    exact = ExactCAM(model, "features", "fc").explain(x, true_labels=labels, topk=2)
    grad = GradCAMFamily(model, "gradcam", "features").explain(x, true_labels=labels, topk=2)
    assert torch.equal(exact.class_idx, grad.class_idx)
    h, w = exact.maps.shape[-2:]
    torch.testing.assert_close(grad.maps, exact.maps / (h * w), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(grad.logits, exact.logits)


def test_hooks_removed_and_mode_restored_also_after_errors(tiny) -> None:
    model, x = tiny
    model.train()
    try:
        GradCAMFamily(model, "gradcam++", "features").explain(x, topk=1)
        assert model.training and all(m.training for m in model.modules())
        assert not any(m._forward_hooks for m in model.modules())
        with pytest.raises(CatdogError, match="one target per image"):
            explain_classes(GradCAMFamily(model, "scorecam", "features"), x, torch.tensor([[0], [1]]))
        assert model.training and not any(m._forward_hooks for m in model.modules())
        with pytest.raises(CatdogError, match="not \\[B, C, h, w\\]"):
            GradCAMFamily(model, "gradcam", "fc").explain(x, topk=1)  # a 2-D output is no map
        assert not any(m._forward_hooks for m in model.modules())
    finally:
        model.eval()
    # Ablation-CAM swaps the layer while it runs: the original is back afterwards.
    GradCAMFamily(model, "ablationcam", "features").explain(x, topk=1)
    assert isinstance(model.features, nn.Sequential)


def test_gradients_work_with_frozen_parameters(tiny) -> None:
    model, x = tiny
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None  # the library's own backward in other tests filled them
    try:
        maps = GradCAMFamily(model, "gradcam", "features").explain(x, topk=1).maps
        assert maps.abs().sum() > 0
        assert all(p.grad is None for p in model.parameters())  # no parameter gradients computed
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


def test_layers_by_name_and_position_and_wrong_names() -> None:
    model = torchvision.models.resnet18(num_classes=2).eval()
    assert resolve_layer(model, "layer4.1.conv2")[0] == "layer4.1.conv2"
    assert resolve_layer(model, "layer4.-1")[0] == "layer4.1"
    x = torch.randn(2, 3, 64, 64)
    for layer, side in (("layer1", 16), ("layer3", 4), ("layer4.1.conv2", 2)):
        assert build_explainer(model, "resnet18", "layercam", layer).explain(x).maps.shape[-1] == side
    with pytest.raises(CatdogError) as error:
        build_explainer(model, "resnet18", "gradcam", "layer5")
    message = str(error.value)
    assert "\n" not in message and "layer5" in message and "layer4" in message and "fc" in message
    with pytest.raises(CatdogError, match="only applies to layer4.*method=gradcam"):
        build_explainer(model, "resnet18", "cam", "layer3")
    with pytest.raises(CatdogError, match="method=nope is unknown.*scorecam"):
        build_explainer(model, "resnet18", "nope")
    assert isinstance(build_explainer(model, "resnet18"), ExactCAM)  # the default where the head allows it


@pytest.mark.parametrize(
    ("arch", "reason"),
    [
        ("vit_b_16", "class token"),
        ("convnext_tiny", "LayerNorm"),
        ("mobilenet_v3_small", "Hardswish"),
    ],
)
def test_exact_cam_refuses_heads_it_cannot_decompose(arch: str, reason: str) -> None:
    assert not arch_spec(arch).exact_cam
    with pytest.raises(CatdogError, match=f"{reason}.*method=gradcam"):
        build_explainer(nn.Identity(), arch, "cam")


@pytest.mark.parametrize(
    ("arch", "kwargs", "side"),
    [
        ("swin_t", {}, 2),
        ("mobilenet_v3_small", {}, 2),
    ],  # channels-last stages; a two-Linear head
)
def test_gradient_methods_work_for_other_heads(arch: str, kwargs: dict, side: int) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, num_classes=2, **kwargs).eval()
    x = torch.randn(1, 3, 64, 64)
    out = build_explainer(model, arch).explain(x, true_labels=torch.tensor([1]))  # default: gradcam
    assert out.maps.shape == (1, 2, side, side) and torch.isfinite(out.maps).all()
    assert out.maps.abs().sum() > 0


def test_vit_tokens_reshape_to_patch_grid() -> None:
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # class token + 2x2 patches
    grid = tokens_to_grid(tokens)
    assert grid.shape == (2, 3, 2, 2)
    assert torch.equal(grid[1, :, 1, 0], tokens[1, 3])  # patch 2 (row 1, col 0), class token dropped
    with pytest.raises(CatdogError, match="square patch grid"):
        tokens_to_grid(torch.zeros(1, 4, 3))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test: a tiny model's thousands of small ops run no faster on two, and on a busy
    machine each parallel op waits for a second core (the ViT test below: ~1 s alone, ~45 s beside a benchmark)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_vit_gradcam_localizes_a_synthetic_object(one_thread: None) -> None:
    """A tiny ViT learns "bright square in one of 16 patches" vs. "none"; its map peaks on the square's patch.

    Also why the registry hooks ``ln_1`` of the last block: the block's own output reaches the head only
    through the class token, so its patch tokens get zero gradient and Grad-CAM maps are all zero.
    """
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=2,
    )

    def batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = 0.3 * torch.randn(n, 3, 32, 32, generator=generator)
        y = torch.randint(0, 2, (n,), generator=generator)
        cells = torch.randint(0, 16, (n,), generator=generator)
        for i in range(n):
            if y[i]:
                r, c = divmod(int(cells[i]), 4)
                x[i, :, r * 8 + 1 : r * 8 + 7, c * 8 + 1 : c * 8 + 7] = 2.5
        return x, y, cells

    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(vit.parameters(), lr=2e-3)
    for _ in range(100):
        x, y, _ = batch(32, g)
        loss = nn.functional.cross_entropy(vit(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vit.eval()
    x, y, cells = batch(64, torch.Generator().manual_seed(1))
    positive = y == 1
    targets = torch.ones(int(positive.sum()), 1, dtype=torch.long)
    out = explain_classes(build_explainer(vit, "vit_b_16", "gradcam"), x[positive], targets)  # registry default layer
    assert out.maps.shape[-2:] == (4, 4)  # 16 patches, class token dropped
    assert (out.logits.argmax(1) == 1).float().mean() > 0.9
    hits = (out.maps[:, 0].flatten(1).argmax(dim=1) == cells[positive]).float().mean()
    assert hits >= 0.4  # chance: 1/16 (measured: 0.54)
    block_output = explain_classes(
        build_explainer(vit, "vit_b_16", "gradcam", "encoder.layers.-1"), x[positive], targets
    )
    assert block_output.maps.abs().max() == 0


def test_display_modes() -> None:
    cam = torch.tensor([[[-2.0, 0.0], [1.0, 4.0]]])
    torch.testing.assert_close(display_maps(cam, "minmax"), torch.tensor([[[0.0, 1 / 3], [0.5, 1.0]]]))
    torch.testing.assert_close(display_maps(cam, "relu"), torch.tensor([[[0.0, 0.0], [0.25, 1.0]]]))
    torch.testing.assert_close(display_maps(cam, "signed"), torch.tensor([[[0.25, 0.5], [0.625, 1.0]]]))
    assert display_maps(torch.zeros(1, 2, 2), "signed").eq(0.5).all()
    with pytest.raises(CatdogError, match="display=hot"):
        display_maps(cam, "hot")
    image = np.zeros((2, 2, 3), np.uint8)
    diverging = heatmap_overlay(image, display_maps(cam, "signed")[0].numpy(), alpha=1.0, colormap="diverging")
    assert diverging[0, 0, 2] > diverging[0, 0, 0] and diverging[1, 1, 0] > diverging[1, 1, 2]  # blue < 0 < red
    assert (diverging[0, 1] > 200).all()  # zero is white


def test_threshold_region_is_the_connected_region_around_the_peak() -> None:
    display = np.zeros((20, 20), np.float32)
    display[2:6, 2:6] = 1.0  # the strongest blob: 16 px
    display[10:18, 10:18] = 0.8  # larger but weaker: 64 px
    mask, area = strongest_region(display, 0.5)
    assert mask[3, 3] and not mask[12, 12] and area == pytest.approx(16 / 400)
    mask, area = strongest_region(display, "otsu")
    assert area == pytest.approx(16 / 400)
    assert strongest_region(np.ones((5, 5)), "otsu")[1] == 0.0  # flat: no region
    outlined = draw_contour(np.zeros((20, 20, 3), np.uint8), mask)
    assert outlined[2, 2].any() and not outlined[12, 12].any()
    assert parse_threshold("otsu") == "otsu" and parse_threshold("0.3") == 0.3 and parse_threshold(None) is None
    with pytest.raises(CatdogError, match="threshold=2"):
        parse_threshold(2)


def test_pipeline_methods_layers_display_threshold_and_compare_names(tmp_path) -> None:
    """method/layers/display/threshold through the explain stage; compare names the folders by method@layer."""
    import json
    from pathlib import Path

    import pandas as pd
    from helpers import make_config, save_checkpoint, write_images

    from catdog.explain.pipeline import explain
    from catdog.pipelines.compare import compare

    run = tmp_path / "run"
    ckpt = save_checkpoint(run / "checkpoints" / "best.ckpt", ["cat", "dog", "fox"], image_size=64)
    module = torch.load(ckpt, weights_only=True)
    torch.manual_seed(0)
    for key, value in module["state_dict"].items():  # a non-constant head: maps differ per class
        if key.endswith("fc.weight"):
            value.normal_()
    torch.save(module, ckpt)
    images = tmp_path / "images"
    write_images(images, {"cat": 2, "dog": 1}, size=(64, 48))
    import cv2  # odd inputs: a grayscale photo and a thin strip go through every stage too

    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "cat" / "gray.png"), rng.integers(0, 256, (30, 50), dtype=np.uint8))
    cv2.imwrite(str(images / "dog" / "strip.png"), rng.integers(0, 256, (9, 200, 3), dtype=np.uint8))
    summary = explain(
        make_config(
            "explain",
            [
                f"ckpt={run}",
                f"data.root={images}",
                "data.num_workers=0",
                "method=gradcam",
                "layers=[layer3,layer4]",
                "display=signed",
                "threshold=otsu",
                f"out_dir={tmp_path / 'ex'}",
            ],
        )
    )
    folders = [Path(p) for p in summary["out_dirs"]]
    assert [f.name for f in folders] == ["ex_gradcam_layer3", "ex_gradcam_layer4"]
    for folder, layer, side in zip(folders, ("layer3", "layer4"), (4, 2)):
        described = json.loads((folder / "summary.json").read_text())
        assert (described["method"], described["layer"], described["display"]) == (
            "gradcam",
            layer,
            "signed",
        )
        with np.load(folder / "cams.npz") as npz:
            assert str(npz["method"]) == "gradcam" and str(npz["layer"]) == layer
            assert npz["cams"].shape == (5, 2, side, side) and (npz["cams"] < 0).any()  # raw, signed
        predictions = pd.read_csv(folder / "predictions.csv")
        assert predictions["region_area"].between(0, 1).all() and (predictions["region_area"] > 0).all()
        assert len(predictions) == 5  # grayscale and the 9 px strip explained, nothing skipped
    result = compare(
        make_config(
            "compare",
            [f"runs=[{folders[0]},{folders[1]}]", f"out_dir={tmp_path / 'cmp'}"],
        )
    )
    assert result["labels"] == ["gradcam@layer3", "gradcam@layer4"]
    with pytest.raises(CatdogError, match="only applies to layer4"):
        explain(
            make_config(
                "explain",
                [f"ckpt={run}", f"data.root={images}", "method=cam", "layer=layer2"],
            )
        )


def test_vit_maps_get_the_patch_grid_as_their_cell_centres() -> None:
    """The explain stage places token maps on the patch grid (no conv geometry to measure on tokens)."""
    from types import SimpleNamespace

    from catdog.explain.methods import map_centres

    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=16, num_classes=2
    ).eval()
    model = SimpleNamespace(net=vit, hparams=SimpleNamespace(arch="vit_b_16"))
    centres = map_centres(model, build_explainer(vit, "vit_b_16", "gradcam"), (32, 32), "receptive_field")
    np.testing.assert_allclose(np.asarray(centres.x), [3.5, 11.5, 19.5, 27.5])  # patch centres, 0-based pixels
    np.testing.assert_allclose(np.asarray(centres.y), [3.5, 11.5, 19.5, 27.5])


def test_display_levels_are_the_display_maps_in_255_steps() -> None:
    from catdog.maps.cam import display_levels

    cams = torch.randn(3, 5, 17, 23) * 4
    cams[0, 1] = 2.5  # a constant map: flat 0 (minmax, relu) / 0.5 (signed)
    cams[1, 2] = -1.0  # no positive evidence: relu shows nothing
    for mode in ("minmax", "relu", "signed"):
        expected = np.rint(display_maps(cams, mode).numpy() * 255)
        levels = display_levels(cams.numpy(), mode)
        assert levels.dtype == np.uint8 and levels.shape == cams.shape
        assert np.abs(levels.astype(int) - expected.astype(int)).max() <= 1  # float rounding at .5 only
        assert (levels.astype(int) != expected.astype(int)).mean() < 0.01
    with pytest.raises(CatdogError, match="display=hot is unknown"):
        display_levels(cams.numpy(), "hot")
