"""Compare pipeline: several experiments -> the same images -> tables, grids and an HTML report.

Inputs are run folders, explain folders or checkpoints (or a whole sweep folder). Each experiment is
read from an explain folder that covers ONE common image set: by default the images in the held-out
split of every run (their intersection), or ``data.root``. A run without such an explain folder is
explained again (``pipelines.explain.explain``, the usual explain folder inside the run folder).

Compare folder (default ``compare/<timestamp>``)::

    experiments.csv     one row per experiment: accuracy, per-class recall, confidence, pointing game, provenance
    pairs.csv           one row per pair: flips both ways, same-prediction share, CAM similarity statistics
    per_image.csv       one row per image: each experiment's prediction, flips, pairwise CAM similarity
    cam_similarity.png  histograms of the pairwise CAM similarities
    flipped.png, cam_disagreement.png, confident_mistakes_<experiment>.png   one row of overlays per image
    report/index.html   the browsable report (catdog.report)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from catdog.cam import upsample_cams
from catdog.data import index_for_inference
from catdog.errors import CatdogError
from catdog.overlay import image_grid, safe_name, save_image
from catdog.pipelines.explain import explain, select_images
from catdog.runs import explain_dirs_of as complete_explain_dirs
from catdog.runs import (
    is_complete_explain_dir,
    is_staging_dir,
    resolve_checkpoint,
    run_dir_of,
    staged_output_dir,
    timestamped_dir,
)
from catdog.plots import plain_text
from catdog.readers import read_checkpoint, read_csv, read_json, read_yaml
from catdog.report import (
    MAP_QUALITY_HEADS,
    Experiment,
    confidence,
    experiment_table,
    overlay_file,
    pair_column,
    read_explain_dir,
    restrict_to_paths,
    write_report,
)

log = logging.getLogger(__name__)

TOP_FRACTION = 0.2  # the "hottest region" of a map for the IoU: its top 20% of pixels
# Config keys that differ between runs without being an experimental setting.
IGNORED_KEYS = ("paths.", "hydra", "ckpt_path")
MAX_LABEL_VALUE = 24  # characters of one value in a label


# ---------------------------------------------------------------------------------------------
# Sources: what the user pointed at
# ---------------------------------------------------------------------------------------------
@dataclass
class Source:
    """One experiment to compare, before it has an explain folder that covers the common images.

    Attributes:
        given: what the user passed.
        run_dir: the run folder (None for a lone checkpoint or explain folder without one).
        checkpoint: the checkpoint to explain with, when known.
        explain_dir: an explain folder the user passed explicitly.
    """

    given: str
    run_dir: Path | None
    checkpoint: Path | None
    explain_dir: Path | None = None


def sweep_runs(sweep: str | Path) -> list[Path]:
    """The run folders of a Hydra multirun: its numbered subfolders, in job order.

    Raises:
        CatdogError: the folder does not exist or has no numbered subfolder with a checkpoint.
    """
    folder = Path(sweep).expanduser()
    if not folder.is_dir():
        raise CatdogError(f"sweep={sweep} is not a folder: pass a multirun folder such as multirun/train/<timestamp>")
    jobs = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not jobs:
        raise CatdogError(f"sweep={sweep} has no numbered job folders (0, 1, ...): pass the folder train -m wrote")
    return jobs


def resolve_source(given: str | Path) -> Source:
    """Classify one input: an explain folder, a run folder or a checkpoint file.

    Raises:
        CatdogError: nothing usable at that path.
    """
    path = Path(given).expanduser()
    if not path.exists():
        raise CatdogError(f"{given} does not exist: pass run folders, explain folders or .ckpt files to compare")
    if is_staging_dir(path):
        raise CatdogError(
            f"{given} is the unfinished output of an interrupted run (a hidden staging folder): run explain again "
            "and pass the folder it completes"
        )
    if path.is_dir() and (path / "predictions.csv").is_file():
        if not is_complete_explain_dir(path):
            raise CatdogError(f"{given} is an incomplete explain folder (no summary.json): run explain again")
        experiment = read_explain_dir(path)
        checkpoint = Path((experiment.summary.get("checkpoint") or {}).get("path") or "")
        return Source(str(given), experiment.run_dir, checkpoint if checkpoint.is_file() else None, path)
    if path.is_dir() and not (path / "checkpoints").is_dir() and (path / "explain").is_dir():
        raise CatdogError(f"{given} has explain/ but no checkpoints/: pass one of its explain/<timestamp> folders")
    checkpoint = resolve_checkpoint(path)
    return Source(str(given), run_dir_of(checkpoint), checkpoint)


def explain_dirs_of(run_dir: Path) -> list[Path]:
    """A run's explain folders that hold predictions and CAMs, newest first."""
    root = run_dir / "explain"
    if not root.is_dir():
        return []
    found = [p for p in complete_explain_dirs(run_dir) if (p / "cams.npz").is_file()]
    return sorted(found, key=lambda p: ((p / "summary.json").stat().st_mtime, p.name), reverse=True)


