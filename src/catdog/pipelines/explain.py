"""Explain pipeline: checkpoint -> one batched forward pass per batch -> exact CAMs -> explain folder.

Explain folder (a new one per run, by default ``<run folder>/explain/<timestamp>``)::

    correct/<class>/                 overlays of correct predictions
    incorrect/<true>_as_<pred>/      overlays of mistakes ("why dog and not cat?")
    unlabelled/<pred>/               overlays of images without a known label
    predictions.csv                  one row per image (see ``_image_row``)
    cams.npz                         raw float16 maps + their class indices + paths (for compare)
    skipped.csv                      images that could not be read, and why
    summary.json                     counts, accuracy, confusion matrix, pointing game, provenance
    confusion_matrix.png, top_losses.png

Overlay file names start with ``1000 * (1 - confidence)`` (4 digits), so an alphabetical listing of a
folder shows the most confident predictions first: in ``incorrect/`` the most confident mistakes.

Speed: decoding runs in DataLoader worker processes, the CAM maths runs on the whole batch right after
the forward pass (no second pass, no backward), and overlays are drawn and written by background
threads with a bounded queue, so memory does not grow with the number of images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset

import catdog
from catdog.cam import area_above, display_maps, parse_threshold, peak_in_image, strongest_region, upsample_cams
from catdog.data import BadImageError, build_transform, index_for_inference, load_boxes, load_rgb
from catdog.errors import CatdogError
from catdog.explainers import METHODS, Explainer, build_method
from catdog.imagenet import PretrainedClassifier, describe_topk, imagenet_arch, load_imagenet
from catdog.metrics import pointing_columns, summarize_pointing
from catdog.models import ClassifierModule, arch_spec, load_classifier, resolve_layer
from catdog.overlay import (
    draw_contour,
    draw_label,
    heatmap_overlay,
    image_grid,
    label_text,
    safe_name,
    save_image,
    side_by_side,
)
from catdog.plots import plot_confusion_matrix
from catdog.report import read_explain_dir, write_report
from catdog.runs import resolve_checkpoint, run_dir_of, staged_output_dir, timestamped_dir

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "all")


# ---------------------------------------------------------------------------------------------
# Inputs: checkpoint, images, output folder
# ---------------------------------------------------------------------------------------------
def select_images(
    source: str | None, split: str, class_names: list[str], data_hparams: dict[str, Any], run_dir: Path
) -> pd.DataFrame:
    """Which images to explain: ``source`` (a file or folder) or one split of the run's split.csv.

    Returns:
        Columns ``path`` (absolute) and ``label`` (class name, or None when unknown).

    Raises:
        CatdogError: no split file, an unknown split name, or no images.
    """
    if source:
        images = index_for_inference(source, class_names)[["path", "label"]]
    else:
        if split not in SPLITS:
            raise CatdogError(f"data.split={split} is not one of {', '.join(SPLITS)}")
        # The path recorded at training time, else the run folder's own copy (a moved run folder).
        split_csv = Path(data_hparams.get("split_csv") or run_dir / "split.csv")
        if not split_csv.is_file():
            split_csv = run_dir / "split.csv"
        if not split_csv.is_file():
            raise CatdogError(
                f"No split.csv next to the checkpoint (looked in {run_dir}): pass data.root=<folder> or "
                "input=<image> to choose the images to explain"
            )
        images = pd.read_csv(split_csv)
        if split != "all":
            images = images[images["split"] == split]
        images = images[["path", "label"]]
    images = images.astype({"path": str}).reset_index(drop=True)
    images["label"] = images["label"].where(images["label"].notna(), None)
    if images.empty:
        where = source or f"the {split} split of {run_dir}"
        raise CatdogError(f"No images to explain in {where}: check the path or pick another data.split")
    return images


# ---------------------------------------------------------------------------------------------
# Decoding in DataLoader workers
# ---------------------------------------------------------------------------------------------
class ExplainDataset(Dataset):
    """Decodes one image: the model input and the original pixels (overlays use the original size).

    Unreadable files are returned as an error instead of raising, so one bad file never stops a run.
    """

    def __init__(self, paths: list[str], transform: Callable[[np.ndarray], torch.Tensor]) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            rgb = load_rgb(self.paths[index])
        except BadImageError as err:
            return {"index": index, "error": str(err)}
        return {"index": index, "error": None, "image": self.transform(rgb), "original": torch.from_numpy(rgb)}


def collate_explain(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable images; keep originals as a list (their sizes differ) and errors aside."""
    good = [item for item in items if item["error"] is None]
    return {
        "images": torch.stack([item["image"] for item in good]) if good else None,
        "indices": [item["index"] for item in good],
        "originals": [item["original"] for item in good],
        "errors": [(item["index"], item["error"]) for item in items if item["error"] is not None],
    }


