"""The read model of an explain folder: its predictions.csv and summary.json as one :class:`Experiment`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from catdog.errors import CatdogError
from catdog.readers import read_csv, read_json
from catdog.runs import contained, run_dir_of_explain


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
    names = ("predictions.csv", "summary.json")
    escaping = [name for name in names if (folder / name).is_symlink() and contained(folder, name) is None]
    if escaping:
        raise CatdogError(
            f"{folder / escaping[0]} leads outside {folder}: catdog reads only files inside an explain folder; "
            "replace the link by the file, or explain again"
        )
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
        text=(*PREDICTION_TEXT, *(prefix + "*" for prefix in PREDICTION_TEXT_PREFIXES)),
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


def common_paths(experiments: Sequence[Experiment]) -> list[str]:
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


def restricted(exp: Experiment, paths: list[str]) -> Experiment:
    frame = restrict_to_paths(exp.predictions, paths)
    return Experiment(exp.label, exp.explain_dir, frame, exp.summary, exp.class_names, exp.run_dir)
