"""Triage: planted label errors, duplicates across splits, the corrected manifest, bad input (tiny synthetic data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_config, run_command_here, run_two_processes, tiny_train_cfg

from catdog.errors import CatdogError
from catdog.models import ClassifierModule
from catdog.triage.pipeline import triage

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 210)}


def colour_images(root: Path, per_class: int, seed: int = 0, size: int = 40) -> list[tuple[str, str]]:
    """root/<class>/<class>_<i>.png: the class's colour under smooth random shading and a little noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shade = cv2.resize(rng.normal(0, 1, (4, 4)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
            noise = rng.normal(0, 3, (size, size, 3))
            image = np.clip(np.array(rgb) * (1 + 0.25 * shade[..., None]) + noise, 0, 255).astype(np.uint8)
            path = root / name / f"{name}_{i}.png"
            cv2.imwrite(str(path), image[..., ::-1])
            rows.append((str(path), name))
    return rows


def save_run(run: Path, rows: list[tuple[str, str, str]], root: Path, seed: int = 0) -> Path:
    """A run folder: an untrained ResNet18 checkpoint (seeded) and split.csv with the given (path, label, split)."""
    torch.manual_seed(seed)
    module = ClassifierModule(
        arch="resnet18", class_names=sorted(COLOURS), weights=None, image_size=32,
        data={"root": str(root), "split_csv": str(run / "split.csv"), "layout": "folder"},
    )
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, run / "checkpoints" / "best.ckpt"
    )
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(run / "split.csv", index=False)
    return run


def splits_of(count: int) -> list[str]:
    return ["test" if i % 5 == 0 else "val" if i % 5 == 1 else "train" for i in range(count)]


def triage_cfg(ckpt: Path, out: Path, *overrides: str):
    return make_config(
        "triage",
        [f"ckpt={ckpt}", f"out_dir={out}", "data.num_workers=0", "data.batch_size=16", "precision=32", *overrides],
    )


@pytest.fixture
def noisy_run(tmp_path: Path) -> tuple[Path, set[str]]:
    """200 images per colour; 30 labels (5%) flipped to the next colour."""
    data = tmp_path / "data"
    images = colour_images(data, 200)
    rng = np.random.default_rng(10)
    flipped = set(rng.choice(len(images), 30, replace=False).tolist())
    names = sorted(COLOURS)
    rows = []
    for i, ((path, label), split) in enumerate(zip(images, splits_of(len(images)))):
        if i in flipped:
            label = names[(names.index(label) + 1) % len(names)]
        rows.append((path, label, split))
    run = save_run(tmp_path / "run", rows, data)
    return run, {images[i][0] for i in flipped}


@pytest.mark.slow
def test_planted_label_errors_are_found_with_precision_and_recall(noisy_run, tmp_path: Path) -> None:
    run, flipped = noisy_run
    summary = triage(triage_cfg(run, tmp_path / "triage"))
    out = Path(summary["out_dir"])
    issues = pd.read_csv(out / "label_issues.csv")
    found = set(issues["path"])
    precision = len(found & flipped) / max(1, len(found))
    recall = len(found & flipped) / len(flipped)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall, len(found))
    assert list(issues["rank"]) == list(range(1, len(issues) + 1))
    assert issues["label_quality"].is_monotonic_increasing
    truth = {path: Path(path).parent.name for path in flipped}
    assert all(truth[p] == s for p, s in zip(issues["path"], issues["suggested"]) if p in truth)
    manifest = pd.read_csv(out / "relabelled.csv")
    assert list(manifest.columns) == ["path", "label", "split"]
    assert all(
        Path(p).parent.name == label for p, label in zip(manifest["path"], manifest["label"]) if p in flipped & found
    )
    images = pd.read_csv(out / "images.csv")
    assert set(images["split"]) == {"train", "val", "test"} and len(images) == 600
    assert images["prob_source"].str.startswith("kfold:checkpoint").all()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["features"]["backbone_saw_labels"] is True  # trained from scratch: said so
    assert saved["folds"]["folds"] == 5
    # head_c=auto: the C of the grid whose out-of-fold probabilities predict the given labels best
    losses = saved["folds"]["log_loss_by_c"]
    assert len(losses) == 4 and losses[str(saved["folds"]["head_c"])] == min(losses.values())
    for path in issues["path"].head(3):
        assert (out / saved["pictures"][path]).is_file()
    page = (out / "report" / "index.html").read_text()
    assert "Suspected label errors" in page and saved["pictures"][issues["path"][0]].split("/")[-1] in page


