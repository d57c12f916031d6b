"""The Triage page: ``<triage folder>/report/index.html``, offline, in the report's style.

Sections: suspected label errors (worst first, each with its photo and the maps of the given and the
suggested class), near duplicates and leaks, outliers, failure slices (with their worst mistakes),
context reliance (when the context step ran). Every picture links to its full-size file; every value
from the user's data (file names, class names) is HTML-escaped. No JavaScript, no network.
"""

from __future__ import annotations

import math
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from catdog.readers import read_csv
from catdog.report.sections import esc

__all__ = ["write_triage_report"]

ROWS = 200  # rows shown per table (the CSV files hold all of them)
PAIR_COLUMNS = [
    "key_a",
    "split_a",
    "label_a",
    "key_b",
    "split_b",
    "label_b",
    "similarity",
    "exact",
    "leak",
    "label_conflict",
]


def _esc(value: Any) -> str:
    """HTML-escaped text; NaN (an empty CSV cell) shows as nothing, a whole number read back as float (ranks,
    sizes, counts: our CSV reader makes every numeric column float) without its ``.0``."""
    if isinstance(value, float):
        value = None if math.isnan(value) else int(value) if value.is_integer() else value
    return esc(value)


def _pct(value: Any) -> str:
    """A share as a percentage with two decimals (the terminal summary's format); n/a when absent."""
    return "n/a" if value is None else f"{float(value):.2%}"


def _href(relative: str) -> str:
    """A link from report/ to a file of the triage folder, percent-encoded."""
    return "../" + "/".join(quote(part) for part in Path(relative).parts)


def _picture(pictures: dict[str, str], path: str) -> str:
    rel = pictures.get(path)
    if not rel:
        return ""
    url = _href(rel)
    alt = f"maps of {_esc(Path(path).name)}"
    return f'<a href="{url}"><img src="{url}" loading="lazy" alt="{alt}" style="max-height:150px"></a>'


def _table(
    frame: pd.DataFrame,
    columns: list[str],
    pictures: dict[str, str] | None = None,
    picture_of: tuple[str, ...] = ("path",),
) -> str:
    """Rows of ``columns`` (escaped), plus a last cell with the pictures of the ``picture_of`` images."""
    if frame.empty:
        return '<p class="muted">None found.</p>'
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns) + ("<th>maps</th>" if pictures is not None else "")
    body = []
    for _, row in frame.head(ROWS).iterrows():
        cells = "".join(f"<td>{_esc(row[c])}</td>" for c in columns)
        if pictures is not None:
            cells += "<td>" + "".join(_picture(pictures, row[column]) for column in picture_of) + "</td>"
        body.append(f"<tr>{cells}</tr>")
    more = f'<p class="muted">{len(frame) - ROWS} more rows in the CSV file.</p>' if len(frame) > ROWS else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def _read(out_dir: Path, name: str) -> pd.DataFrame:
    return (
        read_csv(out_dir / f"{name}.csv", what=f"{name}.csv") if (out_dir / f"{name}.csv").is_file() else pd.DataFrame()
    )


def _slices_html(slices: pd.DataFrame, images: pd.DataFrame, pictures: dict[str, str]) -> str:
    if slices.empty:
        return '<p class="muted">Too few images to cluster.</p>'
    parts = [_table(slices, ["slice", "size", "accuracy", "mean_confidence", "below_average", "traits"])]
    path_of = dict(zip(images["key"], images["path"])) if len(images) else {}
    for _, row in slices[slices["below_average"].astype(str) == "True"].iterrows():
        keys = [k for k in str(row["worst_mistakes"]).split(";") if k and k != "nan"]
        shots = "".join(_picture(pictures, path_of.get(k, "")) for k in keys)
        parts.append(f"<h3>Slice {_esc(row['slice'])}: worst mistakes</h3><p>{shots or _esc(', '.join(keys))}</p>")
    return "".join(parts)


