"""Explain pipeline: checkpoint -> one batched forward pass per batch -> exact CAMs -> explain folder.

Explain folder (a new one per run, by default ``<run folder>/explain/<timestamp>``)::

    correct/<class>/                 overlays of correct predictions
    incorrect/<true>_as_<pred>/      overlays of mistakes ("why dog and not cat?")
    unlabelled/<pred>/               overlays of images without a known label
    predictions.csv                  one row per image (see ``explain_render.render_image``)
    cams.npz                         raw float16 maps + their class indices + paths (for compare)
    skipped.csv                      images that could not be read, and why
    summary.json                     counts, accuracy, confusion matrix, pointing game, provenance
    confusion_matrix.png, top_losses.png

Overlay file names start with ``1000 * (1 - confidence)`` (4 digits), so an alphabetical listing of a
folder shows the most confident predictions first: in ``incorrect/`` the most confident mistakes.

Speed: decoding runs in DataLoader worker processes, the CAM maths runs on the whole batch right after
the forward pass (no second pass, no backward), and overlays are drawn and written by background
threads with a bounded queue, so memory does not grow with the number of images.

This module chooses the images, the method and the map geometry, runs the batches and writes the folder;
:mod:`catdog.explain.render` draws the overlays and pictures, :mod:`catdog.explain.summary`
computes the summary numbers, provenance and printed totals.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from catdog.allocator import reuse_freed_memory
from catdog.console import progress, quiet_lightning
from catdog.maps.cam import display_maps, upsample_cams
from catdog.data.selection import sample_across_classes, select_images, unmatched_label_folders
from catdog.data import (
    BadImageError,
    build_transform,
    check_masks,
    find_masks,
    load_boxes,
    load_rgb,
    split_off_masks,
)
from catdog.errors import CatdogError
from catdog.explain.settings import ExplainSettings, ModelSource
from catdog.maps.explainers import METHODS, PERTURBATION_COST, PERTURBATION_METHODS, ExactCAM, Explainer, build_method
from catdog.quality.faithfulness import Faithfulness, build_faithfulness
from catdog.maps.geometry import CellCentres, cell_centres, grid_centres
from catdog.models.imagenet import PretrainedClassifier, imagenet_arch, load_imagenet
from catdog.models import (
    ArchSpec,
    ClassifierModule,
    arch_spec,
    fold_batchnorm,
    load_classifier,
    resolve_layer,
)
from catdog.quality.mosaic import mosaic_check
from catdog.overlay import (
    draw_label,
    heatmap_overlay,
    image_grid,
    safe_name,
    save_image,
)
from catdog.explain.render import (
    BoundedWriter,
    ImageJob,
    OverlayStyle,
    class_folders,
    overlay_location,
    overlay_names,
    render_image,
    render_or_skip,
)
from catdog.explain.summary import (
    _print_topk,
    _ONE_BY_ONE,
    _print_where,
    label_folder_warning,
    _sha256,
    _versions,
    write_reports,
)
from catdog.explain.engine import (
    ExplainDataset,
    ExplainPredictor,
    ShardWriter,
    collate_explain,
    global_rank_from_env,
    merge_shards,
    resolve_precision,
)
from catdog.report import read_explain_dir, write_report
from catdog.runs import (
    resolve_checkpoint,
    run_dir_of,
    staged_output_dir,
    timestamped_dir,
)

log = logging.getLogger(__name__)
THUMBS = "thumbs"  # the report's layers: <explain folder>/thumbs/<overlay path> (photo), thumbs/heat/<overlay path>
__all__ = ["ExplainDataset", "ImageJob", "OverlayStyle", "collate_explain", "explain", "render_image", "run_explain"]
# The CAM self-check compares spatial mean + bias with the logit; bf16 keeps ~3 significant digits,
# so a deviation of a few thousandths *of the logits' size* is normal there: bf16 is held to 5e-2 or 1%
# of the largest |logit|, whichever is larger; float32 to 1e-3.
CAM_CHECK_TOLERANCE = {"32": 1e-3, "bf16": 5e-2}
CAM_CHECK_RELATIVE = {"32": 0.0, "bf16": 1e-2}


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------
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
    model, _checkpoint, run_dir, provenance = _load_model(settings.model)
    hp = model.hparams
    class_names: list[str] = list(hp.class_names)
    if settings.topk > len(class_names):
        raise CatdogError(f"topk={settings.topk} must be between 1 and the number of classes ({len(class_names)})")
    style = OverlayStyle(
        class_names=class_names,
        topk=settings.topk,
        alpha=settings.overlay.alpha,
        side_by_side=settings.overlay.side_by_side,
        show_true_cam=_true_class_panel(settings.overlay.true_class_panel, len(class_names)),
        quality=settings.overlay.quality,
        pointing_tolerance=settings.pointing_tolerance,
        display=settings.display,
        threshold=settings.threshold,
        mask_object=settings.mask_object,
    )
    contrast = settings.contrast
    # All errors up front; contrast: the identifiable map of a softmax head (exact CAM only).
    explainers = [build_explainer(model, settings.method, layer, contrast=contrast) for layer in settings.explained_layers]
    folding = _fold_for_inference(model, settings, explainers)

    source = settings.input or settings.data.root
    if provenance.get("imagenet") and not source:
        raise CatdogError(
            f"ckpt={settings.model.ckpt} has no held-out split: pass input=<image or folder> or data.root=<folder>"
        )
    selected = select_images(
        source, settings.data.split, class_names, dict(hp.data or {}), run_dir, settings.data.remap_root
    )
    images, mask_files = split_off_masks(selected)  # masks are listed in skipped.csv, not explained
    if settings.data.max_images:
        images = sample_across_classes(images, settings.data.max_images)
    boxes = _boxes_for(source, dict(hp.data or {}))
    masks = find_masks(_dataset_root(source, dict(hp.data or {})), images["path"].tolist())
    masks, bad_masks = check_masks(masks, style.mask_object)  # an unreadable mask never removes its image
    base_dir = Path(settings.out_dir).expanduser() if settings.out_dir else timestamped_dir(run_dir / "explain")
    size = (int(hp.image_size), int(hp.image_size))

    keep = [p for p in (source, run_dir, _checkpoint, (hp.data or {}).get("root")) if p]  # never replaced
    summaries, out_dirs = [], []
    for explainer in explainers:
        final_dir = base_dir
        if len(explainers) > 1:
            final_dir = base_dir.with_name(f"{base_dir.name}_{safe_name(explainer.method)}_{safe_name(explainer.layer)}")
        # Map geometry (issue #8): measured cell centres place the peak and the overlay.
        centres = map_centres(model, explainer, size, settings.align)
        faithfulness = build_faithfulness(
            model.net,
            list(settings.metrics),
            lambda net, explainer=explainer: build_explainer(
                model, settings.method, explainer.layer, contrast=contrast, net=net
            ),
            centres,
            steps=settings.faithfulness.steps,
            batch_size=settings.faithfulness.batch_size,
        )
        layer_style = dataclasses.replace(style, centres=centres)

        def explain_into(
            out_dir: Path | None,
            explainer: Explainer = explainer,
            faithfulness: Faithfulness | None = faithfulness,
            layer_style: OverlayStyle = layer_style,
        ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]] | None:
            return run_explain(
                model,
                images,
                out_dir,
                explainer=explainer,
                boxes=boxes,
                masks=masks,
                faithfulness=faithfulness,
                topk=settings.topk,
                batch_size=settings.data.batch_size,
                num_workers=settings.data.num_workers,
                precision=settings.runtime.precision,
                style=layer_style,
                writers=settings.overlay.writers,
                save_cams=settings.save_cams,
                max_side=settings.overlay.max_size,
                accelerator=settings.runtime.accelerator,
                devices=_devices(settings.runtime.devices),
                num_nodes=settings.runtime.num_nodes,
                strategy=settings.runtime.strategy,
                tune_malloc=settings.runtime.tune_malloc,
            )

        if global_rank_from_env() != 0:
            # Another process of a multi-process run: it explains its share into rank 0's folder (received
            # by broadcast) and leaves the tables, summary and report to rank 0.
            explain_into(None)
            continue

        # Everything is written into a hidden staging folder that becomes final_dir only when complete.
        with staged_output_dir(final_dir, overwrite=settings.overwrite, keep=keep) as out_dir:
            OmegaConf.save(cfg, out_dir / "explain_config.yaml")
            result = explain_into(out_dir)
            if result is None:  # the launcher made this process a non-zero rank after all
                return {"out_dir": None}
            predictions, skipped, extra = result
            unreadable = len(skipped)  # the images run_explain could not use (masks are listed too, below)
            skipped = pd.concat([skipped, mask_files, bad_masks], ignore_index=True)  # every file accounted for
            skipped.to_csv(out_dir / "skipped.csv", index=False)
            if predictions.empty:
                first = skipped.iloc[0] if len(skipped) else None
                detail = f" (first: {first['path']}: {first['reason']})" if first is not None else ""
                raise CatdogError(
                    f"none of the {len(images)} images could be used{detail}: check the files, or point "
                    "data.root/input at readable images"
                )
            summary = write_reports(predictions, skipped, class_names, out_dir, settings.top_losses)
            if summary["pointing_game"]:
                summary["pointing_game"]["tolerance"] = settings.pointing_tolerance
            summary["align"] = settings.align
            summary["cell_centres"] = {"x": [round(v, 1) for v in centres.x], "y": [round(v, 1) for v in centres.y]}
            if "mosaic" in settings.localization:
                summary["mosaic"] = _run_mosaic(settings, model, explainer, images, centres, out_dir)
            summary.update(extra)
            summary.update(explainer.describe())
            summary["display"] = style.display
            summary["batchnorm_folding"] = folding
            summary["threshold"] = style.threshold
            if settings.grid:
                summary["grids"] = write_grids(model, images, out_dir, settings, style)
            summary.update(provenance)
            summary["arch"] = hp.arch
            summary["class_names"] = class_names
            summary["source"] = str(source) if source else f"{run_dir}/split.csv [{settings.data.split}]"
            summary["versions"] = _versions()
            (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            write_report(out_dir / "report", [read_explain_dir(out_dir)])
        if unreadable:  # named where it is now: the staging folder it was written in is gone
            log.warning("Skipped %d unreadable image(s); listed in %s", unreadable, final_dir / "skipped.csv")
        folders = unmatched_label_folders(source, images)
        warning = label_folder_warning(folders, class_names, source) if not provenance.get("imagenet") else None
        _print_where(final_dir, summary, predictions, [warning] if warning else [], topk=settings.topk)
        if provenance.get("imagenet") and len(predictions) > _ONE_BY_ONE:  # fewer: each was named above
            _print_topk(predictions, class_names, settings.topk)
        summaries.append(summary)
        out_dirs.append(str(final_dir))
    if not summaries:  # a non-zero rank of a multi-process run
        return {"out_dir": None, "rank": global_rank_from_env()}
    return dict(summaries[-1], out_dir=out_dirs[-1], out_dirs=out_dirs)


def _fold_for_inference(
    model: ClassifierModule | PretrainedClassifier, settings: ExplainSettings, explainers: list[Explainer]
) -> dict[str, Any]:
    """Fold BatchNorm into the convolutions before it (``fold_batchnorm=true``): same maps, faster forwards.

    Layers this run hooks (the explainers', and the grid's) keep their own outputs. Not done for
    ``metrics=[sanity]`` (its randomised copy of the network must still have BatchNorm layers), nor under
    bf16 autocast: there the folded weights round differently, and maps moved up to 1.7x further from fp32
    than bf16 alone (bench/bf16_tolerance.py on trained checkpoints), while in fp32 folding is exact to
    float rounding.

    Returns:
        The record for summary.json: ``{"folded": N}``, or ``{"folded": 0, "reason": ...}``.
    """
    runtime = settings.runtime
    if not runtime.fold_batchnorm:
        return {"folded": 0, "reason": "fold_batchnorm=false"}
    if "sanity" in settings.metrics:
        return {"folded": 0, "reason": "metrics=[sanity] randomises the unfolded network"}
    if resolve_precision(runtime.precision, runtime.accelerator)[1]["used"] == "bf16":
        return {"folded": 0, "reason": "bf16 autocast: folding would add rounding error to the maps"}
    hooked = [explainer.module for explainer in explainers if getattr(explainer, "module", None) is not None]
    if settings.grid:
        hooked += [resolve_layer(model.net, layer)[1] for layer in _grid_layers(settings, arch_spec(model.hparams.arch))]
    return {"folded": fold_batchnorm(model.net.eval(), keep=hooked)}


def _load_model(source: ModelSource) -> tuple[ClassifierModule | PretrainedClassifier, Path | None, Path, dict[str, Any]]:
    """The model of ``ckpt=``, its checkpoint file, its run folder, and provenance for summary.json."""
    arch = imagenet_arch(source.ckpt)
    if arch is not None:
        model = load_imagenet(
            arch,
            weights=source.weights,
            labels=source.labels,
            mean=list(source.mean) if source.mean is not None else None,
            std=list(source.std) if source.std is not None else None,
        )
        weights_file = Path(model.source)
        provenance = {
            "imagenet": {"arch": arch, "weights": model.source},
            "checkpoint": {"path": None, "sha256": _sha256(weights_file) if weights_file.is_file() else None},
            "train_config": None,
        }
        # No run folder: explain folders of ImageNet models go below runs_dir/imagenet_<arch>/explain/.
        return model, None, Path(source.runs_dir) / f"imagenet_{arch}", provenance
    if source.weights or source.labels:
        raise CatdogError("weights= and labels= are for ckpt=imagenet:<arch>: a catdog checkpoint carries its own")
    checkpoint = resolve_checkpoint(source.ckpt, source.runs_dir, source.multirun_dir)
    model = load_classifier(checkpoint)
    run_dir = run_dir_of(checkpoint)
    config_file = run_dir / ".hydra" / "config.yaml"
    provenance = {
        "checkpoint": {"path": str(checkpoint.resolve()), "sha256": _sha256(checkpoint)},
        "train_config": (
            {"path": str(config_file.resolve()), "sha256": _sha256(config_file)} if config_file.is_file() else None
        ),
    }
    return model, checkpoint, run_dir, provenance


def _true_class_panel(mode: str, classes: int) -> bool:
    """overlay.true_class_panel: draw the true class's map beside a mistake's? With two classes (softmax) it is
    the predicted class's map inverted, so ``auto`` leaves it out."""
    return mode == "always" or (mode == "auto" and classes > 2)