def test_duplicate_across_splits_is_a_leak(tmp_path: Path) -> None:
    data = tmp_path / "data"
    images = colour_images(data, 8)
    copy = data / "red" / "red_copy.png"
    shutil.copyfile(images[0][0], copy)  # red_0 is in train (index 2 of splits_of is train)
    rows = [(p, label, s) for (p, label), s in zip(images, ["train"] * len(images))]
    rows[5] = (rows[5][0], rows[5][1], "test")
    rows.append((str(copy), "red", "test"))
    run = save_run(tmp_path / "run", rows, data)
    summary = triage(triage_cfg(run, tmp_path / "triage"))
    pairs = pd.read_csv(Path(summary["out_dir"]) / "duplicates.csv")
    leak = pairs[(pairs["path_a"] == images[0][0]) & (pairs["path_b"] == str(copy))]
    assert len(leak) == 1 and bool(leak["exact"].iloc[0]) and bool(leak["leak"].iloc[0])
    assert summary["test_accuracy"]["leaked_images"] == 1
    assert summary["duplicates"]["leaks"] >= 1
    out = Path(summary["out_dir"])
    page = (out / "report" / "index.html").read_text()
    for path in (images[0][0], str(copy)):  # both images of the leak, drawn with their maps and linked
        assert (out / summary["pictures"][path]).is_file() and summary["pictures"][path] in page


def test_fewer_folds_when_a_class_is_small_and_said_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    images = colour_images(data, 8)
    rows = [(p, label, "train") for p, label in images if not (label == "red" and int(Path(p).stem.split("_")[1]) >= 3)]
    (data / "boxes.csv").write_text("path,x0,y0,x1,y1\nblue/blue_0.png,0,0,20,10\nblue/blue_0.png,0,0,10,10\n")
    run = save_run(tmp_path / "run", rows, data)
    summary = triage(triage_cfg(run, tmp_path / "triage"))
    assert summary["folds"]["folds"] == 3
    assert "3 folds instead of 5" in summary["folds"]["note"]
    table = pd.read_csv(Path(summary["out_dir"]) / "images.csv").set_index("key")
    assert table.loc["blue/blue_0.png", "object_size"] == pytest.approx(200 / 1600)  # the largest box of a 40x40 photo
    assert table["object_size"].isna().sum() == len(table) - 1
    assert table["map_area"].between(0, 1).all() and (table[["width", "height"]] == 40).all().all()


