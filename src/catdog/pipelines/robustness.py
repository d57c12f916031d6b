"""The context-robustness check of a checkpoint, as a folder (``scripts/robustness.py``, conf/robustness.yaml).

Robustness folder (a new one per run, by default ``<run folder>/robustness/<timestamp>``, staged)::

    robustness.csv    per scale (and per true class): images, accuracy, pointing game, centre baseline, energy
    scenes.csv        one row per photo and scale: the pasted box, the prediction, the pointing-game columns
    robustness.png    accuracy and pointing game per scale
    examples.jpg      a few scenes at each scale, the pasted box drawn
    skipped.csv       photos that could not be read
    summary.json      settings, backgrounds, precision, the table, checkpoint
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from catdog.data import build_transform, load_rgb
from catdog.data.paste import Backgrounds
from catdog.data.selection import sample_across_classes, select_images
from catdog.explain.engine import bounded_copy, resolve_precision
from catdog.explain.methods import explainer_for, map_centres
from catdog.models import ClassifierModule, load_classifier
from catdog.runs import resolve_checkpoint, run_dir_of, staged_output_dir, timestamped_dir
from catdog.triage.robustness import RobustnessSettings, make_scene, plot_robustness, robustness_check

__all__ = ["robustness", "run_robustness"]


def robustness(cfg: DictConfig) -> dict[str, Any]:
    """Runs the check on the checkpoint of ``ckpt=`` and writes the robustness folder; prints the table.

    Returns:
        summary.json's content plus ``out_dir``.

    Raises:
        CatdogError: bad checkpoint, images, backgrounds or settings.
    """
    checkpoint = resolve_checkpoint(cfg.ckpt, cfg.runs_dir)
    model = load_classifier(checkpoint)
    run_dir = run_dir_of(checkpoint)
    hp = model.hparams
    images = select_images(cfg.data.root, str(cfg.data.split), list(hp.class_names), dict(hp.data or {}), run_dir)
    if cfg.data.max_images:
        images = sample_across_classes(images, int(cfg.data.max_images))
    final_dir = Path(cfg.out_dir).expanduser() if cfg.out_dir else timestamped_dir(run_dir / "robustness")
    with staged_output_dir(final_dir, overwrite=bool(cfg.overwrite)) as out_dir:
        summary = run_robustness(model, images, cfg, out_dir)
        summary["checkpoint"] = str(checkpoint.resolve())
        summary["source"] = str(cfg.data.root) if cfg.data.root else f"{run_dir}/split.csv [{cfg.data.split}]"
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"context robustness of {len(images)} photos -> {final_dir}")
    for line in table_lines(pd.DataFrame(summary["table"])):
        print("  " + line)
    return dict(summary, out_dir=str(final_dir))


def run_robustness(model: ClassifierModule, images: pd.DataFrame, cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """The check into ``out_dir`` (existing): csv files, figures; returns the summary (triage calls it too).

    ``cfg`` needs ``context.*``, ``precision`` and ``data.batch_size``/``data.num_workers``.
    """
    hp = model.hparams
    context = cfg.context
    settings = RobustnessSettings(
        scales=tuple(float(s) for s in context.scales),
        seed=int(context.seed),
        tolerance=float(context.pointing_tolerance),
        batch_size=int(cfg.data.batch_size),
    ).check()
    backgrounds = Backgrounds.from_folder(context.backgrounds, "context.backgrounds")
    explainer = explainer_for(model)
    size = (int(hp.image_size), int(hp.image_size))
    centres = map_centres(model, explainer, size, str(context.align))
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    # On the CPU (a few hundred photos x 4 scales: a minute or two); bf16 where the CPU runs it natively.
    _, precision = resolve_precision(str(cfg.precision), "cpu")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision["used"] == "bf16" else contextlib.nullcontext()
    with autocast:
        scenes, table, skipped = robustness_check(
            explainer,
            transform,
            images,
            list(hp.class_names),
            centres,
            backgrounds,
            settings,
            int(cfg.data.num_workers),
        )
    table.to_csv(out_dir / "robustness.csv", index=False)
    scenes.to_csv(out_dir / "scenes.csv", index=False)
    skipped.to_csv(out_dir / "skipped.csv", index=False)
    plot_robustness(table, out_dir / "robustness.png")
    write_examples(scenes, backgrounds, settings, out_dir / "examples.jpg", max(size))
    return {
        "context": OmegaConf.to_container(context, resolve=True),
        "backgrounds": str(context.backgrounds) if context.backgrounds else "generated (noise, gradients, clutter)",
        "backgrounds_skipped": [{"path": p, "reason": r} for p, r in backgrounds.skipped],
        "precision": precision,
        "align": str(context.align),
        "pointing_tolerance": settings.tolerance,
        "photos": int(scenes["path"].nunique()) if len(scenes) else 0,
        "skipped": int(len(skipped)),
        "table": table.astype(object).where(table.notna(), None).to_dict(orient="records"),
    }


def table_lines(table: pd.DataFrame) -> list[str]:
    """The overall row of each scale as a printed line."""

    def pct(value: Any) -> str:
        return "  n/a" if value is None or pd.isna(value) else f"{value:5.1%}"

    lines = []
    for _, row in table[table["class"] == "all"].iterrows():
        lines.append(
            f"side {row['side']:>4}: accuracy {pct(row['accuracy'])}, pointing game {pct(row['pointing_hit'])} "
            f"(centre {pct(row['centre_hit'])}), energy on the photo {pct(row['energy_in_box'])}  "
            f"[{row['images']} photos]"
        )
    return lines


def write_examples(
    scenes: pd.DataFrame, backgrounds: Backgrounds, settings: RobustnessSettings, out: Path, side: int, count: int = 4
) -> Path | None:
    """``examples.jpg``: the first ``count`` photos (rows) at every scale (columns), box green if right, red if wrong.

    The scenes are rebuilt from the same per-photo seeds as the check, so they are the scenes it scored.
    """
    if scenes.empty:
        return None
    tiles = []
    for number in list(dict.fromkeys(scenes["photo"]))[:count]:
        rows = scenes[scenes["photo"] == number]
        photo = bounded_copy(load_rgb(rows["path"].iloc[0]), 2 * side)
        row_tiles = []
        for j, scale in enumerate(settings.scales):
            scene, box = make_scene(photo, backgrounds, scale, np.random.default_rng([settings.seed, int(number), j]))
            scored = rows[rows["scale"] == scale].iloc[0]
            picture = np.ascontiguousarray(scene).copy()
            colour = (0, 200, 0) if scored["correct"] else (230, 0, 0)
            cv2.rectangle(picture, box[:2], box[2:], colour, max(1, picture.shape[0] // 100))
            row_tiles.append(cv2.resize(picture, (side, side), interpolation=cv2.INTER_AREA))
        tiles.append(np.concatenate(row_tiles, axis=1))
    grid = np.concatenate(tiles, axis=0)
    cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return out
