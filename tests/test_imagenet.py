"""ImageNet mode (ckpt=imagenet:<arch>) offline: a tiny local weights file and labels file made here."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
from helpers import make_config, write_images

from catdog.data import build_transform, load_rgb
from catdog.errors import CatdogError
from catdog.explain.pipeline import explain
from catdog.models.imagenet import imagenet_arch, load_imagenet
from catdog.names import distinct_labels

NAMES = ["background", "tabby, tabby cat", "crane", "crane", "tiger cat"]


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """A 5-class shufflenet_v2_x0_5 state dict (the smallest torchvision classifier) and its labels file."""
    torch.manual_seed(0)
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=len(NAMES))
    with torch.no_grad():
        net.fc.weight.normal_(0, 0.5)  # distinct, confident predictions
    path = tmp_path / "w" / "tiny_imagenet.pth"
    path.parent.mkdir()
    torch.save(net.state_dict(), path)
    (path.parent / "tiny_labels.txt").write_text("\n".join(NAMES) + "\n")
    return path


def test_imagenet_mode_explains_offline_with_names_and_probabilities(weights: Path, tmp_path: Path, capsys) -> None:
    images = tmp_path / "photos"
    write_images(images, {"misc": 3}, size=(72, 56))
    cfg = make_config(
        "explain",
        [
            "ckpt=imagenet:shufflenet_v2_x0_5",
            f"weights={weights}",  # labels: the *labels*.txt beside it
            f"input={images}",
            "topk=2",
            f"runs_dir={tmp_path / 'runs'}",
            "data.num_workers=0",
        ],
    )
    summary = explain(cfg)
    out = Path(summary["out_dir"])
    assert out.parent == tmp_path / "runs" / "imagenet_shufflenet_v2_x0_5" / "explain"
    assert summary["imagenet"]["weights"] == str(weights.resolve()) and summary["class_names"][3] == "crane (2)"
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 3 and (out / "cams.npz").is_file() and (out / "report" / "index.html").is_file()

    # Independent reference: the same state dict in a fresh torchvision model, ImageNet preprocessing.
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=len(NAMES))
    net.load_state_dict(torch.load(weights, weights_only=True))
    net.eval()
    transform = build_transform(224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], train=False)
    printed = capsys.readouterr().out
    for row in predictions.itertuples():
        with torch.no_grad():
            probs = net(transform(load_rgb(row.path))[None]).softmax(dim=1)[0]
        top = probs.topk(2).indices.tolist()
        expected = distinct_labels(NAMES, suffix=" ({n})")
        assert row.pred == expected[top[0]] and row.topk == f"{expected[top[0]]}|{expected[top[1]]}"
        assert float(row.topk_p.split("|")[0]) == pytest.approx(float(probs[top[0]]), abs=1e-3)
        assert f"{expected[top[0]]} {100 * float(probs[top[0]]):.1f}%" in printed  # printed top-k
        assert len(list(out.glob(f"unlabelled/*/{row.overlay.split('/')[-1]}"))) == 1


def test_1001_classes_mean_background_first_and_inputs_in_minus_one_one(
    tmp_path: Path,
) -> None:
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=1001)
    path = tmp_path / "m1001.pth"
    torch.save(net.state_dict(), path)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["background", *(f"class {i}" for i in range(1000))]))
    model = load_imagenet("shufflenet_v2_x0_5", path, labels)
    assert model.hparams.mean == [0.5] * 3 and model.hparams.std == [0.5] * 3
    assert model.hparams.class_names[0] == "background" and len(model.hparams.class_names) == 1001


def test_imagenet_mode_errors(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert imagenet_arch("imagenet:ResNet18") == "resnet18" and imagenet_arch("runs/x") is None
    with pytest.raises(CatdogError, match="has 2 names but the weights have 5"):
        short = tmp_path / "short.txt"
        short.write_text("a\nb\n")
        load_imagenet("shufflenet_v2_x0_5", weights, short)
    with pytest.raises(CatdogError, match="no classifier.1.weight for mobilenet_v2"):
        load_imagenet("mobilenet_v2", weights, weights.parent / "tiny_labels.txt")
    (weights.parent / "tiny_labels.txt").unlink()
    with pytest.raises(CatdogError, match="pass labels="):
        load_imagenet("shufflenet_v2_x0_5", weights)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(CatdogError) as error:
        load_imagenet("resnet18")
    message = str(error.value)
    assert "\n" not in message and "no network" in message and "weights=<path" in message
