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

:func:`build_explainer` picks the explainer for ``method=``/``layer=`` from the architecture registry
(:mod:`catdog.models`): exact CAM (:class:`ExactCAM`) where the head allows it, or any pytorch-grad-cam
method (:class:`GradCAMFamily`: gradcam, gradcam++, xgradcam, hirescam, layercam, eigencam, scorecam,
ablationcam) at any layer, with ViT tokens and Swin channels-last outputs reshaped to maps.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from catdog.errors import CatdogError
from catdog.maps.cam import (
    CONTRASTS,
    cam_logit_check,
    capture_features,
    class_activation_maps,
    contrast_weights,
    select_classes,
)
from catdog.models import arch_spec, require_exact_cam, reshape_transform, resolve_layer

__all__ = [
    "GRADIENT_METHODS",
    "METHODS",
    "PERTURBATION_COST",
    "PERTURBATION_METHODS",
    "ExactCAM",
    "Explainer",
    "Explanation",
    "GradCAMFamily",
    "build_explainer",
]


@dataclass
class Explanation:
    """What an explainer returns for one batch.

    Attributes:
        logits: ``Tensor[B, C]`` float32 model outputs.
        class_idx: ``Tensor[B, M]`` int64, the class of each map (layout of :func:`catdog.maps.cam.select_classes`).
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
        contrast: ``"none"`` (exact per-class map), ``"mean"`` or ``"runner_up"`` (identifiable map: the
            class row minus the mean row or the runner-up's row, see :func:`catdog.maps.cam.contrast_weights`).
    """

    method = "cam"

    def __init__(
        self, model: nn.Module, feature_layer: str, fc_layer: str, feature_relu: bool = False, contrast: str = "none"
    ) -> None:
        if contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
        self.contrast = contrast
        self.model = model
        self.layer, self.module = resolve_layer(model, feature_layer)
        self.fc_name = fc_layer
        self.fc = resolve_layer(model, fc_layer)[1]
        self.feature_relu = feature_relu

    def explain(self, images: Tensor, true_labels: Tensor | None = None, topk: int = 1) -> Explanation:
        with torch.inference_mode(), capture_features(self.model, self.module, relu=self.feature_relu) as captured:
            logits = self.model(images).float()
            class_idx = select_classes(logits, topk=topk, true_labels=true_labels)
            weights, reference = contrast_weights(self.fc.weight, class_idx, logits, self.contrast)
            maps = class_activation_maps(captured.features, self.fc.weight, class_idx, weights=weights).float()
            if reference is None:
                deviation = float(cam_logit_check(maps, self.fc.bias, logits, class_idx))
            else:
                deviation = float(self._contrast_check(maps, logits, class_idx, reference))
        # The largest |logit| scales what reduced precision may deviate (the pipeline's bf16 tolerance).
        stats = {"cam_logit_deviation": deviation, "logit_abs_max": float(logits.abs().max())}
        return Explanation(logits=logits, class_idx=class_idx, maps=maps, stats=stats)

    def _contrast_check(self, maps: Tensor, logits: Tensor, class_idx: Tensor, reference: Tensor) -> Tensor:
        """Self-check of a contrast map: its mean plus the bias difference is the logit difference."""
        bias = self.fc.bias.detach().double() if self.fc.bias is not None else torch.zeros(logits.shape[1]).double()
        logits = logits.double()
        if self.contrast == "mean":
            ref_logit, ref_bias = logits.mean(dim=1, keepdim=True), bias.mean()
        else:
            ref_logit, ref_bias = logits.gather(1, reference), bias[reference]
        predicted = maps.double().mean(dim=(-2, -1)) + bias[class_idx] - ref_bias
        return (predicted - (logits.gather(1, class_idx) - ref_logit)).abs().max()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "contrast": self.contrast}

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The Grad-CAM family through pytorch-grad-cam
# ---------------------------------------------------------------------------------------------
def _grad_cam_classes() -> dict[str, type]:
    """Method name -> pytorch-grad-cam class (imported lazily: exact CAM does not need the library)."""
    import pytorch_grad_cam as gc

    return {
        "gradcam": gc.GradCAM,
        "gradcam++": gc.GradCAMPlusPlus,
        "xgradcam": gc.XGradCAM,
        "hirescam": gc.HiResCAM,
        "layercam": gc.LayerCAM,
        "eigencam": gc.EigenCAM,
        "scorecam": gc.ScoreCAM,
        "ablationcam": gc.AblationCAM,
    }


