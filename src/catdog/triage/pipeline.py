"""Triage pipeline: a run's images -> embeddings once -> out-of-sample probabilities -> the audit tables.

Triage folder (a new one per run, by default ``<run folder>/triage/<timestamp>``; staged, never overwritten)::

    images.csv         one row per image: path, key, split, label, pred, confidence, prob_source, traits, slice
    label_issues.csv   suspected label errors (cleanlab), worst first; pictures/ their maps
    relabelled.csv     path,label[,split]: the dataset with the suspects relabelled or dropped (data=csv trains on it)
    duplicates.csv     exact and near-duplicate pairs, leak (across splits) and label-conflict flags
    outliers.csv       images unlike the rest (cleanlab OutOfDistribution on the embeddings)
    slices.csv         clusters of the embeddings, those clearly below the average accuracy flagged
    context.csv        context reliance (when the context step is installed)
    embeddings.npy, skipped.csv, triage_config.yaml, summary.json (written last), report/index.html
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from catdog.console import quiet_lightning as _quiet_lightning
from catdog.errors import CatdogError
from catdog.explain.engine import global_rank_from_env
from catdog.explain.model import sha256 as _sha256
from catdog.explain.summary import _versions
from catdog.models import ClassifierModule, load_classifier
from catdog.runs import (
    resolve_checkpoint,
    run_dir_of,
    staged_output_dir,
    timestamped_dir,
)
from catdog.triage.dataset import images_to_audit, object_sizes
from catdog.triage.duplicates import find_duplicates, find_outliers, leak_free_accuracy
from catdog.triage.features import choose_feature_net, embed_images
from catdog.triage.folds import row_probabilities
from catdog.triage.label_issues import label_issue_table, relabelled_manifest
from catdog.triage.pictures import draw_pictures
from catdog.triage.report import write_triage_report
from catdog.triage.settings import TriageSettings, parse_settings
from catdog.triage.slices import find_slices
from catdog.triage.summary import print_summary, summarise

__all__ = ["run_audit", "triage"]


def triage(cfg: DictConfig) -> dict[str, Any]:
    """Audit every image of a run's dataset (or ``data.root``) and write the triage folder.

    Returns:
        The summary written to summary.json, plus ``out_dir``.

    Raises:
        CatdogError: a bad checkpoint, data or setting (one line for the user).
    """
    settings = parse_settings(cfg)
    model, run_dir, provenance = load_run(settings)
    class_names = list(model.hparams.class_names)
    images = images_to_audit(settings.root, class_names, dict(model.hparams.data or {}), run_dir)
    labelled = images["label"].isin(class_names).any()
    # Without labels there is nothing to audit against: the run's own network embeds and predicts.
    feature = choose_feature_net(model, settings.features if labelled else "checkpoint")
    final_dir = settings.out_dir or timestamped_dir(run_dir / "triage")
    if global_rank_from_env() != 0:  # another process of a multi-process run: embeds its share only
        with _quiet_lightning():
            embed_images(model, feature, images, None, settings)
        return {"out_dir": None}
    with staged_output_dir(final_dir, overwrite=settings.overwrite) as out_dir:
        OmegaConf.save(cfg, out_dir / "triage_config.yaml")
        with _quiet_lightning():
            features = embed_images(model, feature, images, out_dir, settings)
        if features is None:
            return {"out_dir": None}
        if features.table.empty:
            first = features.skipped.iloc[0] if len(features.skipped) else None
            detail = f" (first: {first['path']}: {first['reason']})" if first is not None else ""
            raise CatdogError(f"none of the {len(images)} images could be read{detail}: check the files or data.root")
        summary = run_audit(model, features, feature, settings, out_dir)
        summary["context"] = context_step(model, summary, out_dir, settings)
        summary.update(provenance, source=settings.root or str(run_dir / "split.csv"), versions=_versions())
        write_triage_report(out_dir, summary)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print_summary(final_dir, summary)
    return dict(summary, out_dir=str(final_dir))


def load_run(settings: TriageSettings) -> tuple[ClassifierModule, Path, dict[str, Any]]:
    """The run's model, its folder and provenance (checkpoint path and hash)."""
    if settings.ckpt.startswith("imagenet:"):
        raise CatdogError(
            "triage audits a trained run's labels: pass ckpt=<run folder or .ckpt>, not an ImageNet model"
        )
    checkpoint = resolve_checkpoint(settings.ckpt, settings.runs_dir)
    model = load_classifier(checkpoint)
    provenance = {"checkpoint": {"path": str(checkpoint.resolve()), "sha256": _sha256(checkpoint)}}
    return model, run_dir_of(checkpoint), provenance


