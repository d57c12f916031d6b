"""Context-robustness check: is the model still right when the animal is small and the scene is not?

Each held-out photo is shrunk to each of ``context.scales`` of its side (1, 1/2, 1/3, 1/4) and pasted at
a random place (seeded per photo and scale) onto a background of the photo's own size: the user's photos
(``context.backgrounds=<folder>``) or generated ones (:mod:`catdog.data.paste`). A model trained on photos
where the animal fills the frame usually loses accuracy fast; ``data.augment_paste`` is the training
option against it (before/after numbers in bench/RESULTS.md).

Because the pasted box is known, the *pointing game* is scored exactly as explain scores it with boxes
(:func:`catdog.quality.localization.localization_columns`, the true class's map, with the centre-of-image
baseline and the map's energy on the box). At scale 1 the box is the whole picture, so no pointing game.

Outputs: one row per scene (``scenes``), and ``robustness.csv``: per scale, overall (``class=all``) and
per true class, ``images, accuracy, pointing_hit, in_box, centre_hit, energy_in_box``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from catdog.data import BadImageError, load_rgb
from catdog.data.paste import Backgrounds, paste_photo
from catdog.errors import CatdogError
from catdog.explain.engine import bounded_copy
from catdog.maps.explainers import Explainer
from catdog.maps.geometry import CellCentres
from catdog.quality.localization import localization_columns

__all__ = ["RobustnessSettings", "make_scene", "plot_robustness", "robustness_check", "summarize_robustness"]

# Table column -> the per-scene column it averages.
SCORES = {"accuracy": "correct", "pointing_hit": "pointing_hit", "in_box": "in_box", "centre_hit": "centre_hit",
          "energy_in_box": "energy_in_box"}


@dataclass(frozen=True)
class RobustnessSettings:
    """``context.scales``, ``context.seed``, the pointing-game tolerance and the batch size.

    Attributes:
        scales: sides of the pasted photo as shares of the scene's side, each in ``(0, 1]``.
        seed: which places and backgrounds (each photo and scale has its own generator).
        tolerance: pointing-game margin as a share of the picture's size (explain's ``pointing_tolerance``).
        batch_size: photos per batch (each gives one scene per scale).
    """

    scales: tuple[float, ...]
    seed: int
    tolerance: float
    batch_size: int

    def check(self) -> RobustnessSettings:
        """Raises CatdogError naming the setting when a value is out of range; returns self."""
        if not self.scales or not all(0 < s <= 1 for s in self.scales):
            raise CatdogError(
                f"context.scales={list(self.scales)} must be shares of the side in (0, 1], e.g. [1, 0.5, 0.3333, 0.25]"
            )
        if self.batch_size < 1:
            raise CatdogError(f"batch_size={self.batch_size} must be >= 1")
        return self


def scale_label(scale: float) -> str:
    """``0.3333`` -> ``"1/3"``, ``1.0`` -> ``"1"``: the scale as people say it."""
    fraction = Fraction(scale).limit_denominator(12)
    return str(fraction) if abs(float(fraction) - scale) < 1e-3 else f"{scale:g}"


def make_scene(
    photo: np.ndarray, backgrounds: Backgrounds, scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The photo at ``scale`` of its side on a background of its own size; scale 1: the photo itself.

    Returns:
        The scene and the pasted photo's inclusive box ``(x0, y0, x1, y1)``.
    """
    height, width = photo.shape[:2]
    if scale >= 1:
        return photo, (0, 0, width - 1, height - 1)
    return paste_photo(photo, backgrounds.draw(rng, (height, width)), scale, rng)


