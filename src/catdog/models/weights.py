"""Building torchvision classifiers with a new head: torchvision weights, local weights files, download failures."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from catdog.errors import CatdogError, one_line
from catdog.models.registry import ArchSpec, arch_spec, fc_layer

log = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# --------------------------------------------------------------------------------------------
# Building models and loading weights
# --------------------------------------------------------------------------------------------


def _resolve_weights(
    arch: str, weights: str | os.PathLike[str] | None
) -> WeightsEnum | Path | None:
    """Interprets the ``weights`` setting: None, a torchvision weights entry, or a file path.

    Args:
        arch: a supported builder name.
        weights: None/"none"/"null" (any case), a torchvision weights name such as ``"DEFAULT"``
            or ``"IMAGENET1K_V1"`` (also ``"ResNet18_Weights.IMAGENET1K_V1"``), or a path.

    Returns:
        None for training from scratch, the torchvision weights entry, or the file's path.

    Raises:
        CatdogError: an unknown weights name, or a path that is not an existing file.
    """
    if weights is None:
        return None
    text = os.fspath(weights).strip()
    if text.lower() in ("", "none", "null"):
        return None
    enum_cls = torchvision.models.get_model_weights(arch)
    names = list(enum_cls.__members__)
    wanted = text.removeprefix(f"{enum_cls.__name__}.").upper()
    if not isinstance(weights, os.PathLike) and wanted in names:
        return enum_cls[wanted]
    path = Path(text).expanduser()
    looks_like_path = "/" in text or os.sep in text or path.suffix != "" or path.exists()
    if not looks_like_path:
        raise CatdogError(
            f"Unknown weights {text!r} for {arch}: use one of torchvision's names "
            f"{', '.join(names)}, a path to a state dict file, or model.weights=null."
        )
    if not path.is_file():
        raise CatdogError(
            f"Weights file {path} does not exist: pass an existing state dict file, a torchvision "
            f"weights name ({', '.join(names)}), or model.weights=null to train from scratch."
        )
    return path


def default_normalization(
    arch: str, weights: str | os.PathLike[str] | None = None
) -> tuple[list[float], list[float]]:
    """Returns the input mean/std a model expects by default.

    Args:
        arch: architecture name.
        weights: the ``weights`` setting, as for :func:`build_model`.

    Returns:
        ``(mean, std)``: the torchvision weights' own normalisation when ``weights`` names
        torchvision weights, else the ImageNet mean/std (also for local files: pass mean/std
        explicitly when a file was trained with another normalisation).

    Raises:
        CatdogError: unsupported architecture or invalid ``weights`` (see :func:`build_model`).
    """
    spec = arch_spec(arch)
    source = _resolve_weights(spec.name, weights)
    if isinstance(source, WeightsEnum):
        preset = source.transforms()  # builds the preset only; downloads nothing
        return [float(m) for m in preset.mean], [float(s) for s in preset.std]
    if isinstance(source, Path) and _head_classes(source, spec) == 1001:
        # TF-slim's convention (background + 1000 classes) comes with inputs scaled to [-1, 1]; explain's
        # ImageNet mode applies that itself, but a file for training is normalised as the user says.
        log.warning(
            "%s has a 1001-class head (TF-slim: background + ImageNet), usually trained on inputs scaled to "
            "[-1, 1]; catdog normalises with ImageNet's mean/std. For [-1, 1] add model.mean=[0.5,0.5,0.5] "
            "model.std=[0.5,0.5,0.5]",
            source,
        )
    return list(IMAGENET_MEAN), list(IMAGENET_STD)


def _unwrap(state: Any) -> Any:
    """The state dict inside a checkpoint-like file (``{"state_dict": ...}`` or ``{"model": ...}``), or ``state``."""
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    return state


def _head_classes(path: Path, spec: ArchSpec) -> int | None:
    """The number of classes of a state-dict file's classification layer (None when unreadable)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable files are reported when the backbone is loaded
        return None
    state = _unwrap(state)
    if not isinstance(state, Mapping):
        return None
    weight = state.get(f"{spec.fc_layer}.weight", state.get(f"module.{spec.fc_layer}.weight"))
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim == 2 else None


def _torch_load(path: Path, map_location: str | torch.device, hint: str) -> Any:
    """``torch.load(weights_only=True)`` with a one-line error for anything unreadable.

    Raises:
        CatdogError: the file is not a torch file, or holds objects that are not plain data.
    """
    from catdog.readers import (
        read_checkpoint,  # the one validating reader of user files
    )

    return read_checkpoint(path, map_location=map_location, fix=f"{hint}.", require_mapping=False)


def _mismatch(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], limit: int = 3
) -> str | None:
    """Describes how a state dict fails to fit a model, or None when it fits.

    Missing BatchNorm ``num_batches_tracked`` buffers are tolerated: older state dicts lack
    them and ``load_state_dict`` fills them in.
    """

    def first(keys: list[str]) -> str:
        more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
        for k in given
        if k in expected and given[k].shape != expected[k].shape
    ]
    parts = [
        f"{label} {first(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (file vs model)", shapes),
        )
        if keys
    ]
    return "; ".join(parts) or None