def covered_paths(explain_dir: Path) -> set[str]:
    """Images an explain folder has seen: explained, or skipped as unreadable."""
    paths = _listed_paths(explain_dir / "predictions.csv")
    skipped = explain_dir / "skipped.csv"
    if skipped.is_file():
        paths |= _listed_paths(skipped)
    return paths


def _listed_paths(csv_file: Path) -> set[str]:
    """The ``path`` column of one of an explain folder's CSVs."""
    table = read_csv(csv_file, required=("path",), text=("path",), what=csv_file.name, fix="run explain again")
    return set(table["path"])


def common_images(sources: Sequence[Source], root: str | None, split: str) -> list[str]:
    """The one image set every experiment is compared on.

    Args:
        sources: the experiments.
        root: ``data.root``: a folder of images for all of them; None for their held-out splits.
        split: which split of each run's split.csv (``test`` by default).

    Returns:
        Absolute image paths, sorted.

    Raises:
        CatdogError: an experiment has no image list, or the lists share no image.
    """
    if root:
        return sorted(index_for_inference(root, [])["path"])
    shared: set[str] | None = None
    for source in sources:
        if source.explain_dir is not None:
            paths = _listed_paths(source.explain_dir / "predictions.csv")
        elif source.run_dir is not None and (source.run_dir / "split.csv").is_file():
            paths = set(select_images(None, split, [], {}, source.run_dir)["path"])
        else:
            raise CatdogError(
                f"{source.given} has no split.csv to take held-out images from: pass data.root=<folder of images> "
                "to compare all experiments on the same images"
            )
        shared = paths if shared is None else shared & paths
    if not shared:
        raise CatdogError(
            f"The experiments share no image of their {split} splits: pass data.root=<folder of images> to compare "
            "them on the same images"
        )
    return sorted(shared)


def source_class_names(source: Source) -> list[str]:
    """A source's class names, without loading the whole model.

    Raises:
        CatdogError: the checkpoint is unreadable or has no class names.
    """
    if source.explain_dir is not None:
        return read_explain_dir(source.explain_dir).class_names
    assert source.checkpoint is not None
    checkpoint = read_checkpoint(source.checkpoint, mmap=True)
    hparams = checkpoint.get("hyper_parameters")
    names = hparams.get("class_names") if isinstance(hparams, dict) else None
    if not isinstance(names, (list, tuple)) or not names:
        raise CatdogError(
            f"checkpoint {source.checkpoint} has no class names (not written by scripts/train.py): "
            "pass a catdog checkpoint or run folder"
        )
    return [str(name) for name in names]


def check_class_names(names: Sequence[str], class_lists: Sequence[Sequence[str]]) -> list[str]:
    """All experiments must know the same classes (in any order).

    Returns:
        The first experiment's class names.

    Raises:
        CatdogError: two experiments differ, naming both and the classes that differ.
    """
    first = list(class_lists[0])
    for name, classes in zip(names[1:], class_lists[1:]):
        if set(classes) != set(first):
            only_a = sorted(set(first) - set(classes))
            only_b = sorted(set(classes) - set(first))
            raise CatdogError(
                f"{names[0]} and {name} were trained on different classes (only in the first: {only_a}, only in the "
                f"second: {only_b}): compare experiments trained on the same classes"
            )
    return first


def usable_explain_dir(source: Source, common: Sequence[str]) -> Path | None:
    """The explicit explain folder, else the run's newest one, if it covers the common images."""
    wanted = set(common)
    candidates = [source.explain_dir] if source.explain_dir is not None else []
    candidates += explain_dirs_of(source.run_dir) if source.run_dir is not None else []
    for candidate in candidates:
        if (candidate / "cams.npz").is_file() and wanted <= covered_paths(candidate):
            return candidate
    return None


