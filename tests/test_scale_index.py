"""Indexing a Kaggle-layout folder of 25,000 files (tiny synthetic PNGs; the speed is in bench/RESULTS.md)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from catdog.data.index import build_index, index_for_inference


def test_index_of_25000_kaggle_files(tmp_path: Path) -> None:
    _, png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    data = png.tobytes()
    for i in range(12_500):
        (tmp_path / f"cat.{i}.png").write_bytes(data)
        (tmp_path / f"dog.{i}.png").write_bytes(data)
    (tmp_path / ".hidden.1.png").write_bytes(data)
    (tmp_path / "notes.txt").write_text("not an image")

    index = build_index("kaggle", tmp_path)
    assert len(index) == 25_000 and index["path"].is_unique
    assert index["label"].value_counts().to_dict() == {"cat": 12_500, "dog": 12_500}
    assert set(index["split"]) == {"train", "val", "test"}

    listed = index_for_inference(tmp_path, ["cat", "dog"])
    assert listed["path"].tolist() == sorted(listed["path"])  # one folder: path order
    assert all(Path(p).name.startswith(f"{label}.") for p, label in zip(listed["path"], listed["label"]))
