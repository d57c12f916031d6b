"""Faithfulness of maps: does the model's output depend on what the map highlights? Opt-in, batched.

``metrics=[...]`` in explain picks any of:

- ``deletion`` / ``insertion`` (RISE, Petsiuk et al. 2018): remove the most salient pixels first
  (replaced by the normalised mean colour, 0) or insert them first into a blurred copy, in ``steps``
  equal steps, and take the area under the predicted class's probability curve. Low deletion and high
  insertion AUC are faithful. Own code: neither torchcam nor pytorch-grad-cam has them, and Quantus runs
  per sample on numpy; here all ``B * (steps + 1)`` perturbed inputs go through the model in batches.
- ``drop_increase`` (Grad-CAM++, Chattopadhay et al. 2018): multiply the input by the map (ReLU, scaled
  to a maximum of 1) and compare the probability: ``drop = max(0, p - p') / p`` and ``increase = p' > p``.
  The perturbation and batched forward are pytorch-grad-cam's ``CamMultImageConfidenceChange`` (it takes
  precomputed maps; torchcam's ``ClassificationMetric`` needs a torchcam extractor instead).
- ``sanity`` (Adebayo et al. 2018, model-parameter randomisation): the same method's map for the same
  class from the same architecture with re-initialised weights; ``sanity_rank_corr`` is the Spearman
  correlation of the two maps. A map that depends on what the model learned gives a low value.

Every metric explains the *predicted* class (column 0 of the maps). Cost per image, about: deletion and
insertion ``steps + 1`` forward passes each, drop_increase one, sanity one explain pass of the random model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from catdog.errors import CatdogError
from catdog.maps.explainers import Explainer, Explanation
from catdog.maps.geometry import CellCentres, randomized_copy
from catdog.quality.localization import spearman

__all__ = [
    "BASELINES",
    "METRICS",
    "Faithfulness",
    "curve_auc",
    "perturbation_baseline",
    "randomized_copy",
    "saliency_at",
    "saliency_rank",
]

METRICS = ("deletion", "insertion", "drop_increase", "sanity")
# What a perturbed pixel becomes: insertion's blurred copy, or deletion's 0 (the normalised mean colour).
BASELINES = ("blur", "mean")


def perturbation_baseline(x: Tensor, kind: str) -> Tensor:
    """The image a perturbation puts in place of removed pixels: ``blur`` (insertion's start) or ``mean`` (deletion's).

    Args:
        x: ``Tensor[B, 3, H, W]`` normalised model input.
        kind: one of :data:`BASELINES`.

    Raises:
        CatdogError: an unknown kind.
    """
    if kind == "blur":
        return _blur(x)
    if kind == "mean":
        return torch.zeros_like(x)
    raise CatdogError(f"baseline={kind} is unknown: choose one of {', '.join(BASELINES)}")


def saliency_at(maps: Tensor, size: tuple[int, int], centres: CellCentres | None) -> Tensor:
    """Maps ``[B, h, w]`` upsampled to the model input ``[B, H, W]`` with the overlays' geometry (bilinear without)."""
    if centres is None:
        return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return centres.upsample(maps, size)


def saliency_rank(saliency: Tensor) -> Tensor:
    """Each pixel's rank in its map, 0 = most salient: ``Tensor[B, 1, H, W]`` (ties broken by position)."""
    batch, height, width = saliency.shape
    return saliency.flatten(1).argsort(dim=1, descending=True).argsort(dim=1).view(batch, 1, height, width)


def curve_auc(curve: Tensor) -> Tensor:
    """Area under curves sampled at equal steps on ``[0, 1]`` (trapezoid rule).

    Args:
        curve: ``Tensor[B, steps + 1]``.

    Returns:
        ``Tensor[B]``.
    """
    if curve.shape[1] < 2:
        return curve[:, 0]
    return (curve[:, 1:] + curve[:, :-1]).sum(dim=1) / (2 * (curve.shape[1] - 1))


