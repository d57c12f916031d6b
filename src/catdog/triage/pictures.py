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


def _jobs(
    table: pd.DataFrame, issues: pd.DataFrame, slices: pd.DataFrame, extra: list[str], settings: Any
) -> list[tuple[str, list[str]]]:
    """(path, classes to map) per picture: label issues (given, suggested), slices' worst mistakes (label,
    prediction), then ``extra`` images (outliers, duplicate pairs: their prediction)."""
    jobs = [(row.path, [row.given, row.suggested]) for row in issues.head(settings.maps).itertuples()]
    by_key, by_path = table.set_index("key"), table.set_index("path")
    for keys in slices.loc[slices["below_average"].astype(bool), "worst_mistakes"] if len(slices) else []:
        for key in [k for k in str(keys).split(";") if k]:
            row = by_key.loc[key]
            jobs.append((row["path"], [row["label"], row["pred"]]))
    jobs += [(path, [by_path.loc[path, "pred"]]) for path in extra if path in by_path.index]
    seen, unique = set(), []
    for path, classes in jobs:
        if path not in seen:
            seen.add(path)
            unique.append((path, [c for c in classes if isinstance(c, str)]))
    return unique


def _picture_name(path: str) -> str:
    digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"pictures/{safe_name(Path(path).stem)}-{digest}.jpg"


def draw_pictures(
    model: ClassifierModule, table: pd.DataFrame, found: dict[str, pd.DataFrame], out_dir: Path, settings: Any
) -> dict[str, str]:
    """Draw the pictures of ``found`` (label_issues, slices, outliers, duplicates); image path -> picture file."""
    from catdog.explain.methods import explainer_for

    pairs = found["duplicates"].head(settings.maps // 4)
    extra = [*found["outliers"]["path"].head(settings.maps // 4), *pairs["path_a"], *pairs["path_b"]]
    jobs = _jobs(table, found["label_issues"], found["slices"], extra, settings)
    if not jobs:
        return {}
    hp = model.hparams
    class_names = list(hp.class_names)
    explainer = explainer_for(model)
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    written: dict[str, str] = {}
    for path, classes in jobs:
        try:
            rgb = load_rgb(path)
        except BadImageError:
            continue
        x = transform(rgb)[None].contiguous(memory_format=torch.channels_last)
        wanted = [class_names.index(c) for c in classes if c in class_names]
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
