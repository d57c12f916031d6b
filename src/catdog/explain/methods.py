"""The explainers of a loaded model: ``method=`` at ``layer=``, where their map cells sit, the grid's layers."""

from __future__ import annotations

import logging

import torch

from catdog.errors import CatdogError
from catdog.explain.settings import ExplainSettings
from catdog.maps.explainers import ExactCAM, Explainer, build_explainer
from catdog.maps.geometry import CellCentres, cell_centres, grid_centres
from catdog.models import ArchSpec, ClassifierModule, arch_spec
from catdog.models.imagenet import PretrainedClassifier

log = logging.getLogger(__name__)

__all__ = ["explainer_for", "grid_layers", "map_centres"]


def explainer_for(
    model: ClassifierModule | PretrainedClassifier,
    method: str | None = None,
    layer: str | None = None,
    contrast: str = "none",
    net: torch.nn.Module | None = None,
) -> Explainer:
    """The explainer for a loaded model: ``method=`` at ``layer=`` (defaults from the registry).

    ``contrast`` (exact CAM only): ``none`` (the exact per-class map), ``mean`` or ``runner_up`` (the
    identifiable map of a softmax head). ``net``: another network of the same architecture to explain (the
    randomised copy of ``metrics=[sanity]``).

    Exact CAM at its default layer uses the layer names stored in the checkpoint: they are what the model
    was trained and checked with, so a later registry change cannot silently move the CAM to another layer.

    Raises:
        CatdogError: unknown method or layer, or exact CAM where it does not apply.
    """
    target = net if net is not None else model.net
    explainer = build_explainer(target, model.hparams.arch, method, layer)
    if not isinstance(explainer, ExactCAM):
        if contrast != "none":
            raise CatdogError(f"contrast={contrast} applies to exact CAM only (method=cam), not method={method}")
        return explainer
    hp = model.hparams
    feature, fc, relu = explainer.layer, explainer.fc_name, explainer.feature_relu
    if layer is None and hp.get("feature_layer") and hp.get("fc_layer"):
        feature, fc = hp.feature_layer, hp.fc_layer
        relu = relu if hp.get("feature_relu") is None else bool(hp.feature_relu)
    return ExactCAM(target, feature, fc, feature_relu=relu, contrast=contrast)


def grid_layers(settings: ExplainSettings, spec: ArchSpec) -> list[str]:
    """The grid's columns: ``layers=``, else the registry's stages (ResNet: layer1..layer4)."""
    return list(settings.layers) if settings.layers else list(spec.stages or (spec.feature_layer,))


def map_centres(
    model: ClassifierModule | PretrainedClassifier, explainer: Explainer, size: tuple[int, int], align: str
) -> CellCentres:
    """Where the cells of ``explainer``'s maps sit in the model input (:mod:`catdog.maps.geometry`).

    Exact CAM's feature map is measured directly. Other methods may explain layers whose output is not an
    NCHW map (ViT tokens): their grid comes from the shape of one probe map, and ``receptive_field`` is used
    only where the layer's measured grid matches that shape (otherwise the cell grid, with a warning).
    """
    if isinstance(explainer, ExactCAM):
        return cell_centres(model.net, explainer.layer, size, align, arch=model.hparams.arch)
    probe = torch.zeros(1, 3, *size, device=next(model.net.parameters()).device)
    cells = tuple(explainer.explain(probe, None, topk=1).maps.shape[-2:])
    # Token (ViT) and channels-last (Swin) outputs are no NCHW maps to measure: their grid is the cells'.
    if align != "cell" and arch_spec(model.hparams.arch).reshape is None:
        try:
            measured = cell_centres(model.net, explainer.layer, size, align, arch=model.hparams.arch)
            if (len(measured.y), len(measured.x)) == cells:
                return measured
        except (TypeError, ValueError, RuntimeError, IndexError):
            pass
        log.warning("align=%s cannot be measured at layer %s: using align=cell", align, explainer.layer)
    return grid_centres(cells, size)
