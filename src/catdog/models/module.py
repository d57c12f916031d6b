"""The LightningModule that trains a classifier (optimizers, schedulers, metrics), and reloading its checkpoints."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import hydra.utils
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassPrecision,
    MulticlassRecall,
)

from catdog.errors import CatdogError, one_line
from catdog.models.registry import ArchSpec, arch_spec, fc_layer, get_submodule
from catdog.models.weights import (
    _mismatch,
    _torch_load,
    build_model,
    default_normalization,
    weights_left_uninitialised,
)

DEFAULT_OPTIMIZER: dict[str, Any] = {"_target_": "torch.optim.AdamW", "lr": 1e-3}

TTA_MODES: tuple[str, ...] = ("none", "hflip")

# How often a scheduler config without "interval" is stepped (Lightning's own default): every
# conf/scheduler/*.yaml sets it; this is for hand-made configs and the checkpoints that hold them.
SCHEDULER_INTERVAL = "epoch"

_TRAIN_SCRIPT_HINT = "pass the best.ckpt/last.ckpt written by scripts/train.py"


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _to_plain(value: Any, name: str) -> Any:
    """Converts a config value to plain Python types, so checkpoints load with weights_only=True.

    Raises:
        CatdogError: the value holds something else (an object, a tensor...).
    """
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_to_plain(v, f"{name}[{i}]") for i, v in enumerate(value)]
    raise CatdogError(
        f"{name} must hold plain values (str, int, float, bool, null, lists, dicts), "
        f"got a {type(value).__name__}: fix that config value."
    )


# Which classes an optimizer/scheduler ``_target_`` may name. A checkpoint's hyper-parameters are
# instantiated when training resumes from it, so an arbitrary callable there (``os.system``)
# would run code from a downloaded file: only torch's own optimizers and schedulers are allowed.
_TARGET_MODULES: dict[str, tuple[Any, tuple[type, ...]]] = {
    "optimizer": (torch.optim, (torch.optim.Optimizer,)),
    "scheduler": (
        torch.optim.lr_scheduler,
        (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau),
    ),
}


def _allowed_target(target: Any, name: str) -> bool:
    """Whether ``target`` names a torch optimizer (``name="optimizer"``) or LR scheduler class."""
    module, bases = _TARGET_MODULES[name]
    if not isinstance(target, str):
        return False
    prefix = module.__name__ + "."
    # torch.optim.AdamW or torch.optim.lr_scheduler.OneCycleLR; looked up, never imported.
    attribute = target[len(prefix) :] if target.startswith(prefix) else None
    if name == "scheduler" and attribute is None and target.startswith("torch.optim."):
        return False
    candidate = getattr(module, attribute, None) if attribute and "." not in attribute else None
    return isinstance(candidate, type) and issubclass(candidate, bases)


def _reject_targets(value: Any, name: str) -> None:
    """Refuses a ``_target_`` anywhere in ``value``: Hydra instantiates nested ones too, so below the
    allow-listed top level of an optimizer/scheduler config one would run any callable (``builtins.open``).

    Raises:
        CatdogError: a mapping at any depth holds a ``_target_`` key.
    """
    if isinstance(value, Mapping):
        if "_target_" in value:
            raise CatdogError(
                f"{name} holds a _target_ ({value['_target_']!r}): only the top level of the optimizer and "
                "scheduler configs may name a class; give plain values here (a checkpoint is data)"
            )
        for key, item in value.items():
            _reject_targets(item, f"{name}.{key}")
    elif isinstance(value, (list, tuple, ListConfig)):
        for i, item in enumerate(value):
            _reject_targets(item, f"{name}[{i}]")


def check_hparams_are_data(hparams: Any) -> dict[str, Any]:
    """A checkpoint's hyper-parameters as a dict with no ``_target_`` outside the allow-list.

    Only ``optimizer._target_`` and ``scheduler._target_`` may name a class (checked against the allow-list
    by :func:`_check_target_config`); everything else is plain data at every depth.

    Raises:
        CatdogError: not a mapping, or a ``_target_`` anywhere else.
    """
    if not isinstance(hparams, Mapping):
        raise CatdogError(
            f"the checkpoint's hyper_parameters are a {type(hparams).__name__}, not a mapping: {_TRAIN_SCRIPT_HINT}."
        )
    for key, value in hparams.items():
        if key in ("optimizer", "scheduler") and isinstance(value, Mapping):
            for inner, item in value.items():
                if inner != "_target_":
                    _reject_targets(item, f"{key}.{inner}")
        else:
            _reject_targets(value, str(key))
    return dict(hparams)


def _check_target_config(cfg: Any, name: str, allowed_only: bool = True) -> dict[str, Any] | None:
    """Validates an optimizer/scheduler config: None/empty, or a dict with an allowed ``_target_``.

    Raises:
        CatdogError: not a mapping, no ``_target_``, or a ``_target_`` that is not a torch
            optimizer (``torch.optim.*``) / LR scheduler (``torch.optim.lr_scheduler.*``) class.
    """
    cfg = _to_plain(cfg, name)
    if not cfg:
        return None
    if not isinstance(cfg, dict) or "_target_" not in cfg:
        raise CatdogError(
            f"{name} must be a mapping with a _target_ (e.g. _target_: torch.optim.AdamW), "
            f"got {cfg!r}: fix the {name} config."
        )
    if allowed_only and not _allowed_target(cfg["_target_"], name):
        where = "torch.optim" if name == "optimizer" else "torch.optim.lr_scheduler"
        raise CatdogError(
            f"{name}._target_={cfg['_target_']!r} is not a {where} class: only torch's own "
            f"{name}s are instantiated (also from checkpoints); use one of {where}.*"
        )
    for key in ("_partial_", "_recursive_", "_args_", "_convert_"):
        if key in cfg:
            raise CatdogError(f"{name}.{key} is not supported: remove it from the {name} config")
    for key, value in cfg.items():
        if key != "_target_":
            _reject_targets(value, f"{name}.{key}")
    return cfg


def _normalization(values: Any, name: str) -> list[float] | None:
    """Validates a mean or std setting: None, or 3 finite numbers (a std's positive: images are divided by it)."""
    values = _to_plain(values, name)
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != 3 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise CatdogError(
            f"{name} must be 3 numbers (finite, one per RGB channel), got {values!r}: fix model.{name}."
        )
    if name == "std" and min(values) <= 0:
        raise CatdogError(f"std must be 3 positive numbers (images are divided by it), got {values!r}: fix model.std.")
    return [float(v) for v in values]


IMAGE_SIZE_RANGE = (16, 4096)  # pixels per side: below, the backbones' feature map vanishes; above, memory does


def _image_size(value: Any) -> int:
    """Validates image_size: an integer side length in IMAGE_SIZE_RANGE."""
    low, high = IMAGE_SIZE_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CatdogError(f"image_size must be an integer from {low} to {high}, got {value!r}: fix data.image_size.")
    return value


def check_finite_weights(weights: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuses weights holding NaN or infinity (a diverged training): the model would output NaN.

    Raises:
        CatdogError: naming the first such tensor.
    """
    named = [(name, tensor) for name, tensor in weights.items() if tensor.is_floating_point() and tensor.numel()]
    # A tensor's min and max are NaN or infinite exactly when it holds a NaN or an infinity; one aminmax per tensor is
    # ~10x faster than isfinite(tensor).all() (no boolean copy of the weights).
    extremes = [torch.stack(torch.aminmax(tensor.detach())).double() for _, tensor in named]  # double: exact
    finite = torch.isfinite(torch.stack(extremes)).all(dim=1).tolist() if extremes else []
    bad = [name for (name, _), ok in zip(named, finite) if not ok]
    if bad:
        raise CatdogError(
            f"the model outputs NaN: {path} has NaN or infinite weights in {len(bad)} tensor(s) (first: {bad[0]}), "
            "training diverged: use an earlier checkpoint (last.ckpt or another run) "
            "or retrain with a lower learning rate"
        )


@dataclass(frozen=True)
class ClassifierSettings:
    """Everything a :class:`ClassifierModule` is built from, validated: one typed record (like timm's
    ``PretrainedCfg``) whose fields are the checkpoint's flat ``hyper_parameters`` (see :meth:`to_hparams`).

    The field defaults are what a checkpoint written before that field existed means (and what tests
    build with); the training defaults live in ``conf/model/_base.yaml`` and the other config groups.
    Validation converts every value to plain Python types, so checkpoints load with ``weights_only=True``.

    Attributes:
        arch: architecture name (see :func:`supported_archs`).
        class_names: one name per class, in label order (at least 2).
        weights: backbone initialisation, see :func:`build_model`.
        image_size: input side length the data pipeline uses (recorded for explaining).
        mean: input normalisation mean; None: :func:`default_normalization`.
        std: input normalisation std; None: :func:`default_normalization`.
        freeze_backbone: train only the classification layer.
        train_bn: False keeps BatchNorm layers in eval mode while training (running
            statistics stay frozen; their affine parameters still train unless frozen).
        backbone_lr: learning rate of the backbone parameter group; None: the optimizer's lr
            for everything. The head always uses the optimizer's lr.
        optimizer: Hydra-instantiable optimizer config such as
            ``{"_target_": "torch.optim.AdamW", "lr": 1e-3}``; None: AdamW with lr 1e-3.
        scheduler: optional Hydra-instantiable LR scheduler config, plus optional ``interval``
            (``"epoch"`` or ``"step"``) and ``monitor`` (e.g. ``"val/loss"``) keys for Lightning.
        channels_last: use the channels-last memory format (faster on CPU).
        data: the data config (layout, root, split seed and fractions...), recorded as is.
        label_smoothing: cross-entropy label smoothing in ``[0, 1)``.
        freeze_epochs: train only the head (a linear probe, BatchNorm statistics frozen) for the
            first this many epochs, then fine-tune everything; 0: from the start.
        no_decay_norm_bias: no weight decay on normalisation and bias parameters (the usual
            practice: decaying them only hurts), the optimizer's weight decay on the rest.
        seed: seeds torch's RNG at every training step (with the step number), so that dropout
            is a function of the step only and a resumed run repeats an uninterrupted one.

    Raises:
        CatdogError: on any invalid setting (see the messages).
        TypeError: an unknown setting.
    """

    arch: str = "resnet18"
    class_names: Sequence[str] = ("cat", "dog")
    weights: str | os.PathLike[str] | None = None
    image_size: int = 224
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    freeze_backbone: bool = False
    train_bn: bool = True
    backbone_lr: float | None = None
    optimizer: Mapping[str, Any] | None = None
    scheduler: Mapping[str, Any] | None = None
    channels_last: bool = True
    data: Mapping[str, Any] | None = None
    label_smoothing: float = 0.0
    freeze_epochs: int = 0
    no_decay_norm_bias: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        # Frozen: the checked values replace the given ones once, here.
        for name, value in {**self._checked_model(), **self._checked_training()}.items():
            object.__setattr__(self, name, value)

    def _checked_model(self) -> dict[str, Any]:
        """The architecture, classes, normalisation and data fields, checked and made plain."""
        spec = arch_spec(self.arch)
        class_names = _to_plain(self.class_names, "class_names")
        if (
            not isinstance(class_names, list)
            or len(class_names) < 2
            or not all(isinstance(c, str) for c in class_names)
            or len(set(class_names)) != len(class_names)
        ):
            raise CatdogError(
                f"class_names must be at least 2 distinct strings, got {class_names!r}: fix the class list."
            )
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise CatdogError(
                f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}: fix model.label_smoothing."
            )
        data = _to_plain(self.data, "data")
        _reject_targets(data, "data")
        mean, std = _normalization(self.mean, "mean"), _normalization(self.std, "std")
        if mean is None or std is None:
            default_mean, default_std = default_normalization(spec.name, self.weights)
            mean, std = mean or default_mean, std or default_std
        return {"arch": spec.name, "class_names": class_names, "mean": mean, "std": std, "data": data}

    def _checked_training(self) -> dict[str, Any]:
        """The optimisation fields, checked and made plain."""
        scheduler = _check_target_config(self.scheduler, "scheduler", allowed_only=False)
        if scheduler and scheduler.get("interval", SCHEDULER_INTERVAL) not in ("epoch", "step"):
            raise CatdogError(
                f"scheduler.interval must be 'epoch' or 'step', got {scheduler['interval']!r}: "
                "fix the scheduler config."
            )
        return {
            "scheduler": _check_target_config(scheduler, "scheduler"),
            "optimizer": _check_target_config(self.optimizer, "optimizer") or dict(DEFAULT_OPTIMIZER),
            "weights": _to_plain(self.weights, "weights"),
            "image_size": _image_size(self.image_size),
            "freeze_backbone": bool(self.freeze_backbone),
            "train_bn": bool(self.train_bn),
            "backbone_lr": None if self.backbone_lr is None else float(self.backbone_lr),
            "channels_last": bool(self.channels_last),
            "label_smoothing": float(self.label_smoothing),
            "freeze_epochs": int(self.freeze_epochs),
            "no_decay_norm_bias": bool(self.no_decay_norm_bias),
            "seed": int(self.seed),
        }

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names: the hyper-parameters a checkpoint may hold besides the layer names."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any], base: ClassifierSettings | None = None) -> ClassifierSettings:
        """The settings of flat hyper-parameters (keyword arguments, a checkpoint's), over ``base`` when given.

        Raises:
            CatdogError: an invalid value.
            TypeError: a key that is not a field (filter a checkpoint's with :meth:`names`).
        """
        return cls(**hparams) if base is None else replace(base, **hparams)

    def to_hparams(self) -> dict[str, Any]:
        """The flat, plain hyper-parameters a checkpoint stores (the checkpoint contract, docs/design.md):
        every field in order, then the feature and fc layer names."""
        spec = arch_spec(self.arch)
        return {
            **{name: getattr(self, name) for name in self.names()},
            "feature_layer": spec.feature_layer,
            "fc_layer": spec.fc_layer,
        }


def _build_network(spec: ArchSpec, settings: ClassifierSettings) -> nn.Module:
    """The torchvision network of ``settings``, in its memory format.

    Raises:
        CatdogError: a vision transformer asked for another input size than its position embeddings'.
    """
    net = build_model(spec.name, len(settings.class_names), settings.weights)
    fixed = getattr(net, "image_size", None)  # vision transformers: position embeddings of one size
    if isinstance(fixed, int) and fixed != int(settings.image_size):
        raise CatdogError(
            f"{spec.name} takes {fixed}x{fixed} inputs (its position embeddings are learned for that size), "
            f"not {settings.image_size}: set data.image_size={fixed}"
        )
    return net.to(memory_format=torch.channels_last) if settings.channels_last else net


class ClassifierModule(pl.LightningModule):
    """A torchvision classifier trained with cross-entropy, ready for Class Activation Maps.

    Batches are ``(images, labels, indices)``; only images and labels are used. Logged metrics:
    ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc``, all
    per epoch. After ``trainer.test``, :attr:`test_results` holds accuracy, loss, per-class
    precision/recall/support and the confusion matrix as plain Python values.

    All hyper-parameters are stored flat as plain Python values (:meth:`ClassifierSettings.to_hparams`),
    so checkpoints load with ``torch.load(path, weights_only=True)``; :func:`load_classifier` rebuilds
    the module from them. Besides the settings they hold ``feature_layer`` and ``fc_layer``.

    Args:
        settings: the :class:`ClassifierSettings`; None: its defaults.
        **hparams: settings by name (the flat hyper-parameters, as Lightning and the configs pass
            them), over ``settings``: ``ClassifierModule(arch="resnet18", class_names=["cat", "dog"])``.

    Raises:
        CatdogError: on any invalid setting (see the messages).
        TypeError: an unknown setting.
    """

    def __init__(self, settings: ClassifierSettings | None = None, **hparams: Any) -> None:
        super().__init__()
        settings = ClassifierSettings.from_hparams(hparams, base=settings)
        self.save_hyperparameters(settings.to_hparams())
        self.spec = arch_spec(settings.arch)
        self.class_names: list[str] = list(settings.class_names)
        self.net = _build_network(self.spec, settings)
        self._set_backbone_trainable(not settings.freeze_backbone)
        # What the training/eval steps receive: "images", or "features" (the pooled backbone
        # output, see extract_features) when a frozen backbone's features were computed once.
        self.inputs = "images"
        self._add_metrics(len(self.class_names))
        # Test-time augmentation of test_step (an evaluation setting, not a hyper-parameter: the
        # same weights can be tested both ways); see set_tta. test_step keeps each batch's
        # softmax probabilities, in loader order, in test_probabilities.
        self.tta = "none"
        self.test_probabilities: list[torch.Tensor] = []

    def _add_metrics(self, n: int) -> None:
        """The training, validation and test metrics of ``n`` classes."""
        self.train_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        # Saved in checkpoints, so an epoch interrupted mid-way reports the same epoch metrics.
        for metric in (self.train_acc, self.val_acc, self.train_loss, self.val_loss):
            metric.persistent(True)
        self.test_loss = MeanMetric()
        self.test_confusion = MulticlassConfusionMatrix(num_classes=n)
        self.test_precision = MulticlassPrecision(num_classes=n, average=None)
        self.test_recall = MulticlassRecall(num_classes=n, average=None)
        self.test_results: dict[str, Any] = {}

    def set_tta(self, tta: str | None) -> None:
        """Chooses the test-time augmentation of ``test_step``.

        Args:
            tta: "none" (or None): one forward pass per image; "hflip": the mean of the logits of
                the image and of its horizontal mirror image (two forward passes).

        Raises:
            CatdogError: another value, or "hflip" on cached features (there is no image to flip).
        """
        name = "none" if tta is None else str(tta).lower()
        if name not in TTA_MODES:
            raise CatdogError(f"tta={tta!r} is unknown: use one of {', '.join(TTA_MODES)}")
        if name != "none" and self.inputs == "features":
            raise CatdogError("tta=hflip needs images, not cached backbone features: set it to none")
        self.tta = name

    def tta_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of ``x`` under the test-time augmentation chosen by :meth:`set_tta`."""
        logits = self._logits(x)
        if self.tta == "hflip":
            # Averaged logits (not probabilities): the usual choice, and the mean of two linear
            # heads' outputs is the head applied to the mean of the two pooled features.
            logits = (logits + self._logits(torch.flip(x, dims=[-1]))) / 2
        return logits

    def _is_head(self, param_name: str) -> bool:
        return param_name.startswith(self.spec.fc_layer + ".")

    def _set_backbone_trainable(self, trainable: bool) -> None:
        for name, param in self.net.named_parameters():
            param.requires_grad = trainable or self._is_head(name)

    def _backbone_frozen(self) -> bool:
        """Whether the backbone is frozen now (always, or during the linear-probe epochs)."""
        if self.hparams.freeze_backbone:
            return True
        return self._trainer is not None and self.current_epoch < self.hparams.freeze_epochs

    @property
    def lr(self) -> float:
        """The optimizer's (head's) learning rate; setting it scales ``backbone_lr`` alike.

        Lightning's learning-rate finder reads and writes this attribute.
        """
        return float(self.hparams.optimizer["lr"])

    @lr.setter
    def lr(self, value: float) -> None:
        old = float(self.hparams.optimizer["lr"])
        self.hparams.optimizer = {**self.hparams.optimizer, "lr": float(value)}
        if self.hparams.backbone_lr is not None and old > 0:
            self.hparams.backbone_lr = self.hparams.backbone_lr * float(value) / old

    def _head_dropout(self) -> float:
        """The dropout probability right before the final Linear layer (0 when there is none)."""
        parent_name = self.spec.fc_layer.rpartition(".")[0]
        parent = get_submodule(self.net, parent_name) if parent_name else self.net
        drops = [m.p for m in parent.children() if isinstance(m, nn.Dropout)] if parent_name else []
        return float(drops[-1]) if drops else 0.0

    @torch.no_grad()
    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone features that the final Linear layer reads, in eval mode.

        Args:
            x: normalised images, shape ``(N, 3, H, W)``.

        Returns:
            Float32 features, shape ``(N, in_features)``.
        """
        captured: list[torch.Tensor] = []
        head = fc_layer(self.net, self.spec)
        handle = head.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        was_training = self.training
        try:
            self.eval()
            self(x)
        finally:
            handle.remove()
            self.train(was_training)
        return captured[0].float()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.inputs == "features":
            x = F.dropout(x, p=self._head_dropout(), training=self.training)
            return fc_layer(self.net, self.spec)(x)
        return self(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Computes class logits.

        Args:
            x: normalised images, shape ``(N, 3, H, W)``.

        Returns:
            Logits, shape ``(N, num_classes)``.
        """
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    # BatchNorm freezing: train() covers manual use; the epoch hook covers Lightning, which
    # does not call train() when fitting starts (it only restores modes after validation).
    def train(self, mode: bool = True) -> ClassifierModule:
        """Sets training mode, keeping BatchNorm layers in eval mode when ``train_bn`` is False."""
        super().train(mode)
        if mode and not self.hparams.train_bn:
            self._freeze_batchnorm()
        return self

    def on_train_epoch_start(self) -> None:
        # Decided from the epoch number alone, so a resumed run freezes exactly as the original.
        frozen = self._backbone_frozen()
        self._set_backbone_trainable(not frozen)
        # Set both ways: Lightning restores the modules' modes after validation, so BatchNorm
        # frozen during the probe epochs would otherwise stay frozen after unfreezing, but not in
        # a run resumed after the probe (a fresh module is in training mode).
        for module in self.net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train(not (frozen or not self.hparams.train_bn))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout (and anything else random in the step) depends on the step number only.
        seed = _step_seed(self.hparams.seed, self.global_step)
        if self.device.type == "cpu":  # torch.manual_seed also seeds accelerators: ~1 ms
            torch.random.default_generator.manual_seed(seed)
        else:
            torch.manual_seed(seed)

    def _freeze_batchnorm(self) -> None:
        for module in self.net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    def _step(
        self, batch: Sequence[torch.Tensor], stage: str, accuracy: MulticlassAccuracy
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Computes and logs loss and accuracy; returns ``(loss, predictions, labels)``."""
        images, labels = batch[0], batch[1]
        logits = self.tta_logits(images) if stage == "test" else self._logits(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.hparams.label_smoothing)
        preds = logits.argmax(dim=1)
        if stage == "test":
            self.test_probabilities.append(logits.detach().float().softmax(dim=1).cpu())
        accuracy.update(preds, labels)
        mean_loss = {"train": self.train_loss, "val": self.val_loss}.get(stage)
        if mean_loss is not None:
            mean_loss.update(loss.detach(), weight=len(labels))
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True)
        else:
            self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(labels))
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss, preds, labels

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_acc)[0]

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val", self.val_acc)

    def on_test_epoch_start(self) -> None:
        self.test_results = {}
        self.test_probabilities = []

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        loss, preds, labels = self._step(batch, "test", self.test_acc)
        self.test_loss.update(loss, weight=len(labels))
        self.test_confusion.update(preds, labels)
        self.test_precision.update(preds, labels)
        self.test_recall.update(preds, labels)

    def on_test_epoch_end(self) -> None:
        confusion = self.test_confusion.compute()
        precision = self.test_precision.compute().tolist()
        recall = self.test_recall.compute().tolist()
        support = confusion.sum(dim=1).tolist()
        total = int(confusion.sum())
        self.test_results = {
            "accuracy": float(confusion.trace()) / total if total else float("nan"),
            "loss": float(self.test_loss.compute()),
            "per_class": {
                name: {"precision": float(p), "recall": float(r), "support": int(s)}
                for name, p, r, s in zip(self.class_names, precision, recall, support)
            },
            "confusion_matrix": confusion.tolist(),  # rows: true class, columns: predicted
            "class_names": list(self.class_names),
        }
        for metric in (self.test_loss, self.test_confusion, self.test_precision, self.test_recall):
            metric.reset()

    def _param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups: backbone and head (when backbone_lr is set), each split into
        decayed and not decayed (norm and bias) parameters when ``no_decay_norm_bias`` is set.

        A frozen-for-now backbone (``freeze_epochs``) is in the optimizer from the start: its
        parameters get no gradient, so the optimizer skips them until they are unfrozen.
        """
        if self.hparams.freeze_backbone:
            params = [(n, p) for n, p in self.net.named_parameters() if self._is_head(n)]
        else:
            params = list(self.net.named_parameters())
        no_decay = self._no_decay_names() if self.hparams.no_decay_norm_bias else set()
        parts: dict[tuple[str, bool], list[torch.Tensor]] = {}
        split_head = self.hparams.backbone_lr is not None
        for name, param in params:
            part = ("head" if self._is_head(name) else "backbone") if split_head else "all"
            parts.setdefault((part, name in no_decay), []).append(param)
        groups = []
        for (part, plain), members in sorted(parts.items()):
            # "name" labels the groups for LearningRateMonitor; the head keeps the optimizer's lr.
            group: dict[str, Any] = {"params": members, "name": part + ("_no_decay" if plain else "")}
            if part == "backbone":
                group["lr"] = self.hparams.backbone_lr
            if plain:
                group["weight_decay"] = 0.0
            groups.append(group)
        return groups

    def _no_decay_names(self) -> set[str]:
        """Names of the bias parameters and the parameters of normalisation layers."""
        names = set()
        for module_name, module in self.net.named_modules():
            is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))
            for param_name, _ in module.named_parameters(recurse=False):
                if is_norm or param_name == "bias":
                    names.add(f"{module_name}.{param_name}" if module_name else param_name)
        return names

    def configure_optimizers(self) -> dict[str, Any]:
        """Builds the optimizer (and scheduler) from their Hydra configs.

        Returns:
            Lightning's ``{"optimizer": ..., "lr_scheduler": {...}}`` dict.

        Raises:
            CatdogError: a config that Hydra or the optimizer/scheduler class rejects.
        """
        # _partial_ then call: passing the param groups through instantiate() would wrap them
        # in OmegaConf containers, which torch optimizers reject.
        optimizer = _instantiate(self.hparams.optimizer, "optimizer", self._param_groups())
        result: dict[str, Any] = {"optimizer": optimizer}
        if self.hparams.scheduler:
            cfg = dict(self.hparams.scheduler)
            lightning_keys = {"interval": cfg.pop("interval", SCHEDULER_INTERVAL)}
            if "monitor" in cfg:
                lightning_keys["monitor"] = cfg.pop("monitor")
            if cfg["_target_"] == "torch.optim.lr_scheduler.OneCycleLR":
                # Warm-up + cosine over the whole run: one peak per parameter group (the head at
                # optimizer.lr, the backbone at backbone_lr) unless max_lr is given.
                cfg.setdefault("max_lr", [group["lr"] for group in optimizer.param_groups])
                if cfg.get("total_steps") is None:
                    cfg["total_steps"] = self._total_steps()
                    cfg.pop("epochs", None), cfg.pop("steps_per_epoch", None)
            scheduler = _instantiate(cfg, "scheduler", optimizer)
            result["lr_scheduler"] = {"scheduler": scheduler, **lightning_keys}
        return result

    def _total_steps(self) -> int:
        """Optimizer steps of the whole run, without building the training dataloader.

        ``trainer.estimated_stepping_batches`` would create (and start iterating) the training
        dataloader before a checkpoint is restored, so a resumed run would start the wrong epoch.
        """
        trainer = self.trainer
        if trainer.max_steps != -1:
            return int(trainer.max_steps)
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "num_train_batches"):
            return int(trainer.estimated_stepping_batches)
        batches = datamodule.num_train_batches()
        if isinstance(trainer.limit_train_batches, int):
            batches = min(batches, trainer.limit_train_batches)
        else:
            batches = max(1, int(batches * trainer.limit_train_batches))
        per_epoch = -(-batches // trainer.accumulate_grad_batches)
        return int(per_epoch * trainer.max_epochs)


def _step_seed(seed: int, step: int) -> int:
    """A well-mixed 63-bit seed for training step `step` of a run seeded with `seed`."""
    return (int(seed) * 6364136223846793005 + int(step) * 1442695040888963407 + 1) % (2**63)


def _instantiate(cfg: Mapping[str, Any], name: str, first_arg: Any) -> Any:
    """Calls the Hydra ``_target_`` of ``cfg`` with ``first_arg`` plus the config's arguments."""
    try:
        # _recursive_=False: nested mappings stay data (the configs are checked to hold none, see _reject_targets).
        return hydra.utils.instantiate(dict(cfg), _partial_=True, _convert_="all", _recursive_=False)(first_arg)
    except (InstantiationException, TypeError, ValueError) as error:
        raise CatdogError(
            f"The {name} config {dict(cfg)!r} could not be instantiated ({one_line(error)}): "
            f"check its _target_ and arguments."
        ) from None


def load_classifier(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> ClassifierModule:
    """Loads a checkpoint written while training a :class:`ClassifierModule`, in eval mode.

    The model is rebuilt from the checkpoint's hyper-parameters without downloading or reading
    any pretrained weights, then the checkpoint's weights are loaded strictly.

    Args:
        path: a ``.ckpt`` file (e.g. ``best.ckpt`` / ``last.ckpt``).
        map_location: device to load onto.

    Returns:
        The module in eval mode, on ``map_location``.

    Raises:
        CatdogError: the file is missing, is not a catdog checkpoint, or its weights do not fit
            the architecture its hyper-parameters name.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CatdogError(f"Checkpoint {path} does not exist: {_TRAIN_SCRIPT_HINT}.")
    checkpoint = _torch_load(path, map_location, _TRAIN_SCRIPT_HINT)
    if not isinstance(checkpoint, Mapping) or not {"hyper_parameters", "state_dict"} <= set(checkpoint):
        raise CatdogError(f"{path} is not a catdog checkpoint (no hyper_parameters): {_TRAIN_SCRIPT_HINT}.")
    hparams = check_hparams_are_data(checkpoint["hyper_parameters"])
    # Keys of other catdog versions are left out (feature_layer, fc_layer follow from arch); a key
    # missing from an older checkpoint takes the field's default (what it meant then).
    accepted = set(ClassifierSettings.names()) - {"weights"}
    # weights=None: the checkpoint holds every weight, so nothing is downloaded or read, and nothing is initialised
    # (_mismatch below refuses weights that do not cover every parameter and buffer of the network).
    with weights_left_uninitialised():
        module = ClassifierModule(**{key: value for key, value in hparams.items() if key in accepted})
    module.hparams["weights"] = hparams.get("weights")  # kept as a record of the fine-tuning
    # Only the network's weights: training-metric states are in newer checkpoints only.
    weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    expected = {k: v for k, v in module.state_dict().items() if k.startswith("net.")}
    problem = _mismatch(expected, weights)
    if problem:
        raise CatdogError(
            f"{path} does not fit the {module.hparams.arch} architecture its hyper-parameters name "
            f"({problem}): {_TRAIN_SCRIPT_HINT} with this version of catdog."
        )
    check_finite_weights(weights, path)
    module.load_state_dict(weights, strict=False)
    return module.to(map_location).eval()
