"""Image selection shared by explain, evaluate and compare: max_images samples every class."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from helpers import explain_cfg, make_trained_run, write_images

from catdog.explain.pipeline import explain


def test_max_images_samples_every_class_reproducibly(tmp_path: Path) -> None:
    from catdog.data.selection import sample_across_classes

    table = pd.DataFrame(
        {"path": [f"/x/{i}.png" for i in range(30)], "label": ["cat"] * 20 + ["dog"] * 8 + [None] * 2}
    )
    first = sample_across_classes(table, 6)
    assert first.equals(sample_across_classes(table, 6))
    counts = first["label"].fillna("none").value_counts().to_dict()
    assert counts == {"cat": 2, "dog": 2, "none": 2}
    assert first["path"].tolist() == sorted(first["path"], key=lambda p: int(Path(p).stem))  # table order kept
    assert len(sample_across_classes(table, 100)) == 30
    # Through explain: a class-sorted split.csv still gives both classes.
    images = tmp_path / "photos"
    write_images(images, {"cat": 6, "dog": 6}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"])
    summary = explain(explain_cfg(run, "data.max_images=4"))
    predictions = pd.read_csv(Path(summary["out_dir"]) / "predictions.csv", dtype=str)
    assert sorted(predictions["true"]) == ["cat", "cat", "dog", "dog"]
