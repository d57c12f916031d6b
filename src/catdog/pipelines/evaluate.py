"""Evaluate any checkpoint on labelled images (like torchvision's ``--test-only``), without explaining.

``python scripts/evaluate.py ckpt=<run folder | .ckpt | latest> [data.root=<folder> | data.split=test]``

Writes a new folder (never overwritten; default ``<run folder>/evaluate/<timestamp>/``)::

    test_metrics.json      accuracy, loss, per-class precision/recall/support, confusion matrix,
                           the checkpoint, which images (folder or split) were evaluated, and
                           tta (the test-time augmentation: none, or hflip with ``tta=hflip``)
    confusion_matrix.png
    predictions.csv        path, true, pred, p_<class>..., correct
    skipped.csv            unreadable and unlabelled images, and why
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from catdog.allocator import reuse_freed_memory
from catdog.console import quiet_lightning
from catdog.data import ImageDataset, build_transform, scan_images, split_off_masks
from catdog.data.selection import select_images
from catdog.errors import CatdogError
from catdog.explain.engine import resolve_precision
from catdog.models import ClassifierModule, load_classifier
from catdog.plots import plot_confusion_matrix
from catdog.runs import (
    check_output_dir,
    resolve_checkpoint,
    run_dir_of,
    staged_output_dir,
    timestamped_dir,
)

log = logging.getLogger(__name__)


def _image_size(requested: Any, trained: int) -> int:
    """The evaluation input side: ``requested`` (an int >= 32), or the checkpoint's own when None.

    A larger side than in training can help (Touvron et al. 2019, "FixRes": random-resized-crop
    training sees objects larger than a whole-image resize at the same size shows them).

    Raises:
        CatdogError: not an integer >= 32.
    """
    if requested is None:
        return int(trained)
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 32:
        raise CatdogError(f"image_size={requested!r} must be an integer >= 32 (or null: the checkpoint's {trained})")
    return requested


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluates a checkpoint on a folder of labelled images or on a split of its run.

    Args:
        cfg: the composed ``conf/evaluate.yaml`` config.

    Returns:
        The test metrics (as written to test_metrics.json) plus ``out_dir``.

    Raises:
        CatdogError: no usable checkpoint, no labelled readable image, bad settings.
    """
    checkpoint = resolve_checkpoint(cfg.ckpt, cfg.runs_dir, cfg.multirun_dir)
    model = load_classifier(checkpoint)
    model.set_tta(cfg.tta)
    hp = model.hparams
    run_dir = run_dir_of(checkpoint)
    source = str(Path(cfg.data.root).expanduser()) if cfg.data.root else None
    selected = select_images(
        source, str(cfg.data.split), list(hp.class_names), dict(hp.data or {}), run_dir, cfg.data.remap_root
    )
    images, mask_files = split_off_masks(selected)  # masks are listed in skipped.csv, not evaluated
    final_dir = Path(cfg.out_dir).expanduser() if cfg.out_dir else timestamped_dir(run_dir / "evaluate")
    keep = [p for p in (source, run_dir, checkpoint) if p]  # inputs, run and checkpoint: never replaced
    check_output_dir(final_dir, bool(cfg.overwrite), keep)  # before the work, not after it
    # The runtime group's knobs, as explain reads them: precision=auto is bf16 only where it runs natively.
    precision, precision_record = resolve_precision(str(cfg.precision), str(cfg.accelerator))
    if cfg.devices != 1:
        raise CatdogError(f"devices={cfg.devices}: evaluate runs in one process, use devices=1")

    labelled, skipped = _usable_images(images, mask_files, list(hp.class_names), cfg.data.num_workers)
    if labelled.empty:
        where = source or f"the {cfg.data.split} split of {run_dir}"
        raise CatdogError(
            f"no readable labelled images in {where}: put them in sub-folders named like the "
            f"model's classes {list(hp.class_names)}"
        )
    image_size = _image_size(cfg.image_size, hp.image_size)
    malloc = _test(model, _loader(labelled, model, image_size, cfg.data), cfg, precision)
    probabilities = _finite_probabilities(model, checkpoint)
    results: dict[str, Any] = dict(model.test_results)
    results.update(
        tta=model.tta,
        image_size=image_size,
        checkpoint=str(checkpoint.resolve()),
        images=source or f"split={cfg.data.split} of {run_dir / 'split.csv'}",
        num_images=len(labelled),
        num_skipped=len(skipped),
        malloc=malloc,
        precision=precision_record,
    )
    with staged_output_dir(final_dir, overwrite=bool(cfg.overwrite), keep=keep) as out_dir:
        _write_outputs(out_dir, results, labelled, skipped, probabilities, hp.class_names)
    results["out_dir"] = str(final_dir)
    with_tta = f" with test-time augmentation tta={model.tta}" if model.tta != "none" else ""
    print(
        f"Accuracy{with_tta} {results['accuracy']:.2%} on {len(labelled)} images ({len(skipped)} skipped); "
        f"wrote {final_dir}/test_metrics.json, confusion_matrix.png, predictions.csv"
    )
    return results


