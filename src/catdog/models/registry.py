"""The architecture registry: which torchvision classifiers catdog trains and explains, and their layers.

Exact Class Activation Maps need a network whose head is exactly
``feature map -> global average pool -> (dropout) -> Linear``: then the class score is the
spatial mean of ``fc.weight[c] @ feature_map``, and that per-position product *is* the map.
Other heads (ViT, Swin, ConvNeXt, MobileNetV3, VGG) are explained by gradient methods.
The registry (:func:`arch_spec`) is the one place that knows, per torchvision family, which
module outputs the feature map, which module is the final ``nn.Linear``, whether exact CAM
applies, how hooked outputs become ``NCHW`` maps, and which layers a grid shows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import get_close_matches

import torch
import torchvision
from torch import nn

from catdog.errors import CatdogError

# --------------------------------------------------------------------------------------------
# Architecture registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchSpec:
    """What catdog knows about one torchvision classifier: its head, its maps, its explainable layers.

    Attributes:
        name: torchvision builder name, e.g. ``"resnet18"``.
        feature_layer: dotted path of the module whose *output* feeds the pooled head (exact CAM hooks
            it), and the default layer of the gradient methods, e.g. ``"layer4"``. A path part may be
            a child's position (``encoder.layers.-1.ln_1``: the last encoder block's ``ln_1``).
        fc_layer: dotted path of the final ``nn.Linear`` (replaced by a new head for your classes).
        feature_relu: the model's ``forward()`` applies ``F.relu`` to the feature layer's output
            before pooling (densenet), so CAM must apply it too.
        not_exact: why exact CAM does not apply to this head, or None when it does.
        reshape: how a hooked output becomes an ``NCHW`` map: None (already is), ``"tokens"``
            (``[B, 1 + h*w, D]`` ViT tokens: class token dropped, patch tokens laid on their grid) or
            ``"channels_last"`` (``[B, h, w, C]`` Swin stage outputs).
        stages: the layers a ``grid=true`` picture shows, shallow to deep.
    """

    name: str
    feature_layer: str
    fc_layer: str
    feature_relu: bool = False
    not_exact: str | None = None
    reshape: str | None = None
    stages: tuple[str, ...] = ()

    @property
    def exact_cam(self) -> bool:
        """Whether exact CAM (``method=cam``) applies: the head is pool -> (dropout) -> one Linear."""
        return self.not_exact is None


@dataclass(frozen=True)
class _Family:
    feature_layer: str
    fc_layer: str
    feature_relu: bool = False
    not_exact: str | None = None
    reshape: str | None = None
    stages: tuple[str, ...] = ()


_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")

# Every torchvision classifier family catdog trains and explains, by builder-name prefix. Exact CAM
# applies where ``not_exact`` is None (checked against real logits in the tests); gradient methods
# apply to all. Longer prefixes first where one is the prefix of another (mobilenet_v3 vs mobilenet_v2).
_FAMILIES: dict[str, _Family] = {
    "resnet": _Family("layer4", "fc", stages=_RESNET_STAGES),
    "resnext": _Family("layer4", "fc", stages=_RESNET_STAGES),
    "wide_resnet": _Family("layer4", "fc", stages=_RESNET_STAGES),
    "mobilenet_v2": _Family("features", "classifier.1", stages=("features.3", "features.6", "features.13", "features")),
    "efficientnet_": _Family("features", "classifier.1", stages=("features.2", "features.3", "features.5", "features")),
    "densenet": _Family(
        "features", "classifier", True,
        stages=("features.denseblock1", "features.denseblock2", "features.denseblock3", "features"),
    ),
    "regnet_": _Family("trunk_output", "fc", stages=tuple(f"trunk_output.block{i}" for i in range(1, 5))),
    "mnasnet": _Family("layers", "classifier.1"),
    "shufflenet_v2": _Family("conv5", "fc", stages=("stage2", "stage3", "stage4", "conv5")),
    # Heads exact CAM cannot decompose: gradient methods only.
    "mobilenet_v3": _Family(
        "features", "classifier.3",
        not_exact="its head is pool -> Linear -> Hardswish -> Linear, not a single Linear",
        stages=("features.3", "features.6", "features.9", "features"),
    ),
    "convnext": _Family(
        "features", "classifier.2",
        not_exact="its head applies LayerNorm to the pooled features before the Linear",
        stages=("features.1", "features.3", "features.5", "features"),
    ),
    # Hook ln_1 of the last block: the block output only reaches the head through the class token,
    # so its patch tokens get zero gradient (all-zero Grad-CAM maps; pytorch-grad-cam's ViT tutorial).
    "vit_": _Family(
        "encoder.layers.-1.ln_1", "heads.head",
        not_exact="it is a vision transformer whose head reads a class token, not a pooled feature map",
        reshape="tokens",
        stages=("encoder.layers.2.ln_1", "encoder.layers.5.ln_1", "encoder.layers.8.ln_1", "encoder.layers.-1.ln_1"),
    ),
    "swin_": _Family(
        "norm", "head",
        not_exact="it is a transformer whose head applies LayerNorm before pooling",
        reshape="channels_last",
        stages=("features.1", "features.3", "features.5", "norm"),
    ),
    "vgg": _Family(
        "features", "classifier.6",
        not_exact="its head flattens a 7x7 map into fully connected layers instead of average pooling",
        stages=("features.4", "features.9", "features.19", "features"),
    ),
    "alexnet": _Family(
        "features", "classifier.6",
        not_exact="its head flattens a 6x6 map into fully connected layers instead of average pooling",
    ),
}

# Torchvision classifiers catdog does not build, and why.
_UNSUPPORTED: dict[str, str] = {
    "maxvit": "its head applies LayerNorm and an MLP to the pooled features and it needs 224 px input",
    "squeezenet": "its classifier is a 1x1 convolution followed by pooling, not a Linear layer to replace",
    "googlenet": "it returns auxiliary logits while training, which catdog does not handle",
    "inception_v3": "it returns auxiliary logits while training, which catdog does not handle",
}


def _family(name: str) -> str | None:
    """Returns the family prefix ``name`` belongs to, or None."""
    return next((prefix for prefix in _FAMILIES if name.startswith(prefix)), None)


def _families_hint() -> str:
    return ", ".join(f"{prefix.rstrip('_')}*" for prefix in _FAMILIES)


def _exact_families_hint() -> str:
    return ", ".join(f"{prefix.rstrip('_')}*" for prefix, fam in _FAMILIES.items() if fam.not_exact is None)


@functools.cache
def _supported() -> tuple[str, ...]:
    names = torchvision.models.list_models(module=torchvision.models)  # classifiers only
    return tuple(sorted(name for name in names if _family(name)))


def supported_archs(exact_cam: bool | None = None) -> list[str]:
    """Lists the torchvision classifier builder names that :func:`arch_spec` knows.

    Args:
        exact_cam: True: only those exact CAM applies to; False: only the others; None: all.

    Returns:
        Sorted builder names, e.g. ``["alexnet", "convnext_base", ..., "resnet18", ...]``.
    """
    return [n for n in _supported() if exact_cam is None or (_FAMILIES[_family(n)].not_exact is None) == exact_cam]


def arch_spec(name: str) -> ArchSpec:
    """Looks up an architecture's head, default explained layer, map reshape and grid stages.

    Args:
        name: a torchvision classifier builder name, e.g. ``"resnet18"`` (case-insensitive).

    Returns:
        The architecture's :class:`ArchSpec`; ``spec.exact_cam`` says whether exact CAM applies.

    Raises:
        CatdogError: the architecture is unknown or not supported by catdog.
    """
    key = str(name).strip().lower()
    if key in _supported():
        fam = _FAMILIES[_family(key)]
        return ArchSpec(key, fam.feature_layer, fam.fc_layer, fam.feature_relu, fam.not_exact, fam.reshape, fam.stages)
    reason = next((why for prefix, why in _UNSUPPORTED.items() if key.startswith(prefix)), None)
    if reason is not None:
        raise CatdogError(
            f"Architecture {name!r} is not supported because {reason}: choose one of the families "
            f"{_families_hint()} (e.g. resnet18)."
        )
    raise CatdogError(
        f"Unknown architecture {name!r}: choose a torchvision classifier from the families "
        f"{_families_hint()} (e.g. resnet18, mobilenet_v2, vit_b_16)."
    )


def require_exact_cam(spec: ArchSpec, gradient_methods: Sequence[str] = ("gradcam",)) -> None:
    """Raises the one-line reason why exact CAM does not apply to ``spec``, if it does not.

    Args:
        spec: the architecture.
        gradient_methods: method names to suggest instead.

    Raises:
        CatdogError: exact CAM cannot decompose this head.
    """
    if spec.not_exact is not None:
        raise CatdogError(
            f"method=cam (exact CAM) does not apply to {spec.name} because {spec.not_exact}: use a gradient "
            f"method such as method={gradient_methods[0]} ({', '.join(gradient_methods)}), or a model of the "
            f"families {_exact_families_hint()}."
        )


def tokens_to_grid(tensor: torch.Tensor) -> torch.Tensor:
    """ViT tokens ``[B, 1 + h*w, D]`` -> ``[B, D, h, w]``: the class token dropped, patches on their grid.

    Raises:
        CatdogError: the patch tokens do not form a square grid (not a ViT token sequence).
    """
    patches = tensor[:, 1:, :]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise CatdogError(
            f"the hooked layer returned {tensor.shape[1]} tokens, not a class token plus a square patch grid: "
            "choose a layer inside an encoder block (e.g. layer=encoder.layers.-1.ln_1)"
        )
    return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)


def reshape_transform(layout: str | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The function turning a family's hooked outputs into ``NCHW`` maps, or None when they are.

    Args:
        layout: an :attr:`ArchSpec.reshape` value (None, ``"tokens"``, ``"channels_last"``).

    Returns:
        The transform; 4-D outputs of a ViT (its patch embedding convolution) pass unchanged.
    """
    if layout == "tokens":
        return lambda t: tokens_to_grid(t) if t.ndim == 3 else t
    if layout == "channels_last":
        return lambda t: t.permute(0, 3, 1, 2) if t.ndim == 4 else t
    return None


