"""Which images, with which labels, in which split.

An *index* is a DataFrame with one row per image and the columns
`path` (absolute path, str), `label` (class name, str) and `split` ("train", "val" or "test").
Class names always come from the data: the sorted unique labels.

Three layouts are understood (see data/README.md for examples):
- "folder": ImageFolder, `root/<class>/...`, or with pre-made splits `root/train/<class>/...`,
  `root/val/<class>/...`, `root/test/<class>/...`;
- "kaggle": the flat Kaggle "Dogs vs. Cats" layout, `root/cat.123.jpg`, `root/dog.7.jpg`;
- "csv": a manifest with columns `path,label[,split]`.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from catdog.data.images import IMAGE_EXTENSIONS, looks_like_image
from catdog.errors import CatdogError

LAYOUTS: tuple[str, ...] = ("folder", "kaggle", "csv")
MASK_FILES = "mask_files"  # index.attrs key: (path, reason) of the object mask files left out of the index
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Other spellings of split folder names / manifest values, mapped to the canonical ones.
_SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def absolute_path(path: str | Path, base: str | Path) -> str:
    """Make a path absolute the way every index does, so the same file always gives the same str.

    `~` is expanded, a relative path is joined to `base`, the base folder's symlinks are resolved
    and `..` parts are collapsed; the file name itself is kept (a symlinked file keeps its name).

    Args:
        path: Absolute or relative path.
        base: Folder that relative paths are relative to.

    Returns:
        Absolute, normalised path.
    """
    path = Path(path).expanduser()
    if not path.is_absolute():
        path = Path(base).expanduser().resolve() / path
    return os.path.normpath(path)


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """List the image files in a folder, sorted, skipping hidden files and folders.

    Symlinked sub-folders are followed (each real folder once, so a link loop ends), the same way for
    training and for explain. Folders that catdog itself wrote (explain and compare output: overlays of
    earlier runs) are skipped, so explaining a root that holds them never explains our own pictures.

    Args:
        folder: Folder to search.
        recursive: Whether to search sub-folders too.

    Returns:
        Files whose extension (any case) is in IMAGE_EXTENSIONS, sorted by path.
    """
    from catdog.runs import is_catdog_output_dir

    found: list[str] = []
    seen: set[str] = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen or (current != os.fspath(folder) and is_catdog_output_dir(Path(current))):
            dirs[:] = []
            continue
        seen.add(real)
        # Pruning in place stops os.walk from entering hidden folders (.git, .ipynb_checkpoints).
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
        # Strings, not Path objects, while filtering: 25,000 files index in well under a second.
        found.extend(
            os.path.join(current, name)
            for name in files
            if not name.startswith(".") and _is_image_name(current, name)
        )
    # The order Path sorting gives (part by part), which split assignment depends on.
    found.sort(key=lambda path: path.split(os.sep))
    return [Path(path) for path in found]


def _is_image_name(folder: str, name: str) -> bool:
    """An image by its extension; a file without one by its header (photos saved without an extension)."""
    extension = os.path.splitext(name)[1].lower()
    if extension:
        return extension in IMAGE_EXTENSIONS
    return looks_like_image(os.path.join(folder, name))


def refuse_catdog_output(path: Path, what: str) -> None:
    """Raise when ``path`` is, or lies inside, a folder catdog wrote (explain or compare output).

    Its images are catdog's own overlays, and its class folders (``correct/<class>``) are predictions, not
    labels: explaining or evaluating them would report the model's own answers back as 100% right.

    Raises:
        CatdogError: naming the output folder.
    """
    from catdog.runs import is_catdog_output_dir  # here, as in list_images

    for folder in (path, *path.parents):
        if folder.is_dir() and is_catdog_output_dir(folder):
            raise CatdogError(
                f"{what}={path} is inside {folder}, a folder catdog wrote (its overlays, labelled by predictions): "
                "point it at the original images"
            )


def assign_splits(
    labels: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    keys: Sequence[str] | None = None,
) -> np.ndarray:
    """Split images into train/val/test by a seeded hash of each image's key: stable as data grows.

    Each image gets a number u in [0, 1) from the SHA-256 of ``"<seed>:<key>"``; it goes to test
    when ``u < test_fraction``, to val when ``u < test_fraction + val_fraction``, else to train.
    So an image's split depends only on its own key and the seed: adding or removing other images
    never moves it to another split (a model's test images never leak into a later run's training
    set), and the split is the same on every machine. Per class the shares are the fractions up
    to sampling noise (binomial). A class of at least 3 images whose hash gave it no val (or no
    test) image gets its lowest-u training image moved there, and every class keeps at least one
    training image; only such tiny classes can see an image move when images are added.

    Args:
        labels: Class name of each image.
        val_fraction: Share of each class for validation, in [0, 1).
        test_fraction: Share of each class for test, in [0, 1).
        seed: Seed of the hash: the same seed and keys always give the same split.
        keys: A stable identifier of each image, e.g. its path relative to the dataset root
            (`split_key`); None uses the position, which is only stable for the same image list.

    Returns:
        Array of "train"/"val"/"test", one per label, in the order of `labels`.

    Raises:
        CatdogError: A fraction is out of range, or `keys` and `labels` differ in length.
    """
    _check_fractions(val_fraction, test_fraction)
    labels = np.asarray(labels, dtype=object)
    keys = [str(i) for i in range(len(labels))] if keys is None else [str(k) for k in keys]
    if len(keys) != len(labels):
        raise CatdogError(f"{len(keys)} split keys for {len(labels)} images: rebuild the index")
    u = np.array([_unit_hash(f"{seed}:{key}") for key in keys], dtype=np.float64)
    splits = np.full(len(labels), "train", dtype="<U5")
    splits[u < test_fraction + val_fraction] = "val"
    splits[u < test_fraction] = "test"
    for name in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == name)
        # Tiny classes: one image per requested held-out split, and always one training image.
        for split, fraction in (("test", test_fraction), ("val", val_fraction)):
            if fraction > 0 and len(members) >= 3 and not (splits[members] == split).any():
                train = members[splits[members] == "train"]
                if len(train) > 1:
                    splits[train[np.argmin(u[train])]] = split
        if len(members) and not (splits[members] == "train").any():
            splits[members[np.argmax(u[members])]] = "train"
    return splits


def _unit_hash(text: str) -> float:
    """A number in [0, 1) from the SHA-256 of `text` (uniform, the same on every platform)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_key(path: str, base: str | Path | None) -> str:
    """The identifier an image is split by: its path relative to `base` (posix), else as given.

    Relative keys keep the split when the whole dataset folder is moved or copied.

    Args:
        path: Absolute path of the image.
        base: The dataset folder, or None.

    Returns:
        The key.
    """
    if base is not None:
        try:
            return Path(path).relative_to(Path(base)).as_posix()
        except ValueError:
            pass
    return Path(path).as_posix()


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise a CatdogError unless both fractions and their sum lie in [0, 1)."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise CatdogError(
                f"data.{name}={value} is out of range: use a number in [0, 1), e.g. 0.1"
            )
    if val_fraction + test_fraction >= 1:
        raise CatdogError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} leaves "
            "no training images: make their sum smaller than 1, e.g. 0.1 and 0.1"
        )


