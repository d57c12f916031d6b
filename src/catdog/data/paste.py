"""Zoom-out / paste: a photo scaled down and pasted at a random place onto a background.

Two users share it, so that what training shows and what the check measures are the same operation:

- the context-robustness check (:mod:`catdog.triage.robustness`): held-out photos at 1/2, 1/3, 1/4 of
  their side on backgrounds, where the pasted box is known and scores the pointing game;
- the training option ``data.augment_paste`` (:class:`PasteOnBackground`, off by default): a share of the
  training crops is shrunk onto a background, so the model learns to find a small animal in a scene
  instead of expecting it to fill the picture.

Backgrounds come from a folder of the user's photos (a random crop with the scene's aspect ratio, resized
to the scene) or are generated (``backgrounds=null``): smoothed colour noise, colour gradients with
stripes, and the demo data's clutter. Generated backgrounds hold no animal, so they never contradict the
label; a user's folder should not either (photos of streets, rooms, gardens without cats or dogs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torchvision import tv_tensors

from catdog.data.demo import _clutter
from catdog.data.images import IMAGE_EXTENSIONS, BadImageError, load_rgb
from catdog.errors import CatdogError

__all__ = [
    "Backgrounds",
    "PasteOnBackground",
    "PasteSettings",
    "generated_background",
    "paste_photo",
]

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) inclusive, scene pixels (catdog.quality.localization.Box)
# Background photos are kept in memory at most this long side: the scenes are model inputs (<= ~300 px).
BACKGROUND_MAX_SIDE = 640


def paste_photo(
    photo: np.ndarray, background: np.ndarray, scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, Box]:
    """The background with the photo, shrunk to ``scale`` of the background's sides, at a random place.

    Args:
        photo: ``uint8 [h, w, 3]``.
        background: ``uint8 [H, W, 3]``, the scene's size (not changed).
        scale: side of the pasted photo as a share of the scene's side, in ``(0, 1]``.
        rng: where the photo goes (uniform over all places that keep it whole inside the scene).

    Returns:
        The scene ``uint8 [H, W, 3]`` and the pasted photo's inclusive box ``(x0, y0, x1, y1)``.
    """
    height, width = background.shape[:2]
    w, h = max(1, round(scale * width)), max(1, round(scale * height))
    # INTER_AREA shrinks without aliasing (what a camera further away sees), like the eval transform's antialias.
    small = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA) if (w, h) != photo.shape[1::-1] else photo
    x0 = int(rng.integers(0, width - w + 1))
    y0 = int(rng.integers(0, height - h + 1))
    scene = background.copy()
    scene[y0 : y0 + h, x0 : x0 + w] = small
    return scene, (x0, y0, x0 + w - 1, y0 + h - 1)


def generated_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A background without any animal: smoothed colour noise, a gradient with stripes, or clutter.

    Args:
        rng: all randomness (the same generator state gives the same picture).
        size: ``(H, W)``.

    Returns:
        ``uint8 [H, W, 3]``.
    """
    height, width = size
    kind = int(rng.integers(3))
    if kind == 0:  # textured noise: a few octaves of smoothed colour noise
        out = np.zeros((height, width, 3), dtype=np.float32)
        for octave in range(1, 5):
            cells = 2**octave + 1
            coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
            out += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) / 2 ** (octave - 1)
        out = out / 1.875 + rng.normal(0, 10, out.shape)
    elif kind == 1:  # a colour gradient at a random angle with soft stripes
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        along = (np.cos(angle) * xs + np.sin(angle) * ys) / max(height, width)
        start, end = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        stripes = 30 * np.sin(2 * math.pi * rng.uniform(2, 12) * along + rng.uniform(0, 2 * math.pi))
        t = np.clip(along - along.min(), 0, 1)[:, :, None]
        out = start + t * (end - start) + stripes[:, :, None] + rng.normal(0, 6, (height, width, 3))
    else:  # the demo data's clutter (lines, rectangles, blobs), drawn square and cropped
        side = max(height, width)
        out = _clutter(rng, side)[:height, :width].astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


