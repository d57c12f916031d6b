"""The gallery's data: one JSON record per image, rendered in the page by report.js."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from catdog.report.assets import folder_linker, overlay_file, thumbnail, url_of
from catdog.report.experiments import Experiment
from catdog.report.tables import PER_IMAGE_METRICS, pair_column

# Probabilities listed per experiment in the per-image view (all of them would bloat the page for
# datasets with many classes).
TOP_PROBABILITIES = 3


def script_json(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``</script>``, no ``<!--``.

    Args:
        data: JSON-serialisable data (NaN becomes null).

    Returns:
        JSON text with ``<``, ``>``, ``&`` and the JavaScript line separators escaped.
    """
    text = json.dumps(_nan_to_none(data), ensure_ascii=False, allow_nan=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    if isinstance(value, np.generic):
        return _nan_to_none(value.item())
    return value


_GALLERY_COLUMNS = {"path", "true", "pred", "loss", "correct", "in_box", "overlay", *PER_IMAGE_METRICS}


def _lookup(predictions: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """path -> the row's gallery columns (the probabilities and the columns above), for a plain lookup."""
    columns = [c for c in predictions.columns if c in _GALLERY_COLUMNS or c.startswith("p_")]
    return predictions[columns].drop_duplicates("path").set_index("path", drop=False).to_dict("index")


def gallery_data(
    out: Path, experiments: Sequence[Experiment], paths: list[str], per_image: pd.DataFrame | None
) -> list[str]:
    """The per-image records the gallery JavaScript renders, each as its :func:`script_json` text.

    Text per record, not dicts: at 20,000 images the records as Python objects (and a NaN-free copy
    for json) were the largest memory of the whole explain process.

    Thumbnails come from the explain folder's ``thumbs/`` (written by explain from each overlay in memory);
    only overlays without one (older explain folders) are decoded again to make a thumbnail here.
    """
    labels = [exp.label for exp in experiments]
    # One dict per experiment, path -> row: a plain lookup per image instead of a DataFrame .loc.
    tables = [_lookup(exp.predictions) for exp in experiments]
    has_box = ["in_box" in exp.predictions.columns for exp in experiments]
    extra = per_image.drop_duplicates("path").set_index("path", drop=False).to_dict("index") if per_image is not None else {}
    jobs: list[tuple[Path, Path]] = []
    records: list[str] = []
    linkers = [folder_linker(out, exp.explain_dir) for exp in experiments]
    for i, path in enumerate(paths):
        runs = []
        for e, (exp, table) in enumerate(zip(experiments, tables)):
            row = table[path]
            probs = sorted(
                ((name, float(row.get(f"p_{name}", math.nan))) for name in exp.class_names),
                key=lambda item: -item[1] if math.isfinite(item[1]) else 0.0,
            )
            rel = str(row["overlay"]) if pd.notna(row.get("overlay")) else None
            # Only a file inside the explain folder: predictions.csv is user-editable (see overlay_file).
            exists = overlay_file(exp.explain_dir, rel) is not None
            thumb_url = None
            if exists:
                made = exp.explain_dir / "thumbs" / rel
                if made.is_file():
                    thumb_url = linkers[e](f"thumbs/{rel}", f"thumb_{e}_{i}.jpg")
                else:
                    thumb = out / "thumbs" / f"{e}_{i}.jpg"
                    jobs.append((exp.explain_dir / rel, thumb))
                    thumb_url = url_of(out, thumb)
            runs.append(
                {
                    "pred": row["pred"],
                    "conf": float(row.get(f"p_{row['pred']}", math.nan)),
                    "loss": float(row["loss"]) if pd.notna(row.get("loss")) else None,
                    "correct": row["correct"],
                    "in_box": row.get("in_box") if has_box[e] else None,
                    **{
                        key: (float(row[key]) if pd.notna(row[key]) else None)
                        for key in PER_IMAGE_METRICS
                        if key in row
                    },
                    "top": probs[:TOP_PROBABILITIES],
                    "full": linkers[e](rel, f"{e}_{i}.jpg") if exists else None,
                    "thumb": thumb_url,
                }
            )
        true = tables[0][path]["true"]
        record: dict[str, Any] = {
            "path": path,
            "name": Path(path).name,
            "true": true if pd.notna(true) else None,
            "runs": runs,
            "flipped": False,
            "disagreement": None,
            "sims": [],
        }
        if path in extra:
            row = extra[path]
            record["flipped"] = bool(row.get("flipped", False))
            record["disagreement"] = float(row["cam_disagreement"]) if pd.notna(row.get("cam_disagreement")) else None
            for a in range(len(labels)):
                for b in range(a + 1, len(labels)):
                    rho = row.get(pair_column("spearman", labels[a], labels[b]))
                    iou = row.get(pair_column("iou_top20", labels[a], labels[b]))
                    if rho is not None:
                        record["sims"].append([a, b, rho, iou])
        records.append(script_json(record))
    with ThreadPoolExecutor(max_workers=2) as pool:  # OpenCV releases the GIL
        list(pool.map(lambda job: thumbnail(*job), jobs))
    return records
