"""Exact CAMs against independent references (CAM repo formula, torchcam) and helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchcam.methods import CAM
from torchvision.models import DenseNet, mobilenet_v2, resnet18

from catdog.errors import CatdogError
from catdog.maps.cam import (
    area_above,
    cam_logit_check,
    capture_features,
    class_activation_maps,
    normalize_for_display,
    peak_location,
    point_in_box,
    select_classes,
    upsample_cams,
)

ARCHS = {
    "resnet18": (lambda: resnet18(num_classes=3), "layer4", "fc"),
    "mobilenet_v2": (lambda: mobilenet_v2(num_classes=3), "features", "classifier.1"),
}


def return_cam(feature_conv: np.ndarray, weight_softmax: np.ndarray, class_idx: list[int]) -> list[np.ndarray]:
    """``returnCAM`` of the original CAM repo (one image), without its min-max/uint8 display step."""
    _, nc, h, w = feature_conv.shape
    output_cam = []
    for idx in class_idx:
        cam = weight_softmax[idx].dot(feature_conv.reshape((nc, h * w)))
        output_cam.append(cam.reshape(h, w))
    return output_cam


def _forward(arch: str, dtype: torch.dtype = torch.float64):
    torch.manual_seed(0)
    build, layer, fc_name = ARCHS[arch]
    model = build().to(dtype).eval()
    images = torch.randn(2, 3, 64, 64, dtype=dtype)
    with torch.no_grad(), capture_features(model, layer) as captured:
        logits = model(images)
    return model, images, logits, captured.features, layer, fc_name


@pytest.mark.parametrize("arch", list(ARCHS))
def test_raw_cam_matches_original_formula_torchcam_and_logits(arch: str) -> None:
    model, images, logits, features, layer, fc_name = _forward(arch)
    fc = model.get_submodule(fc_name)
    class_idx = select_classes(logits, topk=2, true_labels=torch.tensor([1, -1]))
    cams = class_activation_maps(features, fc.weight, class_idx)
    assert cams.shape == (2, 3, *features.shape[-2:])

    for b in range(2):
        reference = return_cam(features[b : b + 1].numpy(), fc.weight.detach().numpy(), class_idx[b].tolist())
        np.testing.assert_allclose(cams[b].numpy(), np.stack(reference), atol=1e-5, rtol=0)

    # torchcam's CAM has no ReLU; `normalized=False` skips its min-max, giving raw maps.
    with CAM(model, target_layer=layer, fc_layer=fc_name) as extractor, torch.no_grad():
        model(images)
        for m in range(class_idx.shape[1]):
            (raw,) = extractor(class_idx=class_idx[:, m].tolist(), normalized=False)
            torch.testing.assert_close(cams[:, m], raw.to(cams.dtype), atol=1e-5, rtol=0)

    assert cam_logit_check(cams, fc.bias, logits, class_idx) < 1e-4
    all_classes = torch.arange(3).expand(2, 3)
    all_cams = class_activation_maps(features, fc.weight, all_classes)
    assert cam_logit_check(all_cams, fc.bias, logits, all_classes) < 1e-4


def test_float32_logit_check_and_low_precision_inputs() -> None:
    model, _, logits, features, _, _ = _forward("resnet18", torch.float32)
    class_idx = select_classes(logits, topk=3)
    cams = class_activation_maps(features, model.fc.weight, class_idx)
    assert cams.dtype == torch.float32
    assert cam_logit_check(cams, model.fc.bias, logits, class_idx) < 1e-4

    channels_last = features.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(class_activation_maps(channels_last, model.fc.weight, class_idx), cams)

    bf16 = features.to(torch.bfloat16)
    from_bf16 = class_activation_maps(bf16, model.fc.weight, class_idx)
    assert from_bf16.dtype == torch.float32
    torch.testing.assert_close(from_bf16, class_activation_maps(bf16.float(), model.fc.weight, class_idx))


def test_densenet_needs_relu_on_features() -> None:
    torch.manual_seed(0)
    model = DenseNet(growth_rate=4, block_config=(1, 1), num_init_features=8, bn_size=2, num_classes=3)
    model = model.double().eval()
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad(), capture_features(model, "features", relu=True) as captured:
        logits = model(images)
    assert captured.features.min() >= 0
    class_idx = select_classes(logits, topk=2)
    cams = class_activation_maps(captured.features, model.classifier.weight, class_idx)
    assert cam_logit_check(cams, model.classifier.bias, logits, class_idx) < 1e-4


def test_logit_check_detects_a_wrong_head() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    fc = nn.Linear(4, 3).double()
    # The logits of a head with a ReLU before pooling do not match maps of the raw features.
    logits = fc(features.relu().mean(dim=(2, 3)))
    class_idx = torch.tensor([[0], [2]])
    good = class_activation_maps(features.relu(), fc.weight, class_idx)
    bad = class_activation_maps(features, fc.weight, class_idx)
    assert cam_logit_check(good, fc.bias, logits, class_idx) < 1e-12
    assert cam_logit_check(bad, fc.bias, logits, class_idx) > 1e-3
    no_bias = class_activation_maps(features, fc.weight, class_idx)
    assert cam_logit_check(no_bias, None, features.mean(dim=(2, 3)) @ fc.weight.T, class_idx) < 1e-12


def test_class_activation_maps_validates_inputs() -> None:
    features, weight = torch.zeros(2, 4, 3, 3), torch.zeros(3, 4)
    with pytest.raises(ValueError, match="fc_weight"):
        class_activation_maps(features, torch.zeros(3, 5), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="torch.long"):
        class_activation_maps(features, weight, torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        class_activation_maps(features, weight, torch.tensor([[0], [3]]))


def test_select_classes_topk_order_and_true_column() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 5)
    top = select_classes(logits, topk=3)
    assert torch.equal(top, torch.topk(logits, 3, dim=1).indices)
    assert torch.equal(select_classes(logits)[:, 0], logits.argmax(dim=1))

    predicted = logits.argmax(dim=1)
    wrong = (predicted[2] + 1) % 5
    labels = torch.tensor([predicted[0].item(), -1, wrong.item(), top[3, 1].item()])
    idx = select_classes(logits, topk=2, true_labels=labels)
    assert idx.shape == (4, 3) and idx.dtype == torch.long
    assert torch.equal(idx[:, :2], top[:, :2])
    assert idx[0, -1] == predicted[0]  # correct: repeats the prediction
    assert idx[1, -1] == predicted[1]  # unknown: repeats the prediction
    assert idx[2, -1] == wrong  # misclassified: the true class
    assert idx[3, -1] == top[3, 1]  # true class in the top-k but not first
    assert (idx[:, -1] != idx[:, 0]).tolist() == [False, False, True, True]

    with pytest.raises(ValueError, match="topk"):
        select_classes(logits, topk=6)
    with pytest.raises(ValueError, match="true_labels"):
        select_classes(logits, true_labels=torch.tensor([0, 0, 0, -2]))


def test_hook_is_removed_after_block_and_after_exception() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
    layer = model[0]
    with capture_features(model, "0") as captured:
        with pytest.raises(RuntimeError, match="no features captured"):
            _ = captured.features
        model(torch.randn(1, 3, 4, 4))
        assert len(layer._forward_hooks) == 1
    assert len(layer._forward_hooks) == 0
    assert captured.features.shape == (1, 2, 4, 4)

    with pytest.raises(ZeroDivisionError), capture_features(model, layer):
        assert len(layer._forward_hooks) == 1
        _ = 1 / 0
    assert len(layer._forward_hooks) == 0


def test_capture_relu_and_layer_errors() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 1))
    images = torch.randn(1, 3, 4, 4)
    with capture_features(model, "0", relu=True) as captured:
        out = model(images)
    torch.testing.assert_close(captured.features, out.relu())
    with pytest.raises(CatdogError, match="closest layer4"), capture_features(resnet18(num_classes=2), "layer5"):
        pass
    with pytest.raises(ValueError, match="not a submodule"), capture_features(model, nn.Conv2d(1, 1, 1)):
        pass


def test_upsample_bilinear_non_square() -> None:
    cams = torch.tensor([[0.0, 1.0]])
    # align_corners=False: source x = (i + 0.5) / 2 - 0.5, clamped at the borders.
    up = upsample_cams(cams, (3, 4))
    assert up.shape == (3, 4)
    torch.testing.assert_close(up, torch.tensor([0.0, 0.25, 0.75, 1.0]).expand(3, 4))
    batched = upsample_cams(torch.randn(2, 3, 2, 2), (5, 7))
    assert batched.shape == (2, 3, 5, 7)


def test_normalize_for_display_keeps_negative_evidence() -> None:
    cam = torch.tensor([[[-2.0, 0.0], [1.0, 2.0]], [[3.0, 3.0], [3.0, 3.0]]])
    out = normalize_for_display(cam)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.75, 1.0]]))
    torch.testing.assert_close(out[1], torch.zeros(2, 2))  # constant map: flat, not NaN


def test_peak_area_and_pointing_game() -> None:
    cam = torch.tensor(
        [
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 4.0, 2.0, 0.0],
            [-1.0, 0.0, 4.0, 0.0],
        ]
    )
    assert peak_location(cam) == (1, 1)  # (x=column, y=row); first maximum on ties
    assert area_above(cam, 0.5) == pytest.approx(3 / 12)  # values >= 2
    assert area_above(cam, 1.0) == pytest.approx(2 / 12)
    assert area_above(-cam.abs() - 1) == 0.0  # no positive evidence
    assert point_in_box(1, 1, (1, 0, 3, 1))  # border counts
    assert not point_in_box(1, 2, (1, 0, 3, 1))
    with pytest.raises(ValueError, match="fraction"):
        area_above(cam, 0.0)
    with pytest.raises(ValueError, match="min <= max"):
        point_in_box(0, 0, (3, 0, 1, 1))