@dataclass
class Backgrounds:
    """Where backgrounds come from: the user's photos (decoded once, kept small) or the generator.

    Attributes:
        photos: decoded background photos; empty: generated backgrounds.
        skipped: ``(path, reason)`` of background files that could not be read.
    """

    photos: list[np.ndarray] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def from_folder(cls, folder: str | Path | None, setting: str) -> Backgrounds:
        """The background photos in ``folder`` (recursively), or generated ones when it is None.

        Args:
            folder: a folder of photos, or None.
            setting: the config key that named it, for error messages (``context.backgrounds``).

        Raises:
            CatdogError: the folder does not exist or holds no readable image.
        """
        if folder is None:
            return cls()
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise CatdogError(
                f"{setting}={folder} does not exist: point it at a folder of background photos, "
                "or null for generated ones"
            )
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        photos, skipped = [], []
        for path in files:
            try:
                photos.append(_bounded(load_rgb(path)))
            except BadImageError as err:
                skipped.append((str(path), str(err)))
        if not photos:
            raise CatdogError(
                f"{setting}={folder} holds no readable image ({len(skipped)} unreadable): add photos "
                "without cats or dogs, or use null for generated backgrounds"
            )
        return cls(photos, skipped)

    def draw(self, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
        """One background of ``size = (H, W)``: a random crop of a random photo (its aspect ratio), or a generated one.
        """
        if not self.photos:
            return generated_background(rng, size)
        photo = self.photos[int(rng.integers(len(self.photos)))]
        height, width = size
        ph, pw = photo.shape[:2]
        # The largest crop with the scene's aspect ratio, at 60-100% of it, at a random place.
        fit = min(ph / height, pw / width) * rng.uniform(0.6, 1.0)
        ch, cw = max(1, min(ph, round(height * fit))), max(1, min(pw, round(width * fit)))
        y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        crop = photo[y0 : y0 + ch, x0 : x0 + cw]
        interpolation = cv2.INTER_AREA if ch > height else cv2.INTER_LINEAR
        return cv2.resize(crop, (width, height), interpolation=interpolation)


def _bounded(rgb: np.ndarray) -> np.ndarray:
    longest = max(rgb.shape[:2])
    if longest <= BACKGROUND_MAX_SIDE:
        return rgb
    scale = BACKGROUND_MAX_SIDE / longest
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class PasteSettings:
    """``data.augment_paste``: with probability ``p`` a training crop is shrunk onto a background.

    Attributes:
        p: share of training images pasted (0: off).
        scale: ``(min, max)`` side of the pasted crop as a share of the input side, drawn uniformly.
        backgrounds: a folder of background photos, or None for generated backgrounds.
    """

    p: float
    scale: tuple[float, float]
    backgrounds: str | None

    def check(self) -> PasteSettings:
        """Raises CatdogError naming the setting when a value is out of range; returns self."""
        if not 0 <= self.p <= 1:
            raise CatdogError(f"data.augment_paste.p={self.p} must be in [0, 1] (0: off)")
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise CatdogError(
                f"data.augment_paste.scale={list(self.scale)} must be [min, max] with 0 < min <= max <= 1, "
                "e.g. [0.25, 0.9]"
            )
        return self

    @classmethod
    def from_config(cls, cfg: Any) -> PasteSettings | None:
        """The checked settings of a ``data.augment_paste`` mapping; None when absent or ``p`` is 0 (off)."""
        if cfg is None:
            return None
        scale = cfg["scale"]
        if not isinstance(scale, Sequence) or isinstance(scale, str) or len(scale) != 2:
            raise CatdogError(f"data.augment_paste.scale={scale} must be [min, max], e.g. [0.25, 0.9]")
        backgrounds = cfg["backgrounds"]
        settings = cls(
            float(cfg["p"]), (float(scale[0]), float(scale[1])), None if backgrounds is None else str(backgrounds)
        )
        return settings.check() if settings.p > 0 else None


class PasteOnBackground:
    """Training transform: with probability ``p``, the (already cropped) image shrunk onto a background.

    Works on the ``uint8 [3, S, S]`` tensor after the geometric augmentation, so the pasted photo is
    always whole inside the input. All randomness is drawn from torch's generator, which
    :class:`catdog.data.datamodule.ImageDataset` seeds per image and epoch: reproducible, independent
    of worker processes. Background photos are decoded once, when the transform is built.

    Args:
        settings: ``data.augment_paste``.
    """

    def __init__(self, settings: PasteSettings) -> None:
        self.settings = settings.check()
        self.backgrounds = Backgrounds.from_folder(settings.backgrounds, "data.augment_paste.backgrounds")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= self.settings.p:
            return image
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        photo = image.permute(1, 2, 0).numpy()
        background = self.backgrounds.draw(rng, photo.shape[:2])
        scene, _box = paste_photo(photo, background, rng.uniform(*self.settings.scale), rng)
        return tv_tensors.Image(torch.from_numpy(scene).permute(2, 0, 1).contiguous())