def build_index(
    layout: str,
    root: str | Path | None,
    manifest: str | Path | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """List a dataset's images with their labels and a train/val/test split.

    Splits that the data does not define (no split folders, no split column, or a missing val or
    test folder) are carved from the training images with `assign_splits`.

    Args:
        layout: "folder", "kaggle" or "csv".
        root: Dataset folder ("folder", "kaggle"); for "csv", an optional folder that relative
            manifest paths are relative to (default: the manifest's folder).
        manifest: CSV file with columns `path,label[,split]` (layout "csv" only).
        val_fraction: Share of each class for validation when the split is assigned here.
        test_fraction: Share of each class for test when the split is assigned here.
        seed: Seed of the assigned split.

    Returns:
        Index with columns `path,label,split`, one row per image; ``index.attrs[MASK_FILES]`` lists the
        object mask files left out, as (path, reason).

    Raises:
        CatdogError: Unknown layout, missing folder or manifest, no images, an empty class
            folder, fewer than two classes, bad manifest columns or split values, fractions out
            of range.
    """
    _check_fractions(val_fraction, test_fraction)
    if layout == "folder":
        index = _folder_index(_existing_root(root, layout))
    elif layout == "kaggle":
        index = _kaggle_index(_existing_root(root, layout))
    elif layout == "csv":
        index = _csv_index(manifest, root)
    else:
        raise CatdogError(
            f"data.layout={layout!r} is unknown: use one of {', '.join(LAYOUTS)}"
        )
    # Object masks (<stem>_mask beside <stem>) are not photos: out before splitting, listed for skipped.csv.
    from catdog.data.masks import split_off_masks  # here: masks imports this module

    index, masks = split_off_masks(index)
    classes = class_names_of(index)
    if len(classes) < 2:
        raise CatdogError(
            f"only one class ({classes[0]!r}) found in the data: a classifier needs at least two "
            "classes, e.g. one folder per class"
        )
    if layout == "csv":
        base = _csv_split_base(index["path"], root, manifest)
    else:
        base = _existing_root(root, layout)
    index = _fill_missing_splits(index, val_fraction, test_fraction, seed, base)
    index = index[["path", "label", "split"]].reset_index(drop=True)
    index.attrs[MASK_FILES] = list(zip(masks["path"], masks["reason"]))
    return index


def _csv_split_base(paths: pd.Series, root: str | Path | None, manifest: str | Path | None) -> Path:
    """The folder a manifest's images are split relative to: one that moves with the dataset.

    ``data.root`` or the manifest's folder when every image lies below it (relative keys, as always); a
    manifest elsewhere listing absolute paths gets the images' deepest common folder instead, so moving
    the dataset and rewriting the manifest's paths keeps every image in its split.
    """
    base = Path(root if root not in (None, "") else Path(manifest).expanduser().parent).expanduser().resolve()
    inside = all(os.path.normpath(p).startswith(os.fspath(base) + os.sep) for p in paths)
    if inside or not len(paths):
        return base
    # The common folder of the images' folders (one image alone: its own folder).
    return Path(os.path.commonpath([os.path.dirname(p) for p in paths]))


def dataset_root(data_hparams: dict, paths: Sequence[str]) -> Path:
    """The dataset folder a run's split.csv paths lie below, as training recorded it (for data.remap_root).

    ``data.root`` for folder and Kaggle layouts; for a manifest, the folder its images were split relative to.
    """
    if data_hparams.get("layout") == "csv":
        series = pd.Series(list(paths), dtype=object)
        return _csv_split_base(series, data_hparams.get("root"), data_hparams.get("manifest"))
    if data_hparams.get("root"):
        return Path(data_hparams["root"])
    return Path(os.path.commonpath([os.path.dirname(p) for p in paths]))


def class_names_of(index: pd.DataFrame) -> list[str]:
    """Class names of an index: its sorted unique labels (missing labels ignored).

    Args:
        index: DataFrame with a `label` column.

    Returns:
        Sorted class names; position i is class index i.
    """
    return sorted(str(label) for label in index["label"].dropna().unique())


def _existing_root(root: str | Path | None, layout: str) -> Path:
    """Check that the dataset folder exists and return it resolved."""
    if root is None or str(root) == "":
        raise CatdogError(f"data.root is not set: data={layout} needs data.root=path/to/images")
    path = Path(root).expanduser()
    if not path.exists():
        raise CatdogError(
            f"data.root={root} does not exist: check the path (absolute, or relative to where you "
            "run the command), or use data=demo for the built-in demo set"
        )
    if not path.is_dir():
        raise CatdogError(
            f"data.root={root} is a file, not a folder: point it at the dataset folder"
        )
    refuse_catdog_output(path.resolve(), "data.root")
    return path.resolve()


def _class_folders(folder: Path) -> list[Path]:
    """Non-hidden sub-folders of a folder, sorted; not the ``runs/`` folder Hydra makes in the working
    directory, nor any other folder of catdog runs or outputs (``data.root=.`` from inside the dataset)."""
    from catdog.runs import holds_catdog_runs

    return sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and not holds_catdog_runs(p)
    )