def _devices(devices: int | str | tuple[int, ...]) -> int | str | list[int]:
    """Lightning's ``devices=``: a list of device ids stays a list."""
    return list(devices) if isinstance(devices, tuple) else devices


def run_explain(
    model: ClassifierModule | PretrainedClassifier,
    images: pd.DataFrame,
    out_dir: Path | None,
    *,
    style: OverlayStyle,
    explainer: Explainer | None = None,
    boxes: dict[str, list[tuple[float, float, float, float]]] | None = None,
    masks: dict[str, str] | None = None,
    faithfulness: Faithfulness | None = None,
    topk: int = 1,
    batch_size: int = 32,
    num_workers: int = 2,
    precision: str = "32",
    bf16: bool | None = None,
    writers: int = 2,
    save_cams: bool = True,
    max_side: int | None = None,
    thumbnails: bool = True,
    accelerator: str = "cpu",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    progress: bool = True,
    tune_malloc: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]] | None:
    """The streaming core, as Lightning prediction: batches in, overlays, rows and maps out. Usable without Hydra.

    Each process (rank) explains a contiguous share of ``images`` and writes a shard; rank 0 merges the
    shards into the explain folder (see :mod:`catdog.explain.engine`). With one process it is the
    same code path.

    Args:
        model: a loaded classifier in eval mode.
        images: columns ``path`` and ``label`` (class name or None).
        out_dir: the explain folder (must exist on rank 0; other ranks get rank 0's, may pass None).
        style: how overlays look.
        explainer: the method making the maps; default exact CAM at the registry's feature layer.
        boxes: absolute path -> object boxes, for the pointing game.
        masks: absolute path -> object mask file (localization metrics; preferred over boxes).
        faithfulness: opt-in faithfulness metrics, computed per batch (columns of predictions.csv).
        topk: maps for the top-k predicted classes.
        batch_size: images per forward pass.
        num_workers: decoding worker processes per rank (0: decode in the rank's own process).
        precision: ``auto``, ``32`` or ``bf16`` (see :func:`catdog.explain.engine.resolve_precision`).
        bf16: deprecated shorthand for ``precision="bf16"`` (True) or ``"32"`` (False).
        writers: overlay writer threads per rank.
        save_cams: write raw maps to ``cams.npz``.
        max_side: overlays are drawn on a copy of the original whose longest side is at most this.
        thumbnails: write the report's gallery thumbnails (``thumbs/``) from the overlays in memory.
        accelerator, devices, num_nodes, strategy: Lightning Trainer settings (``strategy=ddp`` for many).
        progress: show Lightning's progress bar.
        tune_malloc: during the batch loop, glibc keeps freed buffers for the next batch
            (:func:`catdog.allocator.reuse_freed_memory`).

    Returns:
        On rank 0: predictions (one row per readable image, input order), skipped (path, reason) and run
        statistics; on other ranks: None.
    """
    if bf16 is not None:
        precision = "bf16" if bf16 else "32"
    hp = model.hparams
    class_names = list(hp.class_names)
    explainer = explainer or build_explainer(model)
    to_index = {name: i for i, name in enumerate(class_names)}
    labels = [to_index.get(label, -1) if label is not None else -1 for label in images["label"]]
    paths = images["path"].tolist()
    names = overlay_names(paths)  # from the full list: the same on every rank
    folders = class_folders(class_names)
    lightning_precision, precision_record = resolve_precision(precision, accelerator)
    channels_last = bool(hp.get("channels_last", True))
    if channels_last:
        model.net.to(memory_format=torch.channels_last)

    writer = BoundedWriter(lambda job: render_or_skip(job, style), writers, max_pending=2 * batch_size)

    def handle_batch(batch: Any, prediction: dict[str, Any], emit_maps: Callable[[np.ndarray, np.ndarray], None]) -> None:
        probs_np, idx_np, cams_np, losses = (
            prediction["probs"], prediction["class_idx"], prediction["maps"], prediction["losses"]
        )
        emit_maps(cams_np, idx_np)
        out = shard_writer.out_dir
        originals = batch.originals
        for row, i in enumerate(batch.indices):
            pred = int(idx_np[row, 0])
            rel = overlay_location(labels[i], pred, float(probs_np[row, pred]), names[i], folders)
            writer.submit(
                ImageJob(
                    path=paths[i],
                    true_idx=labels[i],
                    probs=probs_np[row],
                    loss=float(losses[row]) if labels[i] >= 0 else math.nan,
                    cam_idx=idx_np[row],
                    cams=cams_np[row],
                    original=originals[row].numpy(),
                    boxes=boxes.get(paths[i], []) if boxes else [],
                    overlay_path=out / rel,
                    overlay_rel=rel,
                    size=batch.sizes[row],
                    thumb_path=out / THUMBS / rel if thumbnails else None,
                    heat_path=out / THUMBS / "heat" / rel if thumbnails else None,
                    mask=masks.get(paths[i]) if masks else None,
                    columns=prediction["columns"][row] if prediction.get("columns") else None,
                )
            )

    shard_writer = ShardWriter(out_dir, handle_batch, writer.close, save_cams=save_cams, row_chunk=batch_size)
    writer.on_result = lambda row: shard_writer.rows.add(row)
    predictor = ExplainPredictor(
        model.net,
        lambda x, true: explainer.explain(x, true_labels=true, topk=topk),
        paths,
        labels,
        build_transform(hp.image_size, hp.mean, hp.std, train=False),
        max_side,
        batch_size,
        num_workers,
        channels_last,
        columns_fn=faithfulness.columns if faithfulness is not None else None,
    )
    with quiet_lightning():  # Lightning's tips and hardware lines off (summary.json records the device)
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            precision=lightning_precision,
            callbacks=[shard_writer],
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            inference_mode=False,  # gradient explainers enable gradients themselves; CAM uses inference_mode
            use_distributed_sampler=False,  # each rank takes its own contiguous share (no padding duplicates)
        )
        start = datetime.now()
        with reuse_freed_memory(tune_malloc) as malloc:
            trainer.predict(predictor, return_predictions=False)
        seconds = (datetime.now() - start).total_seconds()
    if not trainer.is_global_zero:
        return None
    out_dir = shard_writer.out_dir
    predictions, skipped_frame, merged = merge_shards(out_dir, paths, class_names, explainer.describe(), save_cams)
    max_deviation = merged["stats"].get("cam_logit_deviation")
    # bf16 autocast rounds the features to 8 bits of mantissa: its maps agree with the logits less closely.
    used = precision_record["used"]
    relative = CAM_CHECK_RELATIVE.get(used, CAM_CHECK_RELATIVE["bf16"])
    tolerance = max(CAM_CHECK_TOLERANCE.get(used, CAM_CHECK_TOLERANCE["bf16"]), relative * merged["stats"].get("logit_abs_max", 0.0))
    if max_deviation is not None and max_deviation > tolerance:
        log.warning(
            "CAM self-check: spatial mean + bias differs from the logit by %.2g (more than %g expected at %s)",
            max_deviation,
            tolerance,
            used,
        )
    stats = {
        "cam_logit_max_deviation": max_deviation,
        "seconds": round(seconds, 2),
        "images_per_second": round(len(predictions) / seconds, 1) if seconds > 0 else None,
        "precision": precision_record["used"],
        "precision_check": precision_record,
        "processes": merged["processes"],
        "malloc": malloc,
        "accelerator": str(trainer.accelerator.__class__.__name__).replace("Accelerator", "").lower(),
    }
    return predictions, skipped_frame, stats