def resolve_layer(model: nn.Module, layer: str) -> tuple[str, nn.Module]:
    """Finds a module by dotted name; a numeric part may also be a child's position (``-1``: the last).

    Args:
        model: the network (e.g. ``module.net``).
        layer: e.g. ``"layer3"``, ``"layer4.1.conv2"``, ``"features.14"``, ``"encoder.layers.-1.ln_1"``.

    Returns:
        ``(canonical dotted name, module)``.

    Raises:
        CatdogError: no such module; the message lists the closest names and the top-level candidates.
    """
    module, parts = model, []
    for part in str(layer).strip().split("."):
        children = dict(module.named_children())
        if part in children:
            module = children[part]
            parts.append(part)
            continue
        try:
            name, module = list(children.items())[int(part)]
        except (ValueError, IndexError):
            names = [n for n, _ in model.named_modules() if n]
            close = get_close_matches(str(layer), names, n=4)
            top = [n for n in names if "." not in n]
            raise CatdogError(
                f"layer={layer} is not a module of {type(model).__name__}: "
                + (f"closest {', '.join(close)}; " if close else "")
                + f"top-level modules {', '.join(top)} (any dotted name of model.named_modules() works)"
            ) from None
        parts.append(name)
    return ".".join(parts), module


def _as_spec(spec: ArchSpec | str) -> ArchSpec:
    return spec if isinstance(spec, ArchSpec) else arch_spec(spec)