def _nfc(name: str) -> str:
    """One spelling of a name: macOS writes folder names decomposed (NFD), Linux keeps what it is given."""
    return unicodedata.normalize("NFC", name)


def _folder_index(root: Path) -> pd.DataFrame:
    """Index an ImageFolder tree, with or without train/val/test folders above the classes."""
    split_folders: dict[str, Path] = {}
    folders = _class_folders(root)
    for folder in folders:
        split = _SPLIT_ALIASES.get(folder.name.lower())
        if split is None:
            continue
        if split in split_folders:
            raise CatdogError(
                f"data.root={root} has two {split} folders ({split_folders[split].name}/ and "
                f"{folder.name}/): keep only one"
            )
        split_folders[split] = folder
    if "train" not in split_folders or len(split_folders) < len(folders):
        # Plain ImageFolder: without train/, or beside other class folders, train/val/test are classes.
        return _class_folder_rows(root, split=None)
    frames = [_class_folder_rows(split_folders[s], split=s) for s in SPLITS if s in split_folders]
    index = pd.concat(frames, ignore_index=True)
    train_classes = set(frames[0]["label"])
    for frame in frames[1:]:
        extra = sorted(set(frame["label"]) - train_classes)
        if extra:
            split = frame["split"].iloc[0]
            raise CatdogError(
                f"class {extra[0]!r} is in {split_folders[split]} but not in "
                f"{split_folders['train']}: every class needs training images"
            )
    return index