def test_one_class_and_unlabelled_folders_still_give_duplicates_outliers_and_slices(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    images = colour_images(data, 10)
    run = save_run(tmp_path / "run", [(p, "red", "train") for p, _ in images[:10]], data)
    one = triage(triage_cfg(run, tmp_path / "one"))
    assert one["label_issues"]["count"] == 0 and "only one class" in one["labels_note"]
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for p, _ in images[::3]:
        shutil.copyfile(p, unlabelled / Path(p).name.replace("_", "-"))
    shutil.copyfile(images[0][0], unlabelled / "again.png")
    hostile = "<img src=x onerror=alert(1)>.png"
    shutil.copyfile(images[0][0], unlabelled / hostile)
    summary = triage(triage_cfg(run, tmp_path / "folder", f"data.root={unlabelled}"))
    out = Path(summary["out_dir"])
    assert "no labelled images" in summary["labels_note"] and "not searched" in capsys.readouterr().out
    assert pd.read_csv(out / "label_issues.csv").empty
    images_csv = pd.read_csv(out / "images.csv")
    assert (images_csv["prob_source"] == "model").all() and images_csv["pred"].notna().all()
    assert set(images_csv["split"]) == {"folder"}
    pairs = pd.read_csv(out / "duplicates.csv")
    assert bool(pairs["exact"].any()) and not bool(pairs["leak"].any())
    page = (out / "report" / "index.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.png" in page  # escaped, never markup


def test_unreadable_images_are_skipped_and_the_users_files_are_untouched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    images = colour_images(data, 8)
    broken = data / "red" / "broken.png"
    broken.write_bytes(b"not an image")
    rows = [(p, label, "train") for p, label in images] + [(str(broken), "red", "train")]
    run = save_run(tmp_path / "run", rows, data)
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    summary = triage(triage_cfg(run, tmp_path / "triage"))
    skipped = pd.read_csv(Path(summary["out_dir"]) / "skipped.csv")
    assert list(skipped["path"]) == [str(broken)] and summary["skipped"] == 1
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def test_a_moved_dataset_and_an_existing_folder_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    data = tmp_path / "data"
    images = colour_images(data, 4)
    run = save_run(tmp_path / "run", [(p, label, "train") for p, label in images], data)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(CatdogError, match="choose a new"):
        triage(triage_cfg(run, taken))
    assert (taken / "keep.txt").read_text() == "mine"
    data.rename(tmp_path / "moved")
    # scripts/triage.py's command in this process (the slow two-process test below runs the script as a child).
    status = run_command_here(monkeypatch, tmp_path, "triage", f"ckpt={run}", f"out_dir={tmp_path / 'out'}")
    stderr = capfd.readouterr().err
    assert status == 2 and "Traceback" not in stderr
    assert stderr.count("\n") == 1 and "moved" in stderr and "data.root=" in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_corrected_manifest_trains(tmp_path: Path) -> None:
    from catdog.pipelines.train import train

    data = tmp_path / "data"
    images = colour_images(data, 12)
    rows = [
        (p, label if i != 3 else "green", s) for i, ((p, label), s) in enumerate(zip(images, splits_of(len(images))))
    ]
    run = save_run(tmp_path / "run", rows, data)
    for fix in ("relabel", "drop"):
        summary = triage(triage_cfg(run, tmp_path / fix, f"triage.fix={fix}"))
        manifest = Path(summary["out_dir"]) / "relabelled.csv"
        table = pd.read_csv(manifest)
        issues = pd.read_csv(Path(summary["out_dir"]) / "label_issues.csv")
        assert len(table) == len(rows) - (len(issues) if fix == "drop" else 0)
    cfg = tiny_train_cfg(
        tmp_path / "retrain",  # its own run folder (tmp_path/run holds the audited run)
        "data=csv",
        f"data.manifest={tmp_path / 'relabel' / 'relabelled.csv'}",
        "model.weights=null",
        "test=true",
        demo=False,
    )
    result = train(cfg)
    split = pd.read_csv(Path(result["run_dir"]) / "split.csv")
    assert len(split) == len(rows) and dict(split["split"].value_counts()) == dict(
        pd.Series([r[2] for r in rows]).value_counts()
    )
    assert result["test"] is not None


def test_triage_goes_into_the_run_folder_and_the_explain_report_links_to_it(tmp_path: Path) -> None:
    from catdog.explain.pipeline import explain

    data = tmp_path / "data"
    images = colour_images(data, 6)
    run = save_run(tmp_path / "run", [(p, label, s) for (p, label), s in zip(images, splits_of(len(images)))], data)
    summary = triage(make_config("triage", [f"ckpt={run}", "data.num_workers=0", "precision=32"]))
    folder = Path(summary["out_dir"])
    assert folder.parent == run / "triage" and (folder / "summary.json").is_file()
    explained = explain(make_config("explain", [f"ckpt={run}", "data.num_workers=0", "precision=32"]))
    page = (Path(explained["out_dir"]) / "report" / "index.html").read_text()
    assert f"../../../triage/{folder.name}/report/index.html" in page


@pytest.mark.slow
def test_two_processes_write_the_same_tables_as_one(noisy_run, tmp_path: Path) -> None:
    run, _ = noisy_run
    split = pd.read_csv(run / "split.csv")
    split.iloc[::12].to_csv(run / "split.csv", index=False)  # 50 images: enough for the tables, quick
    one = Path(triage(triage_cfg(run, tmp_path / "one", "accelerator=cpu"))["out_dir"])
    args = (f"ckpt={run}", f"out_dir={tmp_path / 'two'}", "data.batch_size=16")
    result = run_two_processes("triage", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    two = tmp_path / "two"
    assert json.loads((two / "summary.json").read_text())["features"]["processes"] == 2
    assert not (two / ".shards").exists()
    for name in ("images", "label_issues", "duplicates", "slices", "relabelled"):
        a, b = pd.read_csv(one / f"{name}.csv"), pd.read_csv(two / f"{name}.csv")
        pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-4)
    assert np.allclose(np.load(one / "embeddings.npy"), np.load(two / "embeddings.npy"), atol=1e-4)
