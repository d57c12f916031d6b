"""build_index for every layout, assign_splits, the one-line errors, index_for_inference."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import write_images
from PIL import Image

from catdog.data.index import (
    assign_splits,
    build_index,
    class_names_of,
    index_for_inference,
)
from catdog.errors import CatdogError


def _image(path: Path) -> Path:
    """Write a tiny PNG (build_index never decodes, but the files should be real images)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (200, 100, 50)).save(path)
    return path


def _folder_dataset(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        for i in range(count):
            _image(root / name / f"{i:03d}.png")
    return root


def _check_index(index: pd.DataFrame) -> None:
    assert list(index.columns) == ["path", "label", "split"]
    assert index["path"].is_unique
    assert all(Path(p).is_absolute() for p in index["path"])
    assert set(index["split"]) <= {"train", "val", "test"}


# --- assign_splits -----------------------------------------------------------------------


def test_assign_splits_is_stratified_seeded_and_complete() -> None:
    labels = ["cat"] * 1000 + ["dog"] * 600 + ["fox"] * 3
    keys = [f"{label}/{i}.jpg" for i, label in enumerate(labels)]
    splits = assign_splits(labels, 0.2, 0.1, seed=0, keys=keys)
    assert len(splits) == len(labels)  # every image gets exactly one split
    table = pd.crosstab(pd.Series(labels, name="label"), pd.Series(splits, name="split"))
    for name, n in (("cat", 1000), ("dog", 600)):  # binomial shares: 4 sigma is about 0.05
        assert table.loc[name, "test"] / n == pytest.approx(0.1, abs=0.05)
        assert table.loc[name, "val"] / n == pytest.approx(0.2, abs=0.07)
    assert table.loc["fox"].to_dict() == {"test": 1, "train": 1, "val": 1}
    np.testing.assert_array_equal(splits, assign_splits(labels, 0.2, 0.1, seed=0, keys=keys))
    assert not np.array_equal(splits, assign_splits(labels, 0.2, 0.1, seed=1, keys=keys))


def test_assign_splits_keeps_every_image_in_its_split_when_images_are_added() -> None:
    """#9 item 13: a later, larger dataset must not move a test image into training."""
    labels = ["cat"] * 300 + ["dog"] * 300
    keys = [f"{label}s/{label}.{i}.jpg" for i, label in enumerate(labels)]
    before = assign_splits(labels, 0.1, 0.1, seed=0, keys=keys)
    more_labels = labels + ["cat"] * 100 + ["dog"] * 50
    more_keys = keys + [f"{label}s/new.{i}.jpg" for i, label in enumerate(more_labels[600:])]
    after = assign_splits(more_labels, 0.1, 0.1, seed=0, keys=more_keys)
    np.testing.assert_array_equal(after[:600], before)
    # The same images in another order: every image keeps its split.
    order = np.random.default_rng(0).permutation(600)
    shuffled = assign_splits([labels[i] for i in order], 0.1, 0.1, seed=0, keys=[keys[i] for i in order])
    np.testing.assert_array_equal(shuffled, before[order])


def test_build_index_split_survives_added_files_and_moving_the_folder(tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "pets", {"cats": 40, "dogs": 40})
    before = build_index("folder", root, val_fraction=0.2, test_fraction=0.2, seed=0)
    _folder_dataset(tmp_path / "pets", {"cats": 60, "dogs": 55})  # adds 040.png ... files
    after = build_index("folder", root, val_fraction=0.2, test_fraction=0.2, seed=0)
    merged = before.merge(after, on="path", suffixes=("_before", "_after"))
    assert len(merged) == len(before)
    assert (merged["split_before"] == merged["split_after"]).all()
    moved = Path(root).rename(tmp_path / "moved")
    again = build_index("folder", moved, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert again["split"].tolist() == after["split"].tolist()


def test_assign_splits_tiny_classes_keep_a_training_image() -> None:
    splits = assign_splits(["a", "b", "b"], 0.4, 0.4, seed=0)
    assert splits[0] == "train"
    assert sorted(splits[1:]) in (["train", "val"], ["test", "train"])


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (1.0, 0.0), (0.6, 0.5)])
def test_fractions_out_of_range(val: float, test: float) -> None:
    with pytest.raises(CatdogError, match="data.val_fraction"):
        assign_splits(["a", "b"], val, test, seed=0)


