"""The built-in demo dataset: synthetic "cat" and "dog" faces hidden in clutter, with boxes.

It makes catdog work offline out of the box, and it is a fair test of the explanations: the class
is decided *only* by a small object at a random position, on a cluttered background drawn from
the same distribution for both classes. A classifier that is right must look at the object, and
boxes.csv says where the object is, so CAMs can be scored (pointing game) and not just admired.

A third class, "none", is clutter alone. It gives each animal evidence of its own: with only "cat"
and "dog" a softmax network can learn "dog or not dog", and the cat map then points at whatever
looks least like a dog. With "none" beside them, "cat" must be told from clutter by cat features.

The "cat" has pointed ears, green eyes, a small pink nose and whiskers; the "dog" has floppy dark
ears, black eyes, a big black nose and a red tongue. The face colour is drawn from the same palette
for both.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from catdog.data.index import absolute_path
from catdog.errors import CatdogError

DEMO_CLASSES: tuple[str, ...] = ("cat", "dog", "none")
NO_OBJECT = "none"  # the class drawn without an object (no box)
Colour = tuple[int, int, int]  # RGB
MARKER_FILE = "demo.json"
BOXES_FILE = "boxes.csv"
# Bump when the drawing changes, so existing demo folders are regenerated.
GENERATOR_VERSION = 2
# Written into demo.json: only a folder carrying this exact generator name is ever deleted to regenerate.
GENERATOR_NAME = "catdog.data.demo"
_LEGACY_KEYS = {"generator_version", "num_per_class", "image_size", "seed"}

# Object side as a share of the image side: at least ~1.3 feature cells of a stride-32 network at 112 px,
# so the strongest cell's centre can lie on the object (smaller objects make a strict pointing game a lottery).
_OBJECT_SCALE = (0.3, 0.45)
# Face colours (RGB), shared by both classes so colour alone never tells the class.
_FACE_COLOURS = np.array(
    [[240, 170, 80], [200, 200, 200], [250, 235, 200], [170, 120, 70], [245, 245, 245]],
    dtype=np.int32,
)


def ensure_demo_dataset(
    root: str | Path, num_per_class: int = 600, image_size: int = 128, seed: int = 0
) -> Path:
    """Generate the demo dataset unless it already exists with the same parameters.

    Layout: `root/cat/cat_0000.png`, ..., `root/dog/dog_0000.png`, ..., `root/none/none_0000.png`,
    `root/boxes.csv` (one row per cat or dog image;
    columns `path,x0,y0,x1,y1`: path relative to root, object box in pixels with x1, y1
    exclusive, i.e. the object is `image[y0:y1, x0:x1]`) and `root/demo.json` (the parameters).
    The set is generated in a temporary folder next to `root` and renamed into place, so an
    interrupted run never leaves a half-written set. Images are deterministic: the same
    parameters give the same bytes.

    Args:
        root: Folder of the dataset (created).
        num_per_class: Images per class.
        image_size: Side of the square images in pixels.
        seed: Random seed of the whole set.

    Returns:
        The dataset folder, resolved.

    Raises:
        CatdogError: `root` exists, is not empty and is not a demo dataset (it is never
            overwritten), or a parameter is out of range.
    """
    if num_per_class < 1 or image_size < 32:
        raise CatdogError(
            f"demo dataset needs num_per_class >= 1 and image_size >= 32 "
            f"(got {num_per_class} and {image_size}): fix the data config"
        )
    root = Path(root).expanduser().resolve()
    params = {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "num_per_class": num_per_class,
        "image_size": image_size,
        "seed": seed,
    }
    if _read_marker(root) == params:
        return root
    if root.exists() and not root.is_dir():
        raise CatdogError(f"data.root={root} is a file: choose a folder for the demo dataset")
    if root.exists() and any(root.iterdir()) and not _generated_here(root):
        raise CatdogError(
            f"{root} exists and is not a catdog demo dataset, refusing to overwrite it: to train on your photos "
            f"there, add data=folder (data.root={root} holds one sub-folder per class)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _write_dataset(staging, num_per_class, image_size, seed)
        (staging / MARKER_FILE).write_text(json.dumps(params, indent=2) + "\n")
        if root.exists():
            shutil.rmtree(root)  # an old demo set with other parameters (checked above)
        try:
            os.replace(staging, root)
        except OSError:
            # Another process finished the same set first: keep theirs if it matches.
            if _read_marker(root) != params:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _read_marker(root: Path) -> dict | None:
    """The parameters a demo folder was generated with, or None when it is not one."""
    from catdog.readers import read_json  # here: readers imports the data package

    try:
        return read_json(root / MARKER_FILE)
    except CatdogError:
        return None


def _generated_here(root: Path) -> bool:
    """Whether ``root`` was written by this generator, so regenerating it may delete it.

    Any parseable demo.json is not enough (a user's own folder may hold one): the marker must name this
    generator. Folders of the first version (no generator name) qualify only when their marker has
    exactly that version's keys and the folder holds nothing but what it wrote.
    """
    marker = _read_marker(root)
    if marker is None:
        return False
    if marker.get("generator") == GENERATOR_NAME:
        return True
    written = {*DEMO_CLASSES, BOXES_FILE, MARKER_FILE}
    return set(marker) == _LEGACY_KEYS and {p.name for p in root.iterdir()} <= written


def _write_dataset(folder: Path, num_per_class: int, image_size: int, seed: int) -> None:
    """Draw and save all images and boxes.csv into `folder`."""
    rows = []
    for class_index, name in enumerate(DEMO_CLASSES):
        (folder / name).mkdir()
        for i in range(num_per_class):
            # One generator per image: image i is the same whatever num_per_class is.
            rng = np.random.default_rng([seed, class_index, i])
            image, box = draw_demo_image(rng, name, image_size)
            relative = f"{name}/{name}_{i:04d}.png"
            cv2.imwrite(os.fspath(folder / relative), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            if box is not None:
                rows.append((relative, *box))
    pd.DataFrame(rows, columns=["path", "x0", "y0", "x1", "y1"]).to_csv(
        folder / BOXES_FILE, index=False
    )


def draw_demo_image(
    rng: np.random.Generator, class_name: str, image_size: int
) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """Draw one demo image: clutter, then a "cat" or "dog" face at a random place ("none": no face).

    Args:
        rng: Random generator (all randomness comes from it).
        class_name: "cat", "dog" or "none".
        image_size: Side of the square image.

    Returns:
        The (H, W, 3) uint8 RGB image and the object box (x0, y0, x1, y1), x1 and y1 exclusive;
        None for "none".

    Raises:
        ValueError: `class_name` is not a demo class.
    """
    if class_name not in DEMO_CLASSES:
        raise ValueError(f"unknown demo class {class_name!r}: use one of {DEMO_CLASSES}")
    image = _clutter(rng, image_size)
    if class_name == NO_OBJECT:
        return image, None
    side = int(round(rng.uniform(*_OBJECT_SCALE) * image_size))
    x0 = int(rng.integers(0, image_size - side + 1))
    y0 = int(rng.integers(0, image_size - side + 1))
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    jittered = _FACE_COLOURS[rng.integers(len(_FACE_COLOURS))] + rng.integers(-15, 16, 3)
    face = tuple(int(c) for c in np.clip(jittered, 0, 255))
    draw = _cat if class_name == "cat" else _dog
    draw(_Canvas(image, mask, x0, y0, side), face)
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return image, box


def _clutter(rng: np.random.Generator, size: int) -> np.ndarray:
    """A busy background: colour gradient, lines, rectangles, ellipses and pixel noise."""
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    along = np.cos(angle) * (ramp[None, :] - 0.5) + np.sin(angle) * (ramp[:, None] - 0.5)
    t = np.clip(0.5 + along, 0, 1)
    start, end = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    image = np.ascontiguousarray((start + t[:, :, None] * (end - start)).astype(np.uint8))
    for _ in range(int(rng.integers(3, 8))):  # rectangles, filled or outlined
        p, q = rng.integers(0, size, (2, 2))
        thickness = -1 if rng.random() < 0.5 else int(rng.integers(1, 4))
        cv2.rectangle(image, tuple(map(int, p)), tuple(map(int, q)), _colour(rng), thickness)
    for _ in range(int(rng.integers(3, 8))):  # blobs
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(2, max(3, size // 6), 2))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(image, centre, axes, angle, 0, 360, _colour(rng), -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(6, 16))):  # lines
        p, q = rng.integers(0, size, (2, 2))
        colour, width = _colour(rng), int(rng.integers(1, 4))
        cv2.line(image, tuple(map(int, p)), tuple(map(int, q)), colour, width, cv2.LINE_AA)
    noise = rng.normal(0, 12, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator) -> Colour:
    """A uniformly random RGB colour."""
    return tuple(int(c) for c in rng.integers(0, 256, 3))


class _Canvas:
    """Draws on the image and the object mask at once, in face coordinates.

    The mask gets the same anti-aliased strokes, so every pixel the object touches is in it.

    Face coordinates run from -1 to 1 across the object's square (x right, y down), so the
    shapes below read like a sketch whatever the object's size and position.
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray, x0: int, y0: int, side: int) -> None:
        self.image, self.mask = image, mask
        self.cx, self.cy, self.half = x0 + side / 2, y0 + side / 2, side / 2

    def _pt(self, x: float, y: float) -> tuple[int, int]:
        return int(round(self.cx + x * self.half)), int(round(self.cy + y * self.half))

    def _len(self, r: float) -> int:
        return max(1, int(round(r * self.half)))

    def ellipse(
        self,
        x: float,
        y: float,
        rx: float,
        ry: float,
        colour: Colour,
        angle: float = 0.0,
        outline: float = 0.0,
    ) -> None:
        """Filled ellipse centred at (x, y) with radii (rx, ry), optionally outlined in black."""
        shape = (self._pt(x, y), (self._len(rx), self._len(ry)), angle, 0, 360)
        cv2.ellipse(self.image, *shape, colour, -1, cv2.LINE_AA)
        cv2.ellipse(self.mask, *shape, 255, -1, cv2.LINE_AA)
        if outline:
            width = self._len(outline)
            cv2.ellipse(self.image, *shape, (0, 0, 0), width, cv2.LINE_AA)
            cv2.ellipse(self.mask, *shape, 255, width, cv2.LINE_AA)

    def polygon(
        self, points: list[tuple[float, float]], colour: Colour, outline: float = 0.0
    ) -> None:
        """Filled polygon, optionally outlined in black."""
        pts = np.array([self._pt(x, y) for x, y in points], dtype=np.int32)
        cv2.fillPoly(self.image, [pts], colour, cv2.LINE_AA)
        cv2.fillPoly(self.mask, [pts], 255, cv2.LINE_AA)
        if outline:
            width = self._len(outline)
            cv2.polylines(self.image, [pts], True, (0, 0, 0), width, cv2.LINE_AA)
            cv2.polylines(self.mask, [pts], True, 255, width, cv2.LINE_AA)

    def line(
        self, p: tuple[float, float], q: tuple[float, float], colour: Colour, width: float
    ) -> None:
        """Straight line."""
        cv2.line(self.image, self._pt(*p), self._pt(*q), colour, self._len(width), cv2.LINE_AA)
        cv2.line(self.mask, self._pt(*p), self._pt(*q), 255, self._len(width), cv2.LINE_AA)


