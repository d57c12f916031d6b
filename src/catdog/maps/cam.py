"""Exact Class Activation Maps (Zhou et al., 2016) as pure tensor functions.

For a network whose head is global average pooling followed by one linear layer,
the map of class ``c`` is ``CAM_c(x, y) = sum_k W[c, k] * f_k(x, y)``, where ``f`` is
the output of the last feature layer and ``W`` the linear layer's weight. The spatial
mean of that map plus the bias is *exactly* the logit, which :func:`cam_logit_check`
verifies. Everything is computed from the one forward pass that produces the logits:
no second pass and no backward.

Typical use::

    with capture_features(model, "layer4") as captured:
        logits = model(images)
    class_idx = select_classes(logits, topk=1, true_labels=labels)
    cams = class_activation_maps(captured.features, model.fc.weight, class_idx)
    deviation = cam_logit_check(cams, model.fc.bias, logits, class_idx)

Display convention: maps are kept raw (signed, unnormalized) for every comparison,
and :func:`normalize_for_display` min-max scales each map *without* a ReLU, as the
original CAM code and torchcam's ``CAM`` do (pytorch-grad-cam applies a ReLU first).
Negative regions are evidence *against* the class; keeping them means the coldest
colour shows the strongest counter-evidence instead of clipping all of it to one value.

:func:`display_maps` offers the other looks (``relu``: pytorch-grad-cam's; ``signed``: zero in the
middle of a diverging colormap) and :func:`strongest_region` the thresholded region around the peak.

No file I/O happens here; pictures are made in :mod:`catdog.overlay`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from catdog.errors import CatdogError

__all__ = [
    "CONTRASTS",
    "DISPLAYS",
    "FeatureCapture",
    "area_above",
    "cam_logit_check",
    "capture_features",
    "class_activation_maps",
    "contrast_weights",
    "display_maps",
    "normalize_for_display",
    "parse_threshold",
    "peak_location",
    "point_in_box",
    "select_classes",
    "strongest_region",
    "upsample_cams",
]


class FeatureCapture:
    """Holds the output of the hooked layer from the latest forward pass.

    Args:
        relu: Apply a ReLU to the captured output (the head applies one, e.g. densenet).
    """

    def __init__(self, relu: bool = False) -> None:
        self._relu = relu
        self._features: Tensor | None = None

    def hook(self, _module: nn.Module, _inputs: tuple[object, ...], output: object) -> None:
        """Forward hook storing the layer's (detached) output.

        Args:
            _module: The hooked module (unused).
            _inputs: The module's inputs (unused).
            output: The module's output.

        Raises:
            TypeError: If the layer does not return a single tensor.
        """
        if not isinstance(output, Tensor):
            raise TypeError(
                f"the hooked layer returned {type(output).__name__}, expected a Tensor[B, K, h, w]; "
                "hook the last convolutional block instead"
            )
        output = output.detach()
        # Out-of-place ReLU: the model may still apply its own ReLU in place afterwards.
        self._features = F.relu(output) if self._relu else output

    @property
    def features(self) -> Tensor:
        """The captured feature maps ``Tensor[B, K, h, w]`` of the latest forward pass.

        Raises:
            RuntimeError: If no forward pass ran inside the ``with`` block.
        """
        if self._features is None:
            raise RuntimeError("no features captured: call `model(x)` inside the `with capture_features(...)` block")
        return self._features


def _resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """Finds the module to hook from its dotted name (:func:`catdog.models.resolve_layer`) or checks the one given."""
    if isinstance(layer, nn.Module):
        if not any(module is layer for module in model.modules()):
            raise ValueError(f"the given {type(layer).__name__} is not a submodule of {type(model).__name__}")
        return layer
    from catdog.models import (
        resolve_layer,  # here: models is heavy, and the one lookup by name lives there
    )

    return resolve_layer(model, layer)[1]


@contextmanager
def capture_features(model: nn.Module, layer: str | nn.Module, relu: bool = False) -> Iterator[FeatureCapture]:
    """Captures a layer's output during the forward passes run inside the block.

    The hook is removed on exit, also when the block raises. The captured tensor stays
    readable after the block.

    Args:
        model: The classifier.
        layer: Dotted name of the feature layer (e.g. ``"layer4"``, ``"features"``) or the module.
        relu: Apply a ReLU to the captured output; needed when the model's forward applies
            one between the layer and the pooling (torchvision densenet).

    Yields:
        The capture object; read ``.features`` after ``logits = model(x)``.

    Raises:
        CatdogError: If no submodule has that name.
        ValueError: If a module is given that does not belong to ``model``.
    """
    capture = FeatureCapture(relu=relu)
    handle = _resolve_layer(model, layer).register_forward_hook(capture.hook)
    try:
        yield capture
    finally:
        handle.remove()


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """At least float32 (bf16/fp16 features are upcast), float64 is kept."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def class_activation_maps(
    features: Tensor, fc_weight: Tensor, class_idx: Tensor, weights: Tensor | None = None
) -> Tensor:
    """Raw class activation maps of selected classes, for the whole batch at once.

    Args:
        features: Output of the feature layer, ``Tensor[B, K, h, w]`` (any memory format/dtype).
        fc_weight: Weight of the linear head, ``Tensor[C, K]``.
        class_idx: Classes to map per image, ``Tensor[B, M]`` of integers in ``[0, C)``.
        weights: per-map rows ``Tensor[B, M, K]`` to use instead of ``fc_weight[class_idx]``
            (see :func:`contrast_weights`).

    Returns:
        ``Tensor[B, M, h, w]`` of raw maps (no ReLU, no normalization), float32 or wider.

    Raises:
        ValueError: If shapes, dtypes or class indices do not fit together.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be [B, K, h, w], got shape {tuple(features.shape)}")
    if fc_weight.ndim != 2 or fc_weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"fc_weight must be [C, K={features.shape[1]}], got shape {tuple(fc_weight.shape)}; "
            "is the feature layer the direct input of the pooled linear head?"
        )
    _check_class_idx(class_idx, features.shape[0], fc_weight.shape[0])
    dtype = _compute_dtype(features, fc_weight)
    weights = (fc_weight.detach()[class_idx] if weights is None else weights.detach()).to(dtype)  # [B, M, K]
    return torch.einsum("bmk,bkhw->bmhw", weights, features.detach().to(dtype))


CONTRASTS = ("none", "mean", "runner_up")


def contrast_weights(
    fc_weight: Tensor, class_idx: Tensor, logits: Tensor, contrast: str = "none"
) -> tuple[Tensor, Tensor | None]:
    """Per-map head weights, exact or made identifiable by subtracting a reference row.

    A softmax head identifies only the differences between its class rows: adding one vector to
    every row changes no probability, so the part all rows share is arbitrary and so is the part of
    an exact CAM it contributes. Subtracting a reference row removes it:

    - ``"none"``: the exact row ``W[c]`` (the map's mean plus the bias is the logit);
    - ``"mean"``: ``W[c] - mean_j W[j]`` (the map's mean is the logit minus the mean logit, less biases);
    - ``"runner_up"``: ``W[c] - W[r]`` with ``r`` the most likely *other* class ("why c and not r?").

    Args:
        fc_weight: ``Tensor[C, K]``.
        class_idx: ``Tensor[B, M]`` classes of the maps.
        logits: ``Tensor[B, C]`` (to find the runner-up).
        contrast: one of :data:`CONTRASTS`.

    Returns:
        ``(weights [B, M, K], reference [B, M] or None)``: the reference class index of each map for
        ``"runner_up"``, -2 for the mean row (``"mean"``), None for ``"none"``.

    Raises:
        ValueError: unknown ``contrast``.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    weight = fc_weight.detach()
    rows = weight[class_idx]  # [B, M, K]
    if contrast == "none":
        return rows, None
    if contrast == "mean":
        return rows - weight.mean(dim=0), torch.full_like(class_idx, -2)
    # The strongest class other than the map's own: the top logit, or the second when c is the top.
    top2 = logits.detach().topk(min(2, logits.shape[1]), dim=1).indices  # [B, 2]
    reference = torch.where(class_idx == top2[:, :1], top2[:, -1:], top2[:, :1])
    return rows - weight[reference], reference


def _check_class_idx(class_idx: Tensor, batch: int, num_classes: int) -> None:
    """Validates a ``[B, M]`` integer index tensor."""
    if class_idx.dtype != torch.long:
        raise ValueError(f"class_idx must be a torch.long tensor, got {class_idx.dtype}")
    if class_idx.ndim != 2 or class_idx.shape[0] != batch:
        raise ValueError(f"class_idx must be [B={batch}, M], got shape {tuple(class_idx.shape)}")
    if class_idx.numel() and (class_idx.min() < 0 or class_idx.max() >= num_classes):
        raise ValueError(f"class_idx values must be in [0, {num_classes}), got {class_idx.min()}..{class_idx.max()}")


def select_classes(logits: Tensor, topk: int = 1, true_labels: Tensor | None = None) -> Tensor:
    """Which classes to map for each image, as a rectangular index tensor.

    Layout: columns ``0..topk-1`` are the top-k predicted classes, most likely first
    (column 0 is the prediction). When ``true_labels`` is given, one more last column
    holds the true class; for correct or unknown (``-1``) labels it repeats the
    prediction, so ``idx[:, -1] != idx[:, 0]`` marks the misclassified images whose
    "why this and not that?" maps are worth drawing.

    Args:
        logits: Model outputs, ``Tensor[B, C]``.
        topk: How many predicted classes to keep, in ``[1, C]``.
        true_labels: Optional ``Tensor[B]`` of true classes, ``-1`` for unknown.

    Returns:
        ``Tensor[B, topk]`` or ``Tensor[B, topk + 1]`` of int64 class indices.

    Raises:
        ValueError: If ``topk`` or the labels are out of range or mis-shaped.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, C], got shape {tuple(logits.shape)}")
    batch, num_classes = logits.shape
    if not 1 <= topk <= num_classes:
        raise ValueError(f"topk must be in [1, {num_classes}] (number of classes), got {topk}")
    predicted = logits.detach().topk(topk, dim=1).indices
    if true_labels is None:
        return predicted
    if true_labels.shape != (batch,):
        raise ValueError(f"true_labels must be [B={batch}], got shape {tuple(true_labels.shape)}")
    true_labels = true_labels.to(device=predicted.device, dtype=torch.long)
    if true_labels.numel() and (true_labels.min() < -1 or true_labels.max() >= num_classes):
        raise ValueError(f"true_labels must be in [0, {num_classes}) or -1 for unknown")
    true_col = torch.where(true_labels >= 0, true_labels, predicted[:, 0])
    return torch.cat([predicted, true_col[:, None]], dim=1)


def cam_logit_check(cams: Tensor, fc_bias: Tensor | None, logits: Tensor, class_idx: Tensor) -> Tensor:
    """Self-check of exact CAMs: spatial mean of each raw map plus bias equals the logit.

    Holds for heads made of global average pooling and one linear layer (dropout is
    identity in eval mode); a large deviation means a wrong layer, a missing ReLU
    (densenet) or a different head.

    Args:
        cams: Raw maps ``Tensor[B, M, h, w]`` from :func:`class_activation_maps`.
        fc_bias: Bias of the linear head ``Tensor[C]``, or None when it has none.
        logits: Model outputs ``Tensor[B, C]`` of the same forward pass.
        class_idx: The ``Tensor[B, M]`` indices the maps were computed for.

    Returns:
        Scalar tensor: the maximum absolute deviation over all maps.

    Raises:
        ValueError: If the shapes do not fit together.
    """
    if cams.ndim != 4 or cams.shape[:2] != class_idx.shape:
        raise ValueError(
            f"cams [B, M, h, w] and class_idx [B, M] disagree: {tuple(cams.shape)} vs {tuple(class_idx.shape)}"
        )
    _check_class_idx(class_idx, logits.shape[0], logits.shape[1])
    dtype = _compute_dtype(cams, logits)
    predicted = cams.to(dtype).mean(dim=(-2, -1))
    if fc_bias is not None:
        predicted = predicted + fc_bias.detach().to(dtype)[class_idx]
    expected = logits.detach().to(dtype).gather(1, class_idx)
    return (predicted - expected).abs().max()


def upsample_cams(cams: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resizes maps to an image's original resolution.

    Call once per image with that image's own ``(H, W)``.

    Args:
        cams: Maps ``Tensor[..., h, w]``.
        size: Target ``(H, W)``, e.g. the original image's height and width.

    Returns:
        ``Tensor[..., H, W]`` (``align_corners=False``), float32 or wider.

    Raises:
        ValueError: If ``cams`` has fewer than two dimensions or ``size`` is not positive.
    """
    if cams.ndim < 2:
        raise ValueError(f"cams must be [..., h, w], got shape {tuple(cams.shape)}")
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"size must be a positive (H, W), got {size}")
    lead, (h, w) = cams.shape[:-2], cams.shape[-2:]
    flat = cams.detach().to(_compute_dtype(cams)).reshape(1, -1, h, w)
    resized = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return resized.reshape(*lead, height, width)


def normalize_for_display(cam: Tensor) -> Tensor:
    """Per-map min-max scaling to ``[0, 1]``, without ReLU (see module docstring).

    Args:
        cam: Maps ``Tensor[..., h, w]``.

    Returns:
        Same shape, float32 or wider; a constant map becomes all zeros.
    """
    cam = cam.detach().to(_compute_dtype(cam))
    low = cam.amin(dim=(-2, -1), keepdim=True)
    span = cam.amax(dim=(-2, -1), keepdim=True) - low
    # Constant maps carry no localization: dividing 0 by 1 shows them flat instead of NaN.
    return (cam - low) / torch.where(span > 0, span, torch.ones_like(span))


def _check_map(cam_hw: Tensor) -> None:
    if cam_hw.ndim != 2 or cam_hw.numel() == 0:
        raise ValueError(f"expected one non-empty [H, W] map, got shape {tuple(cam_hw.shape)}")


def peak_location(cam_hw: Tensor) -> tuple[int, int]:
    """Pixel of the map's maximum (first one in row-major order on ties).

    Args:
        cam_hw: One map ``Tensor[H, W]``, usually upsampled to the image size.

    Returns:
        ``(x, y)``: column and row in the map's pixel coordinates.

    Raises:
        ValueError: If the map is not 2-D and non-empty.
    """
    _check_map(cam_hw)
    row, col = divmod(int(cam_hw.argmax()), cam_hw.shape[1])
    return col, row


def area_above(cam_hw: Tensor, fraction: float = 0.5) -> float:
    """Fraction of pixels whose raw value is at least ``fraction * peak``.

    Measures how spread out the *positive* evidence is. When the peak is not positive
    the map holds no evidence for the class and the area is ``0.0``.

    Args:
        cam_hw: One raw map ``Tensor[H, W]``.
        fraction: Threshold relative to the peak, in ``(0, 1]``.

    Returns:
        Area fraction in ``[0, 1]``.

    Raises:
        ValueError: If ``fraction`` is out of range or the map is not 2-D and non-empty.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    _check_map(cam_hw)
    values = cam_hw.detach().cpu().numpy()  # numpy: one fused pass per step, no torch dispatch per op
    peak = values.max()
    if peak <= 0:
        return 0.0
    return np.count_nonzero(values >= fraction * peak) / values.size


def point_in_box(x: float, y: float, box: tuple[float, float, float, float]) -> bool:
    """Pointing-game hit test: is the point inside the box (edges included)?

    Args:
        x: Column of the point, e.g. from :func:`peak_location`.
        y: Row of the point.
        box: ``(x_min, y_min, x_max, y_max)`` in the same 0-based pixel frame as the point.

    Returns:
        True when the point lies inside the box or on its border.

    Raises:
        ValueError: If the box has ``x_min > x_max`` or ``y_min > y_max``.
    """
    x_min, y_min, x_max, y_max = box
    if x_min > x_max or y_min > y_max:
        raise ValueError(f"box must be (x_min, y_min, x_max, y_max) with min <= max, got {box}")
    return x_min <= x <= x_max and y_min <= y <= y_max


DISPLAYS = ("minmax", "relu", "signed")


def display_maps(cam: Tensor, mode: str = "minmax") -> Tensor:
    """Scales raw maps to ``[0, 1]`` for drawing, per map.

    Args:
        cam: Raw maps ``Tensor[..., h, w]``.
        mode: ``"minmax"``: min-max without ReLU (:func:`normalize_for_display`; blue is counter-evidence);
            ``"relu"``: negative values cut to 0, then divided by the peak (pytorch-grad-cam's look);
            ``"signed"``: ``0.5 + 0.5 * v / max|v|``, so 0.5 is zero evidence (draw with a diverging colormap).

    Returns:
        Same shape, float32 or wider, in ``[0, 1]``; a map without evidence becomes 0 (0.5 for signed).

    Raises:
        CatdogError: unknown mode.
    """
    if mode == "minmax":
        return normalize_for_display(cam)
    cam = cam.detach().to(_compute_dtype(cam))
    if mode == "relu":
        cam = cam.clamp(min=0)
        peak = cam.amax(dim=(-2, -1), keepdim=True)
        return cam / torch.where(peak > 0, peak, torch.ones_like(peak))
    if mode == "signed":
        scale = cam.abs().amax(dim=(-2, -1), keepdim=True)
        return 0.5 + 0.5 * cam / torch.where(scale > 0, scale, torch.ones_like(scale))
    raise CatdogError(f"display={mode} is unknown: choose one of {', '.join(DISPLAYS)}")


def display_levels(cam: np.ndarray, mode: str = "minmax") -> np.ndarray:
    """:func:`display_maps` as the colour levels an overlay draws: ``round(255 * display)`` as uint8.

    One scaling pass per map (``cv2.convertScaleAbs``, which rounds half to even as ``np.rint`` does)
    instead of a float pass per step: the overlay's per-pixel work at photo size is what explain adds
    to inference.

    Args:
        cam: Raw maps ``float [..., H, W]`` (already upsampled to the picture), finite.
        mode: As in :func:`display_maps`.

    Returns:
        ``uint8`` array of the same shape.

    Raises:
        CatdogError: unknown mode.
    """
    if mode not in DISPLAYS:
        raise CatdogError(f"display={mode} is unknown: choose one of {', '.join(DISPLAYS)}")
    maps = np.ascontiguousarray(cam, dtype=np.float32).reshape(-1, *cam.shape[-2:])
    levels = np.empty(maps.shape, dtype=np.uint8)
    for i, values in enumerate(maps):
        low, high = cv2.minMaxLoc(values)[:2]
        if mode == "minmax":  # (v - low) / span; a constant map is flat 0
            scale = 255.0 / (high - low) if high > low else 0.0
            offset = -low * scale
        elif mode == "relu":  # max(v, 0) / peak
            values = np.maximum(values, 0.0)
            scale, offset = (255.0 / high if high > 0 else 0.0), 0.0
        else:  # signed: 0.5 + 0.5 * v / max|v|
            bound = max(abs(low), abs(high))
            scale, offset = (127.5 / bound if bound > 0 else 0.0), 127.5
        levels[i] = cv2.convertScaleAbs(values, alpha=scale, beta=offset)  # values are >= 0 after scaling
    return levels.reshape(cam.shape)


def parse_threshold(value: object) -> str | float | None:
    """Validates ``threshold=``: None/``"none"`` (no contour), ``"otsu"``, or a fraction in ``(0, 1)``.

    Raises:
        CatdogError: anything else.
    """
    if value is None or str(value).strip().lower() in ("", "none", "null", "false"):
        return None
    text = str(value).strip().lower()
    if text == "otsu":
        return "otsu"
    try:
        fraction = float(text)
    except ValueError:
        fraction = math.nan
    if not 0 < fraction < 1:
        raise CatdogError(f"threshold={value} is invalid: use otsu, a fraction in (0, 1) such as 0.5, or null")
    return fraction


def strongest_region(display01: np.ndarray, threshold: str | float) -> tuple[np.ndarray, float]:
    """The connected region around the map's peak that lies above a threshold.

    Args:
        display01: One map ``[H, W]`` scaled to ``[0, 1]`` (:func:`display_maps`).
        threshold: ``"otsu"`` (Otsu's threshold of the map's 256 levels) or a fraction of the display
            range (``0.5``: half way between the map's lowest and highest display value).

    Returns:
        ``(mask, area)``: boolean ``[H, W]`` mask of the region containing the peak, and its share of the
        pixels. A flat map has no region: an empty mask and area 0.

    Raises:
        ValueError: If the map is not 2-D and non-empty.
    """
    display01 = np.asarray(display01, dtype=np.float32)
    if display01.ndim != 2 or display01.size == 0:
        raise ValueError(f"expected one non-empty [H, W] map, got shape {display01.shape}")
    low, high = float(display01.min()), float(display01.max())
    if high - low <= 1e-12:
        return np.zeros(display01.shape, dtype=bool), 0.0
    levels = np.rint((display01 - low) / (high - low) * 255).astype(np.uint8)
    if threshold == "otsu":
        level, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    else:
        level = float(threshold) * 255
    above = (levels > level).astype(np.uint8)
    _count, components = cv2.connectedComponents(above, connectivity=8)
    peak = np.unravel_index(int(np.argmax(levels)), levels.shape)
    mask = components == components[peak] if above[peak] else np.zeros(levels.shape, dtype=bool)
    return mask, float(mask.mean())