# --- folder layout -----------------------------------------------------------------------


def test_folder_layout_classes_and_stratified_reproducible_split(tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "pets", {"cats": 20, "dogs": 10})
    _image(root / "cats" / "nested" / "deep.PNG")  # recursive, extension in any case
    _image(root / "cats" / ".hidden.png")  # hidden files are ignored
    (root / "cats" / "notes.txt").write_text("not an image")
    index = build_index("folder", root, val_fraction=0.2, test_fraction=0.2, seed=3)
    _check_index(index)
    assert class_names_of(index) == ["cats", "dogs"]
    assert (index["label"] == "cats").sum() == 21
    assert str(root.resolve() / "cats" / "nested" / "deep.PNG") in set(index["path"])
    per_class = index.groupby("label")["split"].value_counts().unstack().fillna(0)
    assert (per_class[["test", "train", "val"]] >= 1).all().all()  # every class in every split
    again = build_index("folder", root, val_fraction=0.2, test_fraction=0.2, seed=3)
    pd.testing.assert_frame_equal(index, again)
    other = build_index("folder", root, val_fraction=0.2, test_fraction=0.2, seed=4)
    assert not index["split"].equals(other["split"])


def test_folder_layout_with_three_classes(tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path, {"a": 5, "b": 5, "c": 5})
    assert class_names_of(build_index("folder", root)) == ["a", "b", "c"]


def test_folder_layout_with_premade_splits(tmp_path: Path) -> None:
    _folder_dataset(tmp_path / "train", {"cats": 4, "dogs": 4})
    _folder_dataset(tmp_path / "valid", {"cats": 2, "dogs": 2})
    _folder_dataset(tmp_path / "test", {"cats": 1, "dogs": 3})
    index = build_index("folder", tmp_path)
    _check_index(index)
    counts = index.groupby(["split", "label"]).size().to_dict()
    assert counts == {
        ("test", "cats"): 1,
        ("test", "dogs"): 3,
        ("train", "cats"): 4,
        ("train", "dogs"): 4,
        ("val", "cats"): 2,
        ("val", "dogs"): 2,
    }
    assert all("/valid/" in p for p in index.loc[index["split"] == "val", "path"])


def test_folder_layout_carves_missing_test_split_from_train(tmp_path: Path) -> None:
    _folder_dataset(tmp_path / "train", {"cats": 10, "dogs": 10})
    _folder_dataset(tmp_path / "val", {"cats": 2, "dogs": 2})
    index = build_index("folder", tmp_path, val_fraction=0.1, test_fraction=0.2)
    test = index[index["split"] == "test"]
    assert set(test["label"]) == {"cats", "dogs"}
    assert all("/train/" in p for p in test["path"])
    assert (index["split"] == "val").sum() == 4  # the given val folder, nothing carved


# --- kaggle layout -----------------------------------------------------------------------


def test_kaggle_layout(tmp_path: Path) -> None:
    for name in ["cat.1.jpg", "Cat.2.jpg", "cat.3.jpg", "dog.1.jpg", "dog.10.jpg", "dog.2.jpg"]:
        _image(tmp_path / name)
    index = build_index("kaggle", tmp_path, val_fraction=0.0, test_fraction=0.0)
    _check_index(index)
    assert class_names_of(index) == ["cat", "dog"]
    labels = dict(zip(index["path"].map(lambda p: Path(p).name), index["label"]))
    assert labels["Cat.2.jpg"] == "cat" and labels["dog.10.jpg"] == "dog"
    assert set(index["split"]) == {"train"}


