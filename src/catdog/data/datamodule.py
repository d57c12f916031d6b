"""Transforms, the Dataset and the LightningDataModule that feed the model.

Images are decoded with `load_rgb` (uint8 RGB numpy) and transformed with torchvision.transforms.v2
on uint8 tensors, which is faster than on float tensors or PIL images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from catdog.data.images import BadImageError, load_rgb
from catdog.errors import CatdogError

Transform = Callable[[np.ndarray], torch.Tensor]


def build_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], train: bool
) -> Transform:
    """Build the transform from a `load_rgb` array to a normalised model input.

    Evaluation resizes the whole image to a square, without cropping, so that a CAM covers every
    pixel of the original (the aspect ratio is not kept). Training adds light augmentation: a
    random crop of 60-100% of the area resized to the square, and a horizontal flip.

    Args:
        image_size: Side of the square model input.
        mean: Per-channel mean for normalisation (RGB, on the 0..1 scale).
        std: Per-channel standard deviation for normalisation.
        train: Whether to augment.

    Returns:
        Callable mapping an (H, W, 3) uint8 array to a float32 tensor of shape
        (3, image_size, image_size).
    """
    if train:
        geometry = [
            v2.RandomResizedCrop(image_size, scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        geometry = [v2.Resize((image_size, image_size), antialias=True)]
    return v2.Compose(
        [
            v2.ToImage(),  # HWC numpy -> CHW uint8 tensor
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
            v2.ToPureTensor(),
        ]
    )


class ImageDataset(Dataset):
    """Images from files, each item `(image, label, position)`.

    Args:
        paths: Image files.
        labels: Class index of each image (-1 for unknown), or None when all are unknown.
        transform: Maps a `load_rgb` array to a tensor, e.g. from `build_transform`.
    """

    def __init__(
        self, paths: Sequence[str], labels: Sequence[int] | None, transform: Transform
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = [-1] * len(self.paths) if labels is None else [int(x) for x in labels]
        if len(self.labels) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        """Decode and transform one image.

        Args:
            position: Position of the image in `paths`.

        Returns:
            The transformed image, its class index (-1 when unknown) and `position`, so that
            batch results can be matched back to files.

        Raises:
            CatdogError: The file can no longer be decoded (it was checked when the index was
                built, so it changed since).
        """
        path = self.paths[position]
        try:
            image = load_rgb(path)
        except BadImageError as exc:
            raise CatdogError(
                f"image {path} became unreadable ({exc}) after the dataset was checked: "
                "restore or remove it and run again"
            ) from None
        return self.transform(image), self.labels[position], position


class ImageDataModule(pl.LightningDataModule):
    """Train/val/test dataloaders for an index built by `build_index` (and already scanned).

    Args:
        index: DataFrame with columns `path,label,split`.
        class_names: Class names; a label's class index is its position here.
        image_size: Side of the square model input.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        batch_size: Images per batch.
        num_workers: Decoding processes per dataloader (0 decodes in the main process).
        augment: Whether training images are augmented.

    Raises:
        CatdogError: The index lacks a column or has a label that is not in `class_names`.
    """

    def __init__(
        self,
        index: pd.DataFrame,
        class_names: list[str],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int = 32,
        num_workers: int = 2,
        augment: bool = True,
    ) -> None:
        super().__init__()
        missing = [c for c in ("path", "label", "split") if c not in index.columns]
        if missing:
            raise CatdogError(f"the index lacks column(s) {', '.join(missing)}: rebuild it")
        unknown = sorted(set(index["label"]) - set(class_names))
        if unknown:
            raise CatdogError(
                f"label {unknown[0]!r} is not one of the classes {class_names}: "
                "the index and the class names come from different data"
            )
        self.index = index
        self.class_names = list(class_names)
        self.batch_size = batch_size
        self.num_workers = num_workers
        eval_transform = build_transform(image_size, mean, std, train=False)
        train_transform = build_transform(image_size, mean, std, train=augment)
        self.train_set = self._dataset("train", train_transform)
        self.val_set = self._dataset("val", eval_transform)
        self.test_set = self._dataset("test", eval_transform)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def _dataset(self, split: str, transform: Transform) -> ImageDataset:
        rows = self.index[self.index["split"] == split]
        position = {name: i for i, name in enumerate(self.class_names)}
        labels = [position[label] for label in rows["label"]]
        return ImageDataset(rows["path"].tolist(), labels, transform)

    def _loader(self, dataset: ImageDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            # A last training batch of one image breaks BatchNorm; dropping the remainder costs
            # less than one batch per epoch.
            drop_last=shuffle and len(dataset) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