# ---------------------------------------------------------------------------------------------
# Labels: what differs between the runs
# ---------------------------------------------------------------------------------------------
def read_run_settings(run_dir: Path | None) -> tuple[dict[str, str], dict[str, str]] | None:
    """A run's typed overrides and its flattened config (with the chosen config groups).

    Returns:
        (overrides: key -> value as typed, settings: dotted key -> value), or None without .hydra/.
    """
    hydra_dir = run_dir / ".hydra" if run_dir is not None else None
    if hydra_dir is None or not (hydra_dir / "config.yaml").is_file():
        return None
    # Read without resolving: "${oc.env:SECRET}" in a run's metadata stays that text (never the secret).
    fix = "fix or delete the run's .hydra folder"
    overrides: dict[str, str] = {}
    if (hydra_dir / "overrides.yaml").is_file():
        items = read_yaml(hydra_dir / "overrides.yaml", what="run metadata", fix=fix) or []
        for item in items if isinstance(items, list) else []:
            key, _, value = str(item).partition("=")
            # "~key" deletes a setting, "+key"/"++key" adds one: the key is what matters.
            overrides[key.lstrip("+~")] = value if not key.startswith("~") else "removed"
    config = read_yaml(hydra_dir / "config.yaml", what="run metadata", fix=fix)
    settings = _flatten(config if isinstance(config, dict) else {})
    if (hydra_dir / "hydra.yaml").is_file():
        hydra_cfg = read_yaml(hydra_dir / "hydra.yaml", what="run metadata", fix=fix)
        choices = ((hydra_cfg or {}).get("hydra") or {}).get("runtime", {}).get("choices") if isinstance(hydra_cfg, dict) else None
        settings.update(
            {
                str(group): str(choice)
                for group, choice in (choices if isinstance(choices, dict) else {}).items()
                if not str(group).startswith("hydra")
            }
        )
    return overrides, settings


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: str(value)}


def experiment_labels(
    names: Sequence[str], settings: Sequence[tuple[dict[str, str], dict[str, str]] | None]
) -> list[str]:
    """Short unique labels from what differs between the runs' settings, e.g. ``lr=3e-4``.

    Keys the user typed (overrides) come first; config values that differ are added only when the
    overrides alone do not tell the runs apart. Without settings for every run, or when nothing
    differs, the run folder names are used. Duplicates get ``#2``, ``#3``...

    Args:
        names: fallback names (run folder names).
        settings: per run, :func:`read_run_settings`'s result.

    Returns:
        One unique label per run.
    """
    labels = list(names)
    if len(names) > 1 and all(s is not None for s in settings):
        typed = [s[0] for s in settings]  # type: ignore[index]
        values = [{**s[1], **s[0]} for s in settings]  # type: ignore[index]

        def differs(key: str) -> bool:
            return len({v.get(key) for v in values}) > 1 and not key.startswith(IGNORED_KEYS)

        typed_keys = [k for k in dict.fromkeys(k for t in typed for k in t) if differs(k)]
        config_keys = sorted(k for k in set().union(*values) if k not in typed_keys and differs(k))
        chosen = list(typed_keys)
        candidate = _labels_for(chosen, values) if chosen else None
        for key in config_keys[:3]:
            if candidate is not None and len(set(candidate)) == len(candidate):
                break
            chosen.append(key)
            candidate = _labels_for(chosen, values)
        if candidate is not None:
            labels = candidate
    return _unique(labels)


def _labels_for(keys: list[str], values: list[dict[str, str]]) -> list[str]:
    short = [key.rsplit(".", 1)[-1] for key in keys]
    shown = [s if short.count(s) == 1 else k for s, k in zip(short, keys)]
    return [" ".join(f"{name}={_short_value(v.get(key))}" for name, key in zip(shown, keys)) for v in values]


def _short_value(value: str | None) -> str:
    if value is None:
        return "none"
    if "/" in value:  # a path: its last part tells the runs apart
        value = Path(value).name or value
    return value if len(value) <= MAX_LABEL_VALUE else value[: MAX_LABEL_VALUE - 1] + "…"


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        result.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return result