# The order is the order of the grid picture's rows.
GRADIENT_METHODS: tuple[str, ...] = (
    "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam", "ablationcam",
)  # fmt: skip
METHODS: tuple[str, ...] = ("cam", *GRADIENT_METHODS)
# Methods whose map does not depend on the class: one map per image, repeated for every column.
_CLASS_AGNOSTIC = frozenset({"eigencam"})
# Methods that run extra forward passes per image and class: computed only for new (image, class) pairs.
_PERTURBATION = frozenset({"scorecam", "ablationcam"})
# What they cost (bench/RESULTS.md, ResNet18 layer4): said where catdog runs them on request only (grid=true).
PERTURBATION_METHODS: tuple[str, ...] = ("scorecam", "ablationcam")
PERTURBATION_COST = "one forward pass per channel of the layer (512 at ResNet layer4): ~100x the other methods"


@contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Score-CAM and Ablation-CAM draw a tqdm bar per image: silence them for the block."""
    import pytorch_grad_cam.ablation_cam as ablation
    import pytorch_grad_cam.score_cam as score

    class _NoBar:
        @staticmethod
        def tqdm(iterable: Any, *args: Any, **kwargs: Any) -> Any:
            return iterable

    saved = score.tqdm, ablation.tqdm
    score.tqdm = ablation.tqdm = _NoBar  # type: ignore[assignment]
    try:
        yield
    finally:
        score.tqdm, ablation.tqdm = saved


class GradCAMFamily(Explainer):
    """Any pytorch-grad-cam method at any layer, returning *raw* signed maps.

    pytorch-grad-cam's ``__call__`` returns ReLU'd, per-image min-max scaled maps at input size, which
    cannot be compared across images. This adapter uses the library's own per-method maths
    (``get_cam_image``, i.e. ``get_cam_weights`` x activations, or the method's own map) on the
    activations and gradients its ``ActivationsAndGradients`` captured, and stops before the ReLU and
    the scaling. Guards against the library's silent failures:

    - one forward per batch, then one target column at a time with exactly one target per image (a
      shorter target list makes ``zip`` drop images, whose maps come out all zero);
    - gradients via ``torch.autograd.grad`` to the hooked output only (no parameter gradients; works
      when parameters are frozen), and only for methods that use gradients;
    - hooks removed and the model's train/eval mode restored in ``finally`` (the library's ``with``
      block swallows exceptions; it is not used), and a layer swapped out by Ablation-CAM put back.

    Args:
        model: the classifier (``nn.Module``).
        method: one of :data:`GRADIENT_METHODS`.
        layer: dotted name of the explained module (see :func:`catdog.models.resolve_layer`).
        layout: the family's output layout (:attr:`catdog.models.ArchSpec.reshape`): None for ``NCHW``,
            ``"tokens"`` (ViT) or ``"channels_last"`` (Swin); their outputs are reshaped to ``[B, C, h, w]``.
        perturbation_batch: forward batch of Score-CAM and Ablation-CAM's masked/ablated copies.

    Raises:
        CatdogError: unknown method or layer.
    """

    def __init__(
        self,
        model: nn.Module,
        method: str,
        layer: str,
        layout: str | None = None,
        perturbation_batch: int = 64,
    ) -> None:
        classes = _grad_cam_classes()
        if method not in classes:
            raise CatdogError(f"method={method} is unknown: choose one of {', '.join(METHODS)}")
        if method == "ablationcam" and layout == "channels_last":
            raise CatdogError(
                "method=ablationcam cannot ablate channels of channels-last (Swin) outputs: use method=scorecam "
                "or a gradient method"
            )
        self.model = model
        self.method = method
        self.layer, self.module = resolve_layer(model, layer)
        self.layout = layout
        self.reshape: Callable[[Tensor], Tensor] | None = reshape_transform(layout)
        self.perturbation_batch = perturbation_batch
        self._cls = classes[method]
        self.uses_gradients = method not in _CLASS_AGNOSTIC | _PERTURBATION

    def _new_cam(self) -> Any:
        kwargs: dict[str, Any] = {"reshape_transform": self.reshape}
        if self.method == "ablationcam":
            from pytorch_grad_cam import AblationLayer, AblationLayerVit

            # A fresh ablation layer per call (the library's default instance is shared between objects).
            kwargs["ablation_layer"] = AblationLayerVit() if self.layout == "tokens" else AblationLayer()
            kwargs["batch_size"] = self.perturbation_batch
        cam = self._cls(self.model, [self.module], **kwargs)
        cam.batch_size = self.perturbation_batch  # Score-CAM reads it when present
        return cam

    def explain(self, images: Tensor, true_labels: Tensor | None = None, topk: int = 1) -> Explanation:
        return self._run(images, lambda logits: select_classes(logits, topk=topk, true_labels=true_labels))

    def _run(self, images: Tensor, choose: Callable[[Tensor], Tensor]) -> Explanation:
        was_training = self.model.training
        raw: list[Tensor] = []
        handle = self.module.register_forward_hook(lambda _m, _i, out: raw.append(out))
        cam = None
        try:
            self.model.eval()
            with torch.inference_mode(False), torch.set_grad_enabled(self.uses_gradients):
                cam = self._new_cam()  # registers the library's hooks (and sets eval mode)
                x = images.detach().clone()
                if self.uses_gradients:
                    x.requires_grad_(True)  # the hooked output needs a graph even with frozen parameters
                outputs = cam.activations_and_grads(x)
                if not raw or not isinstance(raw[-1], Tensor):
                    raise CatdogError(
                        f"layer={self.layer} returned {type(raw[-1]).__name__ if raw else 'nothing'}, not a "
                        "tensor: choose a layer whose output is a feature map (e.g. a block, not its attention)"
                    )
                logits = outputs.detach().float()
                class_idx = choose(logits)
                activations = cam.activations_and_grads.activations[-1].float().numpy()
                if activations.ndim != 4:
                    raise CatdogError(
                        f"layer={self.layer} gives {activations.ndim}-D outputs, not [B, C, h, w] maps: choose a "
                        "convolutional block (or, for a transformer, a layer inside an encoder block)"
                    )
                with _quiet_progress_bars():
                    maps = self._maps(cam, x, outputs, raw[-1], activations, class_idx)
                if self.uses_gradients and maps.numel() and not maps.any():
                    log.warning(
                        "%s at layer=%s gave all-zero maps: its output may reach the head only through a class "
                        "token (a ViT block's output); hook a sub-module such as encoder.layers.-1.ln_1",
                        self.method,
                        self.layer,
                    )
        finally:
            handle.remove()
            if cam is not None:
                cam.activations_and_grads.release()
                self._restore_ablated_layer(cam)
            self.model.train(was_training)
        return Explanation(logits=logits, class_idx=class_idx, maps=maps)

    def _maps(
        self, cam: Any, x: Tensor, outputs: Tensor, hooked: Tensor, activations: np.ndarray, class_idx: Tensor
    ) -> Tensor:
        """Raw maps ``[B, M, h, w]``, one target column at a time."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        batch, columns = class_idx.shape
        if batch != x.shape[0]:  # zip() would drop the images without a target: their maps stay zero
            raise CatdogError(f"one target per image: got {batch} target rows for {x.shape[0]} images")
        maps = np.zeros((batch, columns, *activations.shape[2:]), dtype=np.float32)
        if self.method in _CLASS_AGNOSTIC:
            maps[:] = cam.get_cam_image(x.detach(), self.module, None, activations, None, False)[:, None]
            return torch.from_numpy(maps)
        for column in range(columns):
            classes = class_idx[:, column].tolist()
            # An (image, class) pair already mapped in an earlier column is copied, not recomputed.
            done = [next((c for c in range(column) if int(class_idx[b, c]) == classes[b]), None) for b in range(batch)]
            todo = [b for b in range(batch) if done[b] is None]
            for b in range(batch):
                if done[b] is not None:
                    maps[b, column] = maps[b, done[b]]
            if not todo:
                continue
            if self.uses_gradients:
                targets = [ClassifierOutputTarget(c) for c in classes]
                cam.activations_and_grads.gradients = []
                score = sum(target(output) for target, output in zip(targets, outputs, strict=True))
                torch.autograd.grad(score, hooked, retain_graph=True)  # fills the library's gradient hook
                grads = cam.activations_and_grads.gradients[0].float().numpy()
                column_maps = cam.get_cam_image(x.detach(), self.module, targets, activations, grads, False)
                maps[todo, column] = column_maps[todo]
            else:  # perturbation methods: only the images that need this column
                targets = [ClassifierOutputTarget(classes[b]) for b in todo]
                sub = x.detach()[todo]
                with torch.no_grad():
                    maps[todo, column] = cam.get_cam_image(sub, self.module, targets, activations[todo], None, False)
        return torch.from_numpy(maps)

    def _restore_ablated_layer(self, cam: Any) -> None:
        """Ablation-CAM swaps the layer for its ablation layer; put the original back if an error left it."""
        ablation = getattr(cam, "ablation_layer", None)
        if ablation is not None and any(m is ablation for m in self.model.modules()):
            from pytorch_grad_cam.utils.find_layers import replace_layer_recursive

            replace_layer_recursive(self.model, ablation, self.module)


