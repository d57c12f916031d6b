"""``write_report``: the report folder (``index.html`` from static/page.html, its sections and pictures)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import datetime
from importlib.resources import files
from pathlib import Path

import pandas as pd

from catdog.errors import CatdogError
from catdog.report.assets import asset, summary_pictures
from catdog.report.experiments import Experiment, common_paths, restricted
from catdog.report.gallery import gallery_data, script_json
from catdog.report.sections import (
    esc,
    intro_html,
    pairs_html,
    per_experiment_html,
    pictures_html,
    summary_html,
)
from catdog.report.tables import experiment_table


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

    paths = common_paths(experiments)
    if not paths:
        raise CatdogError("The experiments share no image (matched by path): explain them on the same images")
    table = experiment_table([restricted(exp, paths) for exp in experiments])
    images = gallery_data(out, experiments, paths, per_image)
    pictures_per_experiment = summary_pictures(out, experiments, paths)
    extra = [
        (name, asset(out, path, f"picture_{i}{path.suffix}"), note)
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
    # The images arrive as one JSON text each (see gallery_data): spliced in as the last key.
    data = script_json(head)[:-1] + ',"images":[' + ",".join(images) + "]}"
    del images
    assets = files("catdog.report") / "static"
    # page.html is a str.format template: its literal braces are doubled; every value is escaped or JSON.
    page = assets.joinpath("page.html").read_text(encoding="utf-8").format(
        title=esc(page_title),
        css=assets.joinpath("report.css").read_text(encoding="utf-8"),
        js=assets.joinpath("report.js").read_text(encoding="utf-8"),
        data=data,
        intro=intro_html(experiments, len(paths)),
        summary=summary_html(table, experiments),
        pairs=pairs_html(pairs) if pairs is not None and len(pairs) else "",
        per_experiment=per_experiment_html(experiments, pictures_per_experiment),
        pictures=pictures_html(extra),
        flipped_help=(
            "<li><b>Flipped</b>: at least one experiment is right and another wrong on this image.</li>"
            if len(experiments) > 1
            else ""
        ),
        generated=esc(datetime.now().strftime("%Y-%m-%d %H:%M")),
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
