"""The explainer seam: one interface from a batch of images to logits and raw class maps.

Every explanation method (exact CAM here; the gradient CAM family through pytorch-grad-cam) is an
:class:`Explainer`. The explain pipeline only calls :meth:`Explainer.explain` and never needs to know
which method runs::

    explainer = ExactCAM(model.net, feature_layer="layer4", fc_layer="fc")
    out = explainer.explain(images, true_labels=labels, topk=1)
    out.logits     # [B, C] float32
    out.class_idx  # [B, M] classes mapped: top-k predictions, then the true class (see select_classes)
    out.maps       # [B, M, h, w] raw signed maps, float32 (no ReLU, no normalization)

Each explainer owns its gradient mode: exact CAM runs under ``torch.inference_mode``; methods that need
gradients enable them themselves. The caller wraps the call in autocast if it wants mixed precision.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from catdog.cam import cam_logit_check, capture_features, class_activation_maps, resolve_layer, select_classes

__all__ = ["ExactCAM", "Explainer", "Explanation"]


@dataclass
class Explanation:
    """What an explainer returns for one batch.

    Attributes:
        logits: ``Tensor[B, C]`` float32 model outputs.
        class_idx: ``Tensor[B, M]`` int64, the class of each map (layout of :func:`catdog.cam.select_classes`).
        maps: ``Tensor[B, M, h, w]`` float32 raw maps at the explained layer's resolution.
        stats: per-batch numbers the pipeline aggregates (e.g. ``cam_logit_deviation``).
    """

    logits: Tensor
    class_idx: Tensor
    maps: Tensor
    stats: dict[str, float] = field(default_factory=dict)


class Explainer(ABC):
    """A method that maps a batch of images to logits and one raw map per selected class.

    Attributes:
        method: the name users pass as ``method=`` (e.g. ``"cam"``).
        layer: dotted name of the explained module (e.g. ``"layer4"``).
    """

    method: str = ""
    layer: str = ""

    @abstractmethod
    def explain(self, images: Tensor, true_labels: Tensor | None = None, topk: int = 1) -> Explanation:
        """Explain one batch.

        Args:
            images: ``Tensor[B, 3, H, W]`` normalized model input.
            true_labels: ``Tensor[B]`` true classes, ``-1`` for unknown; None when no labels exist.
            topk: maps for the top-k predicted classes (plus the true class when labels are given).

        Returns:
            The batch's :class:`Explanation`.
        """

    def describe(self) -> dict[str, Any]:
        """What goes into summary.json and cams.npz about the method."""
        return {"method": self.method, "layer": self.layer}


class ExactCAM(Explainer):
    """Exact Class Activation Maps (Zhou et al. 2016) from the fc weights: one forward pass, no gradients.

    Args:
        model: the classifier (``nn.Module``), in eval mode.
        feature_layer: dotted name of the module whose output is pooled into the linear head.
        fc_layer: dotted name of that ``nn.Linear``.
        feature_relu: the model applies a ReLU between the feature layer and the pooling (densenet).
    """

    method = "cam"

    def __init__(self, model: nn.Module, feature_layer: str, fc_layer: str, feature_relu: bool = False) -> None:
        self.model = model
        self.layer = feature_layer
        self.fc = resolve_layer(model, fc_layer)
        self.feature_relu = feature_relu

    def explain(self, images: Tensor, true_labels: Tensor | None = None, topk: int = 1) -> Explanation:
        with torch.inference_mode(), capture_features(self.model, self.layer, relu=self.feature_relu) as captured:
            logits = self.model(images).float()
            class_idx = select_classes(logits, topk=topk, true_labels=true_labels)
            maps = class_activation_maps(captured.features, self.fc.weight, class_idx).float()
            deviation = float(cam_logit_check(maps, self.fc.bias, logits, class_idx))
        return Explanation(logits=logits, class_idx=class_idx, maps=maps, stats={"cam_logit_deviation": deviation})