def _class_folder_rows(folder: Path, split: str | None) -> pd.DataFrame:
    """Rows (path, label[, split]) for `folder/<class>/**/image` files."""
    classes = _class_folders(folder)
    if not classes:
        loose = len(list_images(folder, recursive=False))
        hint = (
            f" (it holds {loose} images directly: for files named like cat.1.jpg use data=kaggle)"
            if loose
            else ""
        )
        raise CatdogError(
            f"no class folders in {folder}{hint}: put each class's images in its own sub-folder, "
            "e.g. cats/ and dogs/"
        )
    rows: list[tuple[str, str]] = []
    for class_folder in classes:
        images = list_images(class_folder)
        if not images:
            raise CatdogError(
                f"class folder {class_folder} has no images "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}): add images or remove the folder"
            )
        rows.extend((os.fspath(p), _nfc(class_folder.name)) for p in images)
    frame = pd.DataFrame(rows, columns=["path", "label"])
    if split is not None:
        frame["split"] = split
    return frame


def _kaggle_index(root: Path) -> pd.DataFrame:
    """Index a flat folder of files named `<class>.<anything>.<ext>`."""
    images = list_images(root, recursive=False)
    if not images:
        raise CatdogError(
            f"no images directly in data.root={root}: data=kaggle expects files like "
            "root/cat.1.jpg; for one sub-folder per class use data=folder"
        )
    rows = []
    for image in images:
        if "." not in image.stem:
            raise CatdogError(
                f"file name {image.name!r} in {root} is not <class>.<id>.<ext> (like cat.1.jpg), "
                "as data=kaggle needs: rename or move it, or use data=folder or data=csv"
            )
        rows.append((os.fspath(image), _nfc(image.name.split(".", 1)[0].lower())))
    return pd.DataFrame(rows, columns=["path", "label"])


def _csv_index(manifest: str | Path | None, root: str | Path | None) -> pd.DataFrame:
    """Index the images listed in a CSV manifest."""
    if manifest is None or str(manifest) == "":
        raise CatdogError("data.manifest is not set: data=csv needs data.manifest=path/to/file.csv")
    manifest = Path(manifest).expanduser()
    if not manifest.is_file():
        raise CatdogError(f"data.manifest={manifest} does not exist: check the path")
    from catdog.readers import read_csv  # here: readers imports the data package

    # Text as written, no NA parsing: a class called "NA", "None" or "0" stays a class name.
    table = read_csv(manifest, text="*", what="manifest", fix="it needs a header path,label[,split]")
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise CatdogError(
            f"manifest {manifest} lacks column(s) {', '.join(missing)}: it needs a header "
            f"path,label[,split] (found: {', '.join(table.columns)})"
        )
    if table.empty:
        raise CatdogError(f"manifest {manifest} has no rows: list one image per row")
    for column in ("path", "label"):
        blank = table.index[table[column].str.strip() == ""]
        if len(blank):
            raise CatdogError(
                f"manifest {manifest} has {len(blank)} row(s) with an empty {column} "
                f"(first: data row {blank[0] + 1}): fill them in or remove them"
            )
    base = Path(root) if root not in (None, "") else manifest.parent
    paths = [absolute_path(p.strip(), base) for p in table["path"]]
    index = pd.DataFrame({"path": paths, "label": table["label"].str.strip().tolist()})
    duplicated = index["path"][index["path"].duplicated()]
    if len(duplicated):
        raise CatdogError(
            f"manifest {manifest} lists {len(duplicated)} image(s) twice (first: "
            f"{duplicated.iloc[0]}): keep one row per image"
        )
    if not any(os.path.exists(p) for p in paths):
        raise CatdogError(
            f"none of the {len(paths)} paths in {manifest} exists (first: {paths[0]}): relative "
            f"paths are resolved against {Path(base).expanduser().resolve()}; set data.root to "
            "the folder they are relative to"
        )
    if "split" in table.columns:
        values = table["split"].str.strip().str.lower()
        unknown = sorted(set(values) - set(_SPLIT_ALIASES))
        if unknown:
            raise CatdogError(
                f"manifest {manifest} has unknown split value(s) {', '.join(map(repr, unknown))}: "
                "use train, val or test"
            )
        index["split"] = values.map(_SPLIT_ALIASES).tolist()
    return index


