"""Training pipeline: data index -> Lightning fit -> test on the best checkpoint -> run folder.

Run folder (``cfg.paths.output_dir``)::

    .hydra/config.yaml          resolved config (written by Hydra)
    split.csv                   path,label,split: exactly the images of each split
    skipped.csv                 path,reason: images left out and why
    checkpoints/best.ckpt       best val/acc; checkpoints/last.ckpt
    metrics.csv, tensorboard/   per-step and per-epoch metrics
    curves.png                  loss and accuracy per epoch
    test_metrics.json           accuracy, per-class precision/recall, confusion matrix (best checkpoint)
    confusion_matrix.png
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from catdog.data import ImageDataModule, build_index, class_names_of, ensure_demo_dataset, scan_images
from catdog.errors import CatdogError
from catdog.models import ClassifierModule
from catdog.plots import plot_confusion_matrix, plot_training_curves

log = logging.getLogger(__name__)


def prepare_data(data_cfg: dict[str, Any], run_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Index the dataset, drop unreadable images, and write split.csv / skipped.csv to the run folder.

    Args:
        data_cfg: the resolved ``data`` config (layout, root, manifest, fractions, split_seed, ...).
        run_dir: the run folder.

    Returns:
        The index (columns path, label, split) of readable images, and the class names in index order.

    Raises:
        CatdogError: the data cannot be used (missing root, a class with no readable training image, ...).
    """
    layout = data_cfg["layout"]
    root = data_cfg.get("root")
    if layout == "demo":
        ensure_demo_dataset(
            root,
            num_per_class=data_cfg["num_per_class"],
            image_size=data_cfg["image_size"],
            seed=data_cfg["generator_seed"],
        )
        layout = "folder"
    index = build_index(
        layout,
        root,
        manifest=data_cfg.get("manifest"),
        val_fraction=data_cfg["val_fraction"],
        test_fraction=data_cfg["test_fraction"],
        seed=data_cfg["split_seed"],
    )
    readable, skipped = scan_images(index["path"].tolist(), num_workers=max(1, data_cfg["num_workers"]))
    skipped.to_csv(run_dir / "skipped.csv", index=False)
    if len(skipped):
        log.warning("Skipped %d unreadable image(s); listed with reasons in %s", len(skipped), run_dir / "skipped.csv")
    index = index[index["path"].isin(set(readable))].reset_index(drop=True)
    # Class names come from all indexed images, so a class whose files are all broken still
    # keeps its index and is reported below instead of silently shifting the other labels.
    class_names = class_names_of(index) if len(index) else []
    for split in ("train", "val"):
        present = set(index.loc[index["split"] == split, "label"])
        missing = [name for name in class_names if name not in present]
        if missing:
            raise CatdogError(
                f"The {split} split has no readable image of class(es) {missing}: "
                f"add images or check {run_dir / 'skipped.csv'}"
            )
    index.to_csv(run_dir / "split.csv", index=False)
    return index, class_names


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, test and write everything to the run folder.

    Args:
        cfg: the composed ``conf/train.yaml`` config.

    Returns:
        A summary: run folder, best checkpoint path, test metrics (None when ``cfg.test`` is false).

    Raises:
        CatdogError: bad data or model settings (the scripts print it as one line).
    """
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    data_cfg = OmegaConf.to_container(cfg.data, resolve=True, throw_on_missing=True)
    # Absolute paths: explain and compare may run from another directory.
    for key in ("root", "manifest"):
        if data_cfg.get(key):
            data_cfg[key] = str(Path(data_cfg[key]).expanduser().resolve())
    index, class_names = prepare_data(data_cfg, run_dir)
    # The checkpoint carries the data config and where the split lives, so explain can
    # evaluate exactly the held-out images without any other input.
    data_cfg["split_csv"] = str((run_dir / "split.csv").resolve())

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    scheduler_cfg = OmegaConf.to_container(cfg.scheduler, resolve=True) or None
    model = ClassifierModule(
        class_names=class_names,
        image_size=data_cfg["image_size"],
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=scheduler_cfg,
        data=data_cfg,
        **model_cfg,
    )
    datamodule = ImageDataModule(
        index,
        class_names,
        image_size=data_cfg["image_size"],
        mean=model.hparams.mean,
        std=model.hparams.std,
        batch_size=data_cfg["batch_size"],
        num_workers=data_cfg["num_workers"],
        augment=data_cfg["augment"],
    )

    # The CSV logger writes into the run folder, which already holds split.csv: expected, not a problem.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.get("callbacks") else []
    loggers = [instantiate(c) for c in cfg.logger.values()] if cfg.get("logger") else []
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    summary: dict[str, Any] = {"run_dir": str(run_dir), "best_checkpoint": best or None, "test": None}
    metrics_csv = run_dir / "metrics.csv"
    if metrics_csv.exists():
        plot_training_curves(metrics_csv, run_dir / "curves.png")

    if cfg.get("test"):
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        results = dict(model.test_results, checkpoint=best or None)
        (run_dir / "test_metrics.json").write_text(json.dumps(results, indent=2))
        plot_confusion_matrix(
            results["confusion_matrix"],
            class_names,
            run_dir / "confusion_matrix.png",
            title=f"test accuracy {results['accuracy']:.1%} (best checkpoint)",
        )
        summary["test"] = results
    _print_summary(summary)
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    lines = [f"Run folder: {summary['run_dir']}", f"Best checkpoint: {summary['best_checkpoint']}"]
    if summary["test"]:
        test = summary["test"]
        lines.append(f"Test accuracy: {test['accuracy']:.2%} (test_metrics.json, confusion_matrix.png)")
    print("\n".join(lines))
