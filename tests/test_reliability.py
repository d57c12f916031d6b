"""Issue #9 regressions: each test failed on main 836a693 and names the item it guards.

Tiny models (resnet18 at 32 px, random or constant heads), a handful of synthetic images, no training.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import compare_config, make_config, write_images
from omegaconf import OmegaConf
from test_report import make_images, make_run

from catdog.data import build_index, ensure_demo_dataset, index_for_inference
from catdog.data import images as images_module
from catdog.data.images import BadImageError, load_rgb
from catdog.errors import CatdogError
from catdog.explain.pipeline import OverlayStyle, explain, run_explain
from catdog.models import ClassifierModule, load_classifier
from catdog.explain import pipeline as explain_module
from catdog.pipelines.compare import compare, read_run_settings
from catdog.plots import plot_confusion_matrix
from catdog.report import read_explain_dir, write_report

ROOT = Path(__file__).resolve().parents[1]


# --- helpers ---------------------------------------------------------------------------------
def save_checkpoint(
    path: Path, classes: list[str], favourite: int | None = 0, seed: int = 0, head_scale: float = 1.0
) -> Path:
    """A resnet18 checkpoint at 32 px: constant prediction ``favourite`` (zero head) or, with None, a random head."""
    torch.manual_seed(seed)
    module = ClassifierModule(arch="resnet18", class_names=classes, weights=None, image_size=32)
    with torch.no_grad():
        module.net.get_submodule(module.hparams.fc_layer).weight.mul_(head_scale)
    if favourite is not None:
        fc = module.net.get_submodule(module.hparams.fc_layer)
        with torch.no_grad():
            fc.weight.zero_()
            fc.bias.copy_(torch.nn.functional.one_hot(torch.tensor(favourite), len(classes)).float() * 2.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def make_trained_run(run: Path, images: Path, classes: list[str], favourite: int | None = 0) -> Path:
    """A run folder with a checkpoint and a split.csv putting every image of ``images/<class>/`` in test."""
    save_checkpoint(run / "checkpoints" / "best.ckpt", classes, favourite)
    rows = [(str(p.resolve()), p.parent.name, "test") for p in sorted(images.rglob("*.png"))]
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(run / "split.csv", index=False)
    return run


def explain_cfg(ckpt: Path, *overrides: str):
    # precision=32: "auto" picks bf16 on CPUs with AVX512-BF16, and the self-check bounds below are float32's.
    return make_config("explain", [f"ckpt={ckpt}", "data.num_workers=0", "data.batch_size=4", "precision=32", *overrides])


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- item 1: class names that look like numbers or NA ---------------------------------------
@pytest.mark.parametrize("classes", [["0", "1"], ["NA", "None"]])
def test_item01_numeric_and_na_class_names_survive_split_csv(tmp_path: Path, classes: list[str]) -> None:
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


# --- item 3: one extreme image is skipped, not fatal; explicit decompression-bomb limit ------
def test_item03_extreme_image_goes_to_skipped_csv(tmp_path: Path) -> None:
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


def test_item03_decompression_bomb_limit_is_explicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    assert images_module.MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS == 100_000_000
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), np.zeros((50, 40, 3), np.uint8))
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 1999)
    with pytest.raises(BadImageError, match="too many pixels"):
        load_rgb(path)
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 2000)
    assert load_rgb(path).shape == (50, 40, 3)


# --- item 4: "$" in class names ----------------------------------------------------------------
def test_item04_dollar_in_class_names_does_not_crash_plots(tmp_path: Path) -> None:
    classes = ["a$^$b", "$x_{$"]
    plot_confusion_matrix([[1, 2], [3, 4]], classes, tmp_path / "m.png", title="cost $^$")
    assert cv2.imread(str(tmp_path / "m.png")) is not None
    images = tmp_path / "photos"
    write_images(images, {classes[0]: 2, classes[1]: 2}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, classes)
    summary = explain(explain_cfg(run))
    assert (Path(summary["out_dir"]) / "summary.json").is_file() and summary["accuracy"] == 0.5


# --- item 5: overwrite replaces the folder; compare refuses incomplete folders ----------------
def test_item05_overwrite_replaces_the_whole_folder(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 2, "dog": 2}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"])
    out = tmp_path / "out"
    explain(explain_cfg(run, f"out_dir={out}"))
    assert (out / "cams.npz").is_file() and (out / "incorrect").is_dir()
    (out / "stray.txt").write_text("old")
    with pytest.raises(CatdogError, match="overwrite=true"):
        explain(explain_cfg(run, f"out_dir={out}"))
    explain(explain_cfg(run, f"out_dir={out}", "overwrite=true", "save_cams=false", f"input={images / 'cat'}"))
    assert not (out / "cams.npz").exists() and not (out / "stray.txt").exists()
    assert not (out / "incorrect").exists()  # only cats now, all predicted cat: no old mistakes kept
    assert len(pd.read_csv(out / "predictions.csv")) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_item05_compare_refuses_incomplete_folders(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg")])
    a = make_run(tmp_path / "runs", "A", paths, ["cat", "dog"], [0.9, 0.8], np.ones((2, 2, 2), np.float32))
    b = make_run(tmp_path / "runs", "B", paths, ["cat", "cat"], [0.9, 0.8], np.ones((2, 2, 2), np.float32))
    staging = a.with_name(f".{a.name}.partial")
    a.rename(staging)
    cfg = compare_config(tmp_path, runs=[str(staging), str(b)])
    with pytest.raises(CatdogError, match="interrupted") as err:
        compare(cfg)
    one_line(err)
    staging.rename(a)
    (a / "summary.json").unlink()  # a folder killed before summary.json (written last)
    with pytest.raises(CatdogError, match="incomplete"):
        compare(compare_config(tmp_path, runs=[str(a), str(b)]))


# --- item 6: the report copies only files inside the explain folder ---------------------------
def test_item06_report_never_copies_files_outside_the_explain_folder(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg"), ("dog", "c.jpg")])
    out = make_run(tmp_path / "runs", "A", paths, ["cat", "dog", "dog"], [0.9, 0.8, 0.7], np.ones((3, 2, 2), np.float32))
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not for the report " + os.urandom(16))
    frame = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    escape = os.path.relpath(secret, out)
    frame.loc[0, "overlay"] = escape  # ../../../secret.jpg
    frame.loc[1, "overlay"] = str(secret)  # absolute
    (out / "link.jpg").symlink_to(secret)
    frame.loc[2, "overlay"] = "link.jpg"  # a symlink inside the folder pointing out of it
    frame.to_csv(out / "predictions.csv", index=False)
    report = write_report(tmp_path / "report", [read_explain_dir(out)])
    copied = [p.read_bytes() for p in report.parent.rglob("*") if p.is_file()]
    assert secret.read_bytes() not in copied
    page = report.read_text()
    assert "secret.jpg" not in page and "link.jpg" not in page


# --- item 7: metadata is read without resolving interpolations --------------------------------
def test_item07_compare_does_not_resolve_interpolations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATDOG_TEST_SECRET", "hunter2-secret")
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg")])
    cams = np.ones((2, 2, 2), np.float32)
    a = make_run(tmp_path / "runs", "A", paths, ["cat", "dog"], [0.9, 0.8], cams, overrides=["optimizer.lr=0.1"])
    b = make_run(
        tmp_path / "runs",
        "B",
        paths,
        ["cat", "cat"],
        [0.9, 0.8],
        cams,
        overrides=["optimizer.lr=${oc.env:CATDOG_TEST_SECRET}"],
        config={"optimizer": {"lr": "${oc.env:CATDOG_TEST_SECRET}"}, "note": "${oc.env:CATDOG_TEST_SECRET}"},
    )
    overrides, settings = read_run_settings(b.parent.parent)
    assert overrides["optimizer.lr"] == "${oc.env:CATDOG_TEST_SECRET}"
    assert settings["note"] == "${oc.env:CATDOG_TEST_SECRET}"
    result = compare(compare_config(tmp_path, runs=[str(a.parent.parent), str(b.parent.parent)]))
    out = Path(result["out_dir"])
    for file in [*out.glob("*.csv"), out / "report" / "index.html"]:
        assert "hunter2" not in file.read_text(), file


# --- item 8: data=demo deletes only folders its own generator wrote ---------------------------
@pytest.mark.parametrize(
    "marker",
    [{"anything": 1}, {"generator_version": 1, "num_per_class": 1, "image_size": 32, "seed": 5}],
)
def test_item08_demo_never_deletes_a_folder_it_did_not_write(tmp_path: Path, marker: dict) -> None:
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


# --- item 9: compare re-explains run folders whose names look like Hydra overrides ------------
def test_item09_compare_reexplains_sweep_folders_with_override_syntax(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 2, "dog": 2}, size=(32, 32))
    runs = [make_trained_run(tmp_path / "sweep" / name, images, ["cat", "dog"], favourite=f)
            for f, name in enumerate(["lr=0.1,bs=32", "lr='0.2' $x"])]
    cfg = compare_config(tmp_path, runs=[str(r) for r in runs])
    cfg.explain.data.num_workers = 0
    result = compare(cfg)
    # Independent reference: run 0 always says cat, run 1 always dog; half the images are cats.
    assert [Path(d).parent.parent for d in result["explain_dirs"]] == runs
    assert [row["accuracy"] for row in result["experiments"]] == [0.5, 0.5]
    assert result["pairs"][0]["correct_to_incorrect"] == 2 and result["pairs"][0]["incorrect_to_correct"] == 2


# --- item 10: one-line errors instead of tracebacks --------------------------------------------
def test_item10_out_dir_is_a_file(tmp_path: Path) -> None:
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


def test_item10_every_input_unreadable(tmp_path: Path) -> None:
    images = tmp_path / "photos" / "cat"
    images.mkdir(parents=True)
    (images / "a.png").write_bytes(b"")
    (images / "b.jpg").write_text("not an image")
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints" / "best.ckpt", ["cat", "dog"])
    with pytest.raises(CatdogError, match="none of the 2 images could be used") as err:
        explain(explain_cfg(run, f"data.root={images.parent}"))
    assert "zero-byte" in one_line(err) or "not an image" in one_line(err)


def test_item10_empty_boxes_cell(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 1, "dog": 1}, size=(32, 32))
    (images / "boxes.csv").write_text("path,x0,y0,x1,y1\ncat/cat_0.png,1,2,,9\n")
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"])
    with pytest.raises(CatdogError, match="empty") as err:
        explain(explain_cfg(run, f"data.root={images}"))
    assert "boxes.csv" in one_line(err)


def test_item10_corrupt_checkpoint_and_truncated_summary_in_compare(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg")])
    cams = np.ones((2, 2, 2), np.float32)
    a = make_run(tmp_path / "runs", "A", paths, ["cat", "dog"], [0.9, 0.8], cams)
    b = make_run(tmp_path / "runs", "B", paths, ["cat", "cat"], [0.9, 0.8], cams)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(CatdogError, match="could not be read") as err:
        compare(compare_config(tmp_path, runs=[str(a), str(corrupt)]))
    one_line(err)
    text = (b / "summary.json").read_text()
    (b / "summary.json").write_text(text[: len(text) // 2])
    with pytest.raises(CatdogError, match="not valid JSON") as err:
        compare(compare_config(tmp_path, runs=[str(a), str(b)]))
    one_line(err)


# --- item 11: symlinked class folders; earlier explain folders inside the root ----------------
def test_item11_symlinked_class_folders_are_explained_like_trained(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_images(elsewhere, {"kitten_store": 3}, size=(32, 32))
    root = tmp_path / "data"
    write_images(root, {"dog": 2}, size=(32, 32))
    (root / "cat").symlink_to(elsewhere / "kitten_store", target_is_directory=True)
    (root / "dog" / "loop").symlink_to(root / "dog", target_is_directory=True)  # a link loop must end
    trained = build_index("folder", root, val_fraction=0.0, test_fraction=0.0)
    explained = index_for_inference(root, ["cat", "dog"])
    assert sorted(trained["label"]) == ["cat"] * 3 + ["dog"] * 2
    assert sorted(explained["label"]) == sorted(trained["label"])


def test_item11_explaining_a_root_skips_earlier_explain_folders(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_images(root, {"cat": 2, "dog": 2}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", root, ["cat", "dog"])
    explain(explain_cfg(run, f"data.root={root}", f"out_dir={root / 'explained'}"))
    assert len(list((root / "explained").rglob("*.jpg"))) >= 4
    again = explain(explain_cfg(run, f"data.root={root}"))
    assert again["images"] == 4


# --- item 14: benchmarks do not regenerate data/demo ------------------------------------------
def test_item14_benchmarks_use_their_own_data_folders() -> None:
    demo_root = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "demo.yaml"))["data"]["root"]
    assert demo_root == "${paths.data_dir}/demo"
    checked = 0
    for script in sorted((ROOT / "bench").glob("*.py")):
        text = script.read_text()
        for argument in re.findall(r"ensure_demo_dataset\(\s*([^,\)]+)", text):
            name = argument.strip()
            assigned = re.search(rf"^{re.escape(name)}\s*=\s*(.+)$", text, re.M)
            value = (assigned.group(1) if assigned else name).strip().strip("\"'")
            folder = Path(value)
            assert folder.name != "demo" and folder.parts[:1] != ("demo",), (script.name, value)
            checked += 1
    assert checked >= 1  # the benchmarks that generate demo-like data do so into their own folder


# --- item 15 (explain parts) -------------------------------------------------------------------
def test_item15_max_images_samples_every_class_reproducibly(tmp_path: Path) -> None:
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


def test_item15_explain_uses_the_layer_names_stored_in_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 2, "dog": 2}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"], favourite=None)
    real = explain_module.arch_spec

    def moved_registry(name: str):  # the registry now names another layer than the checkpoint was made with
        spec = real(name)
        return type(spec)(name=spec.name, feature_layer="layer3", fc_layer=spec.fc_layer, feature_relu=spec.feature_relu)

    monkeypatch.setattr(explain_module, "arch_spec", moved_registry)
    summary = explain(explain_cfg(run))
    assert summary["cam_logit_max_deviation"] < 1e-4


def _small_explain_setup(tmp_path: Path, head_scale: float) -> tuple[Any, pd.DataFrame, OverlayStyle, Path]:
    """A random two-class model whose head is scaled by ``head_scale``, 8 tiny photos, a style, an out folder."""
    images = tmp_path / "photos"
    write_images(images, {"cat": 4, "dog": 4}, size=(32, 32))
    ckpt = save_checkpoint(tmp_path / "m.ckpt", ["cat", "dog"], favourite=None, seed=3, head_scale=head_scale)
    table = pd.DataFrame({"path": [str(p) for p in sorted(images.rglob("*.png"))], "label": ["cat"] * 4 + ["dog"] * 4})
    style = OverlayStyle(class_names=["cat", "dog"], topk=1, alpha=0.5, side_by_side=False, show_true_cam=True, quality=80)
    out = tmp_path / "out"
    out.mkdir()
    return load_classifier(ckpt), table, style, out


def test_item15_bf16_cam_check_tolerance_is_precision_aware(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, table, style, out = _small_explain_setup(tmp_path, head_scale=5.0)
    with caplog.at_level(logging.WARNING, logger="catdog.explain.pipeline"):
        _, _, stats = run_explain(model, table, out, style=style, bf16=True, num_workers=0, batch_size=8)
    # bf16 rounding gives a deviation well above float32's 1e-3 but normal for bf16: no warning.
    assert 1e-3 < stats["cam_logit_max_deviation"] < explain_module.CAM_CHECK_TOLERANCE["bf16"]
    assert not [r for r in caplog.records if "self-check" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="catdog.explain.pipeline"):
        _, _, stats32 = run_explain(model, table, out, style=style, bf16=False, num_workers=0, batch_size=8)
    assert stats32["cam_logit_max_deviation"] < 1e-4


# --- item 17: the CAM self-check on a model whose head is not all zero -------------------------
def test_item17_cam_self_check_can_fail(tmp_path: Path) -> None:
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


def test_item06_report_takes_curves_only_from_the_run_holding_the_explain_folder(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg")])
    out = make_run(tmp_path / "runs", "A", paths, ["cat", "dog"], [0.9, 0.8], np.ones((2, 2, 2), np.float32))
    moved = tmp_path / "moved"
    out.rename(moved)  # no longer inside a run folder: the run is taken from summary.json
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "checkpoints").mkdir(parents=True)
    secret = cv2.imencode(".png", np.full((5, 5, 3), 7, np.uint8))[1].tobytes()
    (elsewhere / "curves.png").write_bytes(secret)
    summary = json.loads((moved / "summary.json").read_text())
    summary["checkpoint"]["path"] = str(elsewhere / "checkpoints" / "best.ckpt")
    (moved / "summary.json").write_text(json.dumps(summary))
    report = write_report(tmp_path / "report", [read_explain_dir(moved)])
    assert secret not in [p.read_bytes() for p in report.parent.rglob("*") if p.is_file()]


def test_item10_empty_masks_cell_is_one_line(tmp_path: Path) -> None:
    from catdog.data.masks import find_masks

    (tmp_path / "masks.csv").write_text("path,mask\na.png,\n")
    with pytest.raises(CatdogError, match="empty cell") as err:
        find_masks(tmp_path, [str(tmp_path / "a.png")])
    assert "masks.csv" in one_line(err)


def test_item15_bf16_cam_check_tolerance_scales_with_the_logits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Large logits (a confident head): bf16 rounding deviates by more than the 0.05 floor, yet by well under
    # 1% of the logits, which is normal for 8 bits of mantissa: no warning (the demo warned at 0.081).
    model, table, style, out = _small_explain_setup(tmp_path, head_scale=300.0)
    with caplog.at_level(logging.WARNING, logger="catdog.explain.pipeline"):
        _, _, stats = run_explain(model, table, out, style=style, bf16=True, num_workers=0, batch_size=8)
    assert stats["cam_logit_max_deviation"] > explain_module.CAM_CHECK_TOLERANCE["bf16"]
    assert not [r for r in caplog.records if "self-check" in r.getMessage()]
