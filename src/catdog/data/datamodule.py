"""Transforms, the Dataset and the LightningDataModules that feed the model.

Images are decoded with `load_rgb` (uint8 RGB numpy) and transformed with torchvision.transforms.v2
on uint8 tensors, which is faster than on float tensors or PIL images.

Training order and augmentation are functions of (seed, epoch, position) only: `EpochSampler`
shuffles with a generator seeded per epoch and hands each image its own augmentation seed, so an
epoch is the same whether or not the run was interrupted, and however many workers decode it. A
resumed run skips the batches its checkpoint already trained on (`ImageDataModule` reads them from
the trainer's restored progress).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset
from torchvision.transforms import v2

from catdog.data.images import BadImageError, load_rgb
from catdog.data.paste import PasteOnBackground, PasteSettings
from catdog.errors import CatdogError

Transform = Callable[[np.ndarray], torch.Tensor]

AUGMENTATIONS: tuple[str, ...] = ("none", "light", "trivialaugment")


def augmentation_name(augment: bool | str | None) -> str:
    """Normalise a ``data.augment`` setting: true -> "light", false/None -> "none".

    Raises:
        CatdogError: an unknown name.
    """
    if augment is True:
        return "light"
    if augment is False or augment is None:
        return "none"
    name = str(augment).lower()
    if name not in AUGMENTATIONS:
        raise CatdogError(
            f"data.augment={augment!r} is unknown: use one of {', '.join(AUGMENTATIONS)}"
        )
    return name


def build_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    augment: bool | str = "light",
    paste: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Transform:
    """Build the transform from a `load_rgb` array to a normalised model input.

    Evaluation resizes the whole image to a square, without cropping, so that a CAM covers every
    pixel of the original (the aspect ratio is not kept). Training augments as `augment` says:

    - "light": a random crop of 60-100% of the area resized to the square, and a horizontal flip;
    - "trivialaugment": a random crop of 25-100% of the area, a flip, and TrivialAugmentWide
      (one random photometric/geometric op of random strength per image; Müller & Hutter 2021),
      the stronger augmentation that training from scratch needs;
    - "none": the evaluation transform.

    Args:
        image_size: Side of the square model input.
        mean: Per-channel mean for normalisation (RGB, on the 0..1 scale).
        std: Per-channel standard deviation for normalisation.
        train: Whether this is the training transform (else `augment` is ignored).
        augment: One of AUGMENTATIONS (true/false mean "light"/"none").
        paste: Training only: applied to the uint8 image after the geometric augmentation, e.g.
            `catdog.data.paste.PasteOnBackground` (``data.augment_paste``: zoom-out onto backgrounds).

    Returns:
        Callable mapping an (H, W, 3) uint8 array to a float32 tensor of shape
        (3, image_size, image_size).

    Raises:
        CatdogError: unknown `augment`.
    """
    augment = augmentation_name(augment) if train else "none"
    if augment == "light":
        geometry = [
            v2.RandomResizedCrop(image_size, scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    elif augment == "trivialaugment":
        geometry = [
            v2.RandomResizedCrop(image_size, scale=(0.25, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.TrivialAugmentWide(),
        ]
    else:
        geometry = [v2.Resize((image_size, image_size), antialias=True)]
    if train and paste is not None:
        geometry.append(paste)
    return v2.Compose(
        [
            v2.ToImage(),  # HWC numpy -> CHW uint8 tensor
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
            v2.ToPureTensor(),
        ]
    )


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (seed, epoch, position...), well mixed and platform independent."""
    text = ":".join(str(int(v)) for v in values)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


