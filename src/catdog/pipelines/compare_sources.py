"""Compare's sources: what the user pointed at, the explain folder of each, and the experiments' labels.

Each input (run folder, explain folder or checkpoint; a sweep's jobs come from
:func:`catdog.runs.sweep_runs`) becomes a :class:`Source`; :func:`common_images` is the one image set they
are compared on, :func:`usable_explain_dir` an explain folder covering it, and :func:`_explain_again` runs
explain where there is none. Raw maps are read back from each explain folder's ``cams.npz``. Labels name
each experiment by what differs between the runs' settings (or by method and layer).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from catdog import CONFIG_DIR
from catdog.data import index_for_inference
from catdog.data.selection import select_images
from catdog.errors import CatdogError
from catdog.explain.pipeline import explain
from catdog.names import distinct_labels
from catdog.readers import read_checkpoint, read_csv, read_json, read_yaml
from catdog.report import read_explain_dir
from catdog.runs import (
    contained,
    explain_dirs_with_cams,
    is_complete_explain_dir,
    is_staging_dir,
    resolve_checkpoint,
    run_dir_of,
)

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


def covered_paths(explain_dir: Path) -> set[str]:
    """Images an explain folder has seen: explained, or skipped as unreadable."""
    paths = _listed_paths(explain_dir, "predictions.csv")
    if contained(explain_dir, "skipped.csv") is not None:
        paths |= _listed_paths(explain_dir, "skipped.csv")
    return paths


def _listed_paths(explain_dir: Path, name: str) -> set[str]:
    """The ``path`` column of one of an explain folder's CSVs (only a file inside the folder)."""
    csv_file = contained(explain_dir, name)
    if csv_file is None:
        raise CatdogError(f"{explain_dir / name} is missing or leads outside {explain_dir}: run explain again")
    table = read_csv(csv_file, required=("path",), text=("path",), what=name, fix="run explain again")
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
            paths = _listed_paths(source.explain_dir, "predictions.csv")
        elif source.run_dir is not None and (source.run_dir / "split.csv").is_file():
            paths = set(select_images(None, split, [], {}, source.run_dir, check_files=False)["path"])  # names only
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
    candidates += explain_dirs_with_cams(source.run_dir) if source.run_dir is not None else []
    for candidate in candidates:
        if (candidate / "cams.npz").is_file() and wanted <= covered_paths(candidate):
            return candidate
    return None


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
    file = contained(explain_dir, "cams.npz")
    if file is None:
        raise CatdogError(f"{explain_dir} has no cams.npz inside it: explain again with save_cams=true")
    try:
        with np.load(file, allow_pickle=False) as npz:
            row = {str(path): i for i, path in enumerate(npz["paths"])}
            missing = [p for p in paths if p not in row]
            if missing:
                raise CatdogError(
                    f"{file} lacks the maps of {len(missing)} image(s) such as {missing[0]}: explain again"
                )
            rows = [row[p] for p in paths]
            cams, class_idx = npz["cams"][rows], npz["class_idx"][rows]
    except CatdogError:
        raise
    # A damaged file (cut short, a key or rows missing) raises any of these from zipfile, numpy or indexing.
    except (OSError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as err:
        detail = str(err).splitlines()[0] if str(err) else "no detail"
        raise CatdogError(
            f"{file} is damaged or incomplete ({type(err).__name__}: {detail}): "
            f"explain that folder again (or delete its cams.npz so compare explains it anew)"
        ) from None
    if classes is None:
        return cams[:, 0].astype(np.float32), 0
    match = class_idx == np.asarray(classes)[:, None]
    column = np.where(match.any(axis=1), match.argmax(axis=1), 0)
    return cams[np.arange(len(rows)), column].astype(np.float32), int((~match.any(axis=1)).sum())


# ---------------------------------------------------------------------------------------------
# Explaining a source again
# ---------------------------------------------------------------------------------------------
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
    settings = OmegaConf.to_container(cfg.explain, resolve=True) if cfg.explain else {}
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
    """explain.yaml with overrides: from the running Hydra app, else from the package's configs."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="explain", overrides=overrides)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name="explain", overrides=overrides)


# ---------------------------------------------------------------------------------------------
# Labels: what differs between the runs
# ---------------------------------------------------------------------------------------------
def read_run_settings(run_dir: Path | None) -> tuple[dict[str, str], dict[str, str]] | None:
    """A run's typed overrides and its flattened config (with the chosen config groups).

    Returns:
        (overrides: key -> value as typed, settings: dotted key -> value), or None without .hydra/.
    """
    # Only files inside the run folder (a link to another file is skipped with a note).
    config_file, overrides_file, hydra_file = (
        contained(run_dir, f".hydra/{name}.yaml") if run_dir is not None else None
        for name in ("config", "overrides", "hydra")
    )
    if config_file is None:
        return None
    # Read without resolving: "${oc.env:SECRET}" in a run's metadata stays that text (never the secret).
    fix = "fix or delete the run's .hydra folder"
    overrides: dict[str, str] = {}
    if overrides_file is not None:
        items = read_yaml(overrides_file, what="run metadata", fix=fix) or []
        for item in items if isinstance(items, list) else []:
            key, _, value = str(item).partition("=")
            # "~key" deletes a setting, "+key"/"++key" adds one: the key is what matters.
            overrides[key.lstrip("+~")] = value if not key.startswith("~") else "removed"
    config = read_yaml(config_file, what="run metadata", fix=fix)
    settings = _flatten(config if isinstance(config, dict) else {})
    if hydra_file is not None:
        hydra_cfg = read_yaml(hydra_file, what="run metadata", fix=fix)
        runtime = ((hydra_cfg or {}).get("hydra") or {}).get("runtime", {}) if isinstance(hydra_cfg, dict) else {}
        choices = runtime.get("choices") if isinstance(hydra_cfg, dict) else None
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
    return distinct_labels(labels)


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
