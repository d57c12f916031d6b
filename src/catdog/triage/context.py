"""Context reliance without annotations: does a prediction rest on the region its map highlights?

For each image, the map of the predicted class ranks the pixels (the ranking of deletion/insertion,
:mod:`catdog.quality.faithfulness`); the top ``context.area`` share of them is *the highlighted region*.
Two perturbed copies of the model input go through the model, in the same batches:

- **keep**: only the region kept, every other pixel replaced by the baseline (``blur``: the blurred copy
  insertion starts from, so the rest of the photo becomes a featureless wash of its own colours);
- **remove**: the region replaced by the baseline, the rest kept.

The prediction *survives* a copy when the predicted class is still the top class. A correct prediction
that survives removing its region but not removing the rest is **right for the wrong reason**: the
class is read from somewhere the map does not show (background, context, a watermark), which no box
annotation is needed to see. ``keep_region_p`` / ``remove_region_p`` are the predicted class's
probabilities on the two copies.

Cost: two extra forward passes per image, batched (``context.batch_size`` perturbed inputs per pass).
:class:`ContextReliance` has the ``columns(x, explanation)`` shape of explain's per-batch metrics, so it
can ride along any pass that already makes maps; :func:`run_context` is the standalone batched loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from catdog.errors import CatdogError
from catdog.explain.engine import ExplainDataset, collate_explain
from catdog.maps.explainers import Explainer, Explanation
from catdog.maps.geometry import CellCentres
from catdog.quality.faithfulness import BASELINES, perturbation_baseline, saliency_at, saliency_rank

__all__ = [
    "CONTEXT_COLUMNS",
    "ContextReliance",
    "ContextSettings",
    "add_verdicts",
    "run_context",
    "summarize_context",
    "write_context",
]

CONTEXT_COLUMNS = (
    "keep_region_p",
    "remove_region_p",
    "survives_keep",
    "survives_remove",
    "right_for_wrong_reason",
    "region_area",
)
CONTEXT_FILE = "context.csv"


@dataclass(frozen=True)
class ContextSettings:
    """``context.*`` of the triage config.

    Attributes:
        area: share of the pixels in the highlighted region, in ``(0, 1)``.
        baseline: what replaces removed pixels, one of :data:`catdog.quality.faithfulness.BASELINES`.
        batch_size: images per batch (each gives two perturbed inputs).
    """

    area: float
    baseline: str
    batch_size: int

    def check(self) -> ContextSettings:
        """Raises CatdogError naming the setting when a value is out of range; returns self."""
        if not 0 < self.area < 1:
            raise CatdogError(
                f"context.area={self.area} must be in (0, 1): the share of pixels the map highlights, e.g. 0.25"
            )
        if self.baseline not in BASELINES:
            raise CatdogError(f"context.baseline={self.baseline} is unknown: choose one of {', '.join(BASELINES)}")
        if self.batch_size < 1:
            raise CatdogError(f"context.batch_size={self.batch_size} must be >= 1")
        return self


class ContextReliance:
    """Per-image keep/remove columns of a batch, from the maps an explainer already made.

    Args:
        model: the classifier (logits out), eval mode.
        settings: region share, baseline, batch size.
        centres: where map cells sit in the model input (the overlays' geometry); None: bilinear.
    """

    def __init__(self, model: nn.Module, settings: ContextSettings, centres: CellCentres | None = None) -> None:
        self.model = model
        self.settings = settings.check()
        self.centres = centres

    def columns(self, x: Tensor, explained: Explanation) -> list[dict[str, Any]]:
        """``keep_region_p, remove_region_p, survives_keep, survives_remove, region_area`` per image.

        Args:
            x: ``Tensor[B, 3, S, S]`` the normalised model input the maps were made for.
            explained: the explainer's output for ``x`` (column 0 of its maps: the predicted class).
        """
        batch, _, height, width = x.shape
        pred = explained.class_idx[:, 0].to(x.device)
        keep, remove = self.perturb(x, explained)
        count = max(1, round(self.settings.area * height * width))
        probs = self._probs(torch.cat([keep, remove]))  # [2B, C]
        p_pred = probs.gather(1, pred.repeat(2)[:, None])[:, 0]
        survives = probs.argmax(dim=1) == pred.repeat(2)
        rows = []
        for i in range(batch):
            rows.append(
                {
                    "keep_region_p": round(float(p_pred[i]), 4),
                    "remove_region_p": round(float(p_pred[batch + i]), 4),
                    "survives_keep": bool(survives[i]),
                    "survives_remove": bool(survives[batch + i]),
                    "region_area": round(count / (height * width), 4),
                }
            )
        return rows

    def perturb(self, x: Tensor, explained: Explanation) -> tuple[Tensor, Tensor]:
        """The two copies of ``x``: only the highlighted region kept, and the region removed."""
        height, width = x.shape[-2:]
        saliency = saliency_at(explained.maps[:, 0].float(), (height, width), self.centres)
        count = max(1, round(self.settings.area * height * width))
        region = saliency_rank(saliency) < count  # [B, 1, H, W]: the top `area` share of pixels
        base = perturbation_baseline(x, self.settings.baseline)
        return torch.where(region, x, base), torch.where(region, base, x)

    def _probs(self, inputs: Tensor) -> Tensor:
        out = []
        step = 2 * self.settings.batch_size
        with torch.inference_mode():
            for start in range(0, inputs.shape[0], step):
                out.append(self.model(inputs[start : start + step]).float().softmax(dim=1))
        return torch.cat(out)


def run_context(
    model: nn.Module,
    explainer: Explainer,
    transform: Callable[[np.ndarray], Tensor],
    images: pd.DataFrame,
    class_names: list[str],
    centres: CellCentres | None,
    settings: ContextSettings,
    num_workers: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Context reliance of every image: decode in workers, explain a batch, perturb it, one row per image.

    Run it under the caller's autocast for bf16 (the blur baseline stays float32 by itself).

    Args:
        model: the classifier network the explainer explains.
        explainer: makes the predicted class's map (exact CAM: the same forward pass).
        transform: uint8 RGB -> normalised model input.
        images: columns ``path``, ``label`` (class name or None) and any others (``split``, ...), kept.
        class_names: the model's classes, in index order.
        centres: the map geometry.
        settings: ``context.*``.
        num_workers: decoding processes.

    Returns:
        ``images`` with ``pred, p_pred, correct`` and :data:`CONTEXT_COLUMNS` (readable images, input
        order), and ``skipped`` (``path, reason``) for unreadable ones.
    """
    reliance = ContextReliance(model, settings, centres)
    paths = images["path"].astype(str).tolist()
    loader = DataLoader(
        ExplainDataset(paths, transform, max_side=8),  # the originals are not drawn on: keep them tiny
        batch_size=settings.batch_size,
        num_workers=num_workers,
        collate_fn=collate_explain,
    )
    found: dict[int, dict[str, Any]] = {}
    skipped: list[tuple[str, str]] = []
    for batch in loader:
        skipped += [(paths[i], reason) for i, reason in batch.errors]
        if batch.images is None:
            continue
        explained = explainer.explain(batch.images, topk=1)
        probs = explained.logits.float().softmax(dim=1)
        for i, row, p in zip(batch.indices, reliance.columns(batch.images, explained), probs):
            pred = int(p.argmax())
            found[i] = {"pred": class_names[pred], "p_pred": round(float(p[pred]), 4), **row}
    kept = sorted(found)
    frame = images.iloc[kept].reset_index(drop=True)
    frame = pd.concat([frame, pd.DataFrame([found[i] for i in kept], index=frame.index)], axis=1)
    return add_verdicts(frame), pd.DataFrame(skipped, columns=["path", "reason"])


def add_verdicts(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds ``correct`` and ``right_for_wrong_reason`` (both empty where the label is unknown).

    Right for the wrong reason: correct, survives removing the highlighted region, does not survive
    keeping only it.
    """
    out = frame.copy()
    known = out["label"].notna()
    correct = (out["label"].astype(str) == out["pred"].astype(str)).astype(object)
    wrong_reason = (
        correct.astype(bool) & out["survives_remove"].astype(bool) & ~out["survives_keep"].astype(bool)
    ).astype(object)
    out["correct"] = correct.where(known, None)
    out["right_for_wrong_reason"] = wrong_reason.where(known, None)
    return out


def _rate(values: pd.Series) -> float | None:
    values = values.dropna()
    return round(float(values.astype(bool).mean()), 4) if len(values) else None


def _totals(group: pd.DataFrame) -> dict[str, Any]:
    correct = group[group["correct"].notna() & group["correct"].astype(bool)]
    flagged = int(correct["right_for_wrong_reason"].astype(bool).sum())
    return {
        "images": int(len(group)),
        "accuracy": _rate(group["correct"]),
        "survives_keep": _rate(group["survives_keep"]),
        "survives_remove": _rate(group["survives_remove"]),
        "keep_region_p": round(float(group["keep_region_p"].mean()), 4) if "keep_region_p" in group else None,
        "remove_region_p": round(float(group["remove_region_p"].mean()), 4) if "remove_region_p" in group else None,
        "right_for_wrong_reason": flagged,
        "right_for_wrong_reason_rate": round(flagged / len(correct), 4) if len(correct) else None,
    }


def summarize_context(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """One row per value of ``by`` (``label``, ``pred``, ``split``, ``slice``...) and a last row ``all``.

    Columns: ``by, images, accuracy, survives_keep, survives_remove`` (rates), ``keep_region_p,
    remove_region_p`` (means), ``right_for_wrong_reason`` (count among correct predictions) and its rate.

    Raises:
        CatdogError: ``frame`` has no column ``by``.
    """
    if by not in frame.columns:
        raise CatdogError(f"context summary by {by!r}: the table has no column {by!r}")
    rows = [{by: name, **_totals(group)} for name, group in frame.groupby(frame[by].astype(str), sort=True)]
    rows.append({by: "all", **_totals(frame)})
    return pd.DataFrame(rows)


def write_context(frame: pd.DataFrame, out_dir: Path) -> Path:
    """Writes ``context.csv`` (one row per image) into ``out_dir`` (created) and returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CONTEXT_FILE
    frame.to_csv(path, index=False)
    return path


# ---------------------------------------------------------------------------------------------
# The triage step
# ---------------------------------------------------------------------------------------------
SPLITS = ("test", "val", "train", "all")


@dataclass(frozen=True)
class ContextStep:
    """``context.*`` as the triage step reads it.

    Attributes:
        settings: region share, baseline, batch size.
        split: which images of the triage get the two extra passes (``test``, ``val``, ``train``, ``all``).
        align: map geometry (explain's ``align``).
        pictures: right-for-the-wrong-reason images drawn (photo, map, region kept, region removed).
    """

    settings: ContextSettings
    split: str
    align: str
    pictures: int


def parse_context(cfg: Any) -> ContextStep:
    """The checked :class:`ContextStep` of a config with ``context.*`` and ``data.batch_size``.

    Raises:
        CatdogError: a value out of range.
    """
    context = cfg.context
    if str(context.split) not in SPLITS:
        raise CatdogError(f"context.split={context.split} is not one of {', '.join(SPLITS)}")
    settings = ContextSettings(float(context.area), str(context.baseline), int(cfg.data.batch_size)).check()
    return ContextStep(settings, str(context.split), str(context.align), int(context.pictures))


def context_reliance(model: Any, out_dir: Path, triage: Any) -> dict[str, Any] | None:
    """Triage's context step: context reliance of ``context.split``'s images of ``out_dir/images.csv``.

    Writes ``context.csv`` (the rows of images.csv with ``pred`` = the network's own prediction, whose map
    is perturbed) and ``pictures/context-*.jpg`` for the right-for-the-wrong-reason images.

    Args:
        model: the run's classifier.
        out_dir: the triage folder (images.csv written).
        triage: the triage settings (``context``: :class:`ContextStep`, ``precision``, ``num_workers``).

    Returns:
        The summary for summary.json and the report.
    """
    from catdog.data import build_transform
    from catdog.explain.engine import resolve_precision
    from catdog.explain.methods import explainer_for as build_explainer
    from catdog.explain.methods import map_centres
    from catdog.readers import read_csv

    step: ContextStep = triage.reliance
    table = read_csv(out_dir / "images.csv", what="images.csv")
    chosen = table if step.split == "all" else table[table["split"] == step.split]
    if chosen.empty:
        return {"images": 0, "split": step.split, "note": f"no {step.split} images: use context.split=all"}
    hp = model.hparams
    explainer = build_explainer(model)
    centres = map_centres(model, explainer, (int(hp.image_size), int(hp.image_size)), step.align)
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    columns = [c for c in ("path", "key", "split", "label", "slice") if c in chosen.columns]
    if "slice" in columns:  # read back as float when some images have no slice: keep the cluster numbers whole
        chosen = chosen.assign(slice=pd.to_numeric(chosen["slice"], errors="coerce").round().astype("Int64"))
    _, precision = resolve_precision(triage.precision, "cpu")
    with _autocast(precision["used"]):
        frame, _skipped = run_context(model.net, explainer, transform, chosen[columns].reset_index(drop=True),
                                      list(hp.class_names), centres, step.settings, triage.num_workers)
        flagged = frame[frame["right_for_wrong_reason"].astype(bool)].sort_values("keep_region_p")
        pictures = draw_context_pictures(model, explainer, ContextReliance(model.net, step.settings, centres),
                                         flagged["path"].head(step.pictures).tolist(), out_dir)
    write_context(frame, out_dir)
    return context_summary(frame, step, pictures)


def _autocast(used: str) -> Any:
    import contextlib

    return torch.autocast("cpu", dtype=torch.bfloat16) if used == "bf16" else contextlib.nullcontext()


def context_summary(frame: pd.DataFrame, step: ContextStep, pictures: dict[str, str]) -> dict[str, Any]:
    """summary.json's ``context``: settings, overall totals, per class and per slice, the drawn pictures."""
    per_class = summarize_context(frame.assign(label=frame["label"].fillna("(unlabelled)")), "label")
    summary: dict[str, Any] = {
        "images": int(len(frame)),
        "split": step.split,
        "area": step.settings.area,
        "baseline": step.settings.baseline,
        "overall": per_class.iloc[[-1]].drop(columns="label").to_dict(orient="records")[0],
        "per_class": per_class.iloc[:-1].to_dict(orient="records"),
        "pictures": pictures,
    }
    if "slice" in frame.columns and frame["slice"].notna().any():
        per_slice = summarize_context(frame[frame["slice"].notna()], "slice")
        summary["per_slice"] = per_slice.iloc[:-1].to_dict(orient="records")
    return summary


def draw_context_pictures(
    model: Any, explainer: Explainer, reliance: ContextReliance, paths: list[str], out_dir: Path
) -> dict[str, str]:
    """``pictures/context-<name>.jpg`` per path: photo, predicted class's map, region kept, region removed.

    The last two are the model inputs themselves (the square the model saw), denormalised.

    Returns:
        image path -> picture file relative to ``out_dir``.
    """
    from catdog.data import BadImageError, build_transform, load_rgb
    from catdog.maps.cam import display_maps
    from catdog.overlay import heatmap_overlay, safe_name, save_image, side_by_side

    hp = model.hparams
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    mean, std = torch.tensor(hp.mean)[:, None, None], torch.tensor(hp.std)[:, None, None]
    written = {}
    for n, path in enumerate(paths):
        try:
            rgb = load_rgb(path)
        except BadImageError:
            continue
        x = transform(rgb)[None]
        explained = explainer.explain(x, topk=1)
        keep, remove = reliance.perturb(x, explained)
        probs = reliance._probs(torch.cat([keep, remove]))
        pred = int(explained.class_idx[0, 0])
        photo = (x[0].float() * std + mean).clamp(0, 1).mul(255).byte().permute(1, 2, 0).numpy()
        shown = display_maps(saliency_at(explained.maps[:, 0].float(), photo.shape[:2], reliance.centres))[0].numpy()
        copies = [
            (c[0].float() * std + mean).clamp(0, 1).mul(255).byte().permute(1, 2, 0).numpy() for c in (keep, remove)
        ]
        name = hp.class_names[pred]
        titles = [
            "photo (model input)",
            f"{name} map",
            f"region kept: {name} {probs[0, pred]:.0%}",
            f"region removed: {name} {probs[1, pred]:.0%}",
        ]
        rel = f"pictures/context-{n:03d}-{safe_name(Path(path).stem)}.jpg"
        save_image(
            out_dir / rel, side_by_side([photo, heatmap_overlay(photo, shown, 0.5), *copies], titles), quality=88
        )
        written[path] = rel
    return written
