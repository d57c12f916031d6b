"""Plots: confusion matrices and curves whatever the class names (matplotlib mathtext is not parsed), and
bounded whatever the number of classes (issue #19 item 4)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import compare_config, explain_cfg, make_config, make_trained_run, write_images
from PIL import Image

from catdog.explain.pipeline import explain
from catdog.pipelines.compare import compare
from catdog.pipelines.evaluate import evaluate
from catdog.plots import CONFUSION_MAX_CLASSES, most_confused, plot_confusion_matrix


def test_dollar_in_class_names_does_not_crash_plots(tmp_path: Path) -> None:
    classes = ["a$^$b", "$x_{$"]
    plot_confusion_matrix([[1, 2], [3, 4]], classes, tmp_path / "m.png", title="cost $^$")
    assert cv2.imread(str(tmp_path / "m.png")) is not None
    images = tmp_path / "photos"
    write_images(images, {classes[0]: 2, classes[1]: 2}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, classes)
    summary = explain(explain_cfg(run))
    assert (Path(summary["out_dir"]) / "summary.json").is_file() and summary["accuracy"] == 0.5


# The largest confusion figure allowed, in pixels per side: the 30-class figure at 100 dpi is 1,750.
MAX_SIDE_PX = 1800


def _matrix(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = np.diag(rng.integers(1, 5, n))
    counts[rng.integers(0, n, 40), rng.integers(0, n, 40)] += 3  # a few confusions scattered around
    return counts


def test_confusion_figure_of_1000_classes_is_bounded(tmp_path: Path) -> None:
    """Past the cap the figure no longer grows: 31 and 1000 classes give one size, within MAX_SIDE_PX."""
    sizes = []
    for n in (CONFUSION_MAX_CLASSES + 1, 1000):
        names = [f"class {i} with a long name {'x' * 40}" for i in range(n)]
        out = plot_confusion_matrix(_matrix(n), names, tmp_path / f"cm{n}.png", title=f"{n} classes")
        with Image.open(out) as image:
            sizes.append(image.size)
    assert sizes[0] == sizes[1] and max(sizes[1]) <= MAX_SIDE_PX


def test_confusion_record_is_sparse_past_the_dense_limit() -> None:
    from catdog.plots import CONFUSION_DENSE_CLASSES, confusion_record

    small = np.eye(3, dtype=np.int64)
    assert confusion_record(small) == {"confusion_matrix": small.tolist()}
    big = np.zeros((CONFUSION_DENSE_CLASSES + 1,) * 2, dtype=np.int64)
    big[4, 7] = 2
    assert confusion_record(big) == {"confusion_pairs": [[4, 7, 2]]}


def test_most_confused_classes_are_the_ones_shown() -> None:
    counts = np.diag(np.full(100, 5))
    counts[17, 42] = 9
    counts[63, 5] = 2
    shown = most_confused(counts, 3)
    assert {17, 42}.issubset(set(shown)) and len(shown) == 3 and list(shown) == sorted(shown)
    assert list(most_confused(np.eye(4, dtype=int), 10)) == [0, 1, 2, 3]


def _largest_confusion_side(folder: Path) -> int:
    sides = []
    for png in folder.rglob("confusion*.png"):
        with Image.open(png) as image:
            sides.append(max(image.size))
    return max(sides)


@pytest.mark.slow
def test_a_1000_class_model_through_explain_evaluate_and_compare(tmp_path: Path) -> None:
    """A 1000-class checkpoint (ImageNet-sized head) on a dozen 32 px images: every stage completes and every
    confusion figure it writes (explain, evaluate, compare's report) stays within MAX_SIDE_PX; the terminal and
    HTML tables do not list 1000 recall columns."""
    classes = [f"n{i:08d} [class] {i}" for i in range(1000)]
    images = tmp_path / "photos"
    write_images(images, {classes[3]: 4, classes[500]: 4, classes[999]: 4}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, classes, favourite=None)
    first = explain(explain_cfg(run, "top_losses=4"))
    second = explain(explain_cfg(run, "topk=2"))
    assert first["labelled"] == 12
    # summary.json lists the confusions, not a 1000 x 1000 matrix
    assert (Path(first["out_dir"]) / "summary.json").stat().st_size < 200_000 and len(first["confusion_pairs"]) <= 12
    evaluated = evaluate(
        make_config("evaluate", [f"ckpt={run}", "progress=false", "data.num_workers=0", "data.split=test"])
    )
    compared = compare(compare_config(tmp_path, runs=[first["out_dir"], second["out_dir"]]))
    for folder in (first["out_dir"], evaluated["out_dir"], compared["out_dir"]):
        assert _largest_confusion_side(Path(folder)) <= MAX_SIDE_PX
    html = (Path(compared["out_dir"]) / "report" / "index.html").read_text()
    assert html.count("Recall ") < 20
