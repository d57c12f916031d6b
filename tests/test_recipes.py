"""Fine-tuning recipe options (#11 item 2): EMA weights (callbacks.ema) and flip test-time augmentation
(test_tta / evaluate tta), each checked against numbers computed here independently."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import HEAD_ONLY, make_config, tiny_train_cfg
from torch.utils.data import DataLoader

from catdog.data import ImageDataset, build_transform
from catdog.errors import CatdogError
from catdog.models import ClassifierModule, EMAWeights, load_classifier
from catdog.pipelines.evaluate import evaluate
from catdog.pipelines.train import train

EMA = "callbacks.ema={_target_:catdog.models.EMAWeights,decay:0.5,warmup:false}"


def _split_images(run: Path, split: str, checkpoint: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-transformed images and label indices of one split of a run, in split.csv order."""
    hp = load_classifier(checkpoint).hparams
    rows = pd.read_csv(run / "split.csv")
    rows = rows[rows["split"] == split]
    dataset = ImageDataset(rows["path"].tolist(), None, build_transform(hp.image_size, hp.mean, hp.std, train=False))
    images = next(iter(DataLoader(dataset, batch_size=len(dataset))))[0]
    return images, torch.tensor([hp.class_names.index(label) for label in rows["label"]])


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny training with both recipes, EMA weights and hflip test-time augmentation (2 epochs, tested):
    each is checked on its own numbers, and TTA is reported beside the plain test metrics. The head alone trains
    (HEAD_ONLY): EMA averages whatever moves, and the checks compare weights and metrics, not how well it learned."""
    tmp = tmp_path_factory.mktemp("recipes")
    overrides = (EMA, HEAD_ONLY, "trainer.max_epochs=2", "~callbacks.early_stopping", "test_tta=hflip")
    return train(tiny_train_cfg(tmp, *overrides))


def test_ema_weights_are_validated_saved_as_best_and_tested(recipe_run: dict) -> None:
    run, best = Path(recipe_run["run_dir"]), Path(recipe_run["best_checkpoint"])
    raw = torch.load(best, map_location="cpu", weights_only=True)
    averaged = {k: v for k, v in raw["state_dict"].items() if k.startswith("net.")}
    current = {k: v for k, v in raw["current_model_state"].items() if k.startswith("net.")}
    assert averaged.keys() == current.keys()
    assert any(not torch.equal(averaged[k], current[k]) for k in averaged), "EMA equals the raw weights"

    # best.ckpt (what explain and evaluate load) holds the EMA weights, and those are the weights
    # that were validated (val/loss of the best epoch) and tested (test loss and accuracy).
    model = load_classifier(best)
    assert all(torch.equal(model.state_dict()[k], averaged[k]) for k in averaged)
    with torch.no_grad():
        val_images, val_labels = _split_images(run, "val", best)
        val_loss = F.cross_entropy(model(val_images), val_labels).item()
        test_images, test_labels = _split_images(run, "test", best)
        test_logits = model(test_images)
    metrics = pd.read_csv(run / "metrics.csv").dropna(subset=["val/loss"])
    logged = metrics.loc[metrics["epoch"] == raw["epoch"], "val/loss"].item()
    assert logged == pytest.approx(val_loss, rel=1e-5)
    tested = json.loads((run / "test_metrics.json").read_text())
    assert tested["loss"] == pytest.approx(F.cross_entropy(test_logits, test_labels).item(), rel=1e-5)
    assert tested["accuracy"] == pytest.approx((test_logits.argmax(1) == test_labels).float().mean().item())


def test_ema_average_with_and_without_warmup() -> None:
    average, current = torch.zeros(3), torch.ones(3)
    assert torch.allclose(
        EMAWeights(decay=0.9, warmup=False)._average(average, current, torch.tensor(5)), torch.full((3,), 0.1)
    )
    # Warm-up: after n=2 earlier updates the decay is min(0.9, 3/12) = 0.25.
    assert torch.allclose(EMAWeights(decay=0.9)._average(average, current, torch.tensor(2)), torch.full((3,), 0.75))
    counter = torch.tensor(7)  # integer buffers (BatchNorm's num_batches_tracked) take the current value
    assert EMAWeights()._average(torch.tensor(3), counter, torch.tensor(4)) is counter


@pytest.mark.parametrize(
    ("value", "match"), [("1.0", r"decay must be a number in \[0, 1\)"), ("-0.1", "decay must be")]
)
def test_bad_ema_decay_is_one_line(tmp_path: Path, value: str, match: str) -> None:
    with pytest.raises(CatdogError, match=match):
        train(tiny_train_cfg(tmp_path, f"callbacks.ema={{_target_:catdog.models.EMAWeights,decay:{value}}}"))


def test_hflip_tta_is_the_mean_of_the_logits_of_the_image_and_its_mirror() -> None:
    torch.manual_seed(0)
    model = ClassifierModule(arch="resnet18", class_names=["a", "b", "c"], weights=None).eval()
    images = torch.randn(4, 3, 32, 32)
    mirrored = images[..., torch.arange(31, -1, -1)]  # the flip, computed independently of torch.flip
    with torch.no_grad():
        expected = (model.net(images) + model.net(mirrored)) / 2
        assert torch.allclose(model.tta_logits(images), model.net(images))  # tta=none: one plain pass
        model.set_tta("hflip")
        assert torch.allclose(model.tta_logits(images), expected, atol=1e-5)
        assert not torch.allclose(expected, model.net(images), atol=1e-3)  # the flip changes something
    with pytest.raises(CatdogError, match="tta='mirror' is unknown: use one of none, hflip"):
        model.set_tta("mirror")
    model.inputs = "features"
    with pytest.raises(CatdogError, match="needs images"):
        model.set_tta("hflip")


def test_test_tta_is_reported_beside_the_plain_accuracy_and_evaluate_agrees(recipe_run: dict) -> None:
    run = Path(recipe_run["run_dir"])
    tested = json.loads((run / "test_metrics.json").read_text())
    best = run / "checkpoints" / "best.ckpt"
    model = load_classifier(best)
    images, labels = _split_images(run, "test", best)
    with torch.no_grad():
        plain = model(images)
        flipped = (plain + model(torch.flip(images, dims=[-1]))) / 2
    assert tested["accuracy"] == pytest.approx((plain.argmax(1) == labels).float().mean().item())
    assert tested["tta"]["method"] == "hflip"
    assert tested["tta"]["accuracy"] == pytest.approx((flipped.argmax(1) == labels).float().mean().item())
    assert tested["tta"]["loss"] == pytest.approx(F.cross_entropy(flipped, labels).item(), rel=1e-5)

    overrides = [
        "progress=false",
        "data.num_workers=0",
        "precision=32",
        f"ckpt={run}",
        "tta=hflip",
    ]  # float32 references
    result = evaluate(make_config("evaluate", overrides))
    assert result["tta"] == "hflip" and result["accuracy"] == pytest.approx(tested["tta"]["accuracy"])
    predictions = pd.read_csv(Path(result["out_dir"]) / "predictions.csv")
    probabilities = predictions[[f"p_{name}" for name in model.hparams.class_names]].to_numpy()
    assert torch.allclose(torch.tensor(probabilities, dtype=torch.float32), flipped.softmax(1), atol=1e-5)


def test_bad_test_tta_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(CatdogError, match="tta='twice' is unknown"):
        train(tiny_train_cfg(tmp_path, "test_tta=twice"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_evaluate_at_another_image_size_uses_it_and_says_so(tiny_run: Path) -> None:
    run = tiny_run
    overrides = [
        "progress=false",
        "data.num_workers=0",
        "precision=32",
        f"ckpt={run}",
        "image_size=48",
    ]  # float32 reference
    result = evaluate(make_config("evaluate", overrides))
    model = load_classifier(run / "checkpoints" / "best.ckpt")
    hp = model.hparams
    rows = pd.read_csv(run / "split.csv")
    rows = rows[rows["split"] == "test"]
    dataset = ImageDataset(rows["path"].tolist(), None, build_transform(48, hp.mean, hp.std, train=False))
    images = next(iter(DataLoader(dataset, batch_size=len(dataset))))[0]
    labels = torch.tensor([hp.class_names.index(label) for label in rows["label"]])
    with torch.no_grad():
        logits = model(images)
    assert images.shape[-1] == 48 and hp.image_size == 32
    assert result["image_size"] == 48
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    with pytest.raises(CatdogError, match="image_size=8 must be an integer >= 32"):
        evaluate(make_config("evaluate", ["progress=false", f"ckpt={run}", "image_size=8"]))


def test_train_image_size_changes_only_the_training_crops(tmp_path: Path) -> None:
    from helpers import write_images

    from catdog.data.datamodule import ImageDataModule, LoaderSettings

    paths = write_images(tmp_path / "photos", {"a": 3, "b": 3}, size=(60, 50))
    index = pd.DataFrame(
        {
            "path": [str(p) for p in paths],
            "label": [p.parent.name for p in paths],
            "split": ["train", "val", "test"] * 2,
        }
    )
    data = ImageDataModule(
        index,
        ["a", "b"],
        LoaderSettings(image_size=40, mean=[0.5] * 3, std=[0.5] * 3, num_workers=0, train_image_size=32),
    )
    assert data.train_set[0][0].shape == (3, 32, 32)
    assert data.val_set[0][0].shape == data.test_set[0][0].shape == (3, 40, 40)
    with pytest.raises(CatdogError, match="data.train_image_size=8 must be an integer >= 16"):
        ImageDataModule(
            index, ["a", "b"], LoaderSettings(image_size=40, mean=[0.5] * 3, std=[0.5] * 3, train_image_size=8)
        )


@pytest.mark.parametrize("experiment", ["finetune", "mobilenet_local_weights"])
def test_the_pretrained_recipe_is_a_probe_on_images_with_fixres_and_flip_tta(experiment: str) -> None:
    cfg = make_config("train", [f"experiment={experiment}", "data=folder", "data.root=x", "model.weights=w.pth"])
    assert cfg.model.freeze_backbone and not cfg.model.train_bn and not cfg.data.cache_features
    assert (cfg.data.train_image_size, cfg.data.image_size, cfg.trainer.max_epochs) == (224, 288, 3)
    assert cfg.data.augment == "light" and cfg.test_tta == "hflip"
    full = make_config("train", ["experiment=finetune_full", "data=folder", "data.root=x"])
    assert not full.model.freeze_backbone and full.model.freeze_epochs == 1 and full.data.train_image_size is None
