"""A browsable HTML report of one or several explain folders: ``report/index.html`` plus its pictures.

The folder is self-contained: one HTML file with inline CSS and JavaScript (no CDN, no server, no
network) and the pictures it shows, either copied into ``assets/`` or, for files that live in the
folder's parent (an explain folder's own overlays), referenced relatively. Open it from disk or serve
it statically.

Layout: a summary at the top (one row per experiment, pairwise agreement when there are several,
confusion matrices and training curves), then a gallery of every image with filters and sorting, and a
per-image view with all experiments side by side at full size.

Safety: every user-supplied string (file names, class names, labels) is HTML-escaped in the static
part; the gallery data is embedded as JSON that cannot close its ``<script>`` element, and the
JavaScript only ever writes it with ``textContent``, so a file named ``<img src=x onerror=...>.jpg``
shows as text.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np
import pandas as pd

from catdog.errors import CatdogError
from catdog.overlay import save_image
from catdog.plots import confusion_counts, plot_confusion_matrix
from catdog.readers import read_csv, read_json
from catdog.runs import run_dir_of_explain

__all__ = [
    "Experiment",
    "experiment_table",
    "overlay_file",
    "pair_column",
    "read_explain_dir",
    "read_predictions",
    "restrict_to_paths",
    "write_report",
]

THUMB_SIZE = 220  # longest side of a gallery thumbnail, in pixels
# Probabilities listed per experiment in the per-image view (all of them would bloat the page for
# datasets with many classes).
TOP_PROBABILITIES = 3


@dataclass
class Experiment:
    """One explain folder as the report and compare see it.

    Attributes:
        label: short unique name shown everywhere (e.g. ``lr=3e-4``).
        explain_dir: the explain folder.
        predictions: its predictions.csv (possibly restricted to the images being compared).
        summary: its summary.json.
        class_names: class names in index order.
        run_dir: the run folder it came from, when known (for curves.png).
    """

    label: str
    explain_dir: Path
    predictions: pd.DataFrame
    summary: dict[str, Any]
    class_names: list[str]
    run_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_explain_dir(explain_dir: str | Path, label: str | None = None) -> Experiment:
    """Read an explain folder (predictions.csv and summary.json).

    Args:
        explain_dir: a folder written by ``scripts/explain.py``.
        label: the name to show; default: the run folder's name (or the explain folder's).

    Returns:
        The experiment, its predictions with ``correct`` as True/False/None.

    Raises:
        CatdogError: the folder lacks predictions.csv or summary.json.
    """
    folder = Path(explain_dir).expanduser()
    missing = [name for name in ("predictions.csv", "summary.json") if not (folder / name).is_file()]
    if missing:
        raise CatdogError(
            f"{folder} is not an explain folder (no {' or '.join(missing)}): run scripts/explain.py first, "
            "or pass the run folder"
        )
    fix = "run scripts/explain.py again for this folder"
    summary = read_json(folder / "summary.json", what="summary", fix=fix)
    predictions = read_predictions(folder / "predictions.csv", fix=fix)
    run_dir = run_dir_of_explain(folder, summary)
    name = label or (run_dir.name if run_dir is not None else folder.name)
    class_names = list(summary.get("class_names") or [c[2:] for c in predictions.columns if c.startswith("p_")])
    return Experiment(name, folder, predictions, summary, class_names, run_dir)


PREDICTION_TEXT = ("path", "pred", "overlay", "topk", "topk_p")
# Columns holding class names (e.g. a per-method prediction) are text even when a class is called "0".
PREDICTION_TEXT_PREFIXES = ("pred", "true_", "label", "topk")
PREDICTION_BOOLEANS = ("correct", "in_box", "pointing_hit", "centre_in_box", "centre_hit", "increase")


def read_predictions(path: str | Path, fix: str = "run scripts/explain.py again") -> pd.DataFrame:
    """An explain folder's predictions.csv: class names as text, ``true`` None when unlabelled.

    Raises:
        CatdogError: unreadable, lacks path/pred/overlay, or a number/boolean column holds another value.
    """
    frame = read_csv(
        path,
        required=("path", "pred", "overlay"),
        text=PREDICTION_TEXT,
        text_prefixes=PREDICTION_TEXT_PREFIXES,
        optional_text=("true",),
        booleans=PREDICTION_BOOLEANS,
        what="predictions",
        fix=fix,
    )
    if "true" not in frame.columns:
        frame["true"] = None
    if "correct" not in frame.columns:
        frame["correct"] = None
    return frame


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------
def confidence(predictions: pd.DataFrame) -> np.ndarray:
    """Probability of the predicted class of each row."""
    if predictions.empty:
        return np.zeros(0)
    result = np.full(len(predictions), np.nan)
    pred = predictions["pred"].to_numpy()
    for name in pd.unique(pred):  # one vectorised pick per class, not one pandas row per image
        column = f"p_{name}"
        if column in predictions.columns:
            mask = pred == name
            result[mask] = predictions[column].to_numpy(dtype=float)[mask]
    return result


# Per-image map-quality columns of predictions.csv (catdog.quality.localization) shown in the image view and sortable.
PER_IMAGE_METRICS = ("energy_in_box", "deletion_auc", "insertion_auc", "drop", "sanity_rank_corr")
# Experiment-table columns from catdog.quality.localization and how the summary table heads them.
MAP_QUALITY_HEADS = {
    "pointing_strict": "Pointing strict",
    "centre_baseline": "Centre baseline",
    "energy_in_box": "Energy on object",
    "mosaic_peak": "Mosaic peak on own tiles",
    "deletion_auc": "Deletion AUC",
    "insertion_auc": "Insertion AUC",
    "drop": "Average drop",
    "sanity_rank_corr": "Sanity rank corr.",
}


def map_quality_columns(frame: pd.DataFrame, summary: dict[str, Any]) -> dict[str, float]:
    """An experiment's localization and faithfulness totals (NaN where not measured).

    Args:
        frame: its predictions (the images compared).
        summary: its summary.json (for the mosaic check, which has no per-image rows).
    """

    def mean(column: str) -> float:
        if column not in frame.columns:
            return math.nan
        values = pd.to_numeric(frame[column].map(lambda v: float(v) if v is not None else math.nan), errors="coerce")
        return float(values.mean()) if values.notna().any() else math.nan

    mosaic = summary.get("mosaic") or {}
    return {
        "pointing_strict": mean("in_box"),
        "centre_baseline": mean("centre_in_box"),
        "energy_in_box": mean("energy_in_box"),
        "mosaic_peak": float(mosaic["peak_on_own_tile"]) if mosaic.get("peak_on_own_tile") is not None else math.nan,
        "deletion_auc": mean("deletion_auc"),
        "insertion_auc": mean("insertion_auc"),
        "drop": mean("drop"),
        "sanity_rank_corr": mean("sanity_rank_corr"),
    }


def experiment_table(experiments: Sequence[Experiment]) -> pd.DataFrame:
    """One row per experiment: accuracy, per-class recall, mean confidence, pointing game, provenance.

    Computed on each experiment's ``predictions`` as given (compare passes the common images only).

    Args:
        experiments: the experiments.

    Returns:
        Columns experiment, images, labelled, accuracy, recall_<class>..., mean_confidence,
        pointing_game (NaN without boxes), arch, checkpoint, checkpoint_sha256, train_config, explain_dir.
    """
    rows = []
    for exp in experiments:
        frame = exp.predictions
        labelled = frame[frame["correct"].notna()] if len(frame) else frame
        row: dict[str, Any] = {
            "experiment": exp.label,
            "images": len(frame),
            "labelled": len(labelled),
            "accuracy": float(labelled["correct"].astype(bool).mean()) if len(labelled) else math.nan,
        }
        for name in exp.class_names:
            of_class = labelled[labelled["true"] == name]
            row[f"recall_{name}"] = float((of_class["pred"] == name).mean()) if len(of_class) else math.nan
        row["mean_confidence"] = float(confidence(frame).mean()) if len(frame) else math.nan
        # explain's pointing_hit (with the pointing-game tolerance) when present; strict in_box otherwise
        column = "pointing_hit" if "pointing_hit" in frame.columns else "in_box"
        hits = frame[column].dropna() if column in frame.columns else pd.Series(dtype=object)
        row["pointing_game"] = float(hits.astype(bool).mean()) if len(hits) else math.nan
        row.update(map_quality_columns(frame, exp.summary))
        checkpoint = exp.summary.get("checkpoint") or {}
        config = exp.summary.get("train_config") or {}
        row.update(
            arch=exp.summary.get("arch"),
            checkpoint=checkpoint.get("path"),
            checkpoint_sha256=checkpoint.get("sha256"),
            train_config=config.get("path"),
            explain_dir=str(exp.explain_dir),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def pair_column(metric: str, a: str, b: str) -> str:
    """Name of a per-image column holding a pairwise metric, e.g. ``spearman [A | B]``."""
    return f"{metric} [{a} | {b}]"


# ---------------------------------------------------------------------------------------------
# The report folder
# ---------------------------------------------------------------------------------------------
def write_report(
    out_dir: str | Path,
    experiments: Sequence[Experiment],
    *,
    pairs: pd.DataFrame | None = None,
    per_image: pd.DataFrame | None = None,
    pictures: Sequence[tuple[str, Path, str]] = (),
    title: str | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and its pictures for one or several experiments.

    With one experiment (an explain folder) call ``write_report(explain_dir / "report",
    [read_explain_dir(explain_dir)])``.

    Args:
        out_dir: the report folder (created; files of an earlier report there are replaced).
        experiments: experiments whose predictions cover the same images (matched by path; images
            missing from any of them are left out). Labels must be unique.
        pairs: compare's pairwise table (columns a, b, and the counts and similarity statistics).
        per_image: compare's per-image table (path, flipped, cam_disagreement and pairwise columns
            named by :func:`pair_column`).
        pictures: extra pictures as (title, PNG path, one-line explanation), e.g. compare's grids.
        title: page title; default from the labels.

    Returns:
        The path of index.html.

    Raises:
        CatdogError: no experiments, duplicate labels, or no image common to all experiments.
    """
    if not experiments:
        raise CatdogError("The report needs at least one explain folder")
    labels = [exp.label for exp in experiments]
    if len(set(labels)) != len(labels):
        raise CatdogError(f"Experiment labels must be unique, got {labels}: give each experiment its own label")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("assets", "thumbs"):
        shutil.rmtree(out / stale, ignore_errors=True)
    (out / "assets").mkdir()
    (out / "thumbs").mkdir()

    paths = _common_paths(experiments)
    if not paths:
        raise CatdogError("The experiments share no image (matched by path): explain them on the same images")
    table = experiment_table([_restricted(exp, paths) for exp in experiments])
    images = _gallery_data(out, experiments, paths, per_image)
    summary_pictures = _summary_pictures(out, experiments, paths)
    extra = [
        (name, _asset(out, path, f"picture_{i}{path.suffix}"), note)
        for i, (name, path, note) in enumerate(pictures)
        if Path(path).is_file()
    ]

    page_title = title or (
        "catdog report: " + " vs ".join(labels) if len(labels) > 1 else f"catdog report: {labels[0]}"
    )
    head = {
        "experiments": labels,
        "classes": experiments[0].class_names,
        "pairs": [] if pairs is None else [[labels.index(a), labels.index(b)] for a, b in zip(pairs["a"], pairs["b"])],
    }
    # The images arrive as one JSON text each (see _gallery_data): spliced in as the last key.
    data = script_json(head)[:-1] + ',"images":[' + ",".join(images) + "]}"
    del images
    assets = files("catdog") / "report_assets"
    # page.html is a str.format template: its literal braces are doubled; every value is escaped or JSON.
    page = assets.joinpath("page.html").read_text(encoding="utf-8").format(
        title=_esc(page_title),
        css=assets.joinpath("report.css").read_text(encoding="utf-8"),
        js=assets.joinpath("report.js").read_text(encoding="utf-8"),
        data=data,
        intro=_intro_html(experiments, len(paths)),
        summary=_summary_html(table, experiments),
        pairs=_pairs_html(pairs) if pairs is not None and len(pairs) else "",
        per_experiment=_per_experiment_html(experiments, summary_pictures),
        pictures=_pictures_html(extra),
        flipped_help=(
            "<li><b>Flipped</b>: at least one experiment is right and another wrong on this image.</li>"
            if len(experiments) > 1
            else ""
        ),
        generated=_esc(datetime.now().strftime("%Y-%m-%d %H:%M")),
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


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


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _common_paths(experiments: Sequence[Experiment]) -> list[str]:
    """Paths present in every experiment, in the first experiment's order."""
    shared = set(experiments[0].predictions["path"])
    for exp in experiments[1:]:
        shared &= set(exp.predictions["path"])
    return [path for path in experiments[0].predictions["path"] if path in shared]


def restrict_to_paths(predictions: pd.DataFrame, paths: Sequence[str]) -> pd.DataFrame:
    """The rows of ``paths`` in that order (one per path: the first when a path repeats).

    Args:
        predictions: a predictions table with a ``path`` column holding every one of ``paths``.
        paths: the images to keep.

    Returns:
        A new table with a fresh index.
    """
    return predictions.drop_duplicates("path").set_index("path").loc[list(paths)].reset_index()


def _restricted(exp: Experiment, paths: list[str]) -> Experiment:
    frame = restrict_to_paths(exp.predictions, paths)
    return Experiment(exp.label, exp.explain_dir, frame, exp.summary, exp.class_names, exp.run_dir)


def _url(out: Path, target: Path) -> str:
    """A relative, percent-encoded URL from the report folder to a file."""
    relative = os.path.relpath(Path(target).resolve(), Path(out).resolve())
    return "/".join(quote(part) for part in Path(relative).parts)


def _asset(out: Path, source: Path, name: str) -> str:
    """Reference a picture from the report: relatively if it lives beside the report folder, else a copy."""
    source = Path(source).resolve()
    if source.is_relative_to(out.parent.resolve()) and not source.is_relative_to(out.resolve()):
        return _url(out, source)
    target = out / "assets" / name
    shutil.copyfile(source, target)
    return _url(out, target)


def overlay_file(explain_dir: Path, relative: Any) -> Path | None:
    """The overlay file a predictions.csv row names, only if it lies inside the explain folder.

    predictions.csv is user-editable: an absolute path, ``..`` or a symlink leading out of the folder must
    never make the report copy (and so publish) another file.

    Returns:
        The resolved file, or None when the cell is empty, escapes the folder, or is not a file.
    """
    if relative is None or (isinstance(relative, float) and math.isnan(relative)) or str(relative) == "":
        return None
    base = Path(explain_dir).resolve()
    candidate = (base / str(relative)).resolve()
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


def _thumbnail(source: Path, target: Path) -> bool:
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        return False
    height, width = image.shape[:2]
    scale = min(1.0, THUMB_SIZE / max(height, width))
    small = cv2.resize(
        image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
    )
    save_image(target, cv2.cvtColor(small, cv2.COLOR_BGR2RGB), quality=85)
    return True


def _folder_linker(out: Path, folder: Path) -> Callable[[str, str], str]:
    """``link(rel, name)``: the URL of ``folder/rel`` from the report, as :func:`_asset` makes it.

    Paths are resolved once per folder, not once per file (20,000 images: seconds saved).
    """
    base, out_resolved = Path(folder).resolve(), Path(out).resolve()
    if base.is_relative_to(out_resolved.parent) and not base.is_relative_to(out_resolved):
        prefix = [quote(part) for part in Path(os.path.relpath(base, out_resolved)).parts]
        return lambda rel, name: "/".join(prefix + [quote(part) for part in rel.split("/")])
    return lambda rel, name: _asset(out, base / rel, name)


_GALLERY_COLUMNS = {"path", "true", "pred", "loss", "correct", "in_box", "overlay", *PER_IMAGE_METRICS}


def _lookup(predictions: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """path -> the row's gallery columns (the probabilities and the columns above), for a plain lookup."""
    columns = [c for c in predictions.columns if c in _GALLERY_COLUMNS or c.startswith("p_")]
    return predictions[columns].drop_duplicates("path").set_index("path", drop=False).to_dict("index")


def _gallery_data(
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
    linkers = [_folder_linker(out, exp.explain_dir) for exp in experiments]
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
                    thumb_url = _url(out, thumb)
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
        list(pool.map(lambda job: _thumbnail(*job), jobs))
    return records


def _summary_pictures(out: Path, experiments: Sequence[Experiment], paths: list[str]) -> list[dict[str, str | None]]:
    """Per experiment: a confusion matrix of exactly the shown images, and the run's training curves."""
    result = []
    for e, exp in enumerate(experiments):
        frame = _restricted(exp, paths).predictions
        labelled = frame[frame["correct"].notna()]
        confusion = None
        if len(labelled):
            matrix = confusion_counts(labelled["true"].tolist(), labelled["pred"].tolist(), exp.class_names)
            accuracy = np.trace(matrix) / matrix.sum()
            target = out / "assets" / f"confusion_{e}.png"
            plot_confusion_matrix(matrix, exp.class_names, target, title=f"{exp.label}: accuracy {accuracy:.1%}")
            confusion = _url(out, target)
        # Only the run folder that holds this explain folder: a run_dir taken from summary.json (user-editable)
        # must not make the report copy a file from elsewhere.
        inside = exp.run_dir is not None and exp.explain_dir.resolve().is_relative_to(exp.run_dir.resolve())
        curves = exp.run_dir / "curves.png" if inside else None
        result.append(
            {
                "confusion": confusion,
                "curves": _asset(out, curves, f"curves_{e}.png") if curves is not None and curves.is_file() else None,
            }
        )
    return result


# ---------------------------------------------------------------------------------------------
# Static HTML (escaped here; the gallery is rendered by report.js from the JSON data)
# ---------------------------------------------------------------------------------------------
def _pct(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * float(value):.1f}%"


def _num(value: Any, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.{digits}f}"


def _short_hash(value: Any) -> str:
    return str(value)[:12] if value else "–"


def _intro_html(experiments: Sequence[Experiment], images: int) -> str:
    if len(experiments) == 1:
        what = (
            f"One trained model (<b>{_esc(experiments[0].label)}</b>) explained on {images} images. "
            "For every image the model's prediction is shown with a Class Activation Map (CAM): red areas are "
            "where the evidence for the predicted class came from, blue areas contributed least."
        )
    else:
        what = (
            f"{len(experiments)} trained models (experiments) compared on the same {images} images. "
            "Each experiment is named by what differs in its training settings. For every image each model's "
            "prediction is shown with its Class Activation Map (CAM): red areas are where the evidence for the "
            "predicted class came from, blue areas contributed least."
        )
    return f"<p class='lead'>{what}</p>"


def _summary_html(table: pd.DataFrame, experiments: Sequence[Experiment]) -> str:
    classes = experiments[0].class_names
    pointing = table["pointing_game"].notna().any()
    head = ["Experiment", "Images", "Accuracy", *[f"Recall {c}" for c in classes], "Mean confidence"]
    head += ["Pointing game"] if pointing else []
    quality = [key for key in MAP_QUALITY_HEADS if key in table.columns and table[key].notna().any()]
    head += [MAP_QUALITY_HEADS[key] for key in quality]
    head += ["Architecture", "Checkpoint", "Training config"]
    rows = []
    for row in table.to_dict("records"):
        cells = [
            f"<th scope='row'>{_esc(row['experiment'])}</th>",
            f"<td>{row['images']}</td>",
            f"<td>{_pct(row['accuracy'])}</td>",
        ]
        cells += [f"<td>{_pct(row[f'recall_{c}'])}</td>" for c in classes]
        cells.append(f"<td>{_pct(row['mean_confidence'])}</td>")
        if pointing:
            cells.append(f"<td>{_pct(row['pointing_game'])}</td>")
        for key in quality:
            value = row[key]
            text = _pct(value) if key in ("pointing_strict", "centre_baseline", "energy_in_box", "mosaic_peak") else (
                f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "–"
            )
            cells.append(f"<td>{_esc(text)}</td>")
        cells.append(f"<td>{_esc(row['arch'])}</td>")
        cells.append(
            f"<td class='path' title='{_esc(row['checkpoint'])}'>{_esc(_tail(row['checkpoint']))}"
            f"<br><small>sha256 {_esc(_short_hash(row['checkpoint_sha256']))}</small></td>"
        )
        cells.append(f"<td class='path' title='{_esc(row['train_config'])}'>{_esc(_tail(row['train_config']))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f"<th scope='col'>{_esc(h)}</th>" for h in head)
    help_items = [
        "<dt>Accuracy</dt><dd>share of labelled images whose predicted class is the true class.</dd>",
        "<dt>Recall <i>class</i></dt><dd>of the images that truly are this class, the share predicted as it.</dd>",
        "<dt>Mean confidence</dt><dd>average probability the model gave its own prediction (high confidence "
        "on wrong answers is a warning sign).</dd>",
    ]
    if pointing:
        help_items.append(
            "<dt>Pointing game</dt><dd>share of images whose CAM peak (its hottest point) falls inside the "
            "object's box from boxes.csv: does the model look at the object?</dd>"
        )
    return (
        f"<div class='scroll'><table class='numbers'><thead><tr>{header}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div><dl class='help'>{''.join(help_items)}</dl>"
    )


def _tail(path: Any, parts: int = 4) -> str:
    if not path:
        return "–"
    pieces = Path(str(path)).parts
    return ("…/" if len(pieces) > parts else "") + "/".join(pieces[-parts:])


def _pairs_html(pairs: pd.DataFrame) -> str:
    head = [
        "Experiment A",
        "Experiment B",
        "Images",
        "A right → B wrong",
        "A wrong → B right",
        "Same prediction",
        "CAM Spearman (mean; quartiles)",
        "CAM top-20% IoU (mean; quartiles)",
    ]
    rows = []
    for row in pairs.to_dict("records"):
        rows.append(
            "<tr>"
            f"<td>{_esc(row['a'])}</td><td>{_esc(row['b'])}</td><td>{row['images']}</td>"
            f"<td>{row['correct_to_incorrect']}</td><td>{row['incorrect_to_correct']}</td>"
            f"<td>{_pct(row['same_prediction'])}</td>"
            f"<td>{_num(row['spearman_mean'])} <small>({_num(row['spearman_q25'])} / {_num(row['spearman_median'])}"
            f" / {_num(row['spearman_q75'])})</small></td>"
            f"<td>{_num(row['iou_top20_mean'])} <small>({_num(row['iou_top20_q25'])} / "
            f"{_num(row['iou_top20_median'])} / {_num(row['iou_top20_q75'])})</small></td>"
            "</tr>"
        )
    header = "".join(f"<th scope='col'>{_esc(h)}</th>" for h in head)
    return (
        "<section><h2>How the experiments differ, pair by pair</h2>"
        f"<div class='scroll'><table class='numbers'><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></div><dl class='help'>"
        "<dt>A right → B wrong / A wrong → B right</dt><dd>images whose outcome flipped between the two "
        "experiments: what B broke and what B fixed compared with A.</dd>"
        "<dt>CAM Spearman</dt><dd>rank correlation of the two predicted-class maps of the same image, pixel by "
        "pixel: 1 = they rank the image regions the same way, 0 = unrelated, negative = opposite.</dd>"
        "<dt>CAM top-20% IoU</dt><dd>overlap (intersection over union) of the hottest 20% of each map: 1 = both "
        "look at exactly the same place, 0 = at different places.</dd>"
        "<dt>Quartiles</dt><dd>25% of the images are below the first number, half below the second (median), "
        "75% below the third.</dd></dl></section>"
    )


def _per_experiment_html(experiments: Sequence[Experiment], pictures: list[dict[str, str | None]]) -> str:
    cards = []
    for exp, pics in zip(experiments, pictures):
        inner = [f"<h3>{_esc(exp.label)}</h3>"]
        if pics["confusion"]:
            inner.append(
                f"<figure><img src='{_esc(pics['confusion'])}' alt='confusion matrix of {_esc(exp.label)}'>"
                "<figcaption>Confusion matrix: rows are the true classes, columns the predicted ones; the diagonal "
                "holds the correct predictions.</figcaption></figure>"
            )
        if pics["curves"]:
            inner.append(
                f"<figure><img src='{_esc(pics['curves'])}' alt='training curves of {_esc(exp.label)}'>"
                "<figcaption>Training curves: loss and accuracy per epoch on the training and validation images."
                "</figcaption></figure>"
            )
        if len(inner) == 1:
            inner.append("<p class='muted'>No labelled images and no training curves for this experiment.</p>")
        cards.append(f"<div class='card'>{''.join(inner)}</div>")
    return f"<div class='cards'>{''.join(cards)}</div>"


def _pictures_html(pictures: list[tuple[str, str, str]]) -> str:
    if not pictures:
        return ""
    figures = "".join(
        f"<details><summary>{_esc(name)}</summary><p class='muted'>{_esc(note)}</p>"
        f"<img src='{_esc(url)}' alt='{_esc(name)}' loading='lazy'></details>"
        for name, url, note in pictures
    )
    return f"<section><h2>Images that matter most</h2>{figures}</section>"
