"""Transforms, ImageDataset and ImageDataModule: shapes, dtypes, labels, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from catdog.data.datamodule import ImageDataModule, ImageDataset, LoaderSettings, build_transform
from catdog.data.images import load_rgb
from catdog.data.index import build_index, class_names_of
from catdog.errors import CatdogError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _dataset(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)  # odd sizes on purpose
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("train", [False, True])
def test_transform_shape_dtype_and_normalisation(train: bool) -> None:
    transform = build_transform(16, MEAN, STD, train=train)
    out = transform(np.full((40, 24, 3), 255, dtype=np.uint8))
    assert type(out) is torch.Tensor and out.dtype == torch.float32
    assert out.shape == (3, 16, 16)
    torch.testing.assert_close(out, torch.full((3, 16, 16), 2.0))  # (1 - 0.5) / 0.25


def test_eval_transform_keeps_the_whole_image() -> None:
    # A bright right half must stay the right half: resize only, no crop, no flip.
    image = np.zeros((10, 40, 3), dtype=np.uint8)
    image[:, 20:] = 255
    out = build_transform(8, (0, 0, 0), (1, 1, 1), train=False)(image)
    torch.testing.assert_close(out[:, :, :3], torch.zeros(3, 8, 3))  # the columns next to the
    torch.testing.assert_close(out[:, :, 5:], torch.ones(3, 8, 3))  # edge are antialiased


def test_dataset_items_and_bad_file(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    paths = [str(root / "cats" / "0.png"), str(root / "dogs" / "1.png")]
    dataset = ImageDataset(paths, None, build_transform(16, MEAN, STD, train=False))
    image, label, position = dataset[1]
    assert image.shape == (3, 16, 16) and label == -1 and position == 1
    (root / "dogs" / "1.png").write_bytes(b"")
    with pytest.raises(CatdogError, match=r"dogs/1.png became unreadable \(zero-byte file\)"):
        dataset[1]


def test_datamodule_batches(tmp_path: Path) -> None:
    index = build_index("folder", _dataset(tmp_path, per_class=10), val_fraction=0.2, test_fraction=0.2)
    classes = class_names_of(index)
    module = ImageDataModule(index, classes, LoaderSettings(16, MEAN, STD, batch_size=3, num_workers=0))
    assert module.num_classes == 2
    n_train = (index["split"] == "train").sum()
    assert len(module.train_set) == n_train and len(module.test_set) == (index["split"] == "test").sum()
    images, labels, positions = next(iter(module.train_dataloader()))
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1}
    assert positions.dtype == torch.int64
    assert len(module.train_dataloader()) == n_train // 3  # the remainder is dropped
    test_labels = torch.cat([batch[1] for batch in module.test_dataloader()])
    assert sorted(test_labels.tolist()) == sorted(
        classes.index(label) for label in index.loc[index["split"] == "test", "label"]
    )
    test_rows = index[index["split"] == "test"]
    assert module.test_set.paths == test_rows["path"].tolist()


def _epoch(module: ImageDataModule, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    module.train_sampler.set_epoch(epoch)
    batches = list(module.train_dataloader())
    return torch.cat([b[0] for b in batches]), torch.cat([b[2] for b in batches])


def test_training_epochs_depend_only_on_seed_and_epoch_not_on_workers_or_history(tmp_path: Path) -> None:
    index = build_index("folder", _dataset(tmp_path, per_class=8), val_fraction=0.0, test_fraction=0.0)

    def make(workers: int, seed: int = 0) -> ImageDataModule:
        return ImageDataModule(
            index,
            ["cats", "dogs"],
            LoaderSettings(16, MEAN, STD, batch_size=4, num_workers=workers, augment="trivialaugment", seed=seed),
        )

    a, b = make(0), make(1)
    first_a, order_a = _epoch(a, 1)
    torch.manual_seed(123)  # unrelated global RNG use must not change the epoch
    first_b, order_b = _epoch(b, 1)
    assert torch.equal(order_a, order_b) and torch.equal(first_a, first_b)
    other, other_order = _epoch(a, 2)
    assert not torch.equal(order_a, other_order) or not torch.equal(first_a, other)
    assert not torch.equal(_epoch(make(0, seed=1), 1)[1], order_a)
    # Resuming after k batches yields exactly the rest of that epoch.
    c = make(0)
    c.train_sampler.resume_at(1, 2 * 4)
    images = torch.cat(
        [
            batch[0]
            for batch in torch.utils.data.DataLoader(c.train_set, batch_size=4, sampler=c.train_sampler, drop_last=True)
        ]
    )
    assert torch.equal(images, first_a[8:])


def test_image_cache_keeps_decoded_images_and_downsizes_large_ones(tmp_path: Path) -> None:
    index = build_index("folder", _dataset(tmp_path, per_class=3), val_fraction=0.0, test_fraction=0.0)
    plain = ImageDataModule(index, ["cats", "dogs"], LoaderSettings(32, MEAN, STD, batch_size=2, num_workers=0))
    cached = ImageDataModule(
        index, ["cats", "dogs"], LoaderSettings(32, MEAN, STD, batch_size=2, num_workers=0, cache_images=True)
    )
    cached.setup("fit")
    assert len(cached.train_set._cache) == len(cached.train_set)
    # Images smaller than the cache size (1.15 x 32 = 37 px) are kept as decoded: identical inputs.
    cached_eval = ImageDataset(cached.train_set.paths, None, plain.val_set.transform, cache_size=37)
    cached_eval.cache()
    torch.testing.assert_close(
        cached_eval[0][0], plain.val_set.__class__(plain.train_set.paths, None, plain.val_set.transform)[0][0]
    )
    np.testing.assert_array_equal(cached.train_set._cache[0], load_rgb(cached.train_set.paths[0]))
    small = ImageDataset(cached.train_set.paths, None, plain.val_set.transform, cache_size=10)
    small.cache()
    assert min(small._cache[0].shape[:2]) == 10  # shorter side downsized to the cache size


def test_datamodule_with_worker_processes(tmp_path: Path) -> None:
    root = _dataset(tmp_path, per_class=3)
    index = build_index("folder", root, val_fraction=0.0, test_fraction=0.0)
    module = ImageDataModule(index, ["cats", "dogs"], LoaderSettings(16, MEAN, STD, batch_size=4, num_workers=1))
    loader = module.val_dataloader()
    assert loader.persistent_workers and not loader.pin_memory
    images, _, _ = next(iter(module.train_dataloader()))
    assert images.shape == (4, 3, 16, 16)


def test_datamodule_rejects_unknown_label(tmp_path: Path) -> None:
    index = build_index("folder", _dataset(tmp_path, per_class=3))
    message = r"label 'dogs' is not one of the classes \['cats', 'birds'\]"
    with pytest.raises(CatdogError, match=message):
        ImageDataModule(index, ["cats", "birds"], LoaderSettings(16, MEAN, STD))