def build_explainer(
    model: ClassifierModule | PretrainedClassifier,
    method: str | None = None,
    layer: str | None = None,
    contrast: str = "none",
    net: torch.nn.Module | None = None,
) -> Explainer:
    """The explainer for a loaded model: ``method=`` at ``layer=`` (defaults from the registry).

    ``contrast`` (exact CAM only): ``none`` (the exact per-class map), ``mean`` or ``runner_up`` (the
    identifiable map of a softmax head). ``net``: another network of the same architecture to explain (the
    randomised copy of ``metrics=[sanity]``).

    Exact CAM at its default layer uses the layer names stored in the checkpoint: they are what the model
    was trained and checked with, so a later registry change cannot silently move the CAM to another layer.

    Raises:
        CatdogError: unknown method or layer, or exact CAM where it does not apply.
    """
    target = net if net is not None else model.net
    explainer = build_method(target, model.hparams.arch, method, layer)
    if not isinstance(explainer, ExactCAM):
        if contrast != "none":
            raise CatdogError(f"contrast={contrast} applies to exact CAM only (method=cam), not method={method}")
        return explainer
    hp = model.hparams
    feature, fc, relu = explainer.layer, explainer.fc_name, explainer.feature_relu
    if layer is None and hp.get("feature_layer") and hp.get("fc_layer"):
        feature, fc = hp.feature_layer, hp.fc_layer
        relu = relu if hp.get("feature_relu") is None else bool(hp.feature_relu)
    return ExactCAM(target, feature, fc, feature_relu=relu, contrast=contrast)


