"""Where a feature cell's evidence comes from: measured cell centres, and maps placed by them.

A CAM cell is usually drawn as if it were centred at ``(n + 0.5) * stride`` of the input. Real
networks pad at the borders, so the evidence of a border cell comes from well inside the image
(ResNet18 layer4 at 224 px: cells 0/3/6 draw on ~48/100/161 px, not 16/112/208). This module
measures the centres with a gradient probe and uses them for both the peak and the overlay:

- ``align="cell"``: the usual grid, ``(n + 0.5) * S / n_cells - 0.5`` (bilinear upsampling,
  ``align_corners=False``);
- ``align="receptive_field"``: the centroid of ``|d cell / d input|`` over random inputs, measured
  once per architecture, layer and input size on randomly initialised weights (a property of the
  architecture's padding and strides, smooth and symmetric; a trained model's probe from two noise
  images is noisy), and cached. ``probe_weights="model"`` measures the model's own weights instead.

Both are the same :class:`CellCentres`; a map is upsampled by interpolating linearly between its
cells placed at their centres (flat beyond the outermost centres), which for ``align="cell"`` is
exactly bilinear ``align_corners=False`` upsampling.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from catdog.console import progress
from catdog.errors import CatdogError
from catdog.maps.cam import capture_features

__all__ = [
    "ALIGNMENTS",
    "CellCentres",
    "cell_centres",
    "grid_centres",
    "measure_centres",
    "randomized_copy",
    "weights_fingerprint",
]

ALIGNMENTS = ("cell", "receptive_field")


@dataclass(frozen=True)
class CellCentres:
    """Centres of a feature map's cells in the model input, 0-based pixel frame (pixel i's centre is i).

    Attributes:
        x: centre of each column, ``len == w``, increasing.
        y: centre of each row, ``len == h``, increasing.
        input_size: ``(H, W)`` of the model input the centres are in.
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    input_size: tuple[int, int]

    def scaled(self, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The centres in an image of ``size = (H, W)`` that was resized to the model input.

        Returns:
            ``(x, y)`` arrays in the image's 0-based pixel frame.
        """
        (in_h, in_w), (height, width) = self.input_size, size
        x = (np.asarray(self.x) + 0.5) * width / in_w - 0.5
        y = (np.asarray(self.y) + 0.5) * height / in_h - 0.5
        return x, y

    def peak(self, cam_hw: Tensor, size: tuple[int, int]) -> tuple[float, float]:
        """Where a raw map peaks in an image of ``size``: its strongest cell's centre.

        Args:
            cam_hw: one raw map ``Tensor[h, w]`` (same cells as the centres).
            size: the image's ``(H, W)``.

        Returns:
            ``(x, y)`` in the image's pixel frame.
        """
        self._check(cam_hw.shape[-2:])
        row, col = divmod(int(cam_hw.argmax()), cam_hw.shape[-1])
        x, y = self.scaled(size)
        return float(x[col]), float(y[row])

    def upsample(self, cams: Tensor, size: tuple[int, int]) -> Tensor:
        """Resizes maps to an image, interpolating linearly between cells placed at their centres.

        Args:
            cams: ``Tensor[..., h, w]`` maps.
            size: target ``(H, W)``.

        Returns:
            ``Tensor[..., H, W]`` float32 (or wider).
        """
        h, w = cams.shape[-2:]
        self._check((h, w))
        cx, cy = self.scaled(size)
        dtype = torch.promote_types(cams.dtype, torch.float32)
        # Bilinear interpolation is separable: rows, then columns, as two small matrix products
        # (the same numbers as grid_sample with border padding, at a fraction of its cost).
        rows = torch.from_numpy(_interpolation_matrix(cy, size[0])).to(cams.device, dtype)  # [H, h]
        cols = torch.from_numpy(_interpolation_matrix(cx, size[1])).to(cams.device, dtype)  # [W, w]
        with torch.autocast(device_type=cams.device.type, enabled=False):  # bf16 matmuls would round the map
            return rows @ cams.detach().to(dtype) @ cols.T

    def _check(self, hw: tuple[int, int] | torch.Size) -> None:
        if tuple(hw) != (len(self.y), len(self.x)):
            raise ValueError(f"map of {tuple(hw)} cells, but centres for {(len(self.y), len(self.x))}")


def _interpolation_matrix(centres: np.ndarray, length: int) -> np.ndarray:
    """Weights ``[length, n]`` that interpolate n cell values, placed at ``centres``, onto pixels 0..length-1.

    Each pixel mixes its two neighbouring cells linearly; beyond the outermost centres it takes that
    cell's value (flat), as ``grid_sample(padding_mode="border")`` does.
    """
    n = len(centres)
    if n == 1:
        return np.ones((length, 1), dtype=np.float32)
    position = np.interp(np.arange(length), centres, np.arange(n))  # fractional cell index, clamped
    left = np.minimum(np.floor(position).astype(np.int64), n - 2)
    frac = (position - left).astype(np.float32)
    weights = np.zeros((length, n), dtype=np.float32)
    pixels = np.arange(length)
    weights[pixels, left] = 1.0 - frac
    weights[pixels, left + 1] = frac
    return weights


def grid_centres(cells: tuple[int, int], input_size: tuple[int, int]) -> CellCentres:
    """The usual assumption: cell n is centred at ``(n + 0.5) * S / cells - 0.5`` (``align="cell"``).

    Args:
        cells: ``(h, w)`` of the feature map.
        input_size: ``(H, W)`` of the model input.

    Returns:
        The centres.
    """
    (h, w), (in_h, in_w) = cells, input_size
    return CellCentres(
        x=tuple((n + 0.5) * in_w / w - 0.5 for n in range(w)),
        y=tuple((n + 0.5) * in_h / h - 0.5 for n in range(h)),
        input_size=(in_h, in_w),
    )


def measure_centres(
    model: nn.Module,
    layer: str,
    input_size: tuple[int, int],
    samples: int = 2,
    seed: int = 0,
    describe: str | None = None,
) -> CellCentres:
    """Measures each cell row's and column's centre with a gradient probe (``align="receptive_field"``).

    For each column ``j`` of the feature map, backpropagates the sum of ``|features[:, :, :, j]|``
    to a batch of random inputs and takes the centroid of ``|gradient|`` along x; rows likewise.
    Separable (``h + w`` backward passes, not ``h * w``) because a column's evidence spreads over
    rows equally for all columns.

    Args:
        model: the classifier, in eval mode (its weights are not changed).
        layer: dotted name of the feature layer.
        input_size: ``(H, W)`` of the model input.
        samples: random inputs (standard normal, i.e. roughly normalised images).
        seed: seed of those inputs.
        describe: show a progress bar of the ``h + w`` backward passes with this description.

    Returns:
        The measured centres.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 3, *input_size, generator=generator)
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device)
    x.requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        kept: list[Tensor] = []
        # Our own hook: capture_features detaches, the probe needs the graph.
        handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: kept.append(out))
        try:
            with torch.enable_grad():
                model(x)
        finally:
            handle.remove()
        features = kept[-1]
        h, w = features.shape[-2:]
        magnitude = features.abs().sum(dim=(0, 1))  # [h, w]
        bar = progress(describe, h + w) if describe else contextlib.nullcontext(lambda steps=1: None)
        with bar as advance:
            centres = _probe_axes(x, magnitude, input_size, advance)
    finally:
        model.train(was_training)
    return CellCentres(x=centres[0], y=centres[1], input_size=tuple(input_size))