def build_explainer(
    model: nn.Module, arch: str, method: str | None = None, layer: str | None = None
) -> Explainer:
    """The explainer for ``method=`` and ``layer=`` on a torchvision classifier of architecture ``arch``.

    Args:
        model: the network (e.g. ``ClassifierModule.net``).
        arch: its torchvision builder name (the registry supplies head, default layer and reshape).
        method: one of :data:`METHODS`; None: exact CAM where the head allows it, else Grad-CAM.
        layer: any module name; None: the registry's default layer.

    Returns:
        :class:`ExactCAM` or :class:`GradCAMFamily`.

    Raises:
        CatdogError: unknown method or layer; exact CAM on a head or layer it cannot decompose.
    """
    spec = arch_spec(arch)
    if method is None:
        method = "cam" if spec.exact_cam else "gradcam"
    method = str(method).strip().lower()
    if method not in METHODS:
        raise CatdogError(f"method={method} is unknown: choose one of {', '.join(METHODS)}")
    if method == "cam":
        require_exact_cam(spec, GRADIENT_METHODS)
        if layer is not None:
            name = resolve_layer(model, str(layer))[0]
            default = resolve_layer(model, spec.feature_layer)[0]
            if name != default:
                raise CatdogError(
                    f"exact CAM (method=cam) only applies to {default}, the layer pooled into the head, not "
                    f"layer={layer}: use a gradient method for other layers, e.g. method=gradcam "
                    f"({', '.join(GRADIENT_METHODS)})"
                )
        return ExactCAM(model, spec.feature_layer, spec.fc_layer, feature_relu=spec.feature_relu)
    return GradCAMFamily(model, method, str(layer) if layer is not None else spec.feature_layer, spec.reshape)
