"""Image classifiers: which torchvision architectures catdog trains and explains, how to build and train them.

Exact Class Activation Maps need a network whose head is exactly
``feature map -> global average pool -> (dropout) -> Linear``: then the class score is the
spatial mean of ``fc.weight[c] @ feature_map``, and that per-position product *is* the map.
Other heads (ViT, Swin, ConvNeXt, MobileNetV3, VGG) are explained by gradient methods.
The architecture registry (:func:`arch_spec`) is the one place that knows, per torchvision
family, which module outputs the feature map, which module is the final ``nn.Linear``, whether
exact CAM applies, how hooked outputs become ``NCHW`` maps, and which layers a grid shows.

Modules: :mod:`catdog.models.registry` (architecture families, default layers, reshape, head
lookup), :mod:`catdog.models.weights` (torchvision weights, local weights files, download
failures), :mod:`catdog.models.module` (the LightningModule, optimizers and schedulers).

Public API (importable from ``catdog.models``):
    - :class:`ArchSpec`, :func:`arch_spec`, :func:`supported_archs`, :func:`require_exact_cam`,
      :func:`resolve_layer`, :func:`reshape_transform`: the registry.
    - :func:`build_model`, :func:`default_normalization`: torchvision models with a new head,
      from scratch, from torchvision weights, or from a local state dict file.
    - :func:`get_submodule`, :func:`feature_layer`, :func:`fc_layer`: the layers CAM hooks into.
    - :class:`ClassifierModule`, :func:`load_classifier`: training and reloading checkpoints;
      ``TTA_MODES``: the test-time augmentations of ``ClassifierModule.set_tta``.
    - :class:`EMAWeights`: the callback that validates, saves and tests an EMA of the weights.
    - :func:`fold_batchnorm`: fold inference BatchNorm into the convolutions before it (explain).
"""

from catdog.models.ema import EMAWeights
from catdog.models.fusion import fold_batchnorm
from catdog.models.module import (
    DEFAULT_OPTIMIZER,
    TTA_MODES,
    ClassifierModule,
    load_classifier,
)
from catdog.models.registry import (
    ArchSpec,
    arch_spec,
    fc_layer,
    feature_layer,
    get_submodule,
    require_exact_cam,
    reshape_transform,
    resolve_layer,
    supported_archs,
    tokens_to_grid,
)
from catdog.models.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_model,
    default_normalization,
)
from catdog.models.weights import (
    _torch_load as _torch_load,  # catdog.pipelines.train reads checkpoints with it
)

__all__ = [
    "DEFAULT_OPTIMIZER",
    "TTA_MODES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ArchSpec",
    "ClassifierModule",
    "EMAWeights",
    "arch_spec",
    "build_model",
    "default_normalization",
    "fc_layer",
    "feature_layer",
    "fold_batchnorm",
    "get_submodule",
    "load_classifier",
    "require_exact_cam",
    "reshape_transform",
    "resolve_layer",
    "supported_archs",
    "tokens_to_grid",
]
