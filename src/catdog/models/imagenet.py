"""ImageNet mode: explain a pretrained torchvision ImageNet classifier without training (``ckpt=imagenet:<arch>``).

Two sources of weights and class names:

- online: torchvision's weights API (``weights=null`` takes the architecture's ``DEFAULT`` weights, or a
  name such as ``IMAGENET1K_V1``); class names from ``weights.meta["categories"]``, preprocessing from
  the weights' own transforms;
- offline: ``weights=<state dict file>`` plus ``labels=<text file>`` with one class name per line, in
  output order (default: the one ``*labels*.txt`` file beside the weights). The number of classes is
  read from the file's head. 1001 classes follow the TF-slim convention: index 0 is "background" and
  inputs are scaled to [-1, 1] (mean = std = 0.5), used unless ``mean``/``std`` are given.

The result quacks like a :class:`catdog.models.ClassifierModule` for the explain pipeline: ``.net`` and
``.hparams`` (arch, class_names, image_size, mean, std, channels_last, data).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from lightning_fabric.utilities.data import AttributeDict
from torch import nn
from torchvision.models import WeightsEnum

from catdog.errors import CatdogError
from catdog.models import IMAGENET_MEAN, IMAGENET_STD, arch_spec
from catdog.models.weights import download_pretrained, read_state_dict
from catdog.names import distinct_labels

__all__ = [
    "PREFIX",
    "PretrainedClassifier",
    "imagenet_arch",
    "load_imagenet",
    "read_labels",
]

log = logging.getLogger(__name__)

PREFIX = "imagenet:"
TF_SLIM_CLASSES = 1001  # background + 1000 ImageNet classes


@dataclass
class PretrainedClassifier:
    """A pretrained classifier ready to explain.

    Attributes:
        net: the torchvision model, in eval mode.
        hparams: what the explain pipeline reads (``arch``, ``class_names``, ``image_size``, ``mean``,
            ``std``, ``channels_last``, ``data``).
        source: where the weights came from (a torchvision weights name or the file path).
    """

    net: nn.Module
    hparams: AttributeDict
    source: str


def imagenet_arch(ckpt: object) -> str | None:
    """The architecture of ``ckpt=imagenet:<arch>``, or None when ``ckpt`` is something else.

    Raises:
        CatdogError: ``imagenet:`` without an architecture.
    """
    text = str(ckpt).strip()
    if not text.lower().startswith(PREFIX):
        return None
    arch = text[len(PREFIX) :].strip().lower()
    if not arch:
        raise CatdogError("ckpt=imagenet: needs an architecture, e.g. ckpt=imagenet:resnet18")
    return arch


def read_labels(path: Path, expected: int) -> list[str]:
    """One class name per line (blank lines at the end ignored), exactly ``expected`` of them.

    Raises:
        CatdogError: missing file or a wrong number of names.
    """
    if not path.is_file():
        raise CatdogError(f"labels file {path} does not exist: pass labels=<text file, one class name per line>")
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if len(names) != expected:
        raise CatdogError(
            f"labels file {path} has {len(names)} names but the weights have {expected} outputs: pass the labels "
            "file that belongs to these weights (labels=...)"
        )
    return distinct_labels(names, suffix=" ({n})")  # ImageNet has two "crane" classes


def _labels_beside(weights: Path) -> Path:
    candidates = sorted(weights.parent.glob("*labels*.txt"))
    if len(candidates) != 1:
        found = f"found {', '.join(p.name for p in candidates)}" if candidates else "found none"
        raise CatdogError(
            f"weights={weights} needs its class names: pass labels=<text file, one name per line> ({found} beside it)"
        )
    return candidates[0]


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    fix = "pass a state dict (.pth) saved from a torchvision ImageNet classifier"
    return read_state_dict(path, f"weights={path}", fix)


def _from_file(
    arch: str, path: Path, labels: str | os.PathLike[str] | None
) -> tuple[nn.Module, list[str], tuple[list[float], list[float]] | None]:
    spec = arch_spec(arch)
    state = _state_dict(path)
    head = state.get(f"{spec.fc_layer}.weight")
    if head is None or head.ndim != 2:
        raise CatdogError(
            f"weights={path} has no {spec.fc_layer}.weight for {arch}'s classifier: pass weights saved from "
            f"torchvision's {arch}"
        )
    num_classes = int(head.shape[0])
    net = torchvision.models.get_model(spec.name, num_classes=num_classes)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[1:2] or [str(error)]
        raise CatdogError(
            f"weights={path} does not fit {arch} ({first[0].strip()}): pass weights of that architecture"
        ) from error
    names = read_labels(Path(labels).expanduser() if labels else _labels_beside(path), num_classes)
    normalization = ([0.5] * 3, [0.5] * 3) if num_classes == TF_SLIM_CLASSES else None
    if normalization:
        log.info("1001 classes (background first, TF-slim convention): inputs scaled to [-1, 1]")
    return net, names, normalization


def _from_torchvision(arch: str, name: str | None) -> tuple[nn.Module, list[str], tuple[list[float], list[float]], int]:
    enum_cls = torchvision.models.get_model_weights(arch)
    wanted = (name or "DEFAULT").removeprefix(f"{enum_cls.__name__}.").upper()
    if wanted not in enum_cls.__members__:
        raise CatdogError(
            f"weights={name} is not a torchvision weights name of {arch} ({', '.join(enum_cls.__members__)}): "
            "or pass weights=<state dict file> and labels=<labels file>"
        )
    weights: WeightsEnum = enum_cls[wanted]
    fix = "offline, pass weights=<path to a state dict .pth> and labels=<class names file>"
    net = download_pretrained(arch, weights, fix)
    preset = weights.transforms()
    size = int(preset.crop_size[0]) if getattr(preset, "crop_size", None) else 224
    return (
        net,
        list(weights.meta["categories"]),
        ([float(m) for m in preset.mean], [float(s) for s in preset.std]),
        size,
    )


def load_imagenet(
    arch: str,
    weights: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> PretrainedClassifier:
    """A pretrained ImageNet classifier with its class names.

    Args:
        arch: torchvision builder name (``resnet18``, ``mobilenet_v2``, ``vit_b_16``...).
        weights: None or a torchvision weights name (online), or a state dict file (offline).
        labels: the class names file for a weights file; default: the ``*labels*.txt`` beside it.
        image_size: input side; None: the weights' own (224 for files).
        mean: input normalisation; None: the weights' own (files: ImageNet's, [0.5]*3 for 1001 classes).
        std: as ``mean``.

    Returns:
        The model in eval mode with its hyper-parameters.

    Raises:
        CatdogError: unknown architecture, failed download (naming ``weights=<path>``), unreadable or
            unfitting weights file, labels file missing or of the wrong length.
    """
    spec = arch_spec(arch)
    text = os.fspath(weights).strip() if weights is not None else ""
    is_file = bool(text) and ("/" in text or os.sep in text or Path(text).suffix != "" or Path(text).exists())
    if is_file:
        path = Path(text).expanduser()
        if not path.is_file():
            raise CatdogError(f"weights={weights} does not exist: pass a state dict file or a torchvision weights name")
        net, names, normalization = _from_file(spec.name, path, labels)
        size, source = 224, str(path.resolve())
        normalization = normalization or (list(IMAGENET_MEAN), list(IMAGENET_STD))
    else:
        net, names, normalization, size = _from_torchvision(spec.name, text or None)
        source = f"torchvision {spec.name} {text or 'DEFAULT'}"
        names = distinct_labels(names, suffix=" ({n})")
    hparams = AttributeDict(
        arch=spec.name,
        class_names=names,
        image_size=int(image_size or size),
        mean=[float(v) for v in mean] if mean is not None else normalization[0],
        std=[float(v) for v in std] if std is not None else normalization[1],
        channels_last=True,
        data={},
        weights=source,
    )
    return PretrainedClassifier(net=net.eval(), hparams=hparams, source=source)


def describe_topk(class_names: Sequence[str], probs: Sequence[float], topk: int) -> str:
    """``"tabby, tabby cat 61.2% | tiger cat 20.3%"`` for the top-k classes of one image."""
    order = sorted(range(len(probs)), key=lambda i: -float(probs[i]))[:topk]
    return " | ".join(f"{class_names[i]} {100 * float(probs[i]):.1f}%" for i in order)
