"""Object masks beside the images or in masks.csv: one-line errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import explain_cfg, make_config, make_trained_run, one_line, write_images

from catdog.errors import CatdogError


def test_empty_masks_cell_is_one_line(tmp_path: Path) -> None:
    from catdog.data.masks import find_masks

    (tmp_path / "masks.csv").write_text("path,mask\na.png,\n")
    with pytest.raises(CatdogError, match="empty cell") as err:
        find_masks(tmp_path, [str(tmp_path / "a.png")])
    assert "masks.csv" in one_line(err)


def test_mask_lookup_of_a_255_byte_image_name(tmp_path: Path) -> None:
    """Issue #19 item 5: ``<stem>_mask.<ext>`` of a 250-255 byte name is too long for the file system."""
    from catdog.data.masks import find_masks

    paths = []
    for length in (250, 255):
        image = tmp_path / ("a" * (length - 4) + ".png")
        image.write_bytes(b"x")
        paths.append(str(image))
    assert find_masks(tmp_path, paths) == {}


def test_a_photo_named_like_a_mask_is_a_photo_unless_its_photo_is_beside_it(tmp_path: Path) -> None:
    """Issue #19 item 8: ``*_mask.*`` photos were trained on, dropped by explain without a reason, and used as
    a sibling's mask. A mask is ``<stem>_mask.<ext>`` beside ``<stem>.<ext>``; anything else is a photo."""
    from catdog.data.masks import find_masks, is_mask_file

    write_images(tmp_path, {"cat": 1}, size=(16, 16))
    photo = tmp_path / "cat" / "cat_0.png"
    lone = tmp_path / "cat" / "party_mask.png"
    lone.write_bytes(photo.read_bytes())
    assert not is_mask_file(lone)
    mask = tmp_path / "cat" / "cat_0_mask.png"
    mask.write_bytes(photo.read_bytes())
    assert is_mask_file(mask)
    assert find_masks(None, [str(photo), str(lone)]) == {str(photo): str(mask)}


def test_mask_files_are_skipped_with_a_reason_by_train_explain_and_evaluate(tmp_path: Path) -> None:
    """Item 8 through the stages: a mask is listed in skipped.csv by train, explain and evaluate; a photo named
    ``*_mask`` without a photo beside it is used by all three. Item 13: an unreadable mask is skipped with a
    reason and its image is still explained."""
    from catdog.explain.pipeline import explain
    from catdog.pipelines.evaluate import evaluate
    from catdog.pipelines.train import prepare_data

    data = tmp_path / "data"
    write_images(data, {"cat": 4, "dog": 4}, size=(32, 32))
    (data / "cat" / "cat_0_mask.png").write_bytes(_png(np.full((32, 32), 255, np.uint8)))
    (data / "dog" / "dog_0_mask.png").write_text("not an image")  # unreadable mask of dog_0.png
    (data / "dog" / "costume_mask.png").write_bytes((data / "dog" / "dog_1.png").read_bytes())  # a photo
    run = tmp_path / "run"
    run.mkdir()
    index, _ = prepare_data(
        {"layout": "folder", "root": str(data), "manifest": None, "val_fraction": 0.2, "test_fraction": 0.2,
         "split_seed": 0, "num_workers": 0},
        run,
    )
    trained_on = {Path(p).name for p in index["path"]}
    assert "costume_mask.png" in trained_on and not trained_on & {"cat_0_mask.png", "dog_0_mask.png"}
    skipped = pd.read_csv(run / "skipped.csv")
    assert {Path(p).name for p in skipped["path"]} == {"cat_0_mask.png", "dog_0_mask.png"}
    assert skipped["reason"].str.contains("mask").all()

    trained = make_trained_run(tmp_path / "model", data, ["cat", "dog"])
    summary = explain(explain_cfg(trained, f"data.root={data}"))
    out = Path(summary["out_dir"])
    explained = {Path(p).name for p in pd.read_csv(out / "predictions.csv")["path"]}
    assert "costume_mask.png" in explained and "dog_0.png" in explained and "cat_0.png" in explained
    skipped = pd.read_csv(out / "skipped.csv")
    reasons = dict(zip(skipped["path"].map(lambda p: Path(p).name), skipped["reason"]))
    assert set(reasons) == {"cat_0_mask.png", "dog_0_mask.png"}
    assert "unreadable" in reasons["dog_0_mask.png"] and "dog_0.png" in reasons["dog_0_mask.png"]

    evaluated = evaluate(make_config("evaluate", [f"ckpt={trained}", f"data.root={data}", "progress=false",
                                                  "data.num_workers=0"]))
    skipped = pd.read_csv(Path(evaluated["out_dir"]) / "skipped.csv")
    assert "cat_0_mask.png" in {Path(p).name for p in skipped["path"]}
    assert evaluated["num_images"] == 9  # 8 photos + costume_mask.png


def _png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()