def run_audit(
    model: ClassifierModule, features: Any, feature: Any, settings: TriageSettings, out_dir: Path
) -> dict[str, Any]:
    """Every table of the triage folder from the embeddings; returns the summary (without provenance)."""
    class_names = list(model.hparams.class_names)
    table = features.table
    to_index = {name: i for i, name in enumerate(class_names)}
    given = np.array([to_index.get(label, -1) if label is not None else -1 for label in table["label"]])
    use_model = (table["split"] == "test").to_numpy() & (settings.test_probs == "model")
    probs, sources, folds = row_probabilities(
        features.embeddings, given, len(class_names), features.model_probs, use_model, settings, feature.source
    )
    table = annotate(table, probs, sources, features.model_probs, class_names)
    table["object_size"] = object_sizes(table, settings.root or (model.hparams.data or {}).get("root"))
    issues = label_issue_table(table, probs, class_names, settings.filter_by)
    pairs = find_duplicates(table, features.embeddings, settings.near_duplicate)
    outliers = find_outliers(table, features.embeddings, settings.outlier_quantile)
    table, slices = find_slices(table, features.embeddings, settings)
    found = {"label_issues": issues, "duplicates": pairs, "outliers": outliers, "slices": slices}
    pictures = draw_pictures(model, table, found, out_dir, settings)
    np.save(out_dir / "embeddings.npy", features.embeddings.astype(np.float32))
    for name, frame in {"images": table, **found}.items():
        frame.to_csv(out_dir / f"{name}.csv", index=False)
    relabelled_manifest(table, issues, settings.fix).to_csv(out_dir / "relabelled.csv", index=False)
    features.skipped.to_csv(out_dir / "skipped.csv", index=False)
    summary = summarise(table, issues, pairs, outliers, slices, settings)
    summary["test_accuracy"] = leak_free_accuracy(table, pairs)
    summary["skipped"] = len(features.skipped)
    summary["labels_note"] = folds["note"] if not folds["folds"] else None
    if settings.test_probs == "model" and features.model_probs is None:
        folds["test_probs"] = "triage.test_probs=model needs the run's own network as the feature net: kfold used"
    summary["features"] = {
        **features.stats,
        "source": feature.source,
        "reason": feature.reason,
        "backbone_saw_labels": feature.backbone_saw_labels,
    }
    summary.update(folds=folds, pictures=pictures, class_names=class_names, arch=model.hparams.arch)
    return summary


def annotate(
    table: pd.DataFrame, probs: np.ndarray, sources: list[str], model_probs: np.ndarray | None, class_names: list[str]
) -> pd.DataFrame:
    """Add pred, confidence, correct, prob_source, p_<class> (and the run's own model_pred) to each row."""
    table = table.copy()
    known = ~np.isnan(probs).any(axis=1)
    pred = np.where(known, np.nan_to_num(probs).argmax(axis=1), -1)
    table["pred"] = [class_names[p] if p >= 0 else None for p in pred]
    table["confidence"] = np.where(known, np.nan_to_num(probs).max(axis=1), np.nan).round(6)
    table["correct"] = [
        None if label is None or p is None else label == p for label, p in zip(table["label"], table["pred"])
    ]
    table["prob_source"] = sources
    if model_probs is not None:
        table["model_pred"] = [class_names[i] for i in model_probs.argmax(axis=1)]
    for i, name in enumerate(class_names):
        table[f"p_{name}"] = probs[:, i].round(6)
    return table


def context_step(
    model: ClassifierModule, summary: dict[str, Any], out_dir: Path, settings: TriageSettings
) -> dict[str, Any] | None:
    """Context reliance (issue 17 item 6): ``catdog.triage.context.context_reliance`` writes context.csv.

    The hook reads images.csv (path, key, split, label, pred, slice) from ``out_dir`` and returns its summary
    for summary.json and the report; None (recorded) while that module is not installed or
    ``triage.context=false``.
    """
    if not settings.context:
        return None
    try:
        from catdog.triage.context import context_reliance
    except ImportError:
        return None
    return context_reliance(model, out_dir, settings)
