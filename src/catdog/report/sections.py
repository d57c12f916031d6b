"""The static HTML sections of the report, each a function returning escaped HTML.

The gallery itself is rendered by report.js from the JSON data (see :mod:`catdog.report.gallery`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from catdog.overlay import _diverging_lut, _jet_lut
from catdog.report.assets import url_of
from catdog.report.experiments import Experiment
from catdog.report.tables import MAP_QUALITY_HEADS, RECALL_COLUMNS, lowest_recalls
from catdog.runs import triage_dirs_of

NAMED_CLASSES = 4  # a task with at most this many classes is named by them ("cat / dog"), else counted
CONFUSED_PAIRS = 10  # most-confused pairs listed per experiment


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * float(value):.1f}%"


def _num(value: Any, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.{digits}f}"


def _short_hash(value: Any) -> str:
    return str(value)[:12] if value else "–"


def task_name(experiments: Sequence[Experiment]) -> str:
    """What the model does, e.g. ``cat / dog classifier (resnet18)`` or ``1000-class classifier (resnet50)``."""
    classes = experiments[0].class_names
    named = " / ".join(classes) if len(classes) <= NAMED_CLASSES else f"{len(classes)}-class"
    archs = sorted({str(exp.summary.get("arch")) for exp in experiments if exp.summary.get("arch")})
    return f"{named} classifier" + (f" ({', '.join(archs)})" if archs else "")


def page_title(experiments: Sequence[Experiment]) -> str:
    """Task, data source and checkpoint (one experiment), or task and the experiments compared."""
    if len(experiments) > 1:
        return f"{task_name(experiments)}: " + " vs ".join(exp.label for exp in experiments)
    summary = experiments[0].summary
    checkpoint = (summary.get("checkpoint") or {}).get("path")
    return f"{task_name(experiments)} · data {_tail(summary.get('source'), 2)} · checkpoint {_tail(checkpoint, 3)}"


def facts_html(experiments: Sequence[Experiment]) -> str:
    """Under the title: where the images came from and which weights explained them (full paths on hover)."""
    items = []
    for exp in experiments:
        summary = exp.summary
        checkpoint = summary.get("checkpoint") or {}
        who = f"<b>{esc(exp.label)}</b>: " if len(experiments) > 1 else ""
        items.append(
            f"<li>{who}data <span class='path' title='{esc(summary.get('source'))}'>{esc(_tail(summary.get('source')))}"
            f"</span> · checkpoint <span class='path' title='{esc(checkpoint.get('path'))}'>"
            f"{esc(_tail(checkpoint.get('path')))}</span> <small>sha256 {esc(_short_hash(checkpoint.get('sha256')))}"
            f"</small> · maps {esc(summary.get('method') or 'cam')}</li>"
        )
    return f"<ul class='facts'>{''.join(items)}</ul>"


def legend_html(display: str) -> str:
    """The heatmap's colour scale, sampled from the very colormap the overlays use."""
    signed = display == "signed"
    lut = (_diverging_lut() if signed else _jet_lut()).reshape(256, 3)
    stops = ", ".join(
        f"rgb({r},{g},{b}) {100 * i / 255:.0f}%" for i, (r, g, b) in enumerate(lut) if i % 32 == 0 or i == 255
    )
    low, high = ("evidence against", "evidence for") if signed else ("least evidence", "most evidence")
    return (
        "<div class='legend' id='legend'><span>Heatmap, for the predicted class:</span>"
        f"<span class='muted'>{low}</span><span class='ramp' style='background: linear-gradient(to right, {stops})'>"
        f"</span><span class='muted'>{high}</span></div>"
    )


def confused_html(experiments: Sequence[Experiment]) -> str:
    """The most frequent (true, predicted) mistakes of each experiment; each entry filters the gallery to them."""
    blocks = []
    for e, exp in enumerate(experiments):
        frame = exp.predictions
        mistakes = frame[frame["correct"].eq(False)] if len(frame) else frame
        if not len(mistakes):
            continue
        counts = mistakes.groupby(["true", "pred"]).size().sort_values(ascending=False, kind="stable")
        of_class = frame["true"].value_counts()
        items = "".join(
            f"<li><button type='button' class='confused' data-exp='{e}' data-true='{esc(true)}' "
            f"data-pred='{esc(pred)}'>"
            f"<b>{esc(true)}</b> taken for <b>{esc(pred)}</b></button> {n} "
            f"<span class='muted'>({_pct(n / of_class.get(true, n))} of {esc(true)})</span></li>"
            for (true, pred), n in counts.head(CONFUSED_PAIRS).items()
        )
        title = f"<b>{esc(exp.label)}</b>: " if len(experiments) > 1 else ""
        blocks.append(f"<div>{title}<ol class='confused-list'>{items}</ol></div>")
    if not blocks:
        return ""
    # Compact, above the gallery: the first thing to read after the title, one click from those images.
    return (
        "<section id='confused'><h2>Most confused pairs</h2><p class='muted small'>The mistakes that happen most "
        f"often (of the images of that true class); click one to show only those images.</p>{''.join(blocks)}</section>"
    )