class EpochSampler(Sampler):
    """Shuffled positions whose order and augmentation seeds depend only on (seed, epoch).

    Yields ``(position, sample_seed)`` pairs; `ImageDataset` seeds torch's RNG with sample_seed
    before transforming that image, so augmentation does not depend on worker processes or on
    what ran before. Lightning calls `set_epoch` at each epoch start; `resume_at` makes the next
    iteration start after the images a checkpoint already trained on.

    Args:
        num_samples: Size of the dataset.
        seed: The run's seed.
        shuffle: Whether to shuffle (else positions in order, still with per-sample seeds).
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch whose order the next iteration yields."""
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, skip: int) -> None:
        """Makes the next iteration yield epoch `epoch` without its first `skip` samples."""
        self.epoch, self._skip = int(epoch), int(skip)

    def order(self, epoch: int) -> list[int]:
        """Positions in the order epoch `epoch` visits them."""
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip, self._skip = self.epoch, self._skip, 0
        for position in self.order(epoch)[skip:]:
            yield position, mix_seed(self.seed, epoch, position)

    def __len__(self) -> int:
        # The full epoch even when resuming: Lightning counts the skipped batches as done.
        return self.num_samples


class ImageDataset(Dataset):
    """Images from files, each item `(image, label, position)`.

    Args:
        paths: Image files.
        labels: Class index of each image (-1 for unknown), or None when all are unknown.
        transform: Maps a `load_rgb` array to a tensor, e.g. from `build_transform`.
        cache_size: When set, every image is decoded once (`cache`) and kept in memory resized
            so that its shorter side is `cache_size` pixels: later epochs skip JPEG decoding,
            which on a 2-core CPU competes with training for the same cores.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int] | None,
        transform: Transform,
        cache_size: int | None = None,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = [-1] * len(self.paths) if labels is None else [int(x) for x in labels]
        if len(self.labels) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        self.transform = transform
        self.cache_size = cache_size
        self._cache: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def cache(self, num_threads: int = 2) -> None:
        """Decodes and downsizes every image into memory (see `cache_size`); idempotent."""
        if self.cache_size is None or self._cache is not None:
            return
        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            self._cache = list(pool.map(self._decode, range(len(self.paths))))

    def _decode(self, position: int) -> np.ndarray:
        path = self.paths[position]
        try:
            image = load_rgb(path)
        except BadImageError as exc:
            raise CatdogError(
                f"image {path} became unreadable ({exc}) after the dataset was checked: "
                "restore or remove it and run again"
            ) from None
        if self.cache_size is not None:
            height, width = image.shape[:2]
            scale = self.cache_size / min(height, width)
            if scale < 1:
                size = [max(1, round(height * scale)), max(1, round(width * scale))]
                resized = v2.functional.resize(
                    torch.from_numpy(image).permute(2, 0, 1), size, antialias=True
                )
                image = resized.permute(1, 2, 0).contiguous().numpy()
        return image

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        """Decode and transform one image.

        Args:
            item: Position of the image in `paths`, or ``(position, seed)`` from `EpochSampler`:
                then torch's RNG is seeded with `seed` first, so the augmentation is reproducible.

        Returns:
            The transformed image, its class index (-1 when unknown) and `position`, so that
            batch results can be matched back to files.

        Raises:
            CatdogError: The file can no longer be decoded (it was checked when the index was
                built, so it changed since).
        """
        if isinstance(item, tuple):
            position, seed = item
            # The CPU generator only: torch.manual_seed also seeds every accelerator (~1 ms).
            torch.random.default_generator.manual_seed(seed)
        else:
            position = item
        image = self._cache[position] if self._cache is not None else self._decode(position)
        return self.transform(image), self.labels[position], position


def _resume_position(trainer: pl.Trainer, batches: int) -> tuple[int, int]:
    """(epoch, batches already trained in it) that a (possibly resumed) fit continues from.

    Read from the fit loop's progress, which Lightning restores from the checkpoint before it asks
    for the training dataloader: an epoch interrupted after k batches continues at batch k; a
    checkpoint written at the end of epoch e continues with epoch e + 1.
    """
    fit_loop = trainer.fit_loop
    epoch = fit_loop.epoch_progress.current.processed  # what Lightning passes to set_epoch
    finished = epoch > fit_loop.epoch_progress.current.completed
    done = fit_loop.epoch_loop.batch_progress.current.completed
    if finished or done >= batches:
        return epoch, 0
    return epoch, done


def _check_index(index: pd.DataFrame, class_names: list[str], train_image_size: Any) -> None:
    """Refuses an index without the columns `path,label,split` or with a label not in `class_names`,
    and a training side that is not an integer >= 16 (None: the input side).

    Raises:
        CatdogError: naming the problem.
    """
    if train_image_size is not None and (
        isinstance(train_image_size, bool) or not isinstance(train_image_size, int) or train_image_size < 16
    ):
        raise CatdogError(
            f"data.train_image_size={train_image_size!r} must be an integer >= 16 or null (= data.image_size)"
        )
    missing = [c for c in ("path", "label", "split") if c not in index.columns]
    if missing:
        raise CatdogError(f"the index lacks column(s) {', '.join(missing)}: rebuild it")
    unknown = sorted(set(index["label"]) - set(class_names))
    if unknown:
        raise CatdogError(
            f"label {unknown[0]!r} is not one of the classes {class_names}: "
            "the index and the class names come from different data"
        )


@dataclass(frozen=True)
class LoaderSettings:
    """How an :class:`ImageDataModule` turns images into batches: one record of the ``data`` config's
    loading settings (built from it by :meth:`from_config`; the defaults there live in conf/data/folder.yaml).

    Attributes:
        image_size: Side of the square model input.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        batch_size: Images per batch.
        num_workers: Decoding processes per dataloader (0 decodes in the main process).
        augment: Training augmentation, one of AUGMENTATIONS (true/false: "light"/"none").
        seed: Seeds the training order and augmentation of every epoch (see `EpochSampler`).
        cache_images: Decode every image once and keep it in memory, downsized to a shorter
            side of 1.15 x image_size (for small inputs and data that fits in RAM).
        train_image_size: Side of the training crops; None: `image_size`. `image_size` stays the
            side for validation, test (and the checkpoint, so explain and evaluate): a training
            side smaller than it is the "FixRes" setting (Touvron et al. 2019), in which objects
            appear at about the same size in the random training crops and the whole test images.
        augment_paste: Zoom-out / paste onto backgrounds for a share of the training images
            (`catdog.data.paste`); None: off.
    """

    image_size: int
    mean: Sequence[float]
    std: Sequence[float]
    batch_size: int = 32
    num_workers: int = 2
    augment: bool | str = True
    seed: int = 0
    cache_images: bool = False
    train_image_size: int | None = None
    augment_paste: PasteSettings | None = None

    @classmethod
    def from_config(
        cls, data: Mapping[str, Any], mean: Sequence[float], std: Sequence[float], seed: int
    ) -> LoaderSettings:
        """The settings of a resolved ``data`` config (conf/data/*.yaml), the normalisation and the seed."""
        return cls(
            image_size=data["image_size"],
            mean=mean,
            std=std,
            batch_size=data["batch_size"],
            num_workers=data["num_workers"],
            augment=data["augment"],
            seed=seed,
            cache_images=bool(data["cache_images"]),
            train_image_size=data["train_image_size"],
            augment_paste=PasteSettings.from_config(data["augment_paste"]),
        )


class ImageDataModule(pl.LightningDataModule):
    """Train/val/test dataloaders for an index built by `build_index` (and already scanned).

    Args:
        index: DataFrame with columns `path,label,split`.
        class_names: Class names; a label's class index is its position here.
        settings: Input size, normalisation, batches, workers, augmentation... (see `LoaderSettings`).

    Raises:
        CatdogError: The index lacks a column or has a label that is not in `class_names`, or
            `settings.train_image_size` is not a side length.
    """

    def __init__(self, index: pd.DataFrame, class_names: list[str], settings: LoaderSettings) -> None:
        super().__init__()
        _check_index(index, class_names, settings.train_image_size)
        self.index = index
        self.class_names = list(class_names)
        self.batch_size = settings.batch_size
        self.num_workers = settings.num_workers
        self.seed = int(settings.seed)
        self.augment = augmentation_name(settings.augment)
        self.augment_paste = settings.augment_paste
        image_size, mean, std = settings.image_size, settings.mean, settings.std
        cache_size = round(1.15 * image_size) if settings.cache_images else None
        eval_transform = build_transform(image_size, mean, std, train=False)
        paste = PasteOnBackground(settings.augment_paste) if settings.augment_paste is not None else None
        train_size = settings.train_image_size or image_size
        train_transform = build_transform(train_size, mean, std, train=True, augment=self.augment, paste=paste)
        self.train_set = self._dataset("train", train_transform, cache_size)
        self.val_set = self._dataset("val", eval_transform, cache_size)
        self.test_set = self._dataset("test", eval_transform, cache_size)
        self.train_sampler = EpochSampler(len(self.train_set), self.seed)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        """Fills the in-memory image cache (when enabled) before worker processes fork."""
        for dataset in (self.train_set, self.val_set, self.test_set):
            dataset.cache(num_threads=max(1, self.num_workers))

    def _dataset(self, split: str, transform: Transform, cache_size: int | None) -> ImageDataset:
        rows = self.index[self.index["split"] == split]
        position = {name: i for i, name in enumerate(self.class_names)}
        labels = [position[label] for label in rows["label"]]
        return ImageDataset(rows["path"].tolist(), labels, transform, cache_size=cache_size)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        # A last training batch of one image breaks BatchNorm; dropping the remainder costs
        # less than one batch per epoch.
        drop_last = train and len(dataset) > self.batch_size
        if train:
            batches = len(dataset) // self.batch_size if drop_last else -(-len(dataset) // self.batch_size)
            trainer = self._trainer_or_none()
            if trainer is not None:  # without a trainer, set_epoch alone decides
                epoch, done = _resume_position(trainer, batches)
                self.train_sampler.resume_at(epoch, done * self.batch_size)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=self.train_sampler if train else None,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=drop_last,
        )

    def num_train_batches(self) -> int:
        """Training batches per epoch, known without building a dataloader."""
        n = len(self.train_set)
        return n // self.batch_size if n > self.batch_size else 1

    def _trainer_or_none(self) -> pl.Trainer | None:
        return self.trainer if getattr(self, "trainer", None) is not None else None

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)


class FeatureDataModule(pl.LightningDataModule):
    """Dataloaders over precomputed backbone features (a frozen backbone's linear probe).

    Items are ``(features, label, position)`` like `ImageDataModule`'s, so the same
    LightningModule trains on them; the training order is an `EpochSampler` too.

    Args:
        features: ``{"train"|"val"|"test": (features [N, D] float32, labels [N] int64)}``.
        class_names: Class names.
        batch_size: Samples per batch.
        seed: Seeds the training order.
    """

    def __init__(
        self,
        features: dict[str, tuple[torch.Tensor, torch.Tensor]],
        class_names: list[str],
        batch_size: int,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.batch_size = batch_size
        self.sets = {
            split: _PositionedTensors(feats, labels) for split, (feats, labels) in features.items()
        }
        self.train_sampler = EpochSampler(len(self.sets["train"]), seed)

    def num_train_batches(self) -> int:
        """Training batches per epoch, known without building a dataloader."""
        n = len(self.sets["train"])
        return n // self.batch_size if n > self.batch_size else 1

    def train_dataloader(self) -> DataLoader:
        dataset = self.sets["train"]
        drop_last = len(dataset) > self.batch_size
        batches = len(dataset) // self.batch_size if drop_last else -(-len(dataset) // self.batch_size)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            epoch, done = _resume_position(trainer, batches)
            self.train_sampler.resume_at(epoch, done * self.batch_size)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=self.train_sampler, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["test"], batch_size=self.batch_size)


class _PositionedTensors(TensorDataset):
    """``(features, label, position)`` items; accepts EpochSampler's ``(position, seed)``."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__(features, labels)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Any, ...]:
        position = item[0] if isinstance(item, tuple) else item
        return self.tensors[0][position], self.tensors[1][position], position
