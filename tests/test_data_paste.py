"""Zoom-out / paste onto backgrounds: the scene, the box, the backgrounds, and the training transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_train_cfg
from PIL import Image

from catdog.data.datamodule import ImageDataModule, LoaderSettings, build_transform
from catdog.data.index import build_index
from catdog.data.paste import (
    Backgrounds,
    PasteOnBackground,
    PasteSettings,
    generated_background,
    paste_photo,
)
from catdog.errors import CatdogError
from catdog.pipelines.train import train

MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
RED = (255, 0, 0)


def _solid(colour: tuple[int, int, int], height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), colour, dtype=np.uint8)


def test_paste_photo_scales_the_photo_into_the_box_on_the_background() -> None:
    photo = _solid(RED, 60, 80)
    background = _solid((0, 0, 255), 60, 80)
    scene, box = paste_photo(photo, background, 0.5, np.random.default_rng(3))
    x0, y0, x1, y1 = box  # inclusive, in scene pixels
    assert scene.shape == (60, 80, 3) and scene.dtype == np.uint8
    assert (x1 - x0 + 1, y1 - y0 + 1) == (40, 30)  # half of each side
    assert 0 <= x0 and x1 <= 79 and 0 <= y0 and y1 <= 59
    red = (scene == RED).all(axis=2)
    ys, xs = np.nonzero(red)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == box and red.sum() == 40 * 30
    assert ((scene == (0, 0, 255)).all(axis=2) | red).all()  # everything else is the background
    again, box_again = paste_photo(photo, background, 0.5, np.random.default_rng(3))
    assert box_again == box and np.array_equal(again, scene)
    whole, full = paste_photo(photo, background, 1.0, np.random.default_rng(0))
    assert full == (0, 0, 79, 59) and np.array_equal(whole, photo)


def test_places_cover_the_scene_over_many_draws() -> None:
    photo, background = _solid(RED, 40, 40), _solid((0, 0, 0), 40, 40)
    rng = np.random.default_rng(0)
    boxes = [paste_photo(photo, background, 0.25, rng)[1] for _ in range(200)]
    assert min(b[0] for b in boxes) == 0 and max(b[2] for b in boxes) == 39  # reaches both edges
    assert all(b[2] - b[0] == 9 and 0 <= b[0] and b[2] <= 39 for b in boxes)


def test_generated_backgrounds_are_seeded_textured_and_of_any_size() -> None:
    a = generated_background(np.random.default_rng(1), (48, 70))
    b = generated_background(np.random.default_rng(1), (48, 70))
    assert a.shape == (48, 70, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    kinds = {generated_background(np.random.default_rng(s), (32, 32)).std() > 5 for s in range(12)}
    assert kinds == {True}  # never a flat colour


def test_backgrounds_from_a_folder_skip_unreadable_files_and_fit_the_scene(tmp_path: Path) -> None:
    Image.fromarray(_solid((0, 200, 0), 30, 90)).save(tmp_path / "wide.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    backgrounds = Backgrounds.from_folder(tmp_path, setting="context.backgrounds")
    assert backgrounds.skipped and "broken.jpg" in backgrounds.skipped[0][0]
    drawn = backgrounds.draw(np.random.default_rng(0), (50, 40))
    assert drawn.shape == (50, 40, 3) and (drawn == (0, 200, 0)).all()
    with pytest.raises(CatdogError, match=r"context.backgrounds=.*does not exist"):
        Backgrounds.from_folder(tmp_path / "missing", setting="context.backgrounds")
    (tmp_path / "wide.png").unlink()
    with pytest.raises(CatdogError, match=r"data.augment_paste.backgrounds=.*no readable image"):
        Backgrounds.from_folder(tmp_path, setting="data.augment_paste.backgrounds")
    assert (tmp_path / "broken.jpg").read_bytes() == b"not a jpeg"  # nothing the user owns is changed


def test_paste_transform_keeps_the_photo_whole_inside_the_input_and_is_seeded() -> None:
    settings = PasteSettings(p=1.0, scale=(0.5, 0.5), backgrounds=None)
    transform = build_transform(32, MEAN, STD, train=True, augment="none", paste=PasteOnBackground(settings))
    photo = _solid(RED, 64, 64)
    torch.manual_seed(5)
    out = transform(photo)
    torch.manual_seed(5)
    assert torch.equal(transform(photo), out)  # the per-sample seed decides everything
    assert out.shape == (3, 32, 32)
    red = (out[0] == 1.0) & (out[1] == 0.0) & (out[2] == 0.0)
    ys, xs = torch.nonzero(red, as_tuple=True)
    assert int(red.sum()) >= 15 * 15 and xs.max() - xs.min() + 1 == 16 and ys.max() - ys.min() + 1 == 16
    torch.manual_seed(6)
    assert not torch.equal(transform(photo), out)
    never = build_transform(32, MEAN, STD, train=True, augment="none", paste=PasteOnBackground(
        PasteSettings(p=0.0, scale=(0.5, 0.5), backgrounds=None)))
    assert (never(photo)[0] == 1.0).all()  # p=0: the photo as it was


def test_paste_settings_are_checked() -> None:
    for bad in [dict(p=1.5, scale=(0.5, 1.0)), dict(p=0.5, scale=(0.0, 0.5)), dict(p=0.5, scale=(0.8, 0.5))]:
        with pytest.raises(CatdogError, match="data.augment_paste"):
            PasteSettings(backgrounds=None, **bad).check()
    assert PasteSettings.from_config(None) is None
    assert PasteSettings.from_config({"p": 0.0, "scale": [0.25, 1.0], "backgrounds": None}) is None  # off
    on = PasteSettings.from_config({"p": 0.5, "scale": [0.25, 0.9], "backgrounds": None})
    assert on == PasteSettings(p=0.5, scale=(0.25, 0.9), backgrounds=None)


def test_datamodule_pastes_training_images_only_and_keeps_labels(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name, colour in (("reds", RED), ("greens", (0, 255, 0))):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(_solid(colour, 40, 40)).save(root / name / f"{i}.png")
    index = build_index("folder", root, val_fraction=0.2, test_fraction=0.2)
    paste = PasteSettings(p=1.0, scale=(0.5, 0.5), backgrounds=None)
    module = ImageDataModule(
        index,
        ["greens", "reds"],
        LoaderSettings(16, MEAN, STD, batch_size=4, num_workers=0, augment="none", augment_paste=paste),
    )
    images, labels, positions = next(iter(module.train_dataloader()))
    for image, label, position in zip(images, labels, positions):
        assert module.train_set.labels[int(position)] == int(label)
        solid = torch.tensor(RED if int(label) == 1 else (0, 255, 0), dtype=torch.float32)[:, None, None] / 255
        own = (image == solid).all(dim=0)
        assert 0 < int(own.sum()) < 16 * 16  # the photo is in the picture, and so is a background
    val_images, _, _ = next(iter(module.val_dataloader()))
    flat = (val_images == val_images[:, :, :1, :1]).all(dim=(1, 2, 3))
    assert flat.all()  # evaluation images are never pasted


def test_train_refuses_paste_with_cached_features(tmp_path: Path) -> None:
    cfg = tiny_train_cfg(tmp_path, "model.freeze_backbone=true", "data.cache_features=true", "data.augment_paste.p=0.5")
    with pytest.raises(CatdogError, match="drop data.cache_features or set data.augment_paste.p=0"):
        train(cfg)