def get_submodule(model: nn.Module, dotted: str) -> nn.Module:
    """Returns the submodule at a dotted path such as ``"classifier.1"``.

    Args:
        model: the model to look into.
        dotted: the module path, as in ``model.named_modules()``.

    Returns:
        The submodule.

    Raises:
        CatdogError: ``model`` has no such submodule (the model and the spec do not match).
    """
    return resolve_layer(model, dotted)[1]  # the one lookup by name (also used by cam and the explainers)


def feature_layer(model: nn.Module, spec: ArchSpec | str) -> nn.Module:
    """Returns the module whose output is the pre-pooling feature map (hook it for CAM).

    Args:
        model: a model built for ``spec``.
        spec: its :class:`ArchSpec`, or architecture name.

    Returns:
        The feature module. Apply ``F.relu`` to its output when ``spec.feature_relu``.
    """
    return resolve_layer(model, _as_spec(spec).feature_layer)[1]


def fc_layer(model: nn.Module, spec: ArchSpec | str) -> nn.Linear:
    """Returns the final ``nn.Linear`` whose weights turn the feature map into class maps.

    Args:
        model: a model built for ``spec``.
        spec: its :class:`ArchSpec`, or architecture name.

    Returns:
        The classification layer.

    Raises:
        CatdogError: the module at ``spec.fc_layer`` is not an ``nn.Linear``.
    """
    spec = _as_spec(spec)
    layer = get_submodule(model, spec.fc_layer)
    if not isinstance(layer, nn.Linear):
        raise CatdogError(
            f"{spec.name}'s {spec.fc_layer!r} is a {type(layer).__name__}, not nn.Linear: "
            "build the model with catdog.models.build_model."
        )
    return layer