def test_kaggle_layout_rejects_unlabelled_name(tmp_path: Path) -> None:
    _image(tmp_path / "cat.1.jpg")
    _image(tmp_path / "IMG_0001.jpg")
    with pytest.raises(CatdogError, match=r"'IMG_0001.jpg' .* is not <class>.<id>.<ext>"):
        build_index("kaggle", tmp_path)


# --- csv layout --------------------------------------------------------------------------


def test_csv_manifest_with_relative_paths_and_split(tmp_path: Path) -> None:
    for i in range(4):
        _image(tmp_path / "img" / f"{i}.png")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,label,split\n"
        "img/0.png,NA,train\n"  # "NA" is a class name here, not a missing value
        "img/1.png,dog,Train\n"
        "img/2.png,NA,validation\n"
        f"{tmp_path / 'img' / '3.png'},dog,test\n"
    )
    index = build_index("csv", None, manifest=manifest)
    _check_index(index)
    assert index["label"].tolist() == ["NA", "dog", "NA", "dog"]
    assert index["split"].tolist() == ["train", "train", "val", "test"]
    assert index["path"].iloc[0] == str(tmp_path.resolve() / "img" / "0.png")


def test_csv_manifest_without_split_relative_to_root(tmp_path: Path) -> None:
    data = _folder_dataset(tmp_path / "data", {"a": 10, "b": 10})
    rows = [f"{label}/{i:03d}.png,{label}" for label in "ab" for i in range(10)]
    manifest = tmp_path / "lists" / "all.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    index = build_index("csv", data, manifest=manifest, seed=1)
    _check_index(index)
    assert set(index["split"]) == {"train", "val", "test"}
    assert index.groupby("label")["split"].nunique().to_dict() == {"a": 3, "b": 3}
    pd.testing.assert_frame_equal(index, build_index("csv", data, manifest=manifest, seed=1))


# --- errors ------------------------------------------------------------------------------