def read_state_dict(path: Path, label: str, fix: str) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a weights file (bare, or under ``state_dict``/``model``; the ``module.``
    prefix of ``nn.DataParallel``/DDP files stripped), read as data (``weights_only``).

    Raises:
        CatdogError: ``"{label} does not hold a state dict of tensors: {fix}"``, or the file is unreadable.
    """
    state = _torch_load(path, "cpu", fix)
    state = _unwrap(state)
    if not isinstance(state, Mapping) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CatdogError(f"{label} does not hold a state dict of tensors: {fix}")
    return {str(key).removeprefix("module."): value for key, value in state.items()}


def _load_backbone(model: nn.Module, spec: ArchSpec, path: Path) -> None:
    """Loads a local state dict into everything but the (new) classification layer.

    Raises:
        CatdogError: the file is unreadable, holds no state dict, or does not fit ``spec``.
    """
    hint = f"pass a state dict saved from torchvision's {spec.name}, or model.weights=null"
    state = read_state_dict(path, str(path), f"{hint}.")
    # The file's head is for its own classes (ImageNet: 1000 or 1001): keep only the backbone.
    head = spec.fc_layer + "."
    backbone = {key: value for key, value in state.items() if not key.startswith(head)}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(head)}
    problem = _mismatch(expected, backbone)
    if problem:
        raise CatdogError(f"{path} does not fit the {spec.name} architecture ({problem}): {hint}.")
    model.load_state_dict(backbone, strict=False)


def download_pretrained(name: str, weights: WeightsEnum, fix: str) -> nn.Module:
    """Builds torchvision's ``name`` with its pretrained ``weights`` (downloaded once, then cached).

    Raises:
        CatdogError: the download failed (offline machine, proxy, HTTP error...), the message ending in ``fix``.
    """
    try:
        return torchvision.models.get_model(name, weights=weights)
    except OSError as error:  # URLError, HTTPError, timeouts and SSL errors are all OSErrors
        raise CatdogError(
            f"Could not download torchvision weights {name} {weights.name} ({one_line(error, kind=True)}): {fix}"
        ) from None


def build_model(
    arch: str, num_classes: int, weights: str | os.PathLike[str] | None = None
) -> nn.Module:
    """Builds a torchvision classifier with a fresh ``nn.Linear(in_features, num_classes)`` head.

    Args:
        arch: a supported architecture name (see :func:`supported_archs`).
        num_classes: number of outputs of the new head.
        weights: how to initialise the backbone:

            - ``None`` / ``"none"`` / ``"null"``: from scratch.
            - a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``...): downloaded
              (or read from the torch hub cache, ``$TORCH_HOME``).
            - a path to a local state dict (bare, or under a ``"state_dict"``/``"model"`` key;
              a ``"module."`` prefix is stripped). Its own head may have any number of
              classes: it is dropped, the backbone must fit exactly.

    Returns:
        The model (in training mode). Dropout before the head is kept.

    Raises:
        CatdogError: unsupported architecture, ``num_classes < 1``, unknown weights name,
            failed download, or a weights file that is missing or does not fit ``arch``.
    """
    spec = arch_spec(arch)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise CatdogError(
            f"num_classes must be a positive integer, got {num_classes!r}: fix the class list."
        )
    source = _resolve_weights(spec.name, weights)
    if isinstance(source, WeightsEnum):
        fix = (
            "on an offline machine pass model.weights=/path/to/state_dict.pth, or model.weights=null to train "
            "from scratch."
        )
        model = download_pretrained(spec.name, source, fix)
        in_features = fc_layer(model, spec).in_features
        model.set_submodule(spec.fc_layer, nn.Linear(in_features, num_classes))
        return model
    # From scratch or from a file: the builder creates the right-sized head with its own init.
    model = torchvision.models.get_model(spec.name, num_classes=num_classes)
    if source is not None:
        _load_backbone(model, spec, source)
    return model


# torch.nn.init's in-place initialisers: what layers call while they are built (reset_parameters, torchvision's init).
_INITIALISERS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)  # fmt: skip


@contextlib.contextmanager
def weights_left_uninitialised() -> Iterator[None]:
    """Layers built inside keep their weights as allocated: ``torch.nn.init``'s initialisers do nothing.

    For a network whose every weight is loaded right after (a checkpoint), whose random initialisation would be
    thrown away: for a ResNet-18 it was most of the time to load a checkpoint (bench/RESULTS.md). The caller must
    check that the loaded weights cover every parameter and buffer. After Hugging Face transformers'
    ``no_init_weights``; not thread-safe (it swaps module attributes). ``torch.nn.utils.skip_init`` would need a
    ``device`` argument that torchvision's builders do not take.

    Example:
        >>> with weights_left_uninitialised():
        ...     net = torchvision.models.resnet18()  # then net.load_state_dict(state_dict)
    """
    saved = {name: getattr(nn.init, name) for name in _INITIALISERS if hasattr(nn.init, name)}
    try:
        for name in saved:
            setattr(nn.init, name, _left_as_is)
        yield
    finally:
        for name, initialiser in saved.items():
            setattr(nn.init, name, initialiser)


def _left_as_is(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor
