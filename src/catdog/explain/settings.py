"""Explain's settings: conf/explain.yaml read once, checked once, as a frozen tree of dataclasses.

Every default lives in the YAML; this module holds none. :func:`ExplainSettings.from_config` reads each
key, checks its type and range and raises a one-line :class:`~catdog.errors.CatdogError` naming the key
(``overlay.quality=101 must be an integer from 0 to 100``) before a checkpoint is loaded or an image is
read. The rest of the explain stage takes these objects, never the raw config.

Example::

    settings = ExplainSettings.from_config(compose(config_name="explain", overrides=["ckpt=latest"]))
    settings.overlay.quality  # 90
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from catdog.data import parse_mask_object
from catdog.errors import CatdogError
from catdog.maps.cam import CONTRASTS, DISPLAYS, parse_threshold
from catdog.maps.geometry import ALIGNMENTS

__all__ = [
    "DataSettings",
    "EngineSettings",
    "ExplainSettings",
    "FaithfulnessSettings",
    "ModelSource",
    "MosaicSettings",
    "OverlaySettings",
    "RuntimeSettings",
]

PRECISIONS = ("auto", "32", "bf16")
LOCALIZATIONS = ("mosaic",)
TRUE_CLASS_PANELS = ("auto", "always", "never")


class _Reader:
    """Reads typed values of one config node, naming the full dotted key in every error."""

    def __init__(self, node: Any, prefix: str = "") -> None:
        self.node, self.prefix = node, prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def raw(self, name: str) -> Any:
        if not isinstance(self.node, (dict, DictConfig)) or name not in self.node:
            raise CatdogError(f"{self.key(name)} is missing from the config: conf/explain.yaml sets it")
        value = self.node[name]
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value

    def child(self, name: str) -> _Reader:
        self.raw(name)
        return _Reader(self.node[name], f"{self.key(name)}.")

    def integer(self, name: str, low: int, high: int | None = None, optional: bool = False) -> int | None:
        value = self.raw(name)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f">= {low}"
            raise CatdogError(f"{self.key(name)}={value!r} must be an integer {span}{' (or null)' if optional else ''}")
        return value

    def number(self, name: str, low: float, high: float | None = None) -> float:
        value = self.raw(name)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or not low <= value or (high is not None and value > high):
            span = f"from {low:g} to {high:g}" if high is not None else f">= {low:g}"
            raise CatdogError(f"{self.key(name)}={value!r} must be a number {span}")
        return float(value)

    def flag(self, name: str) -> bool:
        value = self.raw(name)
        if not isinstance(value, bool):
            raise CatdogError(f"{self.key(name)}={value!r} must be true or false")
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.raw(name)
        if str(value) not in choices:
            raise CatdogError(f"{self.key(name)}={value} is unknown: choose {', '.join(choices[:-1])} or {choices[-1]}")
        return str(value)

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        return None if value is None else str(value)

    def names(self, name: str, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """A name, a list of names, or null, as a tuple (checked against ``choices`` when given)."""
        value = self.raw(name)
        items = () if value is None else (value,) if isinstance(value, (str, int)) else value
        if not isinstance(items, (tuple, list)) or any(not isinstance(v, (str, int)) for v in items):
            raise CatdogError(f"{self.key(name)}={value!r} must be a name or a list of names")
        unknown = [str(v) for v in items if choices is not None and str(v) not in choices]
        if unknown:
            raise CatdogError(f"{self.key(name)}={unknown[0]} is not supported: use {', '.join(choices or ())}")
        return tuple(str(v) for v in items)

    def floats(self, name: str) -> tuple[float, ...] | None:
        value = self.raw(name)
        if value is None:
            return None
        if (
            not isinstance(value, list)
            or len(value) != 3
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
        ):
            raise CatdogError(f"{self.key(name)}={value!r} must be three numbers (one per RGB channel) or null")
        return tuple(float(v) for v in value)


@dataclass(frozen=True)
class ModelSource:
    """Which model: ``ckpt`` (checkpoint, run folder, latest, imagenet:<arch>) and ImageNet-mode options."""

    ckpt: str
    runs_dir: str
    multirun_dir: str
    weights: str | None
    labels: str | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @classmethod
    def read(cls, r: _Reader) -> ModelSource:
        ckpt = r.text("ckpt")
        if not ckpt:
            raise CatdogError("ckpt is not set: pass ckpt=<checkpoint, run folder, latest or imagenet:<arch>>")
        return cls(
            ckpt,
            str(r.text("runs_dir")),
            str(r.text("multirun_dir")),
            r.text("weights"),
            r.text("labels"),
            r.floats("mean"),
            r.floats("std"),
        )


@dataclass(frozen=True)
class DataSettings:
    root: str | None
    split: str
    remap_root: str | None  # the run's dataset moved: its new folder (catdog.data.selection)
    max_images: int | None
    batch_size: int
    num_workers: int

    @classmethod
    def read(cls, r: _Reader) -> DataSettings:
        return cls(
            root=r.text("root"),
            split=str(r.text("split")),
            remap_root=r.text("remap_root"),
            max_images=r.integer("max_images", 1, optional=True),
            batch_size=r.integer("batch_size", 1),
            num_workers=r.integer("num_workers", 0),
        )


@dataclass(frozen=True)
class OverlaySettings:
    alpha: float
    side_by_side: bool
    true_class_panel: str
    quality: int
    writers: int
    max_size: int | None

    @classmethod
    def read(cls, r: _Reader) -> OverlaySettings:
        return cls(
            alpha=r.number("alpha", 0.0, 1.0),
            side_by_side=r.flag("side_by_side"),
            true_class_panel=r.choice("true_class_panel", TRUE_CLASS_PANELS),
            quality=r.integer("quality", 0, 100),
            writers=r.integer("writers", 1),
            max_size=r.integer("max_size", 1, optional=True),
        )


@dataclass(frozen=True)
class RuntimeSettings:
    """Where and how the forward passes run (Lightning Trainer settings, precision, memory)."""

    precision: str
    accelerator: str
    devices: int | str | tuple[int, ...]
    num_nodes: int
    strategy: str
    fold_batchnorm: bool
    tune_malloc: bool

    @classmethod
    def read(cls, r: _Reader) -> RuntimeSettings:
        strategy = str(r.text("strategy"))
        if "spawn" in strategy or "fork" in strategy:
            raise CatdogError(
                f"strategy={strategy} is not supported by explain: use strategy=ddp (with torchrun, SLURM, "
                "or Lightning starting the other processes)"
            )
        devices = r.raw("devices")
        if isinstance(devices, list):
            devices = tuple(devices)
        valid = devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool) and devices >= -1)
        if not valid and not (isinstance(devices, tuple) and all(isinstance(d, int) for d in devices)):
            raise CatdogError(f"devices={devices!r} must be a number of devices, -1 (all), auto or a list of ids")
        return cls(
            precision=r.choice("precision", PRECISIONS),
            accelerator=str(r.text("accelerator")),
            devices=devices,
            num_nodes=r.integer("num_nodes", 1),
            strategy=strategy,
            fold_batchnorm=r.flag("fold_batchnorm"),
            tune_malloc=r.flag("tune_malloc"),
        )


@dataclass(frozen=True)
class MosaicSettings:
    count: int
    grid: int
    seed: int

    @classmethod
    def read(cls, r: _Reader) -> MosaicSettings:
        return cls(count=r.integer("count", 1), grid=r.integer("grid", 2), seed=r.integer("seed", 0))


@dataclass(frozen=True)
class FaithfulnessSettings:
    steps: int
    batch_size: int

    @classmethod
    def read(cls, r: _Reader) -> FaithfulnessSettings:
        return cls(steps=r.integer("steps", 1), batch_size=r.integer("batch_size", 1))


@dataclass(frozen=True)
class EngineSettings:
    """What the streaming core (:func:`catdog.explain.engine.run_explain`) needs to run the batches."""

    topk: int
    batch_size: int
    num_workers: int
    writers: int
    max_side: int | None
    save_cams: bool
    runtime: RuntimeSettings
    thumbnails: bool = True  # the report's gallery thumbnails; code-level switches, not user settings
    progress: bool = True


@dataclass(frozen=True)
class ExplainSettings:
    """conf/explain.yaml, checked (see the YAML for what each setting means)."""

    model: ModelSource
    input: str | None
    data: DataSettings
    method: str | None
    layer: str | None
    layers: tuple[str, ...]
    display: str
    threshold: str | float | None
    grid: bool
    grid_methods: tuple[str, ...]
    grid_images: int
    topk: int
    runtime: RuntimeSettings
    overlay: OverlaySettings
    mask_object: tuple[int, ...] | None
    pointing_tolerance: float
    align: str
    contrast: str
    localization: tuple[str, ...]
    mosaic: MosaicSettings
    metrics: tuple[str, ...]
    faithfulness: FaithfulnessSettings
    top_losses: int
    save_cams: bool
    out_dir: str | None
    overwrite: bool

    @classmethod
    def from_config(cls, cfg: DictConfig | dict[str, Any]) -> ExplainSettings:
        """Read and check every setting of the composed conf/explain.yaml.

        Raises:
            CatdogError: a missing key, or a value of the wrong type or out of range (one line naming the key).
        """
        from catdog.quality.faithfulness import METRICS

        r = _Reader(cfg)
        return cls(
            model=ModelSource.read(r),
            input=r.text("input"),
            data=DataSettings.read(r.child("data")),
            method=r.text("method"),
            layer=r.text("layer"),
            layers=r.names("layers"),
            display=r.choice("display", DISPLAYS),
            threshold=parse_threshold(r.raw("threshold")),
            grid=r.flag("grid"),
            grid_methods=r.names("grid_methods"),
            grid_images=r.integer("grid_images", 1),
            topk=r.integer("topk", 1),
            runtime=RuntimeSettings.read(r),
            overlay=OverlaySettings.read(r.child("overlay")),
            mask_object=parse_mask_object(r.raw("mask_object")),
            pointing_tolerance=r.number("pointing_tolerance", 0.0),
            align=r.choice("align", ALIGNMENTS),
            contrast=r.choice("contrast", CONTRASTS),
            localization=r.names("localization", LOCALIZATIONS),
            mosaic=MosaicSettings.read(r.child("mosaic")),
            metrics=r.names("metrics", METRICS),
            faithfulness=FaithfulnessSettings.read(r.child("faithfulness")),
            top_losses=r.integer("top_losses", 0),
            save_cams=r.flag("save_cams"),
            out_dir=r.text("out_dir"),
            overwrite=r.flag("overwrite"),
        )

    @property
    def explained_layers(self) -> tuple[str | None, ...]:
        """One explain folder per entry: ``layers=`` when given, else ``layer=`` (None: the registry's)."""
        return self.layers or (self.layer,)

    def engine(self) -> EngineSettings:
        return EngineSettings(
            topk=self.topk,
            batch_size=self.data.batch_size,
            num_workers=self.data.num_workers,
            writers=self.overlay.writers,
            max_side=self.overlay.max_size,
            save_cams=self.save_cams,
            runtime=self.runtime,
        )
