"""Plots: confusion matrices and curves whatever the class names (matplotlib mathtext is not parsed)."""

from __future__ import annotations

from pathlib import Path

import cv2
from helpers import explain_cfg, make_trained_run, write_images

from catdog.explain.pipeline import explain
from catdog.plots import plot_confusion_matrix


def test_dollar_in_class_names_does_not_crash_plots(tmp_path: Path) -> None:
    classes = ["a$^$b", "$x_{$"]
    plot_confusion_matrix([[1, 2], [3, 4]], classes, tmp_path / "m.png", title="cost $^$")
    assert cv2.imread(str(tmp_path / "m.png")) is not None
    images = tmp_path / "photos"
    write_images(images, {classes[0]: 2, classes[1]: 2}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, classes)
    summary = explain(explain_cfg(run))
    assert (Path(summary["out_dir"]) / "summary.json").is_file() and summary["accuracy"] == 0.5
