"""The one validating reader for every file catdog reads from a user.

Images go through :func:`catdog.data.images.load_rgb` (re-exported here as :func:`read_image`); everything
else that a user, an earlier run or an attacker may have written goes through the functions below:

- :func:`read_csv`: our CSVs (split.csv, predictions.csv, skipped.csv, boxes.csv, manifests) with *string*
  dtypes and no NA guessing, so a class called ``0``, ``1``, ``NA`` or ``None`` stays that string; columns
  that hold numbers or booleans are converted explicitly, and only those.
- :func:`read_json`: summary.json and similar, a JSON object or a one-line error.
- :func:`read_yaml`: run metadata (``.hydra/*.yaml``) as plain Python data *without resolving*
  interpolations, so ``${oc.env:SECRET}`` stays that text and never reaches a report.
- :func:`read_checkpoint`: ``torch.load(weights_only=True)`` of a mapping.

Every failure is a :class:`~catdog.errors.CatdogError` with one line naming the file and the fix.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from catdog.data.images import load_rgb
from catdog.errors import CatdogError, one_line

__all__ = [
    "as_bool",
    "read_checkpoint",
    "read_csv",
    "read_split_csv",
    "read_image",
    "read_json",
    "read_yaml",
]

read_image = load_rgb
"""Decode an image file to RGB uint8 (see :func:`catdog.data.images.load_rgb`); raises BadImageError."""

def read_csv(
    path: str | Path,
    *,
    required: Iterable[str] = (),
    text: Iterable[str] | str = (),
    optional_text: Iterable[str] = (),
    numeric: Iterable[str] = (),
    booleans: Iterable[str] = (),
    what: str = "file",
    fix: str = "write it again with catdog",
) -> pd.DataFrame:
    """Read one of our CSV files with string dtypes and no NA guessing.

    Every cell is first read as the text written (``0``, ``NA``, ``None`` and ``""`` stay strings). Then:
    ``text`` columns stay str; ``optional_text`` columns stay str with an empty cell becoming None (e.g. the
    ``true`` class of an unlabelled image); ``numeric`` columns must hold numbers (empty: NaN);
    ``booleans`` become True/False/None; any other column becomes float when every non-empty cell is a
    number, else stays text. Class names only ever live in text columns, so they are never guessed.

    Args:
        path: the CSV file.
        required: columns that must be present.
        text: columns that always stay text; a name ending in ``*`` stands for every column starting with
            what precedes it (``"pred*"``: per-method predicted classes; ``"*"``: every column).
        optional_text: text columns where an empty cell means "none".
        numeric: columns that must hold numbers.
        booleans: columns holding True/False or empty.
        what: what the file is, for the error message (e.g. "predictions.csv").
        fix: what the user should do when the file is bad.

    Returns:
        The table; text columns as Python str (object dtype).

    Raises:
        CatdogError: the file is missing or unreadable, not CSV, lacks a required column, or a numeric
            or boolean column holds another value.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CatdogError(f"{what} {path} does not exist: {fix}")
    table = _read_strings(path, what, fix)
    columns = [str(c) for c in table.columns]
    missing = [c for c in required if c not in columns]
    if missing:
        raise CatdogError(
            f"{what} {path} lacks column(s) {', '.join(missing)} (found: {_some(columns)}): {fix}"
        )
    kinds = {
        **dict.fromkeys(numeric, "numeric"),
        **dict.fromkeys(booleans, "boolean"),
        **dict.fromkeys(optional_text, "optional_text"),
        **dict.fromkeys(_matching(columns, text), "text"),
    }
    for column in columns:
        table[column] = _typed(table[column].astype(str), kinds.get(column), column, path, what, fix)
    # One block per dtype again: replacing a column at a time leaves the frame in pieces, which pandas warns
    # about and which slows every later operation (ImageNet mode: 1,001 probability columns).
    return table.copy()


def read_split_csv(path: str | Path, fix: str) -> pd.DataFrame:
    """A run's split.csv (written by scripts/train.py): ``path``, ``label`` (None: unlabelled) and ``split``,
    as text as written, so classes called "0", "1", "NA" or "None" stay class names.

    Raises:
        CatdogError: missing, unreadable or lacking a column; ``fix`` says what to do.
    """
    return read_csv(
        path,
        required=("path", "label", "split"),
        text=("path", "split"),
        optional_text=("label",),
        what="split file",
        fix=fix,
    )


def _read_strings(path: Path, what: str, fix: str) -> pd.DataFrame:
    """Every cell of a CSV file as the text written (no NA guessing), without a written index column.

    Raises:
        CatdogError: not a readable CSV file (ragged rows, bad quoting, not UTF-8).
    """
    try:
        with warnings.catch_warnings():
            # A row with more cells than the header would silently become an index or lose data.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8",
                index_col=False,
                on_bad_lines="error",
            )
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.ParserWarning, csv.Error, ValueError) as err:
        raise CatdogError(f"{what} {path} is not a readable CSV file ({one_line(err)}): {fix}") from None
    # A header cell left blank (e.g. a pandas index written along) names no data of ours: drop it.
    return table.loc[:, [not str(c).startswith("Unnamed: ") for c in table.columns]]