def _probe_axes(
    x: Tensor, magnitude: Tensor, input_size: tuple[int, int], advance: Callable[[int], None]
) -> list[tuple[float, ...]]:
    """The centroid of each column's (then each row's) input gradient, in increasing order."""
    h, w = magnitude.shape
    centres = []
    for axis, count in ((1, w), (0, h)):  # columns (x), then rows (y)
        coords = torch.arange(input_size[1] if axis == 1 else input_size[0], dtype=torch.float64)
        values = []
        for n in range(count):
            target = magnitude[:, n].sum() if axis == 1 else magnitude[n, :].sum()
            (grad,) = torch.autograd.grad(target, x, retain_graph=True)
            profile = grad.abs().sum(dim=(0, 1)).double()  # [H, W]
            profile = profile.sum(dim=0) if axis == 1 else profile.sum(dim=1)
            values.append(float((profile * coords).sum() / profile.sum().clamp_min(1e-30)))
            advance(1)
        # Cells are ordered: a noisy probe must not swap two neighbours' centres.
        centres.append(tuple(float(v) for v in np.maximum.accumulate(values)))
    return centres


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """The same architecture with every parameter and buffer re-initialised (seeded), in eval mode.

    Args:
        model: the trained model (not changed).
        seed: seed of the new weights.

    Returns:
        The copy.
    """
    clone = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
    finally:
        torch.random.set_rng_state(state)
    return clone.eval()