class Faithfulness:
    """Per-image faithfulness columns of a batch, from the maps an explainer already made.

    Args:
        model: the classifier (its forward gives logits), eval mode.
        metrics: names from :data:`METRICS`.
        centres: where map cells sit in the model input (the same geometry as the overlays).
        steps: deletion/insertion steps.
        batch_size: perturbed inputs per forward pass.
        random_explainer: the explainer on :func:`randomized_copy` of the model (``sanity``).

    Raises:
        CatdogError: an unknown metric name, or ``sanity`` without a random explainer.
    """

    def __init__(
        self,
        model: nn.Module,
        metrics: Sequence[str],
        centres: CellCentres | None = None,
        steps: int = 16,
        batch_size: int = 64,
        random_explainer: Explainer | None = None,
    ) -> None:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise CatdogError(
                f"metrics={list(metrics)}: unknown {', '.join(unknown)}; choose from {', '.join(METRICS)}"
            )
        if "sanity" in metrics and random_explainer is None:
            raise CatdogError("metrics=[sanity] needs the explainer of a randomised model")
        if steps < 1:
            raise CatdogError(f"faithfulness.steps={steps} must be >= 1")
        self.model = model
        self.metrics = tuple(metrics)
        self.centres = centres
        self.steps = steps
        self.batch_size = max(1, batch_size)
        self.random_explainer = random_explainer

    def columns(self, x: Tensor, explained: Explanation) -> list[dict[str, Any]]:
        """The batch's per-image columns (``deletion_auc``, ``insertion_auc``, ``drop``, ``increase``,
        ``sanity_rank_corr``).

        Args:
            x: ``Tensor[B, 3, S, S]`` the normalised model input the maps were made for.
            explained: the explainer's output for ``x``.

        Returns:
            One dict per image.
        """
        pred = explained.class_idx[:, 0]
        maps = explained.maps[:, 0].float()  # [B, h, w]
        probs = explained.logits.float().softmax(dim=1).gather(1, pred[:, None])[:, 0]
        saliency = self._saliency(maps, tuple(x.shape[-2:]))  # [B, S, S]
        cols: dict[str, Tensor] = {}
        if "deletion" in self.metrics:
            cols["deletion_auc"] = curve_auc(self._curve(x, saliency, pred, insertion=False))
        if "insertion" in self.metrics:
            cols["insertion_auc"] = curve_auc(self._curve(x, saliency, pred, insertion=True))
        if "drop_increase" in self.metrics:
            cols["drop"], cols["increase"] = self._drop_increase(x, saliency, pred, probs)
        if "sanity" in self.metrics:
            assert self.random_explainer is not None
            random = self.random_explainer.explain(x, true_labels=pred, topk=1).maps[:, -1].float()
            cols["sanity_rank_corr"] = torch.from_numpy(spearman(maps.cpu().numpy(), random.cpu().numpy()))
        rows = [{} for _ in range(x.shape[0])]
        for name, values in cols.items():
            for row, value in zip(rows, values.tolist()):
                row[name] = bool(value) if name == "increase" else round(float(value), 4)
        return rows

    def _saliency(self, maps: Tensor, size: tuple[int, int]) -> Tensor:
        return saliency_at(maps, size, self.centres)

    def _forward_probs(self, inputs: Tensor, classes: Tensor) -> Tensor:
        out = []
        with torch.inference_mode():
            for start in range(0, inputs.shape[0], self.batch_size):
                chunk = inputs[start : start + self.batch_size]
                logits = self.model(chunk).float()
                out.append(logits.softmax(dim=1).gather(1, classes[start : start + self.batch_size, None])[:, 0])
        return torch.cat(out)

    def _curve(self, x: Tensor, saliency: Tensor, pred: Tensor, insertion: bool) -> Tensor:
        """Probability of the predicted class after each step: ``Tensor[B, steps + 1]``."""
        batch, _, height, width = x.shape
        # Rank 0 = most salient pixel; step t keeps/inserts the t/steps most salient ones.
        rank = saliency_rank(saliency)
        total = height * width
        start = perturbation_baseline(x, "blur" if insertion else "mean")
        curves = []
        for t in range(self.steps + 1):
            chosen = rank < round(t * total / self.steps)  # [B, 1, H, W]
            perturbed = torch.where(chosen, x, start) if insertion else torch.where(chosen, start, x)
            curves.append(perturbed)
        inputs = torch.stack(curves, dim=1).flatten(0, 1)  # [B * (steps + 1), 3, H, W], image-major
        classes = pred.repeat_interleave(self.steps + 1)
        return self._forward_probs(inputs.contiguous(memory_format=_memory_format(x)), classes).view(batch, -1)

    def _drop_increase(self, x: Tensor, saliency: Tensor, pred: Tensor, probs: Tensor) -> tuple[Tensor, Tensor]:
        from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

        positive = saliency.clamp_min(0)
        scale = positive.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        cams = (positive / scale).numpy()
        targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in pred]
        # In float32: the library converts the model's outputs with .numpy(), which has no bfloat16.
        with torch.autocast(device_type=x.device.type, enabled=False):
            after = CamMultImageConfidenceChange()(x.float(), cams, targets, self.model, return_diff=False)
        after = torch.as_tensor(after, dtype=torch.float32).view(-1)
        drop = (probs - after).clamp_min(0) / probs.clamp_min(1e-12)
        return drop, after > probs


def _blur(x: Tensor) -> Tensor:
    """A strong Gaussian blur (sigma ~ 1/20 of the side): the insertion start image, as in RISE.

    In float32 with autocast off: a 67-tap depthwise convolution under CPU bf16 autocast takes
    minutes per batch (bench/RESULTS.md, "Numbers behind code comments").
    """
    sigma = max(1.0, x.shape[-1] / 20)
    radius = int(3 * sigma)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x32 = x.float()
        coords = torch.arange(-radius, radius + 1, dtype=x32.dtype, device=x.device)
        kernel = torch.exp(-(coords**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        channels = x.shape[1]
        out = F.pad(x32, (radius, radius, 0, 0), mode="replicate")
        out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
        out = F.pad(out, (0, 0, radius, radius), mode="replicate")
        out = F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return out.to(x.dtype)


def _memory_format(x: Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def build_faithfulness(
    model: nn.Module,
    metrics: Sequence[str],
    explainer_factory: Callable[[nn.Module], Explainer],
    centres: CellCentres | None,
    steps: int = 16,
    batch_size: int = 64,
) -> Faithfulness | None:
    """The :class:`Faithfulness` for explain's ``metrics=[...]``, or None when the list is empty.

    Args:
        model: the classifier network.
        metrics: names from :data:`METRICS`.
        explainer_factory: builds the same explainer for another network (the randomised one, ``sanity``).
        centres: the map geometry.
        steps: deletion/insertion steps.
        batch_size: perturbed inputs per forward pass.
    """
    if not metrics:
        return None
    random_explainer = explainer_factory(randomized_copy(model)) if "sanity" in metrics else None
    return Faithfulness(model, list(metrics), centres, steps, batch_size, random_explainer)