# ---------------------------------------------------------------------------------------------
# Per-image work in background threads (OpenCV and torch release the GIL)
# ---------------------------------------------------------------------------------------------
@dataclass
class ImageJob:
    """Everything a writer thread needs for one image."""

    path: str
    true_idx: int  # -1 when unknown
    probs: np.ndarray  # [C]
    loss: float  # NaN when unknown
    cam_idx: np.ndarray  # [M] class of each map: top-k predictions, then the true class
    cams: np.ndarray  # [M, h, w] raw maps, float32
    original: np.ndarray  # [H, W, 3] uint8 RGB
    boxes: list[tuple[float, float, float, float]]  # the image's object boxes; empty when none are known
    overlay_path: Path
    overlay_rel: str


@dataclass(frozen=True)
class OverlayStyle:
    class_names: list[str]
    topk: int
    alpha: float
    side_by_side: bool
    show_true_cam: bool
    quality: int
    pointing_tolerance: float = 0.0
    display: str = "minmax"  # cam.display_maps mode; "signed" draws with a diverging colormap
    threshold: str | float | None = None  # cam.strongest_region: contour of the predicted map's strongest region


def render_image(job: ImageJob, style: OverlayStyle) -> dict[str, Any]:
    """Upsample the maps to the original size, score localisation, draw and write the overlay.

    Returns:
        The image's row of predictions.csv.
    """
    names = style.class_names
    height, width = job.original.shape[:2]
    pred = int(job.cam_idx[0])
    mistake = job.true_idx >= 0 and job.true_idx != pred
    show_true = mistake and style.show_true_cam and job.true_idx not in job.cam_idx[: style.topk]
    # Upsample only the maps that are drawn: the true-class column repeats the prediction when correct.
    shown = list(range(style.topk)) + ([len(job.cam_idx) - 1] if show_true else [])
    maps = upsample_cams(torch.from_numpy(job.cams[shown]), (height, width))  # [len(shown), H, W]
    peak_x, peak_y = peak_in_image(torch.from_numpy(job.cams[0]), (height, width))
    display = display_maps(maps, style.display).numpy()
    colormap = "diverging" if style.display == "signed" else "jet"
    region_area = None
    if style.threshold is not None:
        region, region_area = strongest_region(display[0], style.threshold)

    true_name = names[job.true_idx] if job.true_idx >= 0 else None
    panels: list[np.ndarray] = []
    if style.side_by_side:
        panels.append(draw_label(job.original, "input"))
    for column in range(style.topk):
        cls = int(job.cam_idx[column])
        text = label_text(names[cls], float(job.probs[cls]), true_name if column == 0 else None)
        panel = heatmap_overlay(job.original, display[column], style.alpha, colormap)
        if column == 0 and region_area is not None:
            panel = draw_contour(panel, region)
        panels.append(draw_label(panel, text))
    if show_true:
        text = f"true: {true_name} {100 * float(job.probs[job.true_idx]):.1f}%"
        panels.append(draw_label(heatmap_overlay(job.original, display[-1], style.alpha, colormap), text))
    save_image(job.overlay_path, panels[0] if len(panels) == 1 else side_by_side(panels), quality=style.quality)

    row: dict[str, Any] = {
        "path": job.path,
        "true": true_name,
        "pred": names[pred],
        **{f"p_{name}": float(job.probs[i]) for i, name in enumerate(names)},
        "loss": job.loss,
        "correct": (job.true_idx == pred) if job.true_idx >= 0 else None,
        "peak_x": round(peak_x, 1),
        "peak_y": round(peak_y, 1),
        "area50": area_above(maps[0], 0.5),
        "overlay": job.overlay_rel,
    }
    if region_area is not None:
        row["region_area"] = region_area  # share of the photo inside the thresholded strongest region
    if style.topk > 1:
        row["topk"] = "|".join(names[int(c)] for c in job.cam_idx[: style.topk])
        row["topk_p"] = "|".join(f"{float(job.probs[int(c)]):.4f}" for c in job.cam_idx[: style.topk])
    row.update(pointing_columns((peak_x, peak_y), job.boxes, (height, width), style.pointing_tolerance))
    return row