# ---------------------------------------------------------------------------------------------
# Alignment and numbers
# ---------------------------------------------------------------------------------------------
def align(experiments: Sequence[Experiment], paths: Sequence[str] | None = None) -> list[str]:
    """Restrict every experiment's predictions to the same images, in the same order (matched by path).

    Args:
        experiments: modified in place: ``predictions`` keeps only the shared rows, ordered by path.
        paths: the wanted images; default: all. Images a run could not read are left out for all.

    Returns:
        The shared paths, sorted.

    Raises:
        CatdogError: no image is shared.
    """
    shared = set(paths) if paths is not None else None
    for exp in experiments:
        present = set(exp.predictions["path"])
        shared = present if shared is None else shared & present
    if not shared:
        raise CatdogError("The experiments share no explained image: compare them on the same images (data.root=...)")
    ordered = sorted(shared)
    for exp in experiments:
        exp.predictions = restrict_to_paths(exp.predictions, ordered)
    return ordered


def flip_counts(correct_a: Sequence[bool | None], correct_b: Sequence[bool | None]) -> tuple[int, int]:
    """How many images went right -> wrong and wrong -> right from A to B (unlabelled images ignored)."""
    to_wrong = sum(1 for a, b in zip(correct_a, correct_b, strict=True) if a is True and b is False)
    to_right = sum(1 for a, b in zip(correct_a, correct_b, strict=True) if a is False and b is True)
    return to_wrong, to_right


def load_predicted_cams(explain_dir: Path, paths: Sequence[str]) -> np.ndarray:
    """The predicted-class raw maps of the given images from an explain folder's cams.npz.

    Returns:
        float32 ``[N, h, w]`` in the order of ``paths``.

    Raises:
        CatdogError: no cams.npz, or an image is missing from it.
    """
    file = explain_dir / "cams.npz"
    if not file.is_file():
        raise CatdogError(f"{explain_dir} has no cams.npz: explain again with save_cams=true")
    try:
        with np.load(file, allow_pickle=False) as npz:
            row = {str(path): i for i, path in enumerate(npz["paths"])}
            missing = [p for p in paths if p not in row]
            if missing:
                raise CatdogError(f"{file} lacks the maps of {len(missing)} image(s) such as {missing[0]}: explain again")
            cams = npz["cams"]
            if cams.ndim != 4 or len(cams) != len(row):
                raise CatdogError(f"{file} holds maps of shape {cams.shape}, not [images, maps, h, w]: explain again")
            return cams[[row[p] for p in paths], 0].astype(np.float32)
    except CatdogError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt zip fails as BadZipFile, ValueError, KeyError, EOFError...
        raise CatdogError(f"{file} could not be read ({type(err).__name__}: {err}): explain again") from None