def _grid_layers(settings: ExplainSettings, spec: ArchSpec) -> list[str]:
    """The grid's columns: ``layers=``, else the registry's stages (ResNet: layer1..layer4)."""
    return list(settings.layers) if settings.layers else list(spec.stages or (spec.feature_layer,))


def write_grids(
    model: ClassifierModule | PretrainedClassifier,
    images: pd.DataFrame,
    out_dir: Path,
    settings: ExplainSettings,
    style: OverlayStyle,
) -> list[str]:
    """``grid/<image>.jpg``: every method (rows) at every layer (columns), the predicted class's map.

    Layers: ``layers=`` or the registry's stages (ResNet: layer1..layer4). Methods: ``grid_methods=`` or
    all that apply and run in seconds (exact CAM only on heads it decomposes, and only at its own layer:
    other cells say so; Score-CAM and Ablation-CAM only when named). A progress bar per image.

    Returns:
        The written files, relative to ``out_dir``.
    """
    hp = model.hparams
    spec = arch_spec(hp.arch)
    layers = _grid_layers(settings, spec)
    methods = _grid_methods(settings, spec)
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    written = []
    paths = images["path"].head(settings.grid_images).tolist()
    for path, name in zip(paths, overlay_names(paths)):
        try:
            rgb = load_rgb(path)
        except BadImageError:
            continue
        x = transform(rgb)[None].contiguous(memory_format=torch.channels_last)
        tiles, captions = [], []
        cells = [(method, layer) for method in methods for layer in layers]
        with progress(f"grid/ of {Path(path).name}: {len(methods)} methods x {len(layers)} layers", len(cells)) as advance:
            for method, layer in cells:
                tile, caption = _grid_tile(model, method, layer, x, rgb, style)
                tiles.append(tile)
                captions.append(caption)
                advance(1)
        rel = f"grid/{name}.jpg"
        save_image(out_dir / rel, image_grid(tiles, captions, ncols=len(layers), tile_size=192), quality=style.quality)
        written.append(rel)
    return written