def _cat(canvas: _Canvas, face: Colour) -> None:
    """Cat face: pointed ears with big pink insides, green eyes, pink nose, whiskers."""
    pink, green, black = (255, 105, 180), (30, 210, 50), (0, 0, 0)
    for s in (-1, 1):
        canvas.polygon([(s * 0.85, 0.0), (s * 0.75, -1.0), (s * 0.05, -0.55)], face, outline=0.1)
        canvas.polygon([(s * 0.70, -0.15), (s * 0.68, -0.78), (s * 0.25, -0.48)], pink)
    canvas.ellipse(0.0, 0.18, 0.72, 0.62, face, outline=0.1)
    for s in (-1, 1):
        canvas.ellipse(s * 0.32, 0.05, 0.22, 0.17, green)
        canvas.ellipse(s * 0.32, 0.05, 0.05, 0.16, black)
        for dy in (0.35, 0.55):
            canvas.line((s * 0.25, 0.42), (s * 1.0, dy), black, 0.05)
    canvas.polygon([(-0.2, 0.3), (0.2, 0.3), (0.0, 0.5)], pink)


def _dog(canvas: _Canvas, face: Colour) -> None:
    """Dog face: long floppy dark ears, black eyes, big black nose, red tongue."""
    brown, black, red = (80, 40, 10), (0, 0, 0), (235, 20, 30)
    canvas.ellipse(0.0, 0.7, 0.24, 0.28, red, outline=0.05)
    canvas.ellipse(0.0, -0.05, 0.62, 0.68, face, outline=0.1)
    for s in (-1, 1):
        canvas.ellipse(s * 0.7, 0.1, 0.28, 0.62, brown, angle=s * 15.0, outline=0.08)
        canvas.ellipse(s * 0.25, -0.2, 0.12, 0.12, black)
    canvas.ellipse(0.0, 0.3, 0.36, 0.26, (250, 240, 225))  # muzzle
    canvas.ellipse(0.0, 0.2, 0.22, 0.15, black)