def load_class_cams(explain_dir: Path, paths: Sequence[str], classes: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Each image's raw map of a given class from cams.npz, so experiments compare maps of the same class.

    Args:
        explain_dir: an explain folder with cams.npz.
        paths: the images, in order.
        classes: ``[N]`` class index per image (e.g. the first experiment's predictions); None: the
            predicted class's map (column 0).

    Returns:
        float32 ``[N, h, w]``, and how many images lacked a map of the wanted class (their predicted
        class's map is used instead).

    Raises:
        CatdogError: no cams.npz, or an image is missing from it.
    """
    file = explain_dir / "cams.npz"
    if not file.is_file():
        raise CatdogError(f"{explain_dir} has no cams.npz: explain again with save_cams=true")
    with np.load(file, allow_pickle=False) as npz:
        row = {str(path): i for i, path in enumerate(npz["paths"])}
        missing = [p for p in paths if p not in row]
        if missing:
            raise CatdogError(f"{file} lacks the maps of {len(missing)} image(s) such as {missing[0]}: explain again")
        rows = [row[p] for p in paths]
        cams, class_idx = npz["cams"][rows], npz["class_idx"][rows]
    if classes is None:
        return cams[:, 0].astype(np.float32), 0
    match = class_idx == np.asarray(classes)[:, None]
    column = np.where(match.any(axis=1), match.argmax(axis=1), 0)
    return cams[np.arange(len(rows)), column].astype(np.float32), int((~match.any(axis=1)).sum())


def method_labels(explain_dirs: Sequence[Path]) -> list[str] | None:
    """``gradcam@layer3`` per explain folder when their methods or layers differ, else None."""
    described = []
    for folder in explain_dirs:
        try:
            summary = read_json(folder / "summary.json", what="summary")
        except CatdogError:
            return None
        described.append(f"{summary.get('method') or 'cam'}@{summary.get('layer') or 'default'}")
    return described if len(set(described)) > 1 else None


def class_names_index(class_names: Sequence[str], name: str) -> int:
    """Index of a class name (the predictions table stores names)."""
    return list(class_names).index(name)


def to_common_size(maps: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Bilinearly resize ``[N, h, w]`` stacks of different architectures to the largest h and w."""
    height = max(m.shape[1] for m in maps)
    width = max(m.shape[2] for m in maps)
    return [
        m if m.shape[1:] == (height, width) else upsample_cams(torch.from_numpy(m), (height, width)).numpy()
        for m in maps
    ]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks (1-based) of each row of ``[N, P]``, ties sharing their average rank (as in Spearman's rho)."""
    n, p = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    ordered = np.take_along_axis(x, order, axis=1)
    starts = np.ones((n, p), dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = np.cumsum(starts.ravel()) - 1  # one id per run of equal values, across all rows
    position = np.tile(np.arange(1, p + 1, dtype=np.float64), n)
    mean_rank = np.bincount(group, weights=position) / np.bincount(group)
    ranks = np.empty((n, p))
    np.put_along_axis(ranks, order, mean_rank[group].reshape(n, p), axis=1)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps, pixel by pixel.

    Args:
        a: maps ``[N, h, w]``.
        b: maps of the same shape.

    Returns:
        ``[N]`` in [-1, 1]; NaN where a map is constant (it ranks nothing).
    """
    ra = _average_ranks(a.reshape(len(a), -1).astype(np.float64))
    rb = _average_ranks(b.reshape(len(b), -1).astype(np.float64))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / denominator, np.nan)


def top_region_iou(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """IoU of the hottest regions of each pair of maps.

    The region is the ``ceil(fraction * h * w)`` highest pixels of a map (ties broken by position,
    so both regions always have the same size).

    Args:
        a: maps ``[N, h, w]``.
        b: maps of the same shape.
        fraction: share of pixels in the region.

    Returns:
        ``[N]`` in [0, 1].
    """
    flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    k = max(1, math.ceil(fraction * flat_a.shape[1]))

    def top(flat: np.ndarray) -> np.ndarray:
        mask = np.zeros(flat.shape, dtype=bool)
        np.put_along_axis(mask, np.argsort(-flat, axis=1, kind="stable")[:, :k], True, axis=1)
        return mask

    mask_a, mask_b = top(flat_a), top(flat_b)
    return (mask_a & mask_b).sum(axis=1) / (mask_a | mask_b).sum(axis=1)


def _quartiles(values: np.ndarray, name: str) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return {f"{name}_{s}": math.nan for s in ("mean", "q25", "median", "q75")}
    q25, median, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
    return {
        f"{name}_mean": float(finite.mean()),
        f"{name}_q25": float(q25),
        f"{name}_median": float(median),
        f"{name}_q75": float(q75),
    }


def compare_tables(
    experiments: Sequence[Experiment], cams: Sequence[np.ndarray]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three tables of a comparison, from aligned experiments and their predicted-class maps.

    Args:
        experiments: aligned (see :func:`align`): same paths in the same order.
        cams: per experiment ``[N, h, w]`` maps in that order (any h, w).

    Returns:
        experiments table, pairs table, per-image table.
    """
    first = experiments[0].predictions
    maps = to_common_size(cams)
    per_image = pd.DataFrame({"path": first["path"], "true": first["true"]})
    for exp in experiments:
        per_image[f"pred [{exp.label}]"] = exp.predictions["pred"].to_numpy()
        per_image[f"confidence [{exp.label}]"] = confidence(exp.predictions)
        per_image[f"correct [{exp.label}]"] = exp.predictions["correct"].to_numpy()
    outcomes = [
        set(v for v in values if v is not None) for values in zip(*(e.predictions["correct"] for e in experiments))
    ]
    per_image["flipped"] = [len(o) > 1 for o in outcomes]

    pair_rows, rhos = [], []
    for i in range(len(experiments)):
        for j in range(i + 1, len(experiments)):
            a, b = experiments[i], experiments[j]
            rho, iou = spearman(maps[i], maps[j]), top_region_iou(maps[i], maps[j])
            per_image[pair_column("spearman", a.label, b.label)] = rho
            per_image[pair_column("iou_top20", a.label, b.label)] = iou
            rhos.append(rho)
            to_wrong, to_right = flip_counts(list(a.predictions["correct"]), list(b.predictions["correct"]))
            pair_rows.append(
                {
                    "a": a.label,
                    "b": b.label,
                    "images": len(first),
                    "correct_to_incorrect": to_wrong,
                    "incorrect_to_correct": to_right,
                    "same_prediction": float(
                        (a.predictions["pred"].to_numpy() == b.predictions["pred"].to_numpy()).mean()
                    ),
                    **_quartiles(rho, "spearman"),
                    **_quartiles(iou, "iou_top20"),
                }
            )
    if rhos:
        with np.errstate(invalid="ignore"):
            per_image["cam_disagreement"] = (
                1.0 - np.nanmean(np.vstack(rhos), axis=0) if len(rhos) > 1 else 1.0 - rhos[0]
            )
    else:
        per_image["cam_disagreement"] = math.nan
    pairs = pd.DataFrame(pair_rows) if pair_rows else pd.DataFrame(columns=["a", "b", "images"])
    return experiment_table(experiments), pairs, per_image


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------
def _overlay(exp: Experiment, path: str) -> np.ndarray | None:
    rel = exp.predictions.loc[exp.predictions["path"] == path, "overlay"]
    file = overlay_file(exp.explain_dir, rel.iloc[0]) if len(rel) else None  # only files inside the folder
    image = cv2.imread(str(file), cv2.IMREAD_COLOR) if file is not None else None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image is not None else None


def overlay_rows_grid(experiments: Sequence[Experiment], paths: Sequence[str], out_png: Path) -> Path | None:
    """One row per image, one column per experiment: the overlays explain wrote (they carry the label).

    Returns:
        The PNG written, or None when there is nothing to show.
    """
    tiles, captions = [], []
    for path in paths:
        row = [_overlay(exp, path) for exp in experiments]
        if any(tile is None for tile in row):
            continue
        tiles += row
        captions += [f"{exp.label}\n{Path(path).name}" for exp in experiments]
    if not tiles:
        return None
    return save_image(out_png, image_grid(tiles, captions, ncols=len(experiments), tile_size=256))


def similarity_histogram(per_image: pd.DataFrame, pairs: pd.DataFrame, out_png: Path) -> Path:
    """Histograms of the per-image Spearman and top-20% IoU of every pair."""
    with plain_text():  # labels are user text: "$" must not start matplotlib mathtext
        return _similarity_histogram(per_image, pairs, out_png)


def _similarity_histogram(per_image: pd.DataFrame, pairs: pd.DataFrame, out_png: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for metric, ax, title, low in (
        ("spearman", axes[0], "CAM Spearman correlation", -1.0),
        ("iou_top20", axes[1], "IoU of the top-20% regions", 0.0),
    ):
        for a, b in zip(pairs["a"], pairs["b"]):
            values = per_image[pair_column(metric, a, b)].to_numpy(dtype=float)
            ax.hist(
                values[np.isfinite(values)],
                bins=20,
                range=(low, 1.0),
                histtype="step",
                linewidth=2,
                label=f"{a} vs {b}",
            )
        ax.set_title(title)
        ax.set_xlabel("per image (1 = same map)")
        ax.set_ylabel("images")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def write_pictures(
    experiments: Sequence[Experiment], per_image: pd.DataFrame, pairs: pd.DataFrame, out_dir: Path, rows: int
) -> list[tuple[str, Path, str]]:
    """The grids of the images that matter most, and the similarity histogram.

    Returns:
        (title, PNG, explanation) of each picture written, for the report.
    """
    pictures: list[tuple[str, Path, str]] = []
    if len(pairs):
        pictures.append(
            (
                "CAM similarity per image",
                similarity_histogram(per_image, pairs, out_dir / "cam_similarity.png"),
                "How similar the experiments' maps are on each image; mass near 1 means they look at the same regions.",
            )
        )
        by_disagreement = per_image.sort_values("cam_disagreement", ascending=False)
        flipped = by_disagreement[by_disagreement["flipped"]]
        grid = overlay_rows_grid(experiments, flipped["path"].head(rows).tolist(), out_dir / "flipped.png")
        if grid:
            pictures.append(
                (
                    "Flipped images",
                    grid,
                    "Right in one experiment and wrong in another; one row per image, one column per experiment.",
                )
            )
        grid = overlay_rows_grid(
            experiments, by_disagreement["path"].head(rows).tolist(), out_dir / "cam_disagreement.png"
        )
        if grid:
            pictures.append(
                (
                    "Where the CAMs disagree most",
                    grid,
                    "Images whose maps differ most between experiments (lowest Spearman).",
                )
            )
    for exp in experiments:
        frame = exp.predictions.assign(confidence=confidence(exp.predictions))
        mistakes = frame[frame["correct"].eq(False)].sort_values("confidence", ascending=False)
        name = f"confident_mistakes_{safe_name(exp.label)}.png"
        grid = overlay_rows_grid(experiments, mistakes["path"].head(rows).tolist(), out_dir / name)
        if grid:
            pictures.append(
                (
                    f"Most confident mistakes of {exp.label}",
                    grid,
                    "Its wrong predictions, most confident first, next to the other experiments' maps.",
                )
            )
    return pictures


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------
def compare(cfg: DictConfig) -> dict[str, Any]:
    """Compare experiments on one common image set and write tables, grids and the HTML report.

    Args:
        cfg: the composed ``conf/compare.yaml`` config.

    Returns:
        ``out_dir``, ``labels``, ``explain_dirs`` and the ``experiments`` and ``pairs`` tables as records.

    Raises:
        CatdogError: bad inputs (missing folders, different classes, no common image).
    """
    given = [str(r) for r in (cfg.runs or [])]
    if cfg.get("sweep"):
        given += [str(p) for p in sweep_runs(cfg.sweep)]
    if not given:
        raise CatdogError(
            "Nothing to compare: pass runs=[runs/A,runs/B] (run/explain folders or checkpoints) "
            "or sweep=<multirun folder>"
        )
    sources = [resolve_source(g) for g in given]
    check_class_names(given, [source_class_names(s) for s in sources])
    common = common_images(sources, cfg.data.root, cfg.data.split)
    print(f"Comparing {len(sources)} experiments on {len(common)} common images")

    explain_dirs = []
    for source in sources:
        found = usable_explain_dir(source, common)
        if found is None:
            found = _explain_again(source, cfg)
        explain_dirs.append(found)
    names = [(s.run_dir.name if s.run_dir is not None else Path(s.given).name) for s in sources]
    labels = experiment_labels(names, [read_run_settings(s.run_dir) for s in sources])
    by_method = method_labels(explain_dirs)
    if by_method is not None:  # explain folders of different methods/layers are experiments named by them
        same_run = len({str(s.run_dir) for s in sources}) == 1
        labels = _unique(by_method if same_run else [f"{a} {b}" for a, b in zip(labels, by_method)])
    experiments = [read_explain_dir(d, label) for d, label in zip(explain_dirs, labels)]
    paths = align(experiments, common)
    if len(paths) < len(common):
        log.warning(
            "%d of the %d common images could not be read by every run: left out", len(common) - len(paths), len(common)
        )
    # Maps of the same class: each image's class is the first experiment's prediction.
    reference = np.array([class_names_index(experiments[0].class_names, p) for p in experiments[0].predictions["pred"]])
    cams, lacking = [], 0
    for exp in experiments:
        maps, missing = load_class_cams(exp.explain_dir, paths, reference)
        cams.append(maps)
        lacking = max(lacking, missing)
    if lacking:
        log.warning("%d image(s): an experiment has no map of the reference class; its predicted map is used", lacking)

    final_dir = Path(cfg.out_dir).expanduser() if cfg.out_dir else timestamped_dir(Path("compare"))
    table, pairs, per_image = compare_tables(experiments, cams)
    with staged_output_dir(final_dir, overwrite=bool(cfg.overwrite)) as out_dir:
        table.to_csv(out_dir / "experiments.csv", index=False)
        pairs.to_csv(out_dir / "pairs.csv", index=False)
        per_image.to_csv(out_dir / "per_image.csv", index=False)
        pictures = write_pictures(experiments, per_image, pairs, out_dir, int(cfg.grid_rows))
        write_report(out_dir / "report", experiments, pairs=pairs, per_image=per_image, pictures=pictures)
    out_dir = final_dir
    report = out_dir / "report" / "index.html"
    print_tables(table, pairs, experiments[0].class_names)
    print(f"Compare folder: {out_dir}\n  report: {report}\n  experiments.csv, pairs.csv, per_image.csv, grids (*.png)")
    return {
        "out_dir": str(out_dir),
        "labels": labels,
        "explain_dirs": [str(d) for d in explain_dirs],
        "experiments": table.to_dict("records"),
        "pairs": pairs.to_dict("records"),
        "report": str(report),
    }


def _explain_again(source: Source, cfg: DictConfig) -> Path:
    """Run explain for a source on the common image set (its held-out split, or data.root)."""
    if source.checkpoint is None:
        raise CatdogError(
            f"{source.given} does not cover the common images and its checkpoint is gone: pass its run folder or "
            "checkpoint instead"
        )
    # Values are merged as data, never pasted into override strings: a folder named "lr=0.1,bs=32" or a
    # path with quotes or "$" would otherwise be parsed by Hydra's override grammar.
    explain_cfg = _explain_config([])
    settings = OmegaConf.to_container(cfg.explain, resolve=True) if cfg.get("explain") else {}
    merged = OmegaConf.merge(
        explain_cfg,
        settings,
        {"ckpt": _literal(source.checkpoint), "data": {"split": str(cfg.data.split)}},
        {"data": {"root": _literal(cfg.data.root)}} if cfg.data.root else {},
    )
    print(f"Explaining {source.given} (no explain folder covers the common images)")
    result = explain(merged)
    return Path(result["out_dir"])


def _literal(value: Any) -> str:
    """A path as an OmegaConf value that is never read as an interpolation (``${`` escaped)."""
    return str(value).replace("${", "\\${")


def _explain_config(overrides: list[str]) -> DictConfig:
    """conf/explain.yaml with overrides: from the running Hydra app, else from the repository's conf/."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="explain", overrides=overrides)
    conf_dir = Path(__file__).resolve().parents[3] / "conf"
    if not (conf_dir / "explain.yaml").is_file():
        raise CatdogError("conf/explain.yaml not found: run compare through scripts/compare.py")
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        return compose(config_name="explain", overrides=overrides)


def print_tables(table: pd.DataFrame, pairs: pd.DataFrame, class_names: Sequence[str]) -> None:
    """The experiments and pairs tables, readable in a terminal."""
    console = Console()
    numbers = Table(title="Experiments (on the common images)")
    columns = ["experiment", "images", "accuracy", *[f"recall_{c}" for c in class_names], "mean_confidence"]
    if table["pointing_game"].notna().any():
        columns.append("pointing_game")
    # Localization and faithfulness totals (catdog.metrics), where measured.
    columns += [c for c in MAP_QUALITY_HEADS if c in table.columns and table[c].notna().any()]
    for column in columns:
        if column == "experiment":  # labels are what the reader needs: wrap them, never cut them
            numbers.add_column("experiment", overflow="fold", min_width=min(30, int(table["experiment"].str.len().max())))
        else:
            numbers.add_column(column.replace("_", " "), justify="right")
    for row in table.to_dict("records"):
        numbers.add_row(*[escape(_cell(row[c])) for c in columns])
    console.print(numbers)
    if len(pairs):
        pair_table = Table(title=escape("Pairs: flips and CAM similarity (mean [q25, median, q75])"))
        for column in ("A", "B", "A right→B wrong", "A wrong→B right", "same pred", "Spearman", "top-20% IoU"):
            if column in ("A", "B"):
                pair_table.add_column(column, overflow="fold", min_width=min(20, int(table["experiment"].str.len().max())))
            else:
                pair_table.add_column(column, justify="right")
        for row in pairs.to_dict("records"):
            pair_table.add_row(
                escape(row["a"]),
                escape(row["b"]),
                str(row["correct_to_incorrect"]),
                str(row["incorrect_to_correct"]),
                _cell(row["same_prediction"]),
                _stats(row, "spearman"),
                _stats(row, "iou_top20"),
            )
        console.print(pair_table)


def _cell(value: Any) -> str:
    """Shares as percentages, counts and names as they are."""
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{100 * value:.1f}%"
    return str(value)


def _stats(row: dict[str, Any], name: str) -> str:
    """``mean [q25, median, q75]``; a dash when no image had a usable map (e.g. flat or overflowed maps)."""
    if not math.isfinite(row.get(f"{name}_mean", math.nan)):
        return "–"
    return escape(
        f"{row[f'{name}_mean']:.2f} [{row[f'{name}_q25']:.2f}, {row[f'{name}_median']:.2f}, {row[f'{name}_q75']:.2f}]"
    )
