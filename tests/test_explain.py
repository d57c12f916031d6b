"""Explain pipeline: folders, tables, skipping, no overwrite, errors (tiny synthetic data, no training)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import (
    ROOT,
    explain_cfg,
    make_config,
    make_trained_run,
    one_line,
    run_command_here,
    run_killed,
    save_checkpoint,
    write_images,
)

from catdog.errors import CatdogError
from catdog.explain import engine as engine_module
from catdog.explain.engine import run_explain
from catdog.explain.pipeline import explain
from catdog.explain.render import OverlayStyle, class_folders, overlay_location, overlay_names
from catdog.explain.settings import EngineSettings, ExplainSettings
from catdog.maps import explainers as explainers_module
from catdog.models import load_classifier
from catdog.pipelines.compare import resolve_source
from catdog.report import read_explain_dir
from catdog.runs import resolve_checkpoint

CLASSES = ["cat", "dog", "fox"]


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints" / "best.ckpt", CLASSES, image_size=64)
    return run


def explain_auto(ckpt: Path, *overrides: str):
    """conf/explain.yaml with its own precision (auto: bf16 where the CPU runs it natively)."""
    return explain_cfg(ckpt, *overrides, precision="auto")


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
    summary = explain(explain_auto(run_folder, f"data.root={images}"))
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
    # The CAM self-check is exercised on a non-zero head in test_cam_self_check_can_fail below.
    assert len(summary_file["checkpoint"]["sha256"]) == 64
    assert (out / "confusion_matrix.png").is_file() and (out / "top_losses.png").is_file()

    cams = np.load(out / "cams.npz")
    assert cams["cams"].dtype == np.float16 and cams["cams"].shape[:2] == (8, 2)
    assert sorted(cams["paths"].tolist()) == sorted(predictions["path"].tolist())


def test_overlay_is_original_size_and_mistakes_show_true_class(run_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, {"cat": 1, "dog": 1}, size=(90, 50))
    out = Path(explain(explain_auto(run_folder, f"data.root={images}"))["out_dir"])
    correct = cv2.imread(str(next((out / "correct" / "cat").glob("*.jpg"))))
    assert correct.shape == (50, 90, 3)  # CAM upsampled to the original resolution, not a square
    mistake = cv2.imread(str(next((out / "incorrect" / "dog_as_cat").glob("*.jpg"))))
    assert mistake.shape[0] == 50 and mistake.shape[1] > 2 * 90  # predicted-class | true-class panels


def test_single_input_file_and_topk(run_folder: Path, tmp_path: Path) -> None:
    (image,) = write_images(tmp_path / "one", {"x": 1})
    summary = explain(explain_auto(run_folder, f"input={image}", "topk=2"))
    predictions = pd.read_csv(Path(summary["out_dir"]) / "predictions.csv")
    assert len(predictions) == 1 and predictions.loc[0, "topk"].startswith("cat|")
    assert summary["labelled"] == 0 and "accuracy" not in summary


def test_unreadable_images_are_skipped_and_listed(
    run_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = tmp_path / "images"
    write_images(images, {"cat": 2})
    (images / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (images / "cat" / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        summary = explain(explain_auto(run_folder, f"data.root={images}"))
    out = Path(summary["out_dir"])
    # The message names the final skipped.csv, not the staging folder it was written in (issue 19 item 18).
    (message,) = [r.getMessage() for r in caplog.records if "Skipped 2" in r.getMessage()]
    assert message.endswith(str(out / "skipped.csv")) and Path(message.split(" listed in ")[-1]).is_file()
    skipped = pd.read_csv(out / "skipped.csv")
    assert sorted(Path(p).name for p in skipped["path"]) == ["broken.jpg", "empty.png"]
    assert skipped["reason"].str.len().min() > 0
    assert summary["images"] == 2 and summary["skipped"] == 2


def test_never_overwrites_earlier_results(run_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, {"cat": 1})
    first = explain(explain_auto(run_folder, f"data.root={images}"))["out_dir"]
    second = explain(explain_auto(run_folder, f"data.root={images}"))["out_dir"]
    assert first != second and Path(first, "predictions.csv").is_file()

    target = tmp_path / "out"
    explain(explain_auto(run_folder, f"data.root={images}", f"out_dir={target}"))
    with pytest.raises(CatdogError, match="overwrite=true"):
        explain(explain_auto(run_folder, f"data.root={images}", f"out_dir={target}"))
    explain(explain_auto(run_folder, f"data.root={images}", f"out_dir={target}", "overwrite=true"))


def test_held_out_split_comes_from_the_run_folder(run_folder: Path, tmp_path: Path) -> None:
    paths = write_images(tmp_path / "images", {"cat": 3, "dog": 3})
    splits = ["train", "val", "test"] * 2
    labels = [p.parent.name for p in paths]
    pd.DataFrame({"path": [str(p) for p in paths], "label": labels, "split": splits}).to_csv(
        run_folder / "split.csv", index=False
    )
    out = Path(explain(explain_auto(run_folder))["out_dir"])
    predictions = pd.read_csv(out / "predictions.csv")
    assert sorted(predictions["path"]) == sorted(str(p) for p, s in zip(paths, splits) if s == "test")


def test_overlay_names_list_the_most_confident_first() -> None:
    paths = [f"/x/img{i}.jpg" for i in range(3)] + ["/y/img0.jpg"]
    names = overlay_names(paths)
    folders = class_folders(CLASSES)
    confidences = [0.6, 0.999, 0.8]
    locations = [overlay_location(1, 0, confidence, names[i], folders) for i, confidence in enumerate(confidences)]
    assert all(name.startswith("incorrect/dog_as_cat/") for name in locations)
    assert sorted(locations) == [locations[1], locations[2], locations[0]]
    again = overlay_location(1, 0, 0.6, names[3], folders)  # same file name, other folder
    assert again != locations[0]


def test_cli_reports_a_bad_checkpoint_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    from catdog.cli import COMMANDS, exit_on_user_error

    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("hello")
    other_arch = tmp_path / "other.ckpt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), other_arch)
    # One bad checkpoint through the script's command (Hydra, the exit status, nothing else on stderr), in this
    # process: a child costs seconds of imports (the Lightning-chatter test below runs the script as a child) ...
    status = run_command_here(monkeypatch, tmp_path, "explain", f"ckpt={not_a_checkpoint}")
    stderr = capfd.readouterr().err
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("catdog: error:"), stderr
    assert "Traceback" not in stderr
    # ... the others through the same task the script runs.
    task = exit_on_user_error(COMMANDS["explain"].load())
    for bad in (other_arch, tmp_path / "missing.ckpt"):
        with pytest.raises(SystemExit) as exit_status:
            task(make_config("explain", [f"ckpt={bad}"]))
        assert exit_status.value.code == 2
        lines = capfd.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("catdog: error:"), lines


def test_latest_checkpoint_is_the_newest_run(tmp_path: Path) -> None:

    old = save_checkpoint(tmp_path / "runs" / "train" / "a" / "checkpoints" / "best.ckpt", CLASSES, image_size=64)
    new = save_checkpoint(tmp_path / "runs" / "other" / "b" / "checkpoints" / "best.ckpt", CLASSES, image_size=64)
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
    summary = explain(explain_auto(run_folder, f"data.root={images}", "align=cell"))
    predictions = pd.read_csv(Path(summary["out_dir"]) / "predictions.csv")
    predictions.index = predictions["path"].map(lambda p: Path(p).name)
    assert (predictions.loc["cat_0.png", "peak_x"], predictions.loc["cat_0.png", "peak_y"]) == (19.5, 14.5)
    assert predictions["pointing_hit"].to_dict() == {"cat_0.png": True, "cat_1.png": False, "cat_2.png": True}
    assert summary["pointing_game"]["hits"] == 2 and summary["pointing_game"]["images"] == 3


def test_contrast_reaches_the_explainer(run_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, {"cat": 1, "dog": 1})
    summary = explain(explain_auto(run_folder, f"data.root={images}", "contrast=runner_up", "align=cell"))
    assert summary["contrast"] == "runner_up"
    assert str(np.load(Path(summary["out_dir"]) / "cams.npz")["contrast"]) == "runner_up"


@pytest.mark.slow  # the script in a fresh process: its console as a user sees it
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


@pytest.mark.parametrize("classes", [["0", "1"], ["NA", "None"]])
def test_numeric_and_na_class_names_survive_split_csv(tmp_path: Path, classes: list[str]) -> None:
    images = tmp_path / "photos"
    write_images(images, {classes[0]: 2, classes[1]: 3}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, classes, favourite=0)
    summary = explain(explain_cfg(run))
    # Independent reference: the constant model predicts classes[0]; 2 of the 5 images are that class.
    assert summary["labelled"] == 5 and summary["accuracy"] == pytest.approx(2 / 5)
    out = Path(summary["out_dir"])
    exp = read_explain_dir(out)
    assert sorted(exp.predictions["true"]) == sorted([classes[0]] * 2 + [classes[1]] * 3)
    assert (out / "report" / "index.html").is_file()


def test_extreme_image_goes_to_skipped_csv(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 2, "dog": 2}, size=(32, 32))
    wide = images / "cat" / "wide.png"
    cv2.imwrite(str(wide), np.full((70000, 8, 3), 120, np.uint8))  # valid PNG; beyond JPEG's 65535 px
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"])
    # Drawn on a bounded copy (the default overlay.max_size) the image is explained like any other ...
    bounded = explain(explain_cfg(run))
    assert bounded["images"] == 5 and bounded["skipped"] == 0
    # ... and at full size its JPEG cannot be written: that one image is skipped, the run completes.
    summary = explain(explain_cfg(run, "overlay.max_size=null"))
    out = Path(summary["out_dir"])
    skipped = pd.read_csv(out / "skipped.csv", dtype=str)
    assert skipped["path"].tolist() == [str(wide.resolve())]
    assert skipped["reason"].iloc[0].startswith("cannot draw overlay")
    assert summary["images"] == 4 and summary["skipped"] == 1
    with np.load(out / "cams.npz") as npz:
        assert str(wide.resolve()) not in set(npz["paths"].tolist()) and len(npz["cams"]) == 4


def test_overwrite_replaces_the_whole_folder(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 2, "dog": 2}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"])
    out = tmp_path / "out"
    explain(explain_cfg(run, f"out_dir={out}"))
    assert (out / "cams.npz").is_file() and (out / "incorrect").is_dir()
    with pytest.raises(CatdogError, match="overwrite=true"):
        explain(explain_cfg(run, f"out_dir={out}"))
    (out / "stray.txt").write_text("old")  # a file catdog did not write: never deleted (issue 19 item 1)
    with pytest.raises(CatdogError, match="did not write"):
        explain(explain_cfg(run, f"out_dir={out}", "overwrite=true"))
    (out / "stray.txt").unlink()
    explain(explain_cfg(run, f"out_dir={out}", "overwrite=true", "save_cams=false", f"input={images / 'cat'}"))
    assert not (out / "cams.npz").exists()
    assert not (out / "incorrect").exists()  # only cats now, all predicted cat: no old mistakes kept
    assert len(pd.read_csv(out / "predictions.csv")) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_out_dir_is_a_file(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 1, "dog": 1}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(CatdogError, match="is a file") as err:
        explain(explain_cfg(run, f"out_dir={tmp_path / 'file'}"))
    one_line(err)
    with pytest.raises(CatdogError, match="is a file") as err:
        explain(explain_cfg(run, f"out_dir={tmp_path / 'file' / 'below'}"))
    one_line(err)


def test_every_input_unreadable(tmp_path: Path) -> None:
    images = tmp_path / "photos" / "cat"
    images.mkdir(parents=True)
    (images / "a.png").write_bytes(b"")
    (images / "b.jpg").write_text("not an image")
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints" / "best.ckpt", ["cat", "dog"])
    with pytest.raises(CatdogError, match="none of the 2 images could be used") as err:
        explain(explain_cfg(run, f"data.root={images.parent}"))
    assert "zero-byte" in one_line(err) or "not an image" in one_line(err)


def test_empty_boxes_cell(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 1, "dog": 1}, size=(32, 32))
    (images / "boxes.csv").write_text("path,x0,y0,x1,y1\ncat/cat_0.png,1,2,,9\n")
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"])
    with pytest.raises(CatdogError, match="empty") as err:
        explain(explain_cfg(run, f"data.root={images}"))
    assert "boxes.csv" in one_line(err)


def test_explaining_a_root_skips_earlier_explain_folders(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_images(root, {"cat": 2, "dog": 2}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", root, ["cat", "dog"])
    explain(explain_cfg(run, f"data.root={root}", f"out_dir={root / 'explained'}"))
    assert len(list((root / "explained").rglob("*.jpg"))) >= 4
    again = explain(explain_cfg(run, f"data.root={root}"))
    assert again["images"] == 4


def test_explain_uses_the_layer_names_stored_in_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 2, "dog": 2}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"], favourite=None)
    real = explainers_module.arch_spec

    def moved_registry(name: str):  # the registry now names another layer than the checkpoint was made with
        spec = real(name)
        fields = {"name": spec.name, "fc_layer": spec.fc_layer, "feature_relu": spec.feature_relu}
        return type(spec)(feature_layer="layer3", **fields)

    monkeypatch.setattr(explainers_module, "arch_spec", moved_registry)
    summary = explain(explain_cfg(run))
    assert summary["cam_logit_max_deviation"] < 1e-4


def _engine(precision: str) -> EngineSettings:
    """conf/explain.yaml's engine settings at ``precision``, 8 images per batch decoded in the test's process."""
    cfg = make_config("explain", ["ckpt=unused", f"precision={precision}", "data.num_workers=0", "data.batch_size=8"])
    return ExplainSettings.from_config(cfg).engine()


def _small_explain_setup(tmp_path: Path, head_scale: float) -> tuple[Any, pd.DataFrame, OverlayStyle, Path]:
    """A random two-class model whose head is scaled by ``head_scale``, 8 tiny photos, a style, an out folder."""
    images = tmp_path / "photos"
    write_images(images, {"cat": 4, "dog": 4}, size=(32, 32))
    ckpt = save_checkpoint(tmp_path / "m.ckpt", ["cat", "dog"], favourite=None, seed=3, head_scale=head_scale)
    table = pd.DataFrame({"path": [str(p) for p in sorted(images.rglob("*.png"))], "label": ["cat"] * 4 + ["dog"] * 4})
    style = OverlayStyle(
        class_names=["cat", "dog"], topk=1, alpha=0.5, side_by_side=False, show_true_cam=True, quality=80
    )
    out = tmp_path / "out"
    out.mkdir()
    return load_classifier(ckpt), table, style, out


def test_bf16_cam_check_tolerance_is_precision_aware(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, table, style, out = _small_explain_setup(tmp_path, head_scale=5.0)
    with caplog.at_level(logging.WARNING, logger="catdog.explain.engine"):
        _, _, stats = run_explain(model, table, out, _engine("bf16"), style=style)
    # bf16 rounding gives a deviation well above float32's 1e-3 but normal for bf16: no warning.
    assert 1e-3 < stats["cam_logit_max_deviation"] < engine_module.CAM_CHECK_TOLERANCE["bf16"]
    assert not [r for r in caplog.records if "self-check" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="catdog.explain.engine"):
        _, _, stats32 = run_explain(model, table, out, _engine("32"), style=style)
    assert stats32["cam_logit_max_deviation"] < 1e-4


def test_cam_self_check_can_fail(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 2, "dog": 2}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"], favourite=None)
    summary = explain(explain_cfg(run))
    with np.load(Path(summary["out_dir"]) / "cams.npz") as npz:
        assert np.abs(npz["cams"].astype(np.float32)).max() > 1e-3  # real maps: a wrong layer would show
    assert summary["cam_logit_max_deviation"] < 1e-4
    # The same check fails when the maps come from the wrong layer (so it is able to fail).
    model = load_classifier(run / "checkpoints" / "best.ckpt")
    from catdog.maps.explainers import ExactCAM

    wrong = ExactCAM(model.net, "layer4.0", "fc", feature_relu=False)
    x = torch.randn(2, 3, 32, 32)
    assert wrong.explain(x, true_labels=torch.tensor([0, 1]), topk=1).stats["cam_logit_deviation"] > 1e-2


def test_bf16_cam_check_tolerance_scales_with_the_logits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Large logits (a confident head): bf16 rounding deviates by more than the 0.05 floor, yet by well under
    # 1% of the logits, which is normal for 8 bits of mantissa: no warning (the demo warned at 0.081).
    model, table, style, out = _small_explain_setup(tmp_path, head_scale=300.0)
    with caplog.at_level(logging.WARNING, logger="catdog.explain.engine"):
        _, _, stats = run_explain(model, table, out, _engine("bf16"), style=style)
    assert stats["cam_logit_max_deviation"] > engine_module.CAM_CHECK_TOLERANCE["bf16"]
    assert not [r for r in caplog.records if "self-check" in r.getMessage()]


@pytest.mark.slow
def test_killed_explain_leaves_nothing_complete_and_a_rerun_completes(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 6, "dog": 6}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"])
    overrides = [f"ckpt={run}", "data.num_workers=0", "data.batch_size=4", "overlay.writers=1"]
    # Overlays are drawn and written by catdog.explain.render.
    run_killed("catdog.explain.render", "save_image", 3, "explain", "explain", overrides, "catdog.explain.pipeline")

    from catdog.runs import explain_dirs_of

    # Nothing at a final path: only the hidden staging folder, which neither the run nor compare accepts.
    folders = list((run / "explain").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith(".")
    assert any(folders[0].rglob("*.jpg")) and not (folders[0] / "summary.json").exists()  # killed mid-run
    assert explain_dirs_of(run) == []
    with pytest.raises(CatdogError, match="interrupted"):
        resolve_source(folders[0])
    final = folders[0].name.removeprefix(".").removesuffix(".partial")
    assert not (run / "explain" / final).exists()

    # Rerunning into the same folder needs no overwrite and gives the full result.
    summary = explain(explain_cfg(run, f"out_dir={run / 'explain' / final}"))
    out = Path(summary["out_dir"])
    assert summary["images"] == 12 and explain_dirs_of(run) == [out]
    assert len(pd.read_csv(out / "predictions.csv")) == 12 and len(list(out.rglob("*.jpg"))) >= 12
    assert [p.name for p in (run / "explain").iterdir()] == [final]


# --- issue 20 items 5 and 6: two-class overlays, the report's text-free layers ----------------------
def test_two_class_mistakes_have_no_inverted_true_class_panel(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints" / "best.ckpt", ["cat", "dog"], image_size=64)
    images = tmp_path / "images"
    write_images(images, {"cat": 1, "dog": 1}, size=(90, 50))

    def mistake_width(*overrides: str) -> int:
        out = Path(explain(explain_cfg(run, f"data.root={images}", *overrides))["out_dir"])
        return cv2.imread(str(next((out / "incorrect" / "dog_as_cat").glob("*.jpg")))).shape[1]

    assert mistake_width() == 90  # two classes: the true class's map is the predicted one inverted
    assert mistake_width("overlay.true_class_panel=always") > 2 * 90  # the option keeps it
    with pytest.raises(CatdogError, match="true_class_panel=sometimes is unknown: choose auto, always or never"):
        explain(explain_cfg(run, f"data.root={images}", "overlay.true_class_panel=sometimes"))


def test_explain_writes_the_reports_text_free_layers(run_folder: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    ramp = np.tile(np.linspace(0, 255, 600, dtype=np.uint8)[None, :, None], (300, 1, 3))  # smooth: resampling-proof
    for name in ("cat", "dog"):
        (images / name).mkdir(parents=True)
        cv2.imwrite(str(images / name / f"{name}.png"), ramp)
    out = Path(explain(explain_cfg(run_folder, f"data.root={images}"))["out_dir"])
    for rel in pd.read_csv(out / "predictions.csv")["overlay"]:
        photo = cv2.imread(str(out / "thumbs" / rel))
        heat = cv2.imread(str(out / "thumbs" / "heat" / rel))
        assert max(photo.shape[:2]) <= 384 and abs(photo.shape[1] / photo.shape[0] - 2.0) < 0.02  # bounded, aspect kept
        # smooth: a third of the side is enough
        assert heat.shape[1] == photo.shape[1] // 3 and heat.shape[0] == photo.shape[0] // 3
        # The photo layer is the photo itself: no label band burned in (the report's card carries the label).
        small = cv2.resize(ramp, (photo.shape[1], photo.shape[0]), interpolation=cv2.INTER_AREA)
        assert np.abs(photo.astype(int) - small.astype(int)).max() < 16
