"""Explain pipeline: checkpoint -> one batched forward pass per batch -> maps -> explain folder.

Explain folder (a new one per run, by default ``<run folder>/explain/<timestamp>``)::

    correct/<class>/                 overlays of correct predictions
    incorrect/<true>_as_<pred>/      overlays of mistakes ("why dog and not cat?")
    unlabelled/<pred>/               overlays of images without a known label
    predictions.csv                  one row per image (see :func:`catdog.explain.render.render_image`)
    cams.npz                         raw float16 maps + their class indices + paths (for compare)
    skipped.csv                      images that could not be read, and why
    summary.json                     counts, accuracy, confusion matrix, pointing game, provenance
    confusion_matrix.png, top_losses.png, report/index.html

Overlay file names start with ``1000 * (1 - confidence)`` (4 digits), so an alphabetical listing of a
folder shows the most confident predictions first: in ``incorrect/`` the most confident mistakes.

This module only orchestrates: :mod:`~catdog.explain.settings` reads the config,
:mod:`~catdog.explain.model` loads the model, :mod:`~catdog.explain.methods` builds the explainers and
their geometry, :mod:`~catdog.explain.engine` runs the batches, :mod:`~catdog.explain.render` and
:mod:`~catdog.explain.grids` draw, :mod:`~catdog.explain.summary` assembles summary.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from catdog.data import build_transform, split_off_masks
from catdog.data.selection import (
    Annotations,
    load_annotations,
    sample_across_classes,
    select_images,
    unmatched_label_folders,
)
from catdog.errors import CatdogError
from catdog.explain.engine import global_rank_from_env, run_explain
from catdog.explain.grids import write_grids
from catdog.explain.methods import explainer_for, map_centres
from catdog.explain.model import LoadedModel, fold_for_inference, load_model
from catdog.explain.render import OverlayStyle, draw_run_pictures
from catdog.explain.settings import ExplainSettings
from catdog.explain.summary import (
    _ONE_BY_ONE,
    SummaryParts,
    _print_topk,
    _print_where,
    assemble_summary,
    label_folder_warning,
)
from catdog.maps.explainers import Explainer
from catdog.maps.geometry import CellCentres
from catdog.overlay import safe_name
from catdog.quality.faithfulness import build_faithfulness
from catdog.quality.mosaic import MosaicOptions, mosaic_check
from catdog.report import read_explain_dir, write_report
from catdog.runs import staged_output_dir, timestamped_dir

__all__ = ["explain"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Run:
    """What every explained layer of one ``explain`` call shares."""

    cfg: DictConfig  # saved as explain_config.yaml
    settings: ExplainSettings
    loaded: LoadedModel
    style: OverlayStyle
    folding: dict[str, Any]
    images: pd.DataFrame
    annotations: Annotations
    set_aside: pd.DataFrame  # path,reason for skipped.csv: mask files among the images, unreadable masks
    source: str  # summary.json's "source"

    @property
    def keep(self) -> list[Any]:
        """What the output folder may never replace: the inputs, the run, its checkpoint, its dataset."""
        hp, source = self.loaded.model.hparams, self.settings.input or self.settings.data.root
        return [p for p in (source, self.loaded.run_dir, self.loaded.checkpoint, (hp.data or {}).get("root")) if p]


def explain(cfg: DictConfig) -> dict[str, Any]:
    """Explain a checkpoint's (or a pretrained ImageNet model's) predictions and write the explain folder.

    ``layers=[a,b,...]`` writes one complete explain folder per layer, siblings named
    ``<folder>_<method>_<layer>``; ``grid=true`` adds ``grid/<image>.jpg`` (methods x layers) to the folder.

    Args:
        cfg: the composed ``conf/explain.yaml`` config.

    Returns:
        The summary written to ``summary.json`` plus ``out_dir`` (the last folder) and ``out_dirs`` (all).

    Raises:
        CatdogError: bad checkpoint, paths or settings.
    """
    settings = ExplainSettings.from_config(cfg)  # every setting checked before anything is loaded or read
    loaded = load_model(settings.model)
    model = loaded.model
    class_names = list(model.hparams.class_names)
    if settings.topk > len(class_names):
        raise CatdogError(f"topk={settings.topk} must be between 1 and the number of classes ({len(class_names)})")
    # All errors up front; contrast: the identifiable map of a softmax head (exact CAM only).
    explainers = [
        explainer_for(model, settings.method, layer, contrast=settings.contrast) for layer in settings.explained_layers
    ]
    folding = fold_for_inference(model, settings, explainers)
    style = OverlayStyle.from_settings(settings, class_names)
    run = _Run(cfg, settings, loaded, style, folding, *_inputs(settings, loaded, style))
    base_dir = Path(settings.out_dir).expanduser() if settings.out_dir else timestamped_dir(loaded.run_dir / "explain")

    summaries, out_dirs = [], []
    for explainer in explainers:
        final_dir = base_dir
        if len(explainers) > 1:
            suffix = f"{safe_name(explainer.method)}_{safe_name(explainer.layer)}"
            final_dir = base_dir.with_name(f"{base_dir.name}_{suffix}")
        result = _explain_layer(run, explainer, final_dir)
        if result is None:
            if global_rank_from_env() != 0:
                continue  # another process of a multi-process run: rank 0 writes the tables and summary
            return {"out_dir": None}  # the launcher made this process a non-zero rank after all
        summary, predictions = result
        _print_closing(run, final_dir, summary, predictions)
        summaries.append(summary)
        out_dirs.append(str(final_dir))
    if not summaries:  # a non-zero rank of a multi-process run
        return {"out_dir": None, "rank": global_rank_from_env()}
    return dict(summaries[-1], out_dir=out_dirs[-1], out_dirs=out_dirs)


def _print_closing(run: _Run, final_dir: Path, summary: dict[str, Any], predictions: pd.DataFrame) -> None:
    """The closing summary; a warning for label folders that are not the model's classes."""
    class_names, source = run.style.class_names, run.settings.input or run.settings.data.root
    folders = unmatched_label_folders(source, run.images)
    warning = label_folder_warning(folders, class_names, source) if not run.loaded.imagenet else None
    _print_where(final_dir, summary, predictions, [warning] if warning else [], topk=run.settings.topk)
    if run.loaded.imagenet and len(predictions) > _ONE_BY_ONE:  # fewer: each was named above
        _print_topk(predictions, class_names, run.settings.topk)


