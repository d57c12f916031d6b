"""Maps of the images the triage tables point at: for a suspected label error, the photo beside the map of
its given class and the map of the suggested class ("why cat, and why dog?"); for a slice's worst mistakes,
the map of the predicted and the labelled class.

Drawn with the explain machinery (the run's explainer, :func:`catdog.maps.cam.upsample_cams`,
:func:`catdog.overlay.heatmap_overlay`), for at most ``triage.maps`` label issues plus each slice's worst
mistakes, written to ``pictures/`` as they are drawn (memory does not grow with the dataset).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from catdog.data import BadImageError, build_transform, load_rgb
from catdog.explain.engine import bounded_copy
from catdog.maps.cam import display_maps, upsample_cams
from catdog.models import ClassifierModule
from catdog.overlay import heatmap_overlay, safe_name, save_image, side_by_side

__all__ = ["draw_pictures"]

PICTURE_SIDE = 384  # longest side of each panel


def _jobs(table: pd.DataFrame, issues: pd.DataFrame, slices: pd.DataFrame, settings: Any) -> list[tuple[str, str, str]]:
    """(path, first class, second class) per picture: label issues first, then slices' worst mistakes."""
    jobs = [(row.path, row.given, row.suggested) for row in issues.head(settings.maps).itertuples()]
    by_key = table.set_index("key")
    for keys in slices.loc[slices["below_average"].astype(bool), "worst_mistakes"] if len(slices) else []:
        for key in [k for k in str(keys).split(";") if k]:
            row = by_key.loc[key]
            jobs.append((row["path"], row["label"], row["pred"]))
    seen, unique = set(), []
    for job in jobs:
        if job[0] not in seen:
            seen.add(job[0])
            unique.append(job)
    return unique


def _picture_name(path: str) -> str:
    digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"pictures/{safe_name(Path(path).stem)}-{digest}.jpg"


def draw_pictures(model: ClassifierModule, table: pd.DataFrame, issues: pd.DataFrame, slices: pd.DataFrame, out_dir: Path, settings: Any) -> dict[str, str]:
    """Draw the pictures; returns image path -> picture file relative to ``out_dir``."""
    from catdog.explain.pipeline import build_explainer

    jobs = _jobs(table, issues, slices, settings)
    if not jobs:
        return {}
    hp = model.hparams
    class_names = list(hp.class_names)
    explainer = build_explainer(model)
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    written: dict[str, str] = {}
    for path, first, second in jobs:
        try:
            rgb = load_rgb(path)
        except BadImageError:
            continue
        x = transform(rgb)[None].contiguous(memory_format=torch.channels_last)
        wanted = [class_names.index(c) for c in (first, second) if c in class_names]
        out = explainer.explain(x, None, topk=len(class_names))
        idx = out.class_idx[0].tolist()
        probs = out.logits.float().softmax(dim=1)[0]
        small = bounded_copy(rgb, PICTURE_SIDE)
        panels, titles = [small], ["photo"]
        for cls in wanted:
            raw = out.maps[0, idx.index(cls)][None]
            shown = display_maps(upsample_cams(raw, small.shape[:2]))[0].numpy()
            panels.append(heatmap_overlay(small, shown, 0.5))
            titles.append(f"{class_names[cls]} map ({100 * float(probs[cls]):.0f}%)")
        rel = _picture_name(path)
        save_image(out_dir / rel, side_by_side(panels, titles), quality=88)
        written[path] = rel
    return written
