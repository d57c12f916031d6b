"""``grid=true``: ``grid/<image>.jpg``, one picture per image of every method (rows) at every layer (columns)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from catdog.console import progress
from catdog.data import BadImageError, build_transform, load_rgb
from catdog.errors import CatdogError
from catdog.explain.methods import explainer_for, grid_layers
from catdog.explain.render import OverlayStyle, overlay_names
from catdog.explain.settings import ExplainSettings
from catdog.maps.cam import display_maps, upsample_cams
from catdog.maps.explainers import METHODS, PERTURBATION_COST, PERTURBATION_METHODS
from catdog.models import ArchSpec, ClassifierModule, arch_spec, resolve_layer
from catdog.models.imagenet import PretrainedClassifier
from catdog.overlay import draw_label, heatmap_overlay, image_grid, save_image

__all__ = ["write_grids"]


def write_grids(
    model: ClassifierModule | PretrainedClassifier,
    images: pd.DataFrame,
    out_dir: Path,
    settings: ExplainSettings,
    style: OverlayStyle,
) -> list[str]:
    """``grid/<image>.jpg``: every method (rows) at every layer (columns), the predicted class's map.

    Layers: ``layers=`` or the registry's stages (ResNet: layer1..layer4). Methods: ``grid_methods=`` or
    all that apply and run in seconds (exact CAM only on heads it decomposes, and only at its own layer:
    other cells say so; Score-CAM and Ablation-CAM only when named). A progress bar per image.

    Returns:
        The written files, relative to ``out_dir``.
    """
    hp = model.hparams
    spec = arch_spec(hp.arch)
    layers = grid_layers(settings, spec)
    methods = _grid_methods(settings, spec)
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    written = []
    paths = images["path"].head(settings.grid_images).tolist()
    for path, name in zip(paths, overlay_names(paths)):
        try:
            rgb = load_rgb(path)
        except BadImageError:
            continue
        x = transform(rgb)[None].contiguous(memory_format=torch.channels_last)
        tiles, captions = [], []
        cells = [(method, layer) for method in methods for layer in layers]
        title = f"grid/ of {Path(path).name}: {len(methods)} methods x {len(layers)} layers"
        with progress(title, len(cells)) as advance:
            for method, layer in cells:
                tile, caption = _grid_tile(model, method, layer, x, rgb, style)
                tiles.append(tile)
                captions.append(caption)
                advance(1)
        rel = f"grid/{name}.jpg"
        save_image(out_dir / rel, image_grid(tiles, captions, ncols=len(layers), tile_size=192), quality=style.quality)
        written.append(rel)
    return written


def _grid_methods(settings: ExplainSettings, spec: ArchSpec) -> list[str]:
    """``grid_methods=``, else every method that applies and runs in seconds (Score-CAM and Ablation-CAM only
    when asked: their cost is printed either way)."""
    if settings.grid_methods:
        methods = list(settings.grid_methods)
        slow = [m for m in methods if m in PERTURBATION_METHODS]
        if slow:
            print(f"grid: {', '.join(slow)} take {PERTURBATION_COST}; minutes per image on a CPU")
        return methods
    methods = [m for m in METHODS if (m != "cam" or spec.exact_cam) and m not in PERTURBATION_METHODS]
    print(
        f"grid: {', '.join(methods)}; {' and '.join(PERTURBATION_METHODS)} left out ({PERTURBATION_COST}): "
        f"add them with grid_methods=[{','.join(methods + list(PERTURBATION_METHODS))}]"
    )
    return methods


def _grid_tile(
    model: ClassifierModule | PretrainedClassifier,
    method: str,
    layer: str,
    x: torch.Tensor,
    rgb: np.ndarray,
    style: OverlayStyle,
) -> tuple[np.ndarray, str]:
    """One cell of a grid: ``method``'s map of the predicted class at ``layer`` over the photo, and its caption."""
    spec = arch_spec(model.hparams.arch)
    try:
        explainer = explainer_for(model, method, layer)
    except CatdogError:
        if method != "cam":
            raise
        exact_at = resolve_layer(model.net, spec.feature_layer)[0]
        return draw_label(np.full_like(rgb, 24), f"exact CAM: {exact_at} only"), f"{method} @ {layer}\nn/a"
    out = explainer.explain(x, None, topk=1)
    cls = int(out.class_idx[0, 0])
    shown = display_maps(upsample_cams(out.maps[0, :1], rgb.shape[:2]), style.display)[0].numpy()
    colormap = "diverging" if style.display == "signed" else "jet"
    prob = float(out.logits.softmax(dim=1)[0, cls])
    caption = f"{method} @ {layer}\n{style.class_names[cls]} {100 * prob:.1f}%"
    return heatmap_overlay(rgb, shown, style.alpha, colormap), caption
