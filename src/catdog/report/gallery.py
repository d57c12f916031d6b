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

from catdog.report.assets import overlay_file, publish, thumbnail, url_of
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


def _pictures(out: Path, exp: Experiment, e: int, rel: str | None, jobs: list[tuple[Path, Path]]) -> dict[str, Any]:
    """The URLs of one image's pictures in the report: ``full`` (the overlay file), and ``photo`` + ``heat``
    (the text-free layers explain writes in thumbs/ and thumbs/heat/) or, for older explain folders, ``thumb``
    (their thumbnail, or one decoded here from the overlay: added to ``jobs``).

    Only files inside the explain folder (predictions.csv is user-editable, see :func:`overlay_file`).
    """
    urls: dict[str, Any] = {"full": None, "photo": None, "heat": None, "thumb": None}
    overlay = overlay_file(exp.explain_dir, rel)
    if overlay is None:
        return urls
    base = exp.explain_dir.resolve()
    clean = overlay.relative_to(base).as_posix()
    urls["full"] = publish(out, overlay, base, e)
    photo = overlay_file(exp.explain_dir, f"thumbs/{clean}")
    heat = overlay_file(exp.explain_dir, f"thumbs/heat/{clean}") if photo is not None else None
    if photo is not None and heat is not None:
        urls["photo"], urls["heat"] = publish(out, photo, base, e), publish(out, heat, base, e)
    elif photo is not None:
        urls["thumb"] = publish(out, photo, base, e)
    else:
        target = out / "thumbs" / f"{e}_{len(jobs)}.jpg"
        jobs.append((overlay, target))
        urls["thumb"] = url_of(out, target)
    return urls


def _run(row: dict[str, Any], exp: Experiment, has_box: bool, pictures: dict[str, Any]) -> dict[str, Any]:
    """One experiment's record of one image: prediction, confidence, outcome, per-image metrics, pictures."""
    probs = sorted(
        ((name, float(row.get(f"p_{name}", math.nan))) for name in exp.class_names),
        key=lambda item: -item[1] if math.isfinite(item[1]) else 0.0,
    )
    return {
        "pred": row["pred"],
        "conf": float(row.get(f"p_{row['pred']}", math.nan)),
        "ptrue": float(row.get(f"p_{row['true']}", math.nan)) if pd.notna(row.get("true")) else None,
        "loss": float(row["loss"]) if pd.notna(row.get("loss")) else None,
        "correct": row["correct"],
        "in_box": row.get("in_box") if has_box else None,
        **{key: (float(row[key]) if pd.notna(row[key]) else None) for key in PER_IMAGE_METRICS if key in row},
        "top": probs[:TOP_PROBABILITIES],
        **pictures,
    }


def gallery_data(
    out: Path, experiments: Sequence[Experiment], paths: list[str], per_image: pd.DataFrame | None
) -> list[str]:
    """The per-image records the gallery JavaScript renders, each as its :func:`script_json` text.

    Text per record, not dicts: at 20,000 images the records as Python objects (and a NaN-free copy
    for json) were the largest memory of the whole explain process.

    Pictures come from the explain folder (its overlays and the layers explain wrote from each image in
    memory); only overlays without them (older explain folders) are decoded again to make a thumbnail here.
    """
    labels = [exp.label for exp in experiments]
    # One dict per experiment, path -> row: a plain lookup per image instead of a DataFrame .loc.
    tables = [_lookup(exp.predictions) for exp in experiments]
    has_box = ["in_box" in exp.predictions.columns for exp in experiments]
    extra = {}
    if per_image is not None:
        extra = per_image.drop_duplicates("path").set_index("path", drop=False).to_dict("index")
    jobs: list[tuple[Path, Path]] = []
    records: list[str] = []
    for path in paths:
        runs = []
        for e, (exp, table) in enumerate(zip(experiments, tables)):
            row = table[path]
            rel = str(row["overlay"]) if pd.notna(row.get("overlay")) else None
            runs.append(_run(row, exp, has_box[e], _pictures(out, exp, e, rel, jobs)))
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
            _add_pairs(record, extra[path], labels)
        records.append(script_json(record))
    with ThreadPoolExecutor(max_workers=2) as pool:  # OpenCV releases the GIL
        list(pool.map(lambda job: thumbnail(*job), jobs))
    return records


def _add_pairs(record: dict[str, Any], row: dict[str, Any], labels: list[str]) -> None:
    """compare's per-image columns: flipped, CAM disagreement, and each pair's map similarity."""
    record["flipped"] = bool(row.get("flipped", False))
    record["disagreement"] = float(row["cam_disagreement"]) if pd.notna(row.get("cam_disagreement")) else None
    for a in range(len(labels)):
        for b in range(a + 1, len(labels)):
            rho = row.get(pair_column("spearman", labels[a], labels[b]))
            iou = row.get(pair_column("iou_top20", labels[a], labels[b]))
            if rho is not None:
                record["sims"].append([a, b, rho, iou])
