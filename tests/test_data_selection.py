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


# --- issue #19 item 14: a moved dataset ------------------------------------------------------------------
def _moved_run(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A run folder whose dataset (8 train + 4 test images, split.csv by absolute path) moved to ``new``."""
    import shutil

    old, new = tmp_path / "old" / "photos", tmp_path / "new_photos"
    paths = write_images(old, {"cat": 6, "dog": 6}, size=(16, 16))
    rows = [(str(p), p.parent.name, "test" if i % 3 == 0 else "train") for i, p in enumerate(paths)]
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(run / "split.csv", index=False)
    shutil.move(old, new)
    return run, new, {"layout": "folder", "root": str(old), "split_csv": str(run / "split.csv")}


def test_moved_dataset_says_how_to_remap_and_remap_root_finds_the_held_out_images(tmp_path: Path) -> None:
    import pytest
    from helpers import one_line

    from catdog.data.selection import select_images
    from catdog.errors import CatdogError

    run, new, hparams = _moved_run(tmp_path)
    with pytest.raises(CatdogError, match="data.remap_root") as err:
        select_images(None, "test", ["cat", "dog"], hparams, run)
    one_line(err)
    images = select_images(None, "test", ["cat", "dog"], hparams, run, remap_root=str(new))
    assert len(images) == 4 and all(Path(p).is_file() and Path(p).is_relative_to(new) for p in images["path"])


def test_data_root_holding_the_models_training_images_warns(tmp_path: Path, caplog) -> None:
    """data.root=<the moved dataset> silently evaluated the model on its own training images."""
    import logging

    from catdog.data.selection import select_images

    run, new, hparams = _moved_run(tmp_path)
    with caplog.at_level(logging.WARNING, logger="catdog.data.selection"):
        images = select_images(str(new), "test", ["cat", "dog"], hparams, run)
    assert len(images) == 12
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "8 of the 12" in warning and "data.remap_root" in warning


def test_evaluate_and_explain_take_remap_root(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    from helpers import make_config

    from catdog.models import load_classifier
    from catdog.pipelines.evaluate import evaluate

    root = Path(load_classifier(tiny_run / "checkpoints" / "best.ckpt").hparams.data["root"])
    copy = tmp_path / "copied"
    shutil.copytree(root, copy)
    result = evaluate(make_config("evaluate", [f"ckpt={tiny_run}", f"data.remap_root={copy}", "data.split=val",
                                               "progress=false", "data.num_workers=0"]))
    evaluated = pd.read_csv(Path(result["out_dir"]) / "predictions.csv")["path"]
    assert len(evaluated) and all(Path(p).is_relative_to(copy) for p in evaluated)
    summary = explain(explain_cfg(tiny_run, f"data.remap_root={copy}", "data.split=val"))
    explained = pd.read_csv(Path(summary["out_dir"]) / "predictions.csv")["path"]
    assert sorted(Path(p).relative_to(copy) for p in explained) == sorted(Path(p).relative_to(copy) for p in evaluated)