def _inputs(
    settings: ExplainSettings, loaded: LoadedModel, style: OverlayStyle
) -> tuple[pd.DataFrame, Annotations, pd.DataFrame, str]:
    """The images to explain, their object boxes and masks, the files set aside (for skipped.csv), and how
    summary.json names where the images came from."""
    source = settings.input or settings.data.root
    if loaded.imagenet and not source:
        raise CatdogError(
            f"ckpt={settings.model.ckpt} has no held-out split: pass input=<image or folder> or data.root=<folder>"
        )
    data_hparams = dict(loaded.model.hparams.data or {})
    selected = select_images(
        source, settings.data.split, style.class_names, data_hparams, loaded.run_dir, settings.data.remap_root
    )
    images, mask_files = split_off_masks(selected)  # masks are listed in skipped.csv, not explained
    if settings.data.max_images:
        images = sample_across_classes(images, settings.data.max_images)
    annotations, bad_masks = load_annotations(source, data_hparams, images["path"].tolist(), style.mask_object)
    label = str(source) if source else f"{loaded.run_dir}/split.csv [{settings.data.split}]"
    return images, annotations, pd.concat([mask_files, bad_masks], ignore_index=True), label


def _explain_layer(run: _Run, explainer: Explainer, final_dir: Path) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """One explain folder: the engine's pass, then (rank 0) pictures, summary.json and the report.

    Returns:
        The summary and predictions, or None in a process that is not rank 0 (it explains its share into
        rank 0's folder).
    """
    settings, model = run.settings, run.loaded.model
    size = (int(model.hparams.image_size), int(model.hparams.image_size))
    centres = map_centres(model, explainer, size, settings.align)  # places the peak and the overlay
    faithfulness = build_faithfulness(
        model.net,
        list(settings.metrics),
        lambda net: explainer_for(model, settings.method, explainer.layer, contrast=settings.contrast, net=net),
        centres,
        steps=settings.faithfulness.steps,
        batch_size=settings.faithfulness.batch_size,
    )
    style = dataclasses.replace(run.style, centres=centres)
    engine = settings.engine()
    options = {"style": style, "explainer": explainer, "annotations": run.annotations, "faithfulness": faithfulness}
    if global_rank_from_env() != 0:
        run_explain(model, run.images, None, engine, **options)
        return None
    # Everything is written into a hidden staging folder that becomes final_dir only when complete.
    with staged_output_dir(final_dir, overwrite=settings.overwrite, keep=run.keep) as out_dir:
        OmegaConf.save(run.cfg, out_dir / "explain_config.yaml")
        result = run_explain(model, run.images, out_dir, engine, **options)
        if result is None:
            return None
        predictions, skipped, stats = result
        unreadable = len(skipped)  # the images the engine could not use (masks are listed too, below)
        skipped = pd.concat([skipped, run.set_aside], ignore_index=True)  # every file accounted for
        skipped.to_csv(out_dir / "skipped.csv", index=False)
        if predictions.empty:
            raise _nothing_usable(len(run.images), skipped)
        parts = SummaryParts(
            settings=settings,
            centres=centres,
            run=stats,
            method=explainer.describe(),
            folding=run.folding,
            provenance=run.loaded.provenance,
            arch=model.hparams.arch,
            source=run.source,
            mosaic=_run_mosaic(run, explainer, centres, out_dir) if "mosaic" in settings.localization else None,
            grids=write_grids(model, run.images, out_dir, settings, run.style) if settings.grid else None,
        )
        summary = assemble_summary(predictions, skipped, run.style.class_names, parts)
        draw_run_pictures(predictions, run.style.class_names, out_dir, settings.top_losses)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        write_report(out_dir / "report", [read_explain_dir(out_dir)])
    if unreadable:  # named where it is now: the staging folder it was written in is gone
        log.warning("Skipped %d unreadable image(s); listed in %s", unreadable, final_dir / "skipped.csv")
    return summary, predictions


def _nothing_usable(count: int, skipped: pd.DataFrame) -> CatdogError:
    first = skipped.iloc[0] if len(skipped) else None
    detail = f" (first: {first['path']}: {first['reason']})" if first is not None else ""
    return CatdogError(
        f"none of the {count} images could be used{detail}: check the files, "
        "or point data.root/input at readable images"
    )


def _run_mosaic(run: _Run, explainer: Explainer, centres: CellCentres, out_dir: Path) -> dict[str, Any] | None:
    """``localization=mosaic``: the mosaic check on the explained photos; writes mosaic.csv."""
    hp, options = run.loaded.model.hparams, run.settings.mosaic
    rows, summary = mosaic_check(
        explainer,
        build_transform(hp.image_size, hp.mean, hp.std, train=False),
        run.images,
        list(hp.class_names),
        centres,
        MosaicOptions(
            int(hp.image_size),
            count=options.count,
            grid=(options.grid, options.grid),
            seed=options.seed,
            batch_size=run.settings.data.batch_size,
        ),
    )
    rows.to_csv(out_dir / "mosaic.csv", index=False)
    return summary