def intro_html(experiments: Sequence[Experiment], images: int) -> str:
    if len(experiments) == 1:
        what = (
            f"One trained model (<b>{esc(experiments[0].label)}</b>) explained on {images} images. "
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


def triage_link_html(out: Path, experiments: Sequence[Experiment]) -> str:
    """A link to the newest triage report of each experiment's run (scripts/triage.py), when there is one."""
    links = []
    for exp in experiments:
        found = triage_dirs_of(exp.run_dir) if exp.run_dir is not None else []
        page = found[-1] / "report" / "index.html" if found else None
        if page is not None and page.is_file():
            links.append(f"<a href='{esc(url_of(out, page))}'>{esc(exp.label)}: triage {esc(found[-1].name)}</a>")
    if not links:
        return ""
    return (
        "<p class='lead'>Error analysis (label errors, duplicates and leaks, failure slices): "
        + ", ".join(links)
        + "</p>"
    )


def summary_html(table: pd.DataFrame, experiments: Sequence[Experiment]) -> str:
    classes = experiments[0].class_names
    pointing = table["pointing_game"].notna().any()
    shown = classes if len(classes) <= RECALL_COLUMNS else []  # many classes: the lowest recalls, in one column
    head = [
        "Experiment",
        "Images",
        "Accuracy",
        *([f"Recall {c}" for c in shown] or ["Lowest recall"]),
        "Mean confidence",
    ]
    head += ["Pointing game"] if pointing else []
    quality = [key for key in MAP_QUALITY_HEADS if key in table.columns and table[key].notna().any()]
    head += [MAP_QUALITY_HEADS[key] for key in quality]
    head += ["Architecture", "Checkpoint", "Training config"]
    rows = []
    for row in table.to_dict("records"):
        cells = [
            f"<th scope='row'>{esc(row['experiment'])}</th>",
            f"<td>{row['images']}</td>",
            f"<td>{_pct(row['accuracy'])}</td>",
        ]
        cells += [f"<td>{_pct(row[f'recall_{c}'])}</td>" for c in shown]
        if not shown:
            cells.append(f"<td>{esc(lowest_recalls(row, classes))}</td>")
        cells.append(f"<td>{_pct(row['mean_confidence'])}</td>")
        if pointing:
            cells.append(f"<td>{_pct(row['pointing_game'])}</td>")
        for key in quality:
            value = row[key]
            text = (
                _pct(value)
                if key in ("pointing_strict", "centre_baseline", "energy_in_box", "mosaic_peak")
                else (f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "–")
            )
            cells.append(f"<td>{esc(text)}</td>")
        cells.append(f"<td>{esc(row['arch'])}</td>")
        cells.append(
            f"<td class='path' title='{esc(row['checkpoint'])}'>{esc(_tail(row['checkpoint']))}"
            f"<br><small>sha256 {esc(_short_hash(row['checkpoint_sha256']))}</small></td>"
        )
        cells.append(f"<td class='path' title='{esc(row['train_config'])}'>{esc(_tail(row['train_config']))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f"<th scope='col'>{esc(h)}</th>" for h in head)
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


def pairs_html(pairs: pd.DataFrame) -> str:
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
            f"<td>{esc(row['a'])}</td><td>{esc(row['b'])}</td><td>{row['images']}</td>"
            f"<td>{row['correct_to_incorrect']}</td><td>{row['incorrect_to_correct']}</td>"
            f"<td>{_pct(row['same_prediction'])}</td>"
            f"<td>{_num(row['spearman_mean'])} <small>({_num(row['spearman_q25'])} / {_num(row['spearman_median'])}"
            f" / {_num(row['spearman_q75'])})</small></td>"
            f"<td>{_num(row['iou_top20_mean'])} <small>({_num(row['iou_top20_q25'])} / "
            f"{_num(row['iou_top20_median'])} / {_num(row['iou_top20_q75'])})</small></td>"
            "</tr>"
        )
    header = "".join(f"<th scope='col'>{esc(h)}</th>" for h in head)
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


def per_experiment_html(experiments: Sequence[Experiment], pictures: list[dict[str, str | None]]) -> str:
    cards = []
    for exp, pics in zip(experiments, pictures):
        inner = [f"<h3>{esc(exp.label)}</h3>"]
        if pics["confusion"]:
            inner.append(
                f"<figure><img src='{esc(pics['confusion'])}' alt='confusion matrix of {esc(exp.label)}'>"
                "<figcaption>Confusion matrix: rows are the true classes, columns the predicted ones; the diagonal "
                "holds the correct predictions.</figcaption></figure>"
            )
        if pics["curves"]:
            inner.append(
                f"<figure><img src='{esc(pics['curves'])}' alt='training curves of {esc(exp.label)}'>"
                "<figcaption>Training curves: loss and accuracy per epoch on the training and validation images."
                "</figcaption></figure>"
            )
        if len(inner) == 1:
            inner.append("<p class='muted'>No labelled images and no training curves for this experiment.</p>")
        cards.append(f"<div class='card'>{''.join(inner)}</div>")
    return f"<div class='cards'>{''.join(cards)}</div>"


def pictures_html(pictures: list[tuple[str, str, str]]) -> str:
    if not pictures:
        return ""
    figures = "".join(
        f"<details><summary>{esc(name)}</summary><p class='muted'>{esc(note)}</p>"
        f"<img src='{esc(url)}' alt='{esc(name)}' loading='lazy'></details>"
        for name, url, note in pictures
    )
    return f"<section><h2>Images that matter most</h2>{figures}</section>"
