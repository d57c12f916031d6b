"""The pictures explain draws: each image's overlay (in background threads), the confusion matrix and the
top losses (:mod:`catdog.explain.top_losses`).

Overlay file names start with ``1000 * (1 - confidence)`` (4 digits), so an alphabetical listing of a
folder shows the most confident predictions first: in ``incorrect/`` the most confident mistakes.
:class:`BoundedWriter` keeps at most a bounded number of images in flight (OpenCV and torch release the
GIL), so memory does not grow with the number of images.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from catdog.data import load_mask
from catdog.data.selection import Annotations
from catdog.explain.settings import ExplainSettings
from catdog.explain.top_losses import write_top_losses
from catdog.maps.cam import area_above, display_levels, display_maps, strongest_region
from catdog.maps.geometry import CellCentres, grid_centres
from catdog.names import pair_name, unique_names
from catdog.overlay import (
    blend_heatmap,
    draw_contour,
    draw_label,
    label_text,
    save_image,
    side_by_side,
)
from catdog.plots import confusion_counts, plot_confusion_matrix
from catdog.quality.localization import localization_columns

THUMBS = "thumbs"  # the report's layers: <explain folder>/thumbs/<overlay path> (photo), thumbs/heat/<overlay path>
# A row carrying this key is an image whose prediction ran but whose overlay could not be drawn or written:
# the merge moves it to skipped.csv (with this reason) and drops its maps.
SKIP_REASON = "__skip_reason__"


def bounded_copy(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """A copy of the image whose longest side is at most ``max_side``, or the image itself.

    Halves with ``cv2.pyrDown`` (a Gaussian blur, so no aliasing) while the image is at least twice too
    large, then resizes linearly by the remaining factor (< 2): it looks like area interpolation at a
    fraction of its cost (bench/RESULTS.md).
    """
    height, width = rgb.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return rgb
    while max(height, width) >= 2 * max_side and min(height, width) >= 2:
        rgb = cv2.pyrDown(rgb)
        height, width = rgb.shape[:2]
    if max(height, width) <= max_side:
        return rgb
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)


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
    original: np.ndarray  # [H, W, 3] uint8 RGB: the original, or a copy bounded by overlay.max_size
    boxes: list[tuple[float, float, float, float]]  # the image's object boxes; empty when none are known
    overlay_path: Path
    overlay_rel: str
    size: tuple[int, int] | None = None  # (H, W) of the original file (peaks and boxes use it); None: original's
    thumb_path: Path | None = None  # the report's photo layer (thumbs/<rel>); None: no layers
    heat_path: Path | None = None  # the report's heatmap layer (thumbs/heat/<rel>)
    mask: str | None = None  # the image's object mask file, when known
    columns: dict[str, Any] | None = None  # per-image metrics computed on the batch (faithfulness)


@dataclass(frozen=True)
class OverlayStyle:
    class_names: list[str]
    topk: int
    alpha: float
    side_by_side: bool
    show_true_cam: bool
    quality: int
    pointing_tolerance: float = 0.0
    thumb_size: int = 384  # longest side of the report's photo and heatmap layers (gallery and image view)
    display: str = "minmax"  # cam.display_maps mode; "signed" draws with a diverging colormap
    threshold: str | float | None = None  # cam.strongest_region: contour of the predicted map's strongest region
    centres: CellCentres | None = None  # where each map cell's evidence comes from (catdog.maps.geometry)
    mask_object: tuple[int, ...] | None = None  # mask pixel values that mark the object (None: nonzero)

    @classmethod
    def from_settings(cls, settings: ExplainSettings, class_names: list[str]) -> OverlayStyle:
        # overlay.true_class_panel=auto: with two classes (softmax) the true class's map is the predicted
        # class's inverted, so the panel is left out.
        panel = settings.overlay.true_class_panel
        return cls(
            class_names=class_names,
            topk=settings.topk,
            alpha=settings.overlay.alpha,
            side_by_side=settings.overlay.side_by_side,
            show_true_cam=panel == "always" or (panel == "auto" and len(class_names) > 2),
            quality=settings.overlay.quality,
            pointing_tolerance=settings.pointing_tolerance,
            display=settings.display,
            threshold=settings.threshold,
            mask_object=settings.mask_object,
        )


def render_image(job: ImageJob, style: OverlayStyle) -> dict[str, Any]:
    """Upsample the maps to the original size, score localisation, draw and write the overlay.

    Returns:
        The image's row of predictions.csv.
    """
    names = style.class_names
    # Geometry (peaks, boxes) in the original file's pixels; pictures at the (bounded) copy's size.
    height, width = job.size or job.original.shape[:2]
    shown_size = job.original.shape[:2]
    pred = int(job.cam_idx[0])
    mistake = job.true_idx >= 0 and job.true_idx != pred
    show_true = mistake and style.show_true_cam and job.true_idx not in job.cam_idx[: style.topk]
    # Upsample only the maps that are drawn: the true-class column repeats the prediction when correct.
    shown = list(range(style.topk)) + ([len(job.cam_idx) - 1] if show_true else [])
    centres = style.centres or grid_centres(job.cams.shape[-2:], job.cams.shape[-2:])
    if not np.isfinite(job.cams[shown]).all():  # checked on the few cells: upsampling keeps values finite
        raise ValueError("the map contains NaN or inf values")
    maps = centres.upsample(torch.from_numpy(job.cams[shown]), shown_size)  # [len(shown), H, W]
    peak_x, peak_y = centres.peak(torch.from_numpy(job.cams[0]), (height, width))
    levels = display_levels(maps.numpy(), style.display)  # what is drawn, uint8
    colormap = "diverging" if style.display == "signed" else "jet"
    region_area = None
    if style.threshold is not None:
        region, region_area = strongest_region(display_maps(maps[:1], style.display)[0].numpy(), style.threshold)

    true_name = names[job.true_idx] if job.true_idx >= 0 else None
    panels: list[np.ndarray] = []
    if style.side_by_side:
        panels.append(draw_label(job.original, "input"))
    for column in range(style.topk):
        cls = int(job.cam_idx[column])
        text = label_text(names[cls], float(job.probs[cls]), true_name if column == 0 else None)
        panel = blend_heatmap(job.original, levels[column], style.alpha, colormap)
        if column == 0 and region_area is not None:
            panel = draw_contour(panel, region)
        panels.append(draw_label(panel, text, inplace=True))  # the panel is a fresh blend
    if show_true:
        text = f"true: {true_name} {100 * float(job.probs[job.true_idx]):.1f}%"
        panels.append(draw_label(blend_heatmap(job.original, levels[-1], style.alpha, colormap), text, inplace=True))
    picture = panels[0] if len(panels) == 1 else side_by_side(panels)
    save_image(job.overlay_path, picture, quality=style.quality)
    if job.thumb_path is not None and job.heat_path is not None:  # in memory: the report decodes no overlay
        write_layers((job.thumb_path, job.heat_path), job.original, levels[0], colormap, style.thumb_size)

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
    row.update(_localization(job, centres, style.pointing_tolerance, style.mask_object))
    row.update(job.columns or {})
    return row


HEAT_SHRINK = 3  # the heatmap layer is this many times smaller than the photo layer


def write_layers(
    paths: tuple[Path, Path], original: np.ndarray, levels: np.ndarray, colormap: str, size: int
) -> None:
    """The report's two text-free layers of one image: the photo, and the predicted class's heatmap alone at a
    third of its size (the browser stretches it over the photo and blends them, so the report can switch the
    map off or change its opacity)."""
    photo = bounded_copy(original, size)
    # The heatmap is smooth (upsampled from a few cells): a third of the photo's size is enough, the browser
    # stretches it over the photo, and it costs a fraction of the encoding time.
    width, height = max(1, photo.shape[1] // HEAT_SHRINK), max(1, photo.shape[0] // HEAT_SHRINK)
    small = cv2.resize(levels, (width, height), interpolation=cv2.INTER_AREA)
    save_image(paths[0], photo, quality=85)
    save_image(paths[1], blend_heatmap(np.empty((height, width, 3), np.uint8), small, 1.0, colormap), quality=90)


def _localization(
    job: ImageJob, centres: CellCentres, tolerance: float, mask_object: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """Localization columns of the *true* class's map (the last map; the prediction when unlabelled).

    In the original file's pixels (boxes and masks are), not the bounded copy the overlay is drawn on.
    """
    if not job.boxes and not job.mask:
        return {}
    size = job.size or job.original.shape[:2]
    cam = torch.from_numpy(job.cams[-1])
    mask = load_mask(job.mask, mask_object) if job.mask else None
    return localization_columns(
        centres.peak(cam, size), centres.upsample(cam, size), size, boxes=job.boxes, mask=mask, tolerance=tolerance
    )


def render_or_skip(job: ImageJob, style: OverlayStyle) -> dict[str, Any]:
    """:func:`render_image`, turning a failure on this one image into a skipped.csv reason.

    A valid but extreme image (8x70000 px: beyond JPEG's 65535 px limit) or a full disk for one file
    must cost that image, not the whole run.

    Returns:
        The predictions.csv row, or ``{"path": ..., "__skipped__": reason}``.
    """
    try:
        return render_image(job, style)
    except Exception as err:
        job.overlay_path.unlink(missing_ok=True)
        detail = " ".join(str(err).split())[:160]
        return {"path": job.path, SKIP_REASON: f"cannot draw overlay: {type(err).__name__}: {detail}"}


class BoundedWriter:
    """A thread pool that keeps at most ``max_pending`` jobs in flight, results in submission order.

    Results go to ``on_result`` as they complete (streaming, nothing kept), or into ``results`` when it is None.
    """

    def __init__(
        self,
        fn: Callable[[ImageJob], dict[str, Any]],
        workers: int,
        max_pending: int,
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._fn = fn
        # One intra-op thread per writer: torch ops on one image's maps are small, and a writer with the
        # default OpenMP team oversubscribes the cores the forward pass uses (bench/RESULTS.md).
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="overlay", initializer=torch.set_num_threads, initargs=(1,)
        )
        self._pending: deque[Future] = deque()
        self._max_pending = max_pending
        self.on_result = on_result
        self.results: list[dict[str, Any]] = []

    def _done(self, result: dict[str, Any]) -> None:
        if self.on_result is None:
            self.results.append(result)
        else:
            self.on_result(result)

    def submit(self, job: ImageJob) -> None:
        while len(self._pending) >= self._max_pending:
            self._done(self._pending.popleft().result())
        self._pending.append(self._pool.submit(self._fn, job))

    def close(self) -> list[dict[str, Any]]:
        while self._pending:
            self._done(self._pending.popleft().result())
        self._pool.shutdown()
        return self.results


def overlay_location(true_idx: int, pred: int, confidence: float, name: str, folders: Sequence[str]) -> str:
    """Relative overlay path: folder by outcome, name prefixed so the most confident sort first.

    Args:
        name: the image's name, unique in the run (:func:`overlay_names`).
        folders: each class's folder name (:func:`class_folders`).
    """
    if true_idx < 0:
        folder = f"unlabelled/{folders[pred]}"
    elif true_idx == pred:
        folder = f"correct/{folders[pred]}"
    else:
        folder = f"incorrect/{pair_name(folders[true_idx], folders[pred], folders)}"
    prefix = f"{min(999, round((1.0 - confidence) * 1000)):04d}"
    return f"{folder}/{prefix}_{name}.jpg"


def overlay_names(paths: Sequence[str]) -> list[str]:
    """Per path, a file name unique across the whole run: its full stem, plus a hash of the path when
    another image's stem gives the same name (``a/x.jpg`` and ``b/x.jpg``, ``X.jpg`` and ``x.png``).

    A function of the full path list: every rank of a multi-process run computes the same names.
    """
    return unique_names([Path(path).stem for path in paths], paths)


def class_folders(class_names: Sequence[str]) -> list[str]:
    """Per class, its overlay folder name: distinct for distinct classes (``a b`` and ``a_b``)."""
    return unique_names(class_names)


@dataclass
class OverlayJobs:
    """Turns each batch's predictions into :class:`ImageJob` s: what each overlay shows and where it goes.

    Built from the whole image list, so every rank names overlays the same way (see :func:`unique_stems`).
    """

    paths: list[str]
    labels: list[int]  # class index of each image, -1 unknown
    names: list[str]  # each image's overlay name, unique in the run (overlay_names)
    folders: list[str]  # each class's folder name (class_folders)
    class_names: list[str]
    annotations: Annotations
    thumbnails: bool  # also write the report's layers (thumbs/)

    @classmethod
    def for_images(
        cls, images: pd.DataFrame, class_names: list[str], annotations: Annotations, thumbnails: bool
    ) -> OverlayJobs:
        to_index = {name: i for i, name in enumerate(class_names)}
        labels = [to_index.get(label, -1) if label is not None else -1 for label in images["label"]]
        paths = images["path"].tolist()
        names, folders = overlay_names(paths), class_folders(class_names)
        return cls(paths, labels, names, folders, class_names, annotations, thumbnails)

    def jobs(self, batch: Any, prediction: dict[str, Any], out_dir: Path) -> Iterator[ImageJob]:
        """One job per image of ``batch`` (an engine ``ExplainBatch``) with its ``prediction``."""
        probs, class_idx = prediction["probs"], prediction["class_idx"]
        cams, losses = prediction["maps"], prediction["losses"]
        boxes, masks = self.annotations.boxes, self.annotations.masks
        originals = batch.originals
        for row, i in enumerate(batch.indices):
            pred, path, true_idx = int(class_idx[row, 0]), self.paths[i], self.labels[i]
            rel = overlay_location(true_idx, pred, float(probs[row, pred]), self.names[i], self.folders)
            yield ImageJob(
                path=path,
                true_idx=true_idx,
                probs=probs[row],
                loss=float(losses[row]) if true_idx >= 0 else math.nan,
                cam_idx=class_idx[row],
                cams=cams[row],
                original=originals[row].numpy(),
                boxes=boxes.get(path, []),
                overlay_path=out_dir / rel,
                overlay_rel=rel,
                size=batch.sizes[row],
                thumb_path=out_dir / THUMBS / rel if self.thumbnails else None,
                heat_path=out_dir / THUMBS / "heat" / rel if self.thumbnails else None,
                mask=masks.get(path),
                columns=prediction["columns"][row] if prediction.get("columns") else None,
            )


# ---------------------------------------------------------------------------------------------
# Pictures of the whole run
# ---------------------------------------------------------------------------------------------
def draw_run_pictures(predictions: pd.DataFrame, class_names: list[str], out_dir: Path, top_losses: int) -> None:
    """confusion_matrix.png and top_losses.png (the most confident mistakes) when some images are labelled."""
    labelled = predictions[predictions["true"].notna()] if len(predictions) else predictions
    if not len(labelled):
        return
    matrix = confusion_counts(labelled["true"].tolist(), labelled["pred"].tolist(), class_names)
    accuracy = int(np.trace(matrix)) / len(labelled)
    plot_confusion_matrix(matrix, class_names, out_dir / "confusion_matrix.png", title=f"accuracy {accuracy:.1%}")
    mistakes = labelled[labelled["true"] != labelled["pred"]].sort_values("loss", ascending=False)
    if len(mistakes) and top_losses > 0:
        write_top_losses(mistakes.head(top_losses), out_dir)