def _grid_methods(settings: ExplainSettings, spec: ArchSpec) -> list[str]:
    """``grid_methods=``, else every method that applies and runs in seconds (Score-CAM and Ablation-CAM only
    when asked: their cost is printed either way)."""
    if settings.grid_methods:
        methods = list(settings.grid_methods)
        slow = [m for m in methods if m in PERTURBATION_METHODS]
        if slow:
            print(f"grid: {', '.join(slow)} take {PERTURBATION_COST}; minutes per image on a CPU")
        return methods
    methods = [m for m in METHODS if (m != "cam" or spec.exact_cam) and m not in PERTURBATION_METHODS]
    print(
        f"grid: {', '.join(methods)}; {' and '.join(PERTURBATION_METHODS)} left out ({PERTURBATION_COST}): "
        f"add them with grid_methods=[{','.join(methods + list(PERTURBATION_METHODS))}]"
    )
    return methods


def _grid_tile(
    model: ClassifierModule | PretrainedClassifier, method: str, layer: str, x: torch.Tensor, rgb: np.ndarray,
    style: OverlayStyle,
) -> tuple[np.ndarray, str]:
    """One cell of a grid: ``method``'s map of the predicted class at ``layer`` over the photo, and its caption."""
    spec = arch_spec(model.hparams.arch)
    try:
        explainer = build_explainer(model, method, layer)
    except CatdogError:
        if method != "cam":
            raise
        exact_at = resolve_layer(model.net, spec.feature_layer)[0]
        return draw_label(np.full_like(rgb, 24), f"exact CAM: {exact_at} only"), f"{method} @ {layer}\nn/a"
    out = explainer.explain(x, None, topk=1)
    cls = int(out.class_idx[0, 0])
    shown = display_maps(upsample_cams(out.maps[0, :1], rgb.shape[:2]), style.display)[0].numpy()
    colormap = "diverging" if style.display == "signed" else "jet"
    prob = float(out.logits.softmax(dim=1)[0, cls])
    return heatmap_overlay(rgb, shown, style.alpha, colormap), f"{method} @ {layer}\n{style.class_names[cls]} {100 * prob:.1f}%"