def _usable_images(
    images: pd.DataFrame, mask_files: pd.DataFrame, class_names: list[str], num_workers: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The readable images labelled with one of ``class_names``, and every other one (path, reason) for skipped.csv."""
    unlabelled = images[images["label"].isna()]
    labelled = images[images["label"].notna()]
    unknown = labelled[~labelled["label"].isin(class_names)]
    labelled = labelled[labelled["label"].isin(class_names)]
    readable, broken = scan_images(labelled["path"].tolist(), num_workers=max(1, num_workers))
    labelled = labelled[labelled["path"].isin(set(readable))].reset_index(drop=True)
    skipped = pd.concat(
        [
            broken,
            mask_files,
            pd.DataFrame({"path": unlabelled["path"], "reason": "no label (not in a class folder)"}),
            pd.DataFrame({"path": unknown["path"], "reason": "label is not a class of the model"}),
        ],
        ignore_index=True,
    )
    return labelled, skipped


def _loader(labelled: pd.DataFrame, model: ClassifierModule, image_size: int, data_cfg: DictConfig) -> DataLoader:
    """The labelled images at ``image_size``, normalised as the model's backbone expects, in index order."""
    hp = model.hparams
    labels = [hp.class_names.index(label) for label in labelled["label"]]
    dataset = ImageDataset(labelled["path"].tolist(), labels, build_transform(image_size, hp.mean, hp.std, train=False))
    return DataLoader(dataset, batch_size=data_cfg.batch_size, num_workers=data_cfg.num_workers)


def _test(model: ClassifierModule, loader: DataLoader, cfg: DictConfig, precision: Any) -> dict[str, Any]:
    """Lightning's test loop over ``loader`` (on one device); returns the allocator record of the run."""
    with quiet_lightning():  # Lightning's tips and hardware lines, as in train and explain
        trainer = pl.Trainer(
            accelerator=str(cfg.accelerator),
            devices=1,
            precision=precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=bool(cfg.progress),
            enable_model_summary=False,
        )
        with reuse_freed_memory(bool(cfg.tune_malloc)) as malloc:  # as explain: no page faults per batch
            trainer.test(model, dataloaders=loader, verbose=False)
    return malloc


def _finite_probabilities(model: ClassifierModule, checkpoint: Path) -> np.ndarray:
    """The probabilities of every image, in loader order (after test-time augmentation), for predictions.csv.

    Raises:
        CatdogError: NaN or infinity among them (NaN would count as a wrong answer).
    """
    probabilities = model.test_probabilities
    if not all(torch.isfinite(batch).all() for batch in probabilities):
        raise CatdogError(
            f"the model outputs NaN or infinity: {checkpoint} overflows on these images; use an earlier checkpoint "
            "or retrain with a lower learning rate"
        )
    return torch.cat(probabilities).numpy()


def _write_outputs(
    out_dir: Path,
    results: dict[str, Any],
    labelled: pd.DataFrame,
    skipped: pd.DataFrame,
    probs: np.ndarray,
    class_names: list[str],
) -> None:
    """predictions.csv, skipped.csv, confusion_matrix.png and test_metrics.json in ``out_dir``."""
    pred = [class_names[i] for i in probs.argmax(1)]
    columns = {"path": labelled["path"], "true": labelled["label"], "pred": pred}
    # All probability columns at once: one column at a time is quadratic in the number of classes.
    probabilities = pd.DataFrame(probs, columns=[f"p_{name}" for name in class_names])
    predictions = pd.concat([pd.DataFrame(columns), probabilities], axis=1)
    predictions["correct"] = predictions["true"] == predictions["pred"]
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    skipped.to_csv(out_dir / "skipped.csv", index=False)
    plot_confusion_matrix(
        results["confusion_matrix"],
        class_names,
        out_dir / "confusion_matrix.png",
        title=f"accuracy {results['accuracy']:.1%} on {len(labelled)} images",
    )
    (out_dir / "test_metrics.json").write_text(json.dumps(results, indent=2))