def load_boxes(root: str | Path) -> pd.DataFrame | None:
    """Read the object boxes of a dataset, when it has a boxes.csv.

    boxes.csv has columns `path,x0,y0,x1,y1`: one row per object (an image may have several),
    path relative to the folder holding boxes.csv (or absolute), box in pixel coordinates of the
    image file as stored (x1, y1 exclusive). Any dataset can have one, not only the demo.

    Args:
        root: Folder that may hold boxes.csv (the dataset root, or the manifest's folder).

    Returns:
        DataFrame with columns `path` (absolute, same form as in an index) and integer
        `x0,y0,x1,y1`, or None when there is no boxes.csv.

    Raises:
        CatdogError: boxes.csv lacks a column.
    """
    file = Path(root).expanduser() / BOXES_FILE
    if not file.is_file():
        return None
    from catdog.readers import read_csv  # here: readers imports the data package

    columns = ["path", "x0", "y0", "x1", "y1"]
    fix = "it needs a header path,x0,y0,x1,y1 and one box per row"
    boxes = read_csv(file, required=columns, text=["path"], numeric=columns[1:], what="boxes", fix=fix)
    boxes = boxes[columns].copy()
    blank_path = (boxes["path"].str.strip() == "").to_numpy()
    bad = ~np.isfinite(boxes[columns[1:]].to_numpy(dtype=float)).all(axis=1) | blank_path
    if bad.any():
        row = int(bad.nonzero()[0][0])
        raise CatdogError(f"boxes {file} has an empty or non-finite cell in data row {row + 1}: {fix}")
    boxes["path"] = [absolute_path(p, file.parent) for p in boxes["path"]]
    boxes[columns[1:]] = boxes[columns[1:]].round().astype(int)
    return boxes