def _matching(columns: list[str], names: Iterable[str] | str) -> list[str]:
    """The columns named in ``names``, where a name ending in ``*`` is a prefix (``*`` alone: every column)."""
    names = [names] if isinstance(names, str) else list(names)
    prefixes = tuple(name[:-1] for name in names if name.endswith("*"))
    return [c for c in columns if c in names or (prefixes and c.startswith(prefixes))]


def _typed(values: pd.Series, kind: str | None, column: str, path: Path, what: str, fix: str) -> pd.Series:
    """One column of text cells as ``kind`` (text, optional_text, boolean, numeric; None: a number if every
    cell is one, else text).

    Raises:
        CatdogError: a numeric or boolean column holds another value.
    """
    if kind == "text":
        return values
    if kind == "optional_text":
        return pd.Series([None if v == "" else v for v in values], index=values.index, dtype=object)
    if kind == "boolean":
        return pd.Series(_to_bool(values, column, path, what, fix), index=values.index, dtype=object)
    if kind == "numeric":
        return _to_float(values, column, path, what, fix)
    try:
        return _to_float(values, column, path, what, fix)
    except CatdogError:
        return values


def _some(names: list[str], shown: int = 12) -> str:
    """The first names, and how many more (an error stays one readable line with 1,001 class columns)."""
    if not names:
        return "none"
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _to_float(values: pd.Series, column: str, path: Path, what: str, fix: str) -> pd.Series:
    stripped = values.str.strip()
    converted = pd.to_numeric(stripped.where(stripped != "", "nan"), errors="coerce")
    bad = converted.isna() & ~stripped.str.lower().isin(["", "nan"])
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise CatdogError(
            f"{what} {path}: column {column} holds {values.iloc[row]!r} in data row {row + 1}, not a number: {fix}"
        )
    return converted.astype(float)


def _to_bool(values: pd.Series, column: str, path: Path, what: str, fix: str) -> list[bool | None]:
    result = []
    for row, value in enumerate(values):
        parsed = as_bool(value)
        if parsed is None and str(value).strip() not in ("", "None", "nan", "NaN"):
            raise CatdogError(
                f"{what} {path}: column {column} holds {value!r} in data row {row + 1}, not True/False: {fix}"
            )
        result.append(parsed)
    return result


def as_bool(value: Any) -> bool | None:
    """True/False from a bool, a 'True'/'False' string (any case) or 1/0; None for empty, NaN or anything else."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return {"true": True, "false": False, "1": True, "0": False}.get(value.strip().lower())
    return bool(value)


def read_json(path: str | Path, *, what: str = "file", fix: str = "write it again with catdog") -> dict[str, Any]:
    """Read a JSON object (e.g. summary.json).

    Raises:
        CatdogError: missing, unreadable, not JSON (e.g. truncated), or not an object.
    """
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatdogError(f"{what} {path} does not exist: {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise CatdogError(f"{what} {path} is not valid JSON ({one_line(err)}): {fix}") from None
    if not isinstance(data, dict):
        raise CatdogError(f"{what} {path} holds a JSON {type(data).__name__}, not an object: {fix}")
    return data


def read_yaml(path: str | Path, *, what: str = "file", fix: str = "write it again with catdog") -> Any:
    """Read YAML (e.g. ``.hydra/config.yaml``) as plain data, leaving ``${...}`` interpolations unresolved.

    Returns:
        dicts, lists and scalars; interpolations stay their literal text.

    Raises:
        CatdogError: missing, unreadable or not YAML.
    """
    from omegaconf import OmegaConf

    path = Path(path).expanduser()
    try:
        loaded = OmegaConf.load(path)
        return OmegaConf.to_container(loaded, resolve=False)
    except FileNotFoundError:
        raise CatdogError(f"{what} {path} does not exist: {fix}") from None
    except Exception as err:
        raise CatdogError(f"{what} {path} is not valid YAML ({one_line(err)}): {fix}") from None


def read_checkpoint(
    path: str | Path,
    *,
    map_location: Any = "cpu",
    mmap: bool = False,
    fix: str = "pass a checkpoint written by scripts/train.py",
    require_mapping: bool = True,
) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, never arbitrary pickled objects.

    Args:
        path: the checkpoint or weights file.
        map_location: device to load onto.
        mmap: memory-map the file (reading a few fields of a large checkpoint).
        fix: what the user should do when the file is bad.
        require_mapping: refuse files that do not hold a dict (checkpoints and state dicts do).

    Raises:
        CatdogError: missing, not a torch file, holds objects that are not plain data, or not a mapping.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise CatdogError(f"checkpoint {path} does not exist: {fix}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:
        reason = (
            "not a torch file, or it holds Python objects that weights_only loading refuses"
            if "Weights only load failed" in str(err)
            else f"{type(err).__name__}: {one_line(err, 120)}"
        )
        raise CatdogError(f"{path} could not be read as a torch file ({reason}): {fix}") from None
    if require_mapping and not isinstance(data, Mapping):
        raise CatdogError(f"checkpoint {path} holds a {type(data).__name__}, not a checkpoint: {fix}")
    return data