def _one_line_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(CatdogError, match=match) as info:
        build_index(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_error_root_missing(tmp_path: Path) -> None:
    message = _one_line_error(r"^data.root=\S+ does not exist: ", "folder", tmp_path / "nope")
    assert "data=demo" in message


def test_error_no_class_folders(tmp_path: Path) -> None:
    _image(tmp_path / "cat.1.jpg")
    message = _one_line_error("no class folders in", "folder", tmp_path)
    assert "data=kaggle" in message


def test_error_empty_class_folder_is_named(tmp_path: Path) -> None:
    _folder_dataset(tmp_path, {"cats": 3})
    (tmp_path / "dogs").mkdir()
    _one_line_error(r"class folder \S+dogs has no images", "folder", tmp_path)


def test_error_only_one_class(tmp_path: Path) -> None:
    _folder_dataset(tmp_path, {"cats": 3})
    _one_line_error(r"only one class \('cats'\)", "folder", tmp_path)


def test_error_unknown_layout(tmp_path: Path) -> None:
    message = r"data.layout='imagenet' is unknown: use one of folder, kaggle, csv"
    _one_line_error(message, "imagenet", tmp_path)


def test_error_manifest_missing_column(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,label\na.png,cat\n")
    _one_line_error(r"lacks column\(s\) path: .*found: file, label", "csv", None, manifest=manifest)


def test_error_manifest_bad_split_value(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\na.png,cat,train\na.png2,dog,holdout\n")
    _one_line_error(r"unknown split value\(s\) 'holdout'", "csv", None, manifest=manifest)


def test_error_fractions_out_of_range(tmp_path: Path) -> None:
    message = r"data.test_fraction=1.5 is out of range"
    _one_line_error(message, "folder", tmp_path, test_fraction=1.5)


# --- index_for_inference -----------------------------------------------------------------


def test_inference_single_file(tmp_path: Path) -> None:
    path = _image(tmp_path / "cats" / "x.png")
    index = index_for_inference(path, ["cats", "dogs"])
    assert index["path"].tolist() == [str(path.resolve())]
    assert index["label"].isna().all()


def test_inference_folder_kaggle_and_unknown_names(tmp_path: Path) -> None:
    _image(tmp_path / "cats" / "a.png")
    _image(tmp_path / "val" / "dogs" / "b.png")  # nearest class-named folder wins
    _image(tmp_path / "birds" / "c.png")  # unknown folder: unlabelled
    _image(tmp_path / "cats.7.jpg")  # Kaggle-style name
    _image(tmp_path / "holiday.jpg")
    index = index_for_inference(tmp_path, ["cats", "dogs"])
    root = tmp_path.resolve()
    labels = {
        Path(p).relative_to(root).as_posix(): lab for p, lab in zip(index["path"], index["label"])
    }
    assert len(index) == 5
    assert labels["cats/a.png"] == "cats"
    assert labels["val/dogs/b.png"] == "dogs"
    assert labels["cats.7.jpg"] == "cats"
    assert pd.isna(labels["birds/c.png"]) and pd.isna(labels["holiday.jpg"])


def test_inference_errors(tmp_path: Path) -> None:
    with pytest.raises(CatdogError, match="does not exist"):
        index_for_inference(tmp_path / "nope", ["a"])
    with pytest.raises(CatdogError, match="no images in"):
        index_for_inference(tmp_path, ["a"])


def test_symlinked_class_folders_are_explained_like_trained(tmp_path: Path) -> None:
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


@pytest.mark.slow  # a corpus at Kaggle's size: 25,000 files written
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


# --- issue #19 ---------------------------------------------------------------------------------
def _explain_folder(folder: Path) -> Path:
    """A folder with the files only catdog's explain writes, and an overlay in correct/cat/."""
    (folder / "correct" / "cat").mkdir(parents=True)
    cv2.imwrite(str(folder / "correct" / "cat" / "0990_a.jpg"), np.zeros((8, 8, 3), np.uint8))
    (folder / "explain_config.yaml").write_text("ckpt: x\n")
    (folder / "predictions.csv").write_text("path,true,pred\n")
    (folder / "summary.json").write_text("{}")
    return folder


def test_an_explain_folder_or_its_subfolder_is_refused_as_input(tmp_path: Path) -> None:
    """Item 7: input=<explain>/correct explained catdog's own overlays, labelled by the prediction folders."""
    from helpers import one_line

    out = _explain_folder(tmp_path / "explain" / "2026-01-01")
    for target in (out, out / "correct", out / "correct" / "cat", out / "correct" / "cat" / "0990_a.jpg"):
        with pytest.raises(CatdogError, match="catdog") as err:
            index_for_inference(target, ["cat", "dog"])
        one_line(err)
    with pytest.raises(CatdogError, match="catdog"):
        build_index("folder", out / "correct")


def test_csv_split_with_absolute_paths_survives_moving_the_dataset(tmp_path: Path) -> None:
    """Item 9: a manifest outside the dataset, absolute paths: the split must not change when the data moves."""
    import shutil

    def manifest_for(root: Path, name: str) -> Path:
        rows = [f"{p},{p.parent.name}" for p in sorted(root.rglob("*.png"))]
        path = tmp_path / "manifests" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("path,label\n" + "\n".join(rows) + "\n")
        return path

    write_images(tmp_path / "old" / "photos", {"cat": 30, "dog": 30}, size=(8, 8))
    before = build_index("csv", None, manifest=manifest_for(tmp_path / "old" / "photos", "a.csv"), seed=3)
    shutil.move(tmp_path / "old" / "photos", tmp_path / "new_place")
    after = build_index("csv", None, manifest=manifest_for(tmp_path / "new_place", "b.csv"), seed=3)
    def splits(frame: pd.DataFrame, root: Path) -> dict[str, str]:
        return dict(zip((str(Path(p).relative_to(root)) for p in frame["path"]), frame["split"]))

    assert splits(before, tmp_path / "old" / "photos") == splits(after, tmp_path / "new_place")


def test_other_decodable_formats_are_used_or_skipped_with_a_reason(tmp_path: Path) -> None:
    """Item 12: .avif, .jfif, extension-less images and a dummy .heic were in neither split.csv nor skipped.csv."""
    from catdog.data.images import scan_images

    write_images(tmp_path / "data", {"cat": 3, "dog": 3}, size=(16, 16))
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "data" / "cat" / "photo.jfif", format="JPEG")
    Image.fromarray(rgb).save(tmp_path / "data" / "cat" / "photo.avif", format="AVIF")
    Image.fromarray(rgb).save(tmp_path / "data" / "dog" / "no_extension", format="PNG")
    (tmp_path / "data" / "dog" / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    (tmp_path / "data" / "dog" / "notes.txt").write_text("not an image")  # not an image: ignored
    index = build_index("folder", tmp_path / "data")
    readable, skipped = scan_images(index["path"].tolist())
    names = {Path(p).name for p in index["path"]}
    assert {"photo.jfif", "photo.avif", "no_extension", "phone.heic"} <= names and "notes.txt" not in names
    assert {Path(p).name for p in readable} >= {"photo.jfif", "photo.avif", "no_extension"}
    heic = skipped[skipped["path"].map(lambda p: Path(p).name) == "phone.heic"]
    assert len(heic) == 1 and heic["reason"].iloc[0]
    listed = index_for_inference(tmp_path / "data", ["cat", "dog"])
    assert set(listed["path"]) == set(index["path"])


# --- issue 19 items 11 and 16: class names that vanish or are misread; the runs/ folder Hydra makes -----
def test_classes_named_like_splits_are_classes_when_the_root_is_not_split(tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "data", {"train": 3, "test": 3, "cat": 3})
    index = build_index("folder", root, val_fraction=0.2, test_fraction=0.2)
    assert class_names_of(index) == ["cat", "test", "train"]
    split_layout = _folder_dataset(tmp_path / "split", {"train/cat": 3, "train/dog": 3, "test/cat": 1, "test/dog": 1})
    assert class_names_of(build_index("folder", split_layout)) == ["cat", "dog"]  # real split folders still work


def test_nfc_and_nfd_spellings_of_a_class_are_one_class(tmp_path: Path) -> None:
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    trained = build_index("folder", _folder_dataset(tmp_path / "mac", {nfd: 3, "tea": 3}))
    assert class_names_of(trained) == [nfc, "tea"]  # stored in one (composed) spelling
    found = index_for_inference(_folder_dataset(tmp_path / "linux", {nfc: 1, "tea": 1}), [nfd, "tea"])
    assert sorted(found["label"]) == sorted([nfd, "tea"])  # matched, in the model's own spelling


def test_kaggle_labels_match_whatever_the_case(tmp_path: Path) -> None:
    root = tmp_path / "kaggle"
    for name in ["Cat.1.jpg", "cat.2.jpg", "DOG.3.jpg", "dog.4.jpg"]:
        _image(root / name)
    classes = class_names_of(build_index("kaggle", root))
    assert classes == ["cat", "dog"]
    found = index_for_inference(root, classes)  # evaluate/explain read it as training did
    assert dict(zip((Path(p).name for p in found["path"]), found["label"])) == {
        "Cat.1.jpg": "cat", "cat.2.jpg": "cat", "DOG.3.jpg": "dog", "dog.4.jpg": "dog"
    }


def test_the_runs_folder_hydra_makes_inside_the_dataset_is_not_a_class(tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "data", {"cat": 3, "dog": 3})
    run = root / "runs" / "train" / "2026-01-01_00-00-00"
    (run / ".hydra").mkdir(parents=True)  # what Hydra writes before training starts (data.root=.)
    (run / ".hydra" / "config.yaml").write_text("a: 1\n")
    assert class_names_of(build_index("folder", root)) == ["cat", "dog"]
    _image(run / "explain" / "x" / "correct" / "cat" / "0001_a.png")  # ...and later runs' pictures
    assert class_names_of(build_index("folder", root)) == ["cat", "dog"]
    assert all("/runs/" not in p for p in index_for_inference(root, ["cat", "dog"])["path"])