def _context_html(out_dir: Path, context: dict[str, Any] | None) -> str:
    """Context reliance: what was measured, the totals per class and per slice, the flagged images with pictures."""
    if not context:
        return '<p class="muted">Not measured in this run (triage.context=false).</p>'
    if not context.get("images"):
        return f'<p class="muted">{_esc(context.get("note"))}</p>'
    overall = context["overall"]

    intro = (
        f"<p>{_esc(context['images'])} images ({_esc(context['split'])} split): the top {_pct(context['area'])} "
        f"of the pixels of each predicted class's map kept, the rest replaced ({_esc(context['baseline'])}), and "
        f"the other way round. The prediction survives keeping only that region for {_pct(overall['survives_keep'])} "
        "of the images and "
        f"removing it for {_pct(overall['survives_remove'])}. <b>{_esc(overall['right_for_wrong_reason'])}</b> correct "
        "predictions are <i>right for the wrong reason</i>: they survive removing the region their map highlights, "
        "but not removing everything else (context.csv, right_for_wrong_reason).</p>"
    )
    columns = [
        "images",
        "accuracy",
        "survives_keep",
        "survives_remove",
        "keep_region_p",
        "remove_region_p",
        "right_for_wrong_reason",
        "right_for_wrong_reason_rate",
    ]
    parts = [intro, "<h3>Per class</h3>", _table(pd.DataFrame(context["per_class"]), ["label", *columns])]
    if context.get("per_slice"):
        parts += ["<h3>Per slice</h3>", _table(pd.DataFrame(context["per_slice"]), ["slice", *columns])]
    frame = _read(out_dir, "context")
    if len(frame):
        flagged = frame[frame["right_for_wrong_reason"].astype(str) == "True"].sort_values("keep_region_p")
        shown = [
            c for c in ("key", "split", "label", "pred", "keep_region_p", "remove_region_p") if c in flagged.columns
        ]
        parts += [
            "<h3>Right for the wrong reason (the region kept alone loses the class)</h3>",
            _table(flagged, shown, context.get("pictures") or {}),
        ]
    return "".join(parts)


def write_triage_report(out_dir: Path, summary: dict[str, Any]) -> Path:
    """Write ``out_dir/report/index.html`` from the triage folder's tables and ``summary``."""
    pictures: dict[str, str] = summary.get("pictures") or {}
    issues, pairs = _read(out_dir, "label_issues"), _read(out_dir, "duplicates")
    outliers, slices, images = _read(out_dir, "outliers"), _read(out_dir, "slices"), _read(out_dir, "images")
    context = summary.get("context")
    test = summary.get("test_accuracy") or {}
    features = summary.get("features", {})
    intro = (
        f"<p>{summary['images']} images audited ({summary['skipped']} unreadable, in skipped.csv). Embeddings: "
        f"{_esc(features.get('source'))} backbone ({_esc(features.get('reason'))}). Probabilities per image: "
        f"{_esc(', '.join(f'{k}: {v}' for k, v in summary['prob_sources'].items()))} (prob_source in images.csv).</p>"
    )
    if test:
        intro += (
            f"<p>Test accuracy {_pct(test['accuracy'])} ({_esc(test['predictions'])} predictions); without the "
            f"{_esc(test['leaked_images'])} test images that duplicate a train/val image: "
            f"{_pct(test['accuracy_without_leaked'])}.</p>"
        )
    note = f'<p class="muted">{_esc(summary.get("labels_note"))}</p>' if summary.get("labels_note") else ""
    sections = [
        (
            "label-issues",
            "Suspected label errors",
            note + _table(issues, ["rank", "key", "split", "given", "suggested", "label_quality"], pictures),
        ),
        ("duplicates", "Near duplicates and leaks", _table(pairs, PAIR_COLUMNS, pictures, ("path_a", "path_b"))),
        (
            "outliers",
            "Outliers",
            _table(outliers, ["rank", "key", "split", "label", "pred", "outlier_score"], pictures),
        ),
        ("slices", "Failure slices", _slices_html(slices, images, pictures)),
        ("context", "Context reliance", _context_html(out_dir, context)),
    ]
    body = "".join(f'<section id="{key}"><h2>{_esc(title)}</h2>{content}</section>' for key, title, content in sections)
    css = files("catdog.report").joinpath("static", "report.css").read_text(encoding="utf-8")
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>catdog triage</title>'
        f"<style>{css}</style></head><body><header><h1>Triage</h1>{intro}</header><main>{body}</main></body></html>"
    )
    report = out_dir / "report"
    report.mkdir(parents=True, exist_ok=True)
    (report / "index.html").write_text(page, encoding="utf-8")
    return report / "index.html"
