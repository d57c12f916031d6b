"""Issue 20 item 3: the training console is catdog's (one line per epoch, the best epoch, the test's size,
the next command), not Lightning's tips, deprecations, hardware lines and metric-module summary; best.ckpt
breaks ties of a saturated val/acc by val/loss."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from helpers import tiny_train_cfg
from torch.utils.data import DataLoader, TensorDataset

from catdog.callbacks import BestCheckpoint
from catdog.console import quiet_lightning
from catdog.pipelines.train import train

NOISE = ("Tip:", "litlogger", "LeafSpec", "GPU available:", "TPU available", "log_every_n_steps", "FLOPs",
         "MulticlassAccuracy", "Seed set to", "Restoring states", "in eval mode")


@pytest.mark.slow
def test_training_console_is_one_line_per_epoch_and_says_the_best_epoch(tmp_path: Path, capfd) -> None:
    summary = train(tiny_train_cfg(tmp_path, "trainer.max_epochs=2", "~callbacks.early_stopping"))
    out, err = capfd.readouterr()
    console = out + err
    for noise in NOISE:
        assert noise not in console, noise
    epochs = [line for line in console.splitlines() if re.match(r"epoch +\d+/2  train loss \d", line)]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], console
    assert all(re.search(r"val loss \d\.\d{4}  val acc \d\.\d{3} +\d+\.\d s", line) for line in epochs)
    best = summary["best"]["epoch"]
    assert sum(line.endswith("*best") for line in epochs) >= 1 and epochs[best - 1].endswith("*best")
    assert re.search(rf"^Best epoch {best}: val/acc \d\.\d{{4}}, val/loss \d\.\d{{4}} -> .*best\.ckpt$", console, re.M)
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    n_test = int((split["split"] == "test").sum())
    assert re.search(rf"^Test accuracy \d+\.\d\d% on {n_test} images \(best\.ckpt, epoch {best};", console, re.M)
    assert f"Next: catdog explain ckpt={tmp_path / 'run'}" in console
    # The network's blocks, not the metric modules.
    assert "Network: resnet18, 3 classes, 32 px input" in console and re.search(r"^  layer4 +Sequential", console, re.M)


def test_quiet_lightning_hides_the_noise_and_keeps_other_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_lightning():
            noise = [
                "The number of training batches (2) is smaller than the logging interval Trainer(...)",
                "Found 3 module(s) in eval mode at the start of training. This may lead ...",
                "GPU available but not used. You can set it by doing `Trainer(accelerator='gpu')`.",
            ]
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", DeprecationWarning, stacklevel=1)
            for message in noise:
                warnings.warn(message, stacklevel=1)
    assert [str(w.message)[:13] for w in caught] == ["GPU available"]


class _Saturated(pl.LightningModule):
    """val/acc is 1.0 at every epoch; val/loss falls: the last epoch is the best one."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", 1.0)
        self.log("val/loss", 1.0 / (self.current_epoch + 1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_best_checkpoint_breaks_ties_by_val_loss(tmp_path: Path) -> None:
    loader = DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2)
    checkpoint = BestCheckpoint(dirpath=tmp_path, filename="best", monitor="val/acc", mode="max")
    trainer = pl.Trainer(max_epochs=3, callbacks=[checkpoint], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    with quiet_lightning():
        trainer.fit(_Saturated(), loader, loader)
    assert checkpoint.best_epoch == 2 and checkpoint.best_tie_value == pytest.approx(1 / 3)
    saved = torch.load(tmp_path / "best.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]
    # Plain ModelCheckpoint keeps the first of the tied epochs (what issue 20 saw with 21 val images).
    plain = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "plain", filename="best", monitor="val/acc", mode="max")
    trainer = pl.Trainer(max_epochs=3, callbacks=[plain], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    with quiet_lightning():
        trainer.fit(_Saturated(), loader, loader)
    assert torch.load(tmp_path / "plain" / "best.ckpt", map_location="cpu", weights_only=True)["epoch"] == 0


def test_evaluate_console_has_no_lightning_noise(tmp_path: Path, capfd) -> None:
    from helpers import make_config, make_trained_run, write_images

    from catdog.pipelines.evaluate import evaluate

    write_images(tmp_path / "images", {"cat": 2, "dog": 2}, size=(40, 40))
    run = make_trained_run(tmp_path / "run", tmp_path / "images", ["cat", "dog"])
    evaluate(make_config("evaluate", [f"ckpt={run}", "progress=false", "data.num_workers=0"]))
    out, err = capfd.readouterr()
    for noise in NOISE:
        assert noise not in out + err, noise
    assert re.search(r"^Accuracy 50\.00% on 4 images", out, re.MULTILINE)


def test_checking_images_bar_stays_out_of_logs(tmp_path: Path, capfd) -> None:
    """Piped to a file, tqdm's bar was 35 carriage-return frames on one line of the demo's log."""
    from helpers import write_images

    from catdog.data.images import _PROGRESS_MIN_FILES, scan_images

    paths = write_images(tmp_path, {"cat": _PROGRESS_MIN_FILES}, size=(8, 8))
    readable, skipped = scan_images(paths, num_workers=2)
    assert len(readable) == len(paths) and skipped.empty
    out, err = capfd.readouterr()
    assert "Checking images" not in out + err