class BoundedWriter:
    """A thread pool that keeps at most ``max_pending`` jobs in flight, results in submission order."""

    def __init__(self, fn: Callable[[ImageJob], dict[str, Any]], workers: int, max_pending: int) -> None:
        self._fn = fn
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="overlay")
        self._pending: deque[Future] = deque()
        self._max_pending = max_pending
        self.results: list[dict[str, Any]] = []

    def submit(self, job: ImageJob) -> None:
        while len(self._pending) >= self._max_pending:
            self.results.append(self._pending.popleft().result())
        self._pending.append(self._pool.submit(self._fn, job))

    def close(self) -> list[dict[str, Any]]:
        while self._pending:
            self.results.append(self._pending.popleft().result())
        self._pool.shutdown()
        return self.results


def overlay_location(
    true_idx: int, pred: int, confidence: float, path: str, class_names: list[str], used: set[str]
) -> str:
    """Relative overlay path: folder by outcome, name prefixed so the most confident sort first."""
    pred_name = safe_name(class_names[pred])
    if true_idx < 0:
        folder = f"unlabelled/{pred_name}"
    elif true_idx == pred:
        folder = f"correct/{pred_name}"
    else:
        folder = f"incorrect/{safe_name(class_names[true_idx])}_as_{pred_name}"
    prefix = f"{min(999, round((1.0 - confidence) * 1000)):04d}"
    stem = safe_name(Path(path).stem)
    rel, n = f"{folder}/{prefix}_{stem}.jpg", 1
    while rel in used:  # same file name in two source folders
        rel, n = f"{folder}/{prefix}_{stem}_{n}.jpg", n + 1
    used.add(rel)
    return rel


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
    model, _checkpoint, run_dir, provenance = _load_model(cfg)
    hp = model.hparams
    class_names: list[str] = list(hp.class_names)
    if not 1 <= cfg.topk <= len(class_names):
        raise CatdogError(f"topk={cfg.topk} must be between 1 and the number of classes ({len(class_names)})")
    if str(cfg.precision) not in ("32", "bf16"):
        raise CatdogError(f"precision={cfg.precision} is not supported: use 32 or bf16")
    style = OverlayStyle(
        class_names=class_names,
        topk=cfg.topk,
        alpha=float(cfg.overlay.alpha),
        side_by_side=bool(cfg.overlay.side_by_side),
        show_true_cam=bool(cfg.overlay.show_true_cam),
        quality=int(cfg.overlay.quality),
        pointing_tolerance=float(cfg.pointing_tolerance),
        display=_check_display(cfg.get("display", "minmax")),
        threshold=parse_threshold(cfg.get("threshold")),
    )
    layers = [str(layer) for layer in cfg.layers] if cfg.get("layers") else [cfg.get("layer")]
    explainers = [build_explainer(model, cfg.get("method"), layer) for layer in layers]  # all errors up front

    source = cfg.input or cfg.data.root
    if provenance.get("imagenet") and not source:
        raise CatdogError(f"ckpt={cfg.ckpt} has no held-out split: pass input=<image or folder> or data.root=<folder>")
    images = select_images(source, cfg.data.split, class_names, dict(hp.data or {}), run_dir)
    if cfg.data.max_images:
        images = images.head(int(cfg.data.max_images))
    boxes = _boxes_for(source, dict(hp.data or {}))
    base_dir = Path(cfg.out_dir).expanduser() if cfg.out_dir else timestamped_dir(run_dir / "explain")

    summaries, out_dirs = [], []
    for explainer in explainers:
        final_dir = base_dir
        if len(explainers) > 1:
            final_dir = base_dir.with_name(f"{base_dir.name}_{safe_name(explainer.method)}_{safe_name(explainer.layer)}")
        # Everything is written into a hidden staging folder that becomes final_dir only when complete.
        with staged_output_dir(final_dir, overwrite=bool(cfg.overwrite)) as out_dir:
            OmegaConf.save(cfg, out_dir / "explain_config.yaml")
            predictions, skipped, extra = run_explain(
                model,
                images,
                out_dir,
                explainer=explainer,
                boxes=boxes,
                topk=cfg.topk,
                batch_size=cfg.data.batch_size,
                num_workers=cfg.data.num_workers,
                bf16=str(cfg.precision) == "bf16",
                style=style,
                writers=cfg.overlay.writers,
                save_cams=cfg.save_cams,
            )
            summary = write_reports(predictions, skipped, class_names, out_dir, cfg.top_losses)
            if summary["pointing_game"]:
                summary["pointing_game"]["tolerance"] = float(cfg.pointing_tolerance)
            summary.update(extra)
            summary.update(explainer.describe())
            summary["display"] = style.display
            summary["threshold"] = style.threshold
            if cfg.get("grid"):
                summary["grids"] = write_grids(model, images, out_dir, cfg, style)
            summary.update(provenance)
            summary["arch"] = hp.arch
            summary["class_names"] = class_names
            summary["source"] = str(source) if source else f"{run_dir}/split.csv [{cfg.data.split}]"
            summary["versions"] = _versions()
            (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            write_report(out_dir / "report", [read_explain_dir(out_dir)])
        _print_where(final_dir, summary)
        if provenance.get("imagenet"):
            _print_topk(predictions, class_names, cfg.topk)
        summaries.append(summary)
        out_dirs.append(str(final_dir))
    return dict(summaries[-1], out_dir=out_dirs[-1], out_dirs=out_dirs)


def _load_model(cfg: DictConfig) -> tuple[ClassifierModule | PretrainedClassifier, Path | None, Path, dict[str, Any]]:
    """The model of ``ckpt=``, its checkpoint file, its run folder, and provenance for summary.json."""
    arch = imagenet_arch(cfg.ckpt)
    if arch is not None:
        model = load_imagenet(
            arch,
            weights=cfg.get("weights"),
            labels=cfg.get("labels"),
            mean=list(cfg.mean) if cfg.get("mean") is not None else None,
            std=list(cfg.std) if cfg.get("std") is not None else None,
        )
        weights_file = Path(model.source)
        provenance = {
            "imagenet": {"arch": arch, "weights": model.source},
            "checkpoint": {"path": None, "sha256": _sha256(weights_file) if weights_file.is_file() else None},
            "train_config": None,
        }
        # No run folder: explain folders of ImageNet models go below runs_dir/imagenet_<arch>/explain/.
        return model, None, Path(cfg.runs_dir) / f"imagenet_{arch}", provenance
    if cfg.get("weights") or cfg.get("labels"):
        raise CatdogError("weights= and labels= are for ckpt=imagenet:<arch>: a catdog checkpoint carries its own")
    checkpoint = resolve_checkpoint(cfg.ckpt, cfg.runs_dir)
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


def _check_display(value: object) -> str:
    from catdog.cam import DISPLAYS

    mode = str(value).strip().lower()
    if mode not in DISPLAYS:
        raise CatdogError(f"display={value} is unknown: choose one of {', '.join(DISPLAYS)}")
    return mode


def _print_topk(predictions: pd.DataFrame, class_names: list[str], topk: int, limit: int = 20) -> None:
    """ImageNet mode: each image's top-k classes with their probabilities."""
    probs = predictions[[f"p_{name}" for name in class_names]].to_numpy(dtype=float)
    for path, row in zip(predictions["path"].head(limit), probs[:limit]):
        print(f"  {Path(path).name}: {describe_topk(class_names, row.tolist(), topk)}")
    if len(predictions) > limit:
        print(f"  ... {len(predictions) - limit} more in predictions.csv")


def run_explain(
    model: ClassifierModule | PretrainedClassifier,
    images: pd.DataFrame,
    out_dir: Path,
    *,
    style: OverlayStyle,
    explainer: Explainer | None = None,
    boxes: dict[str, list[tuple[float, float, float, float]]] | None = None,
    topk: int = 1,
    batch_size: int = 32,
    num_workers: int = 2,
    bf16: bool = False,
    writers: int = 2,
    save_cams: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The streaming core: batches in, overlays and rows out. Usable without Hydra.

    Args:
        model: a loaded classifier in eval mode.
        images: columns ``path`` and ``label`` (class name or None).
        out_dir: the explain folder (must exist).
        style: how overlays look.
        explainer: the method making the maps; default exact CAM at the registry's feature layer.
        boxes: absolute path -> object boxes, for the pointing game.
        topk: maps for the top-k predicted classes.
        batch_size: images per forward pass.
        num_workers: decoding worker processes (0: decode in this process).
        bf16: run the forward pass under bfloat16 autocast.
        writers: overlay writer threads.
        save_cams: write raw maps to ``cams.npz``.

    Returns:
        predictions (one row per readable image), skipped (path, reason), and run statistics.
    """
    hp = model.hparams
    class_names = list(hp.class_names)
    net = model.net
    explainer = explainer or build_explainer(model)
    to_index = {name: i for i, name in enumerate(class_names)}
    labels = [to_index.get(label, -1) if label is not None else -1 for label in images["label"]]
    paths = images["path"].tolist()

    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    loader = DataLoader(
        ExplainDataset(paths, transform),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_explain,
        persistent_workers=False,
    )
    memory_format = torch.channels_last if hp.get("channels_last", True) else torch.contiguous_format
    net.to(memory_format=memory_format)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    writer = BoundedWriter(lambda job: render_image(job, style), writers, max_pending=2 * batch_size)
    used_names: set[str] = set()
    skipped: list[dict[str, str]] = []
    cam_chunks: list[np.ndarray] = []
    idx_chunks: list[np.ndarray] = []
    cam_paths: list[str] = []
    batch_stats: dict[str, float] = {}
    start = datetime.now()

    progress = Progress(
        TextColumn("[bold]explain"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False
    )
    with progress:
        task = progress.add_task("explain", total=len(paths))
        for batch in loader:
            skipped.extend({"path": paths[i], "reason": reason} for i, reason in batch["errors"])
            if batch["images"] is None:
                progress.advance(task, len(batch["errors"]))
                continue
            indices = batch["indices"]
            x = batch["images"].contiguous(memory_format=memory_format)
            true = torch.tensor([labels[i] for i in indices], dtype=torch.long)
            with autocast:
                explained = explainer.explain(x, true_labels=true, topk=topk)
            logits, cam_idx, cams = explained.logits, explained.class_idx, explained.maps
            for key, value in explained.stats.items():  # worst case over batches
                batch_stats[key] = max(batch_stats.get(key, value), value)
            probs = logits.softmax(dim=1)
            losses = F.cross_entropy(logits, true.clamp(min=0), reduction="none")

            cams_np, idx_np, probs_np = cams.numpy(), cam_idx.numpy(), probs.numpy()
            if save_cams:
                cam_chunks.append(cams_np)
                idx_chunks.append(idx_np)
                cam_paths.extend(paths[i] for i in indices)
            for row, i in enumerate(indices):
                pred = int(idx_np[row, 0])
                rel = overlay_location(labels[i], pred, float(probs_np[row, pred]), paths[i], class_names, used_names)
                writer.submit(
                    ImageJob(
                        path=paths[i],
                        true_idx=labels[i],
                        probs=probs_np[row],
                        loss=float(losses[row]) if labels[i] >= 0 else math.nan,
                        cam_idx=idx_np[row],
                        cams=cams_np[row],
                        original=batch["originals"][row].numpy(),
                        boxes=boxes.get(paths[i], []) if boxes else [],
                        overlay_path=out_dir / rel,
                        overlay_rel=rel,
                    )
                )
            progress.advance(task, len(indices) + len(batch["errors"]))
        rows = writer.close()
    seconds = (datetime.now() - start).total_seconds()

    predictions = pd.DataFrame(rows)
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    skipped_frame = pd.DataFrame(skipped, columns=["path", "reason"])
    skipped_frame.to_csv(out_dir / "skipped.csv", index=False)
    if len(skipped_frame):
        log.warning("Skipped %d unreadable image(s); listed in %s", len(skipped_frame), out_dir / "skipped.csv")
    if save_cams and cam_chunks:
        all_cams = np.concatenate(cam_chunks)
        # float16 halves the file; a diverged model's maps can exceed its range, then keep float32.
        if np.abs(all_cams).max() < np.finfo(np.float16).max:
            all_cams = all_cams.astype(np.float16)
        np.savez_compressed(
            out_dir / "cams.npz",
            cams=all_cams,
            class_idx=np.concatenate(idx_chunks),
            paths=np.array(cam_paths),
            class_names=np.array(class_names),
            **{key: np.array(value) for key, value in explainer.describe().items()},
        )
    max_deviation = batch_stats.get("cam_logit_deviation")
    if max_deviation is not None and max_deviation > 1e-3:
        log.warning("CAM self-check: spatial mean + bias differs from the logit by %.2g", max_deviation)
    stats = {
        "cam_logit_max_deviation": max_deviation,
        "seconds": round(seconds, 2),
        "images_per_second": round(len(rows) / seconds, 1) if seconds > 0 else None,
        "precision": "bf16" if bf16 else "32",
    }
    return predictions, skipped_frame, stats


def build_explainer(
    model: ClassifierModule | PretrainedClassifier, method: str | None = None, layer: str | None = None
) -> Explainer:
    """The explainer for a loaded model: ``method=`` at ``layer=`` (defaults from the registry).

    Raises:
        CatdogError: unknown method or layer, or exact CAM where it does not apply.
    """
    return build_method(model.net, model.hparams.arch, method, layer)


def write_grids(
    model: ClassifierModule | PretrainedClassifier,
    images: pd.DataFrame,
    out_dir: Path,
    cfg: DictConfig,
    style: OverlayStyle,
) -> list[str]:
    """``grid/<image>.jpg``: every method (rows) at every layer (columns), the predicted class's map.

    Layers: ``layers=`` or the registry's stages (ResNet: layer1..layer4). Methods: ``grid_methods=`` or
    all that apply (exact CAM only on heads it decomposes, and only at its own layer: other cells say so).

    Returns:
        The written files, relative to ``out_dir``.
    """
    hp, net = model.hparams, model.net
    spec = arch_spec(hp.arch)
    layers = [str(x) for x in cfg.layers] if cfg.get("layers") else list(spec.stages or (spec.feature_layer,))
    methods = (
        [str(m) for m in cfg.grid_methods]
        if cfg.get("grid_methods")
        else [m for m in METHODS if m != "cam" or spec.exact_cam]
    )
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    colormap = "diverging" if style.display == "signed" else "jet"
    written = []
    for path in images["path"].head(int(cfg.get("grid_images") or 1)):
        try:
            rgb = load_rgb(path)
        except BadImageError:
            continue
        x = transform(rgb)[None].contiguous(memory_format=torch.channels_last)
        height, width = rgb.shape[:2]
        tiles, captions = [], []
        for method in methods:
            for layer in layers:
                try:
                    explainer = build_explainer(model, method, layer)
                except CatdogError:
                    if method != "cam":
                        raise
                    exact_at = resolve_layer(net, spec.feature_layer)[0]
                    tiles.append(draw_label(np.full_like(rgb, 24), f"exact CAM: {exact_at} only"))
                    captions.append(f"{method} @ {layer}\nn/a")
                    continue
                out = explainer.explain(x, None, topk=1)
                cls = int(out.class_idx[0, 0])
                shown = display_maps(upsample_cams(out.maps[0, :1], (height, width)), style.display)[0].numpy()
                tiles.append(heatmap_overlay(rgb, shown, style.alpha, colormap))
                prob = float(out.logits.softmax(dim=1)[0, cls])
                captions.append(f"{method} @ {layer}\n{style.class_names[cls]} {100 * prob:.1f}%")
        rel = f"grid/{safe_name(Path(path).stem)}.jpg"
        save_image(out_dir / rel, image_grid(tiles, captions, ncols=len(layers), tile_size=192), quality=style.quality)
        written.append(rel)
    return written


# ---------------------------------------------------------------------------------------------
# Tables and pictures
# ---------------------------------------------------------------------------------------------
def write_reports(
    predictions: pd.DataFrame, skipped: pd.DataFrame, class_names: list[str], out_dir: Path, top_losses: int
) -> dict[str, Any]:
    """summary numbers, confusion_matrix.png and top_losses.png from the predictions table."""
    summary: dict[str, Any] = {"images": int(len(predictions)), "skipped": int(len(skipped))}
    labelled = predictions[predictions["true"].notna()] if len(predictions) else predictions
    summary["labelled"] = int(len(labelled))
    if len(labelled):
        to_index = {name: i for i, name in enumerate(class_names)}
        true = labelled["true"].map(to_index).to_numpy()
        pred = labelled["pred"].map(to_index).to_numpy()
        matrix = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
        np.add.at(matrix, (true, pred), 1)
        correct = int((true == pred).sum())
        summary.update(
            correct=correct,
            incorrect=int(len(labelled) - correct),
            accuracy=correct / len(labelled),
            confusion_matrix=matrix.tolist(),
        )
        plot_confusion_matrix(
            matrix, class_names, out_dir / "confusion_matrix.png", title=f"accuracy {correct / len(labelled):.1%}"
        )
        mistakes = labelled[labelled["true"] != labelled["pred"]].sort_values("loss", ascending=False)
        if len(mistakes) and top_losses > 0:
            _top_losses_grid(mistakes.head(top_losses), out_dir)
    summary["pointing_game"] = summarize_pointing(predictions)
    return summary


def _top_losses_grid(mistakes: pd.DataFrame, out_dir: Path) -> None:
    tiles, captions = [], []
    for row in mistakes.itertuples():
        tile = cv2.imread(str(out_dir / row.overlay), cv2.IMREAD_COLOR)
        if tile is None:
            continue
        tiles.append(cv2.cvtColor(tile, cv2.COLOR_BGR2RGB))
        captions.append(f"{row.true} as {row.pred}  loss {row.loss:.2f}")
    if tiles:
        grid = image_grid(tiles, captions, ncols=min(4, len(tiles)), tile_size=256)
        save_image(out_dir / "top_losses.png", grid)


def _boxes_for(source: str | None, data_hparams: dict[str, Any]) -> dict[str, list[tuple[float, float, float, float]]]:
    """Object boxes (absolute path -> boxes) from a boxes.csv beside the images, if there is one."""
    root = Path(source) if source else (Path(data_hparams["root"]) if data_hparams.get("root") else None)
    if root is None or not root.is_dir():
        return {}
    frame = load_boxes(root)
    if frame is None:
        return {}
    # boxes.csv has exclusive x1, y1 (the object is image[y0:y1, x0:x1]); point_in_box is inclusive.
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    for row in frame.itertuples():
        boxes.setdefault(str(row.path), []).append((float(row.x0), float(row.y0), float(row.x1) - 1, float(row.y1) - 1))
    return boxes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import pytorch_lightning
    import torchvision

    return {
        "catdog": catdog.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "opencv": cv2.__version__,
    }


def _print_where(out_dir: Path, summary: dict[str, Any]) -> None:
    lines = [f"Explained {summary['images']} images ({summary['skipped']} skipped) in {out_dir}"]
    if summary.get("accuracy") is not None:
        lines.append(
            f"  accuracy {summary['accuracy']:.2%}: overlays in correct/ and incorrect/ (most confident first)"
        )
    else:
        lines.append("  overlays in unlabelled/<predicted class>/")
    if summary.get("pointing_game"):
        game = summary["pointing_game"]
        lines.append(
            f"  pointing game: CAM peak on the object for {game['hit_rate']:.1%} of {game['images']} images "
            f"({game['strict_hit_rate']:.1%} strictly inside its box)"
        )
    lines.append("  predictions.csv, summary.json, confusion_matrix.png, top_losses.png")
    lines.append(f"  open {out_dir / 'report' / 'index.html'} in a browser to filter and sort them")
    print("\n".join(lines))