class _SceneDataset(Dataset):
    """One item per photo: its scenes at every scale (model inputs), their boxes and the scene size."""

    def __init__(
        self,
        paths: list[str],
        transform: Callable[[np.ndarray], Tensor],
        backgrounds: Backgrounds,
        settings: RobustnessSettings,
        max_side: int,
    ) -> None:
        self.paths, self.transform, self.backgrounds = paths, transform, backgrounds
        self.settings, self.max_side = settings, max_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            # Scenes at a bounded size: the model sees them at its input size anyway.
            photo = bounded_copy(load_rgb(self.paths[index]), self.max_side)
        except BadImageError as err:
            return {"index": index, "error": str(err)}
        inputs, boxes = [], []
        for j, scale in enumerate(self.settings.scales):
            rng = np.random.default_rng([self.settings.seed, index, j])  # independent of batches and workers
            scene, box = make_scene(photo, self.backgrounds, scale, rng)
            inputs.append(self.transform(scene))
            boxes.append(box)
        return {"index": index, "error": None, "inputs": torch.stack(inputs), "boxes": boxes, "size": photo.shape[:2]}


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def robustness_check(
    explainer: Explainer,
    transform: Callable[[np.ndarray], Tensor],
    images: pd.DataFrame,
    class_names: list[str],
    centres: CellCentres,
    backgrounds: Backgrounds,
    settings: RobustnessSettings,
    num_workers: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Runs the check on labelled photos (run it under the caller's autocast for bf16).

    Args:
        explainer: the model's explainer (its logits and the true class's map).
        transform: the model's eval transform (uint8 RGB -> normalised tensor).
        images: columns ``path`` and ``label``; unlabelled rows are left out.
        class_names: the model's classes in index order.
        centres: the map geometry (peaks and upsampling, as explain's overlays).
        backgrounds: the user's photos or the generator.
        settings: scales, seed, tolerance, batch size.
        num_workers: decoding processes.

    Returns:
        ``scenes`` (one row per photo and scale), the per-scale ``table`` (:func:`summarize_robustness`)
        and ``skipped`` (``path, reason``).

    Raises:
        CatdogError: no labelled photo of a class the model knows.
    """
    settings.check()
    to_index = {name: i for i, name in enumerate(class_names)}
    labelled = images[images["label"].isin(list(to_index))].reset_index(drop=True)
    if labelled.empty:
        raise CatdogError(
            "the robustness check needs labelled photos of the model's classes: use a labelled split or folder"
        )
    paths = labelled["path"].astype(str).tolist()
    dataset = _SceneDataset(paths, transform, backgrounds, settings, 2 * max(centres.input_size))
    loader = DataLoader(dataset, batch_size=settings.batch_size, num_workers=num_workers, collate_fn=_collate)
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for items in loader:
        skipped += [(paths[item["index"]], item["error"]) for item in items if item["error"]]
        good = [item for item in items if not item["error"]]
        if good:
            rows += _score_batch(explainer, good, labelled, to_index, centres, settings)
    scenes = pd.DataFrame(rows)
    return scenes, summarize_robustness(scenes, class_names), pd.DataFrame(skipped, columns=["path", "reason"])


def _score_batch(
    explainer: Explainer,
    items: list[dict[str, Any]],
    labelled: pd.DataFrame,
    to_index: dict[str, int],
    centres: CellCentres,
    settings: RobustnessSettings,
) -> list[dict[str, Any]]:
    """Explains every scene of the batch in one call and scores each: prediction, pointing game, energy."""
    count = len(settings.scales)
    x = torch.cat([item["inputs"] for item in items])  # photo-major: photo 0's scales, photo 1's, ...
    true = torch.tensor([to_index[labelled.at[item["index"], "label"]] for item in items]).repeat_interleave(count)
    explained = explainer.explain(x, true_labels=true, topk=1)
    pred = explained.logits.float().argmax(dim=1)
    names = list(to_index)
    rows = []
    for n, (item, j) in enumerate((item, j) for item in items for j in range(count)):
        scale, box, size = settings.scales[j], item["boxes"][j], tuple(item["size"])
        row = {
            "path": labelled.at[item["index"], "path"],
            "photo": item["index"],  # the photo's number: with the seed and the scale, it rebuilds the scene
            "label": labelled.at[item["index"], "label"],
            "scale": scale,
            "x0": box[0],
            "y0": box[1],
            "x1": box[2],
            "y1": box[3],
            "width": size[1],
            "height": size[0],
            "pred": names[int(pred[n])],
            "correct": bool(pred[n] == true[n]),
        }
        if scale < 1:  # the whole picture is no box to point at
            cam = explained.maps[n, -1].float()  # the true class's map
            row.update(
                localization_columns(
                    centres.peak(cam, size),
                    centres.upsample(cam, size),
                    size,
                    boxes=[box],
                    tolerance=settings.tolerance,
                )
            )
        rows.append(row)
    return rows


def summarize_robustness(scenes: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """Per scale (largest first): ``class=all`` then each true class, ``images`` and the mean of each score.

    Columns: ``scale, side, class, images, accuracy, pointing_hit, in_box, centre_hit, energy_in_box``
    (rates in ``[0, 1]``; the pointing columns are empty at scale 1).
    """
    rows = []
    if scenes.empty:
        return pd.DataFrame(columns=["scale", "side", "class", "images", *SCORES])
    for scale in sorted(scenes["scale"].unique(), reverse=True):
        at = scenes[scenes["scale"] == scale]
        groups = [("all", at)] + [
            (name, at[at["label"] == name]) for name in class_names if (at["label"] == name).any()
        ]
        for name, group in groups:
            row = {"scale": float(scale), "side": scale_label(float(scale)), "class": name, "images": int(len(group))}
            for score, column in SCORES.items():
                values = group[column].dropna().astype(float) if column in group else pd.Series([], dtype=float)
                row[score] = round(float(values.mean()), 4) if len(values) else None
            rows.append(row)
    return pd.DataFrame(rows)


def plot_robustness(table: pd.DataFrame, out_png: Path, title: str = "Context robustness") -> Path:
    """``robustness.png``: accuracy (left) and pointing game with its centre baseline (right) per scale."""
    from catdog.plots import plain_text, plt

    overall = table[table["class"] == "all"]
    sides = overall["side"].tolist()
    position = {side: i for i, side in enumerate(sides)}  # "1", "1/2"...: categories in the table's order
    with plain_text():
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
        for name, group in table.groupby("class", sort=False):
            style = {"linewidth": 2.5, "color": "black"} if name == "all" else {"linewidth": 1.2, "alpha": 0.8}
            accuracy = group["accuracy"].astype(float)
            left.plot(group["side"].map(position), accuracy, marker="o", label=str(name), **style)
        xs = list(range(len(sides)))
        pointing, centre = overall["pointing_hit"].astype(float), overall["centre_hit"].astype(float)
        right.plot(xs, pointing, marker="o", color="black", label="map of the true class")
        right.plot(xs, centre, linestyle="--", color="grey", label="image centre (baseline)")
        for ax, heading in ((left, "accuracy"), (right, "pointing game (pasted box)")):
            ax.set(title=heading, xlabel="side of the pasted photo", ylim=(0, 1.02), xticks=xs, xticklabels=sides)
            ax.legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        out_png = Path(out_png)
        fig.savefig(out_png, dpi=110)
        plt.close(fig)
    return out_png
