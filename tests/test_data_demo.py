"""The demo generator: deterministic, boxes inside the image and around the object."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from catdog.data.demo import _clutter, draw_demo_image, ensure_demo_dataset, load_boxes
from catdog.data.images import load_rgb
from catdog.data.index import build_index, class_names_of
from catdog.errors import CatdogError

SIZE = 64  # small images keep the test fast


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def test_demo_dataset_is_deterministic_and_indexable(tmp_path: Path) -> None:
    first = ensure_demo_dataset(tmp_path / "a", num_per_class=4, image_size=SIZE, seed=5)
    second = ensure_demo_dataset(tmp_path / "b", num_per_class=4, image_size=SIZE, seed=5)
    files = _files(first)
    assert files == _files(second)  # same bytes, image by image
    images = [f"{c}/{c}_{i:04d}.png" for c in ("cat", "dog", "none") for i in range(4)]
    assert sorted(files) == sorted(["boxes.csv", "demo.json", *images])
    other = ensure_demo_dataset(tmp_path / "c", num_per_class=4, image_size=SIZE, seed=6)
    assert _files(other)["cat/cat_0000.png"] != files["cat/cat_0000.png"]
    index = build_index("folder", first)
    assert class_names_of(index) == ["cat", "dog", "none"] and len(index) == 12
    assert not list(tmp_path.glob(".*tmp*"))  # the staging folder is gone


def test_demo_dataset_is_reused_or_regenerated(tmp_path: Path) -> None:
    root = ensure_demo_dataset(tmp_path / "demo", num_per_class=2, image_size=SIZE)
    stamp = (root / "cat" / "cat_0000.png").stat().st_mtime_ns
    ensure_demo_dataset(root, num_per_class=2, image_size=SIZE)
    assert (root / "cat" / "cat_0000.png").stat().st_mtime_ns == stamp  # same parameters: reused
    ensure_demo_dataset(root, num_per_class=3, image_size=SIZE)
    assert json.loads((root / "demo.json").read_text())["num_per_class"] == 3
    assert len(list((root / "dog").glob("*.png"))) == 3


def test_demo_never_overwrites_other_data(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    # Issue 20: the likely mistake is a forgotten data=folder, so the message names that fix.
    with pytest.raises(
        CatdogError,
        match="is not a catdog demo dataset, refusing to overwrite it: to train on your photos there, add data=folder",
    ):
        ensure_demo_dataset(tmp_path / "photos", num_per_class=1, image_size=SIZE)
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"


def test_boxes_are_inside_the_image_and_hold_the_object(tmp_path: Path) -> None:
    root = ensure_demo_dataset(tmp_path / "demo", num_per_class=3, image_size=SIZE)
    boxes = load_boxes(root)
    assert boxes is not None and len(boxes) == 6  # cat and dog images; "none" has no object
    index = build_index("folder", root)
    assert set(boxes["path"]) == set(index.loc[index["label"] != "none", "path"])
    for row in boxes.itertuples():
        assert 0 <= row.x0 < row.x1 <= SIZE and 0 <= row.y0 < row.y1 <= SIZE
        side = max(row.x1 - row.x0, row.y1 - row.y0)
        assert 0.25 * SIZE <= side <= 0.55 * SIZE  # object scale 30-45%, plus outline


@pytest.mark.parametrize("class_name", ["cat", "dog"])
def test_object_is_inside_its_box(class_name: str) -> None:
    # The background alone, from the same random stream: only the object's pixels differ from it.
    image, (x0, y0, x1, y1) = draw_demo_image(np.random.default_rng(1), class_name, SIZE)
    background = _clutter(np.random.default_rng(1), SIZE)
    changed = np.any(image != background, axis=2)
    ys, xs = np.nonzero(changed)
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    assert changed[y0:y1, x0:x1].mean() > 0.5  # the object fills its box


def test_none_class_is_clutter_without_a_box() -> None:
    image, box = draw_demo_image(np.random.default_rng(1), "none", SIZE)
    assert box is None
    np.testing.assert_array_equal(image, _clutter(np.random.default_rng(1), SIZE))


def test_unknown_demo_class() -> None:
    with pytest.raises(ValueError, match="'fox'"):
        draw_demo_image(np.random.default_rng(0), "fox", SIZE)


def test_saved_images_decode_to_the_drawn_pixels(tmp_path: Path) -> None:
    root = ensure_demo_dataset(tmp_path / "demo", num_per_class=1, image_size=SIZE, seed=2)
    drawn, box = draw_demo_image(np.random.default_rng([2, 1, 0]), "dog", SIZE)
    np.testing.assert_array_equal(load_rgb(root / "dog" / "dog_0000.png"), drawn)
    boxes = load_boxes(root)
    row = boxes[boxes["path"].str.endswith("dog_0000.png")].iloc[0]
    assert (row.x0, row.y0, row.x1, row.y1) == box


def test_load_boxes_for_any_dataset(tmp_path: Path) -> None:
    assert load_boxes(tmp_path) is None
    pd.DataFrame({"path": ["cats/a.jpg"], "x0": [1.0], "y0": [2], "x1": [30], "y1": [40]}).to_csv(
        tmp_path / "boxes.csv", index=False
    )
    boxes = load_boxes(tmp_path)
    assert boxes["path"].tolist() == [str(tmp_path.resolve() / "cats" / "a.jpg")]
    assert boxes[["x0", "y0", "x1", "y1"]].iloc[0].tolist() == [1, 2, 30, 40]
    (tmp_path / "boxes.csv").write_text("path,left,top\na.jpg,1,2\n")
    with pytest.raises(CatdogError, match=r"lacks column\(s\) x0, y0, x1, y1"):
        load_boxes(tmp_path)


@pytest.mark.parametrize(
    "marker",
    [{"anything": 1}, {"generator_version": 1, "num_per_class": 1, "image_size": 32, "seed": 5}],
)
def test_demo_never_deletes_a_folder_it_did_not_write(tmp_path: Path, marker: dict) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "demo.json").write_text(json.dumps(marker))
    (root / "thesis.tex").write_text("years of work")
    with pytest.raises(CatdogError, match="refusing to overwrite"):
        ensure_demo_dataset(root, num_per_class=1, image_size=32, seed=0)
    assert (root / "thesis.tex").read_text() == "years of work"
    # Its own folders are still regenerated when the parameters change.
    demo = ensure_demo_dataset(tmp_path / "demo", num_per_class=1, image_size=32, seed=0)
    ensure_demo_dataset(demo, num_per_class=2, image_size=32, seed=0)
    assert len(list((demo / "cat").glob("*.png"))) == 2
