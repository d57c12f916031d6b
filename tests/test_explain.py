"""Explain pipeline: folders, tables, skipping, no overwrite, errors (tiny synthetic data, no training)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_config, write_images

from catdog.errors import CatdogError
from catdog.explain.pipeline import explain, overlay_location, resolve_checkpoint
from catdog.models import ClassifierModule

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "fox"]


def save_constant_checkpoint(path: Path, favourite: int = 0, arch: str = "resnet18") -> Path:
    """A checkpoint whose model always predicts class ``favourite`` (fc weight 0, bias one-hot)."""
    module = ClassifierModule(arch=arch, class_names=CLASSES, weights=None, image_size=64)
    fc = module.net.get_submodule(module.hparams.fc_layer)
    with torch.no_grad():
        fc.weight.zero_()
        fc.bias.copy_(torch.nn.functional.one_hot(torch.tensor(favourite), len(CLASSES)).float() * 2.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    save_constant_checkpoint(run / "checkpoints" / "best.ckpt")
    return run


def explain_cfg(ckpt: Path, *overrides: str):
    return make_config("explain", [f"ckpt={ckpt}", "data.num_workers=0", "data.batch_size=4", *overrides])


def test_resolve_checkpoint_accepts_run_folder_and_file(run_folder: Path, tmp_path: Path) -> None:
    best = run_folder / "checkpoints" / "best.ckpt"
    assert resolve_checkpoint(run_folder) == best
    assert resolve_checkpoint(best) == best
    with pytest.raises(CatdogError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(CatdogError, match="without checkpoints/best.ckpt"):
        resolve_checkpoint(tmp_path)


def test_overlays_sorted_into_correct_incorrect_and_unlabelled(run_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, {"cat": 2, "dog": 3, "fox": 1})
    write_images(images / "misc", {"unknown": 2}, seed=1)  # no class folder name: unlabelled
    summary = explain(explain_cfg(run_folder, f"data.root={images}"))
    out = Path(summary["out_dir"])
    assert out.parent == run_folder / "explain"

    def listing(folder: str) -> list[str]:
        return sorted(p.name for p in (out / folder).glob("*.jpg"))

    assert len(listing("correct/cat")) == 2
    assert len(listing("incorrect/dog_as_cat")) == 3
    assert len(listing("incorrect/fox_as_cat")) == 1
    assert len(listing("unlabelled/cat")) == 2
    assert not (out / "correct" / "dog").exists()

    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 8
    expected_columns = {"path", "true", "pred", "p_cat", "p_dog", "p_fox", "loss", "correct"}
    assert expected_columns | {"peak_x", "peak_y", "area50", "overlay"} <= set(predictions.columns)
    assert (predictions["pred"] == "cat").all()
    p_cat = np.exp(2.0) / (np.exp(2.0) + 2)
    assert np.allclose(predictions["p_cat"], p_cat, atol=1e-5)
    dogs = predictions[predictions["true"] == "dog"]
    assert np.allclose(dogs["loss"], -np.log((1 - p_cat) / 2), atol=1e-4)
    for rel in predictions["overlay"]:
        assert (out / rel).is_file()

    summary_file = json.loads((out / "summary.json").read_text())
    assert summary_file["labelled"] == 6 and summary_file["correct"] == 2
    assert summary_file["accuracy"] == pytest.approx(2 / 6)
    assert summary_file["confusion_matrix"] == [[2, 0, 0], [3, 0, 0], [1, 0, 0]]
    # The CAM self-check is exercised on a non-zero head in test_reliability.py::test_item17_cam_self_check_can_fail.
    assert len(summary_file["checkpoint"]["sha256"]) == 64
    assert (out / "confusion_matrix.png").is_file() and (out / "top_losses.png").is_file()

    cams = np.load(out / "cams.npz")
    assert cams["cams"].dtype == np.float16 and cams["cams"].shape[:2] == (8, 2)
    assert sorted(cams["paths"].tolist()) == sorted(predictions["path"].tolist())


def test_overlay_is_original_size_and_mistakes_show_true_class(run_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, {"cat": 1, "dog": 1}, size=(90, 50))
    out = Path(explain(explain_cfg(run_folder, f"data.root={images}"))["out_dir"])
    correct = cv2.imread(str(next((out / "correct" / "cat").glob("*.jpg"))))
    assert correct.shape == (50, 90, 3)  # CAM upsampled to the original resolution, not a square
    mistake = cv2.imread(str(next((out / "incorrect" / "dog_as_cat").glob("*.jpg"))))
    assert mistake.shape[0] == 50 and mistake.shape[1] > 2 * 90  # predicted-class | true-class panels


def test_single_input_file_and_topk(run_folder: Path, tmp_path: Path) -> None:
    (image,) = write_images(tmp_path / "one", {"x": 1})
    summary = explain(explain_cfg(run_folder, f"input={image}", "topk=2"))
    predictions = pd.read_csv(Path(summary["out_dir"]) / "predictions.csv")
    assert len(predictions) == 1 and predictions.loc[0, "topk"].startswith("cat|")
    assert summary["labelled"] == 0 and "accuracy" not in summary


def test_unreadable_images_are_skipped_and_listed(run_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, {"cat": 2})
    (images / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (images / "cat" / "empty.png").write_bytes(b"")
    summary = explain(explain_cfg(run_folder, f"data.root={images}"))
    out = Path(summary["out_dir"])
    skipped = pd.read_csv(out / "skipped.csv")
    assert sorted(Path(p).name for p in skipped["path"]) == ["broken.jpg", "empty.png"]
    assert skipped["reason"].str.len().min() > 0
    assert summary["images"] == 2 and summary["skipped"] == 2


def test_never_overwrites_earlier_results(run_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, {"cat": 1})
    first = explain(explain_cfg(run_folder, f"data.root={images}"))["out_dir"]
    second = explain(explain_cfg(run_folder, f"data.root={images}"))["out_dir"]
    assert first != second and Path(first, "predictions.csv").is_file()

    target = tmp_path / "out"
    explain(explain_cfg(run_folder, f"data.root={images}", f"out_dir={target}"))
    with pytest.raises(CatdogError, match="overwrite=true"):
        explain(explain_cfg(run_folder, f"data.root={images}", f"out_dir={target}"))
    explain(explain_cfg(run_folder, f"data.root={images}", f"out_dir={target}", "overwrite=true"))


def test_held_out_split_comes_from_the_run_folder(run_folder: Path, tmp_path: Path) -> None:
    paths = write_images(tmp_path / "images", {"cat": 3, "dog": 3})
    splits = ["train", "val", "test"] * 2
    labels = [p.parent.name for p in paths]
    pd.DataFrame({"path": [str(p) for p in paths], "label": labels, "split": splits}).to_csv(
        run_folder / "split.csv", index=False
    )
    out = Path(explain(explain_cfg(run_folder))["out_dir"])
    predictions = pd.read_csv(out / "predictions.csv")
    assert sorted(predictions["path"]) == sorted(str(p) for p, s in zip(paths, splits) if s == "test")


def test_overlay_names_list_the_most_confident_first() -> None:
    used: set[str] = set()
    names = [
        overlay_location(1, 0, confidence, f"/x/img{i}.jpg", CLASSES, used)
        for i, confidence in enumerate([0.6, 0.999, 0.8])
    ]
    assert all(name.startswith("incorrect/dog_as_cat/") for name in names)
    assert sorted(names) == [names[1], names[2], names[0]]
    again = overlay_location(1, 0, 0.6, "/y/img0.jpg", CLASSES, used)  # same file name, other folder
    assert again != names[0]


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path: Path) -> None:
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("hello")
    other_arch = tmp_path / "other.ckpt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), other_arch)
    for bad in (not_a_checkpoint, other_arch, tmp_path / "missing.ckpt"):
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "explain.py"), f"ckpt={bad}"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("catdog: error:"), result.stderr
        assert "Traceback" not in result.stderr


def test_latest_checkpoint_is_the_newest_run(tmp_path: Path) -> None:
    import os

    old = save_constant_checkpoint(tmp_path / "runs" / "train" / "a" / "checkpoints" / "best.ckpt")
    new = save_constant_checkpoint(tmp_path / "runs" / "other" / "b" / "checkpoints" / "best.ckpt")
    os.utime(old, (1, 1))
    assert resolve_checkpoint("latest", tmp_path / "runs") == new
    with pytest.raises(CatdogError, match="train first"):
        resolve_checkpoint("latest", tmp_path / "nothing")


def test_pointing_game_scores_the_peak_against_every_box_of_an_image(run_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, {"cat": 3}, size=(80, 60))
    # The constant model's maps are flat: the peak is the first cell's centre, (19.5, 14.5) in the photo
    # on the (n + 0.5) * stride grid (align=cell).
    pd.DataFrame(
        [
            ("cat/cat_0.png", 10, 5, 30, 25),  # hit
            ("cat/cat_1.png", 50, 40, 70, 55),  # miss, even with the tolerance
            ("cat/cat_2.png", 60, 0, 80, 10),  # miss ...
            ("cat/cat_2.png", 15, 10, 25, 20),  # ... but its second object is hit
        ],
        columns=["path", "x0", "y0", "x1", "y1"],
    ).to_csv(images / "boxes.csv", index=False)
    summary = explain(explain_cfg(run_folder, f"data.root={images}", "align=cell"))
    predictions = pd.read_csv(Path(summary["out_dir"]) / "predictions.csv")
    predictions.index = predictions["path"].map(lambda p: Path(p).name)
    assert (predictions.loc["cat_0.png", "peak_x"], predictions.loc["cat_0.png", "peak_y"]) == (19.5, 14.5)
    assert predictions["pointing_hit"].to_dict() == {"cat_0.png": True, "cat_1.png": False, "cat_2.png": True}
    assert summary["pointing_game"]["hits"] == 2 and summary["pointing_game"]["images"] == 3


def test_contrast_reaches_the_explainer(run_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, {"cat": 1, "dog": 1})
    summary = explain(explain_cfg(run_folder, f"data.root={images}", "contrast=runner_up", "align=cell"))
    assert summary["contrast"] == "runner_up"
    assert str(np.load(Path(summary["out_dir"]) / "cams.npz")["contrast"]) == "runner_up"


def test_explain_prints_its_result_without_lightning_chatter(run_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, {"cat": 1, "dog": 1})
    command = [sys.executable, str(ROOT / "scripts" / "explain.py"), f"ckpt={run_folder}", f"data.root={images}"]
    result = subprocess.run(
        [*command, "data.num_workers=0", "accelerator=cpu"], check=False, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Explained 2 images (0 skipped)" in output
    for chatter in ("GPU available", "TPU available", "litlogger", "LeafSpec"):
        assert chatter not in output