def _fill_missing_splits(
    index: pd.DataFrame,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    base: Path | None = None,
) -> pd.DataFrame:
    """Assign splits where the data has none, carving a missing val or test split from train.

    Images are split by their path relative to `base` (see `assign_splits`).
    """
    index = index.copy()
    keys = [split_key(p, base) for p in index["path"]]
    if "split" not in index.columns:
        index["split"] = assign_splits(
            index["label"].tolist(), val_fraction, test_fraction, seed, keys
        )
        return index
    present = set(index["split"])
    if "train" not in present:
        raise CatdogError(
            "the data defines splits but no train split: add training images (a train/ folder or "
            "rows with split=train)"
        )
    carve_val = val_fraction if "val" not in present else 0.0
    carve_test = test_fraction if "test" not in present else 0.0
    if carve_val or carve_test:
        train = index["split"] == "train"
        index.loc[train, "split"] = assign_splits(
            index.loc[train, "label"].tolist(),
            carve_val,
            carve_test,
            seed,
            [key for key, is_train in zip(keys, train) if is_train],
        )
    return index


def index_for_inference(root_or_file: str | Path, class_names: Sequence[str]) -> pd.DataFrame:
    """List images to explain, labelled where the layout tells their class.

    A single file gives one unlabelled row. In a folder, every image below it is listed once, and
    labelled by the nearest enclosing folder (the folder itself included) named exactly like a
    known class; failing that, by a file name of the form `<class>.<anything>` (Kaggle style);
    otherwise it stays unlabelled.

    Args:
        root_or_file: An image file or a folder of images.
        class_names: The model's class names.

    Returns:
        DataFrame with columns `path` (absolute str) and `label` (class name, or missing).

    Raises:
        CatdogError: The path does not exist, or the folder holds no images.
    """
    target = Path(root_or_file).expanduser()
    if not target.exists():
        raise CatdogError(
            f"{root_or_file} does not exist: give an image file or a folder of images"
        )
    target = target.resolve()
    refuse_catdog_output(target, "data.root/input")
    if target.is_file():
        return pd.DataFrame({"path": [os.fspath(target)], "label": [None]})
    images = list_images(target)
    if not images:
        raise CatdogError(
            f"no images in {target} ({', '.join(sorted(IMAGE_EXTENSIONS))}): point at a folder "
            "of images or a single image file"
        )
    # Folder names match a class in either Unicode spelling; Kaggle prefixes also in any case (training
    # lower-cases them: Cat.1.jpg is a "cat"). The label is the model's own spelling.
    known = {_nfc(name): name for name in class_names}
    folded: dict[str, str | None] = {}
    for name in class_names:
        folded[_nfc(name).casefold()] = name if _nfc(name).casefold() not in folded else None  # ambiguous: none
    labels: list[str | None] = []
    paths = [os.fspath(p) for p in images]
    skip = len(os.fspath(target).rstrip(os.sep)) + 1
    for path in paths:
        # Parent folders from the nearest up to the target itself (string parts: fast at 25,000 files).
        parts = path[skip:].split(os.sep)
        name = parts[-1]
        folders = [target.name, *parts[:-1]][::-1]
        label = next((known[_nfc(folder)] for folder in folders if _nfc(folder) in known), None)
        if label is None and name.count(".") >= 2:
            prefix = _nfc(name.split(".", 1)[0])
            label = known.get(prefix) or folded.get(prefix.casefold())
        labels.append(label)
    return pd.DataFrame({"path": paths, "label": labels})
