"""``write_report``: the report folder (``index.html`` from static/page.html, its sections and pictures)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import datetime
from importlib.resources import files
from pathlib import Path

import pandas as pd

from catdog.errors import CatdogError
from catdog.report.assets import FILES, asset, summary_pictures
from catdog.report.experiments import Experiment, common_paths, restricted
from catdog.report.gallery import gallery_data, script_json
from catdog.report.sections import (
    confused_html,
    esc,
    facts_html,
    intro_html,
    legend_html,
    page_title,
    pairs_html,
    per_experiment_html,
    pictures_html,
    summary_html,
    task_name,
    triage_link_html,
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
    labels = _unique_labels(experiments)
    out = _fresh_folder(Path(out_dir))
    paths = common_paths(experiments)
    if not paths:
        raise CatdogError("The experiments share no image (matched by path): explain them on the same images")
    table = experiment_table([restricted(exp, paths) for exp in experiments])
    images = gallery_data(out, experiments, paths, per_image)
    pictures_per_experiment = summary_pictures(out, experiments, paths)
    extra = _copied_pictures(out, pictures)
    data = _page_data(experiments, labels, pairs, images)
    del images
    assets = files("catdog.report") / "static"
    # page.html is a str.format template: its literal braces are doubled; every value is escaped or JSON.
    page = assets.joinpath("page.html").read_text(encoding="utf-8").format(
        title=esc(title or page_title(experiments)),
        heading=esc(title or task_name(experiments)),
        facts=facts_html(experiments),
        css=assets.joinpath("report.css").read_text(encoding="utf-8"),
        js=assets.joinpath("report.js").read_text(encoding="utf-8"),
        data=data,
        intro=intro_html(experiments, len(paths)) + triage_link_html(out, experiments),
        legend=legend_html(str(experiments[0].summary.get("display") or "minmax")),
        confused=confused_html([restricted(exp, paths) for exp in experiments]),
        summary=summary_html(table, experiments),
        pairs=pairs_html(pairs) if pairs is not None and len(pairs) else "",
        per_experiment=per_experiment_html(experiments, pictures_per_experiment),
        pictures=pictures_html(extra),
        **_help(len(experiments) > 1),
        generated=esc(datetime.now().strftime("%Y-%m-%d %H:%M")),
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _unique_labels(experiments: Sequence[Experiment]) -> list[str]:
    """The experiments' labels.

    Raises:
        CatdogError: no experiment, or two with the same label.
    """
    if not experiments:
        raise CatdogError("The report needs at least one explain folder")
    labels = [exp.label for exp in experiments]
    if len(set(labels)) != len(labels):
        raise CatdogError(f"Experiment labels must be unique, got {labels}: give each experiment its own label")
    return labels


def _copied_pictures(out: Path, pictures: Sequence[tuple[str, Path, str]]) -> list[tuple[str, str, str]]:
    """The extra pictures that exist, copied into the report's assets: (title, URL, note)."""
    return [
        (name, asset(out, path, f"picture_{i}{path.suffix}"), note)
        for i, (name, path, note) in enumerate(pictures)
        if Path(path).is_file()
    ]


def _page_data(
    experiments: Sequence[Experiment], labels: list[str], pairs: pd.DataFrame | None, images: list[str]
) -> str:
    """The page's JSON: experiments, classes, pairs (as label indices) and the gallery's images."""
    head = {
        "experiments": labels,
        "classes": experiments[0].class_names,
        "pairs": [] if pairs is None else [[labels.index(a), labels.index(b)] for a, b in zip(pairs["a"], pairs["b"])],
    }
    # The images arrive as one JSON text each (see gallery_data): spliced in as the last key.
    return script_json(head)[:-1] + ',"images":[' + ",".join(images) + "]}"


def _help(many: bool) -> dict[str, str]:
    """The gallery's help lines: an explain report has no experiment picker and no flips, so it names neither."""
    if not many:
        return {
            "each_model": "the model's",
            "opens_on": "It opens on the mistakes, highest loss (most confidently wrong) first; choose "
            "\"all images\" under Show, or another order under Sort by, to see the rest.",
            "side_by_side": "",
            "judged_help": "",
            "flipped_help": "",
        }
    return {
        "each_model": "each experiment's",
        "opens_on": "It opens on the images whose maps differ most between the experiments.",
        "side_by_side": ", every experiment side by side at the same scale",
        "judged_help": "<li><b>Correct / Incorrect</b>: judged by the experiment chosen under \"Experiment\" (or, "
        "for \"all experiments\", correct in all of them / wrong in at least one).</li>",
        "flipped_help": "<li><b>Flipped</b>: at least one experiment is right and another wrong on this image.</li>",
    }


def _fresh_folder(out: Path) -> Path:
    """The report folder with empty assets/ and thumbs/ and no files/ (an earlier report's are replaced)."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("assets", "thumbs", FILES):
        shutil.rmtree(out / stale, ignore_errors=True)
    (out / "assets").mkdir()
    (out / "thumbs").mkdir()
    return out
