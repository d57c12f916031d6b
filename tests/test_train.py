"""Train pipeline end to end on tiny demo data: run folder contents, checkpoint contract, reload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from catdog.data import ImageDataset, build_transform
from catdog.errors import CatdogError
from catdog.models import load_classifier
from catdog.pipelines.train import train
from helpers import make_config, write_images

ROOT = Path(__file__).resolve().parents[1]


def tiny_train_cfg(tmp_path: Path, *overrides: str, demo: bool = True):
    demo_overrides = [f"data.root={tmp_path / 'demo'}", "data.num_per_class=12"] if demo else []
    return make_config(
        "train",
        [
            f"paths.output_dir={tmp_path / 'run'}",
            *demo_overrides,
            "data.image_size=32",
            "data.batch_size=8",
            "data.num_workers=0",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "~callbacks.rich_progress_bar",
            *overrides,
        ],
    )


def test_train_writes_the_run_folder_and_a_reloadable_checkpoint(tmp_path: Path) -> None:
    summary = train(tiny_train_cfg(tmp_path))
    run = tmp_path / "run"
    for name in ("split.csv", "skipped.csv", "metrics.csv", "curves.png", "test_metrics.json", "confusion_matrix.png"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))

    split = pd.read_csv(run / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"} and len(split) == 24
    assert sorted(split["label"].unique()) == ["cat", "dog"]

    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["class_names"] == ["cat", "dog"]
    assert sum(map(sum, metrics["confusion_matrix"])) == (split["split"] == "test").sum()
    assert set(metrics["per_class"]) == {"cat", "dog"}
    assert summary["best_checkpoint"].endswith("best.ckpt")

    # The checkpoint alone rebuilds model and preprocessing, loads with weights_only, predicts the same.
    raw = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    hp = raw["hyper_parameters"]
    assert hp["arch"] == "resnet18" and hp["class_names"] == ["cat", "dog"] and hp["image_size"] == 32
    assert len(hp["mean"]) == 3 and len(hp["std"]) == 3
    assert hp["data"]["split_csv"] == str((run / "split.csv").resolve())
    assert hp["feature_layer"] == "layer4" and hp["fc_layer"] == "fc"

    model = load_classifier(run / "checkpoints" / "best.ckpt")
    test = split[split["split"] == "test"]
    dataset = ImageDataset(test["path"].tolist(), None, build_transform(32, hp["mean"], hp["std"], train=False))
    images = next(iter(DataLoader(dataset, batch_size=len(dataset))))[0]
    again = load_classifier(run / "checkpoints" / "best.ckpt")
    with torch.no_grad():
        assert torch.equal(model(images), again(images))
        expected = torch.tensor([metrics["class_names"].index(label) for label in test["label"]])
        accuracy = (model(images).argmax(1) == expected).float().mean().item()
    assert accuracy == pytest.approx(metrics["accuracy"])


def test_bad_images_are_skipped_and_listed_before_training(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_images(root, {"cats": 20, "dogs": 20}, size=(40, 40))
    (root / "cats" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    (root / "dogs" / "zero.png").write_bytes(b"")
    cfg = tiny_train_cfg(tmp_path, "data=folder", f"data.root={root}", "model.weights=null", "test=false", demo=False)
    train(cfg)
    skipped = pd.read_csv(tmp_path / "run" / "skipped.csv")
    assert sorted(Path(p).name for p in skipped["path"]) == ["truncated.jpg", "zero.png"]
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert len(split) == 40 and sorted(split["label"].unique()) == ["cats", "dogs"]


def test_single_class_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_images(root, {"cats": 4}, size=(40, 40))
    with pytest.raises(CatdogError, match=r"only one class \('cats'\)"):
        train(tiny_train_cfg(tmp_path, "data=folder", f"data.root={root}", "model.weights=null", demo=False))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=folder", "data.root=/no/such/folder", "model.weights=null"], "does not exist"),
        (["data=folder"], "data.root is required"),
        (["data.rooot=x"], "data.rooot"),  # a typo in a config key: Hydra's own one-line error
    ],
)
def test_cli_user_mistakes_are_one_line(tmp_path: Path, overrides: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), f"paths.runs_dir={tmp_path}", *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