def map_centres(
    model: ClassifierModule | PretrainedClassifier, explainer: Explainer, size: tuple[int, int], align: str
) -> CellCentres:
    """Where the cells of ``explainer``'s maps sit in the model input (:mod:`catdog.maps.geometry`).

    Exact CAM's feature map is measured directly. Other methods may explain layers whose output is not an
    NCHW map (ViT tokens): their grid comes from the shape of one probe map, and ``receptive_field`` is used
    only where the layer's measured grid matches that shape (otherwise the cell grid, with a warning).
    """
    if isinstance(explainer, ExactCAM):
        return cell_centres(model.net, explainer.layer, size, align, arch=model.hparams.arch)
    probe = torch.zeros(1, 3, *size, device=next(model.net.parameters()).device)
    cells = tuple(explainer.explain(probe, None, topk=1).maps.shape[-2:])
    # Token (ViT) and channels-last (Swin) outputs are no NCHW maps to measure: their grid is the cells'.
    if align != "cell" and arch_spec(model.hparams.arch).reshape is None:
        try:
            measured = cell_centres(model.net, explainer.layer, size, align, arch=model.hparams.arch)
            if (len(measured.y), len(measured.x)) == cells:
                return measured
        except (TypeError, ValueError, RuntimeError, IndexError):
            pass
        log.warning("align=%s cannot be measured at layer %s: using align=cell", align, explainer.layer)
    return grid_centres(cells, size)


