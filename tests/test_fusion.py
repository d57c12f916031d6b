"""Folding inference BatchNorm into convolutions: same outputs, hooked layers kept, explain records it."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from helpers import make_config, write_images
from torch import nn

from catdog.explain.pipeline import explain
from catdog.models import ClassifierModule, fold_batchnorm
from catdog.models.fusion import conv_bn_pairs


def with_random_statistics(net: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking BatchNorms: running statistics and affine parameters far from their defaults."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(0.3 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
                module.weight.copy_(1 + 0.3 * torch.randn(size, generator=generator))
                module.bias.copy_(0.2 * torch.randn(size, generator=generator))
    return net.eval()


def batchnorms(net: nn.Module) -> int:
    return sum(isinstance(module, nn.BatchNorm2d) for module in net.modules())


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_folding_keeps_the_outputs_and_removes_every_batchnorm(arch: str) -> None:
    torch.manual_seed(0)
    original = with_random_statistics(getattr(torchvision.models, arch)(num_classes=3))
    folded = copy.deepcopy(original)
    count = fold_batchnorm(folded)
    assert count == batchnorms(original) > 0  # every BatchNorm of these nets follows a convolution
    assert batchnorms(folded) == 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = original(x), folded(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_hooked_and_shared_convolutions_keep_their_own_outputs() -> None:
    torch.manual_seed(0)
    net = with_random_statistics(torchvision.models.resnet18(num_classes=2))
    original = copy.deepcopy(net)
    hooked = net.layer4[1].conv2
    folded = fold_batchnorm(net, keep=[hooked])
    assert folded == batchnorms(original) - 1
    assert isinstance(net.layer4[1].bn2, nn.BatchNorm2d)  # its pair was left alone
    outputs = {}
    for name, model in (("original", original), ("folded", net)):
        handle = model.layer4[1].conv2.register_forward_hook(lambda _m, _i, out, name=name: outputs.update({name: out}))
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
        handle.remove()
    assert torch.allclose(outputs["folded"], outputs["original"], rtol=1e-4, atol=1e-4)

    class Shared(nn.Module):  # one convolution called twice: folding would be wrong for its second use
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) + self.conv(x)

    assert conv_bn_pairs(Shared()) == []


def test_training_mode_is_refused_and_untraceable_nets_are_left_alone() -> None:
    net = torchvision.models.resnet18(num_classes=2)
    with pytest.raises(ValueError, match=r"call net\.eval\(\) first"):
        fold_batchnorm(net.train())

    class Branching(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    branching = Branching().eval()
    assert fold_batchnorm(branching) == 0
    assert isinstance(branching.bn, nn.BatchNorm2d)


def test_explain_with_and_without_folding_gives_the_same_predictions_and_maps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = ClassifierModule(arch="resnet18", class_names=["cat", "dog"], weights=None, image_size=64)
    with_random_statistics(module.net)
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    images = tmp_path / "images"
    write_images(images, {"cat": 3, "dog": 3})
    outputs = {}
    for fold in (True, False):
        cfg = make_config(
            "explain",
            [f"ckpt={ckpt}", f"data.root={images}", "data.num_workers=0", "precision=32", f"fold_batchnorm={fold}"],
        )
        summary = explain(cfg)
        out = Path(summary["out_dir"])
        outputs[fold] = (pd.read_csv(out / "predictions.csv"), np.load(out / "cams.npz"), summary)
    (rows, cams, summary), (rows_off, cams_off, summary_off) = outputs[True], outputs[False]
    assert summary["batchnorm_folding"] == {"folded": 20}
    assert summary_off["batchnorm_folding"] == {"folded": 0, "reason": "fold_batchnorm=false"}
    assert (rows["pred"] == rows_off["pred"]).all()
    assert np.allclose(rows[["p_cat", "p_dog"]], rows_off[["p_cat", "p_dog"]], atol=1e-5)
    maps, maps_off = cams["cams"].astype(np.float32), cams_off["cams"].astype(np.float32)
    assert np.allclose(maps, maps_off, atol=2e-3 * np.abs(maps_off).max())  # float16 storage

    # Under bf16 autocast folding adds rounding error to the maps: explain leaves the network as it is.
    cfg = make_config("explain", [f"ckpt={ckpt}", f"data.root={images}", "data.num_workers=0", "precision=bf16"])
    assert explain(cfg)["batchnorm_folding"]["folded"] == 0