def weights_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's parameters (cache key: measured centres depend on the weights)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
    return digest.hexdigest()[:16]


def _cache_dir() -> Path:
    base = os.environ.get("CATDOG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "catdog"
    )
    return Path(base) / "geometry"


def cell_centres(
    model: nn.Module,
    layer: str,
    input_size: tuple[int, int],
    align: str = "cell",
    *,
    arch: str = "model",
    cache: bool = True,
    probe_weights: str = "random",
) -> CellCentres:
    """The cell centres for ``align``, measured once and cached per architecture, layer, size and weights.

    Args:
        model: the classifier.
        layer: dotted name of the feature layer.
        input_size: ``(H, W)`` of the model input.
        align: ``"cell"`` (grid) or ``"receptive_field"`` (measured).
        arch: architecture name, part of the cache file name.
        cache: read and write ``$CATDOG_CACHE`` (default ``~/.cache/catdog``)``/geometry/*.json``.
        probe_weights: ``"random"`` (the architecture, re-initialised: cached per architecture) or
            ``"model"`` (the model's own weights: cached per weights).

    Returns:
        The centres.

    Raises:
        CatdogError: unknown ``align``.
    """
    if align not in ALIGNMENTS:
        raise CatdogError(f"align={align} is not one of {', '.join(ALIGNMENTS)}")
    if align == "cell":
        with torch.no_grad(), capture_features(model, layer) as captured:
            param = next(model.parameters(), None)
            probe = torch.zeros(1, 3, *input_size, device=param.device if param is not None else None)
            was_training = model.training
            model.eval()
            model(probe)
            model.train(was_training)
        return grid_centres(tuple(captured.features.shape[-2:]), input_size)
    if probe_weights not in ("random", "model"):
        raise CatdogError(f"probe_weights={probe_weights} is not one of random, model")
    weights = "random" if probe_weights == "random" else weights_fingerprint(model)
    key = f"{arch}-{layer}-{input_size[0]}x{input_size[1]}-{weights}"
    file = _cache_dir() / f"{key}.json"
    if cache and file.is_file():
        try:
            data = json.loads(file.read_text())
            return CellCentres(x=tuple(data["x"]), y=tuple(data["y"]), input_size=tuple(data["input_size"]))
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is measured again and rewritten
    probe = randomized_copy(model) if probe_weights == "random" else model
    what = f"Measuring where {arch} {layer}'s map cells look at {input_size[0]}x{input_size[1]} px (once, cached)"
    centres = measure_centres(probe, layer, input_size, describe=what)
    if cache:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"x": centres.x, "y": centres.y, "input_size": centres.input_size}))
            os.replace(tmp, file)
        except OSError:
            pass  # a read-only home: measure again next time
    return centres