def _run_mosaic(
    settings: ExplainSettings,
    model: ClassifierModule,
    explainer: Explainer,
    images: pd.DataFrame,
    centres: CellCentres,
    out_dir: Path,
) -> dict[str, Any] | None:
    """``localization=mosaic``: the mosaic check on the explained photos; writes mosaic.csv."""
    hp = model.hparams
    options = settings.mosaic
    rows, summary = mosaic_check(
        explainer,
        build_transform(hp.image_size, hp.mean, hp.std, train=False),
        images,
        list(hp.class_names),
        centres,
        int(hp.image_size),
        count=options.count,
        grid=(options.grid, options.grid),
        seed=options.seed,
        batch_size=settings.data.batch_size,
    )
    rows.to_csv(out_dir / "mosaic.csv", index=False)
    return summary


def _dataset_root(source: str | None, data_hparams: dict[str, Any]) -> Path | None:
    """The folder whose boxes.csv / masks.csv apply: the source folder, else the training data root."""
    root = Path(source) if source else (Path(data_hparams["root"]) if data_hparams.get("root") else None)
    return root if root is not None and root.is_dir() else None


def _boxes_for(source: str | None, data_hparams: dict[str, Any]) -> dict[str, list[tuple[float, float, float, float]]]:
    """Object boxes (absolute path -> boxes) from a boxes.csv beside the images, if there is one."""
    root = _dataset_root(source, data_hparams)
    if root is None:
        return {}
    frame = load_boxes(root)
    if frame is None:
        return {}
    # boxes.csv has exclusive x1, y1 (the object is image[y0:y1, x0:x1]); point_in_box is inclusive.
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    for row in frame.itertuples():
        boxes.setdefault(str(row.path), []).append((float(row.x0), float(row.y0), float(row.x1) - 1, float(row.y1) - 1))
    return boxes
