"""The model explain runs on: loaded from ``ckpt=`` (a catdog checkpoint or ImageNet weights), its provenance
for summary.json, and BatchNorm folding for inference."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catdog.errors import CatdogError
from catdog.explain.engine import resolve_precision
from catdog.explain.methods import grid_layers
from catdog.explain.settings import ExplainSettings, ModelSource
from catdog.maps.explainers import Explainer
from catdog.models import ClassifierModule, arch_spec, fold_batchnorm, load_classifier, resolve_layer
from catdog.models.imagenet import PretrainedClassifier, imagenet_arch, load_imagenet
from catdog.runs import resolve_checkpoint, run_dir_of

__all__ = ["LoadedModel", "fold_for_inference", "load_model", "sha256"]


@dataclass(frozen=True)
class LoadedModel:
    """A classifier in eval mode, the folder its explain folders go below, and provenance for summary.json."""

    model: ClassifierModule | PretrainedClassifier
    run_dir: Path  # the run folder (ImageNet models: <runs_dir>/imagenet_<arch>)
    provenance: dict[str, Any]  # imagenet (ImageNet mode only), checkpoint, train_config
    checkpoint: Path | None = None  # the checkpoint file (None in ImageNet mode)

    @property
    def imagenet(self) -> bool:
        return "imagenet" in self.provenance


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(source: ModelSource) -> LoadedModel:
    """The model of ``ckpt=``, its run folder, and provenance for summary.json.

    Raises:
        CatdogError: no such checkpoint, or ImageNet-mode options given with a catdog checkpoint.
    """
    arch = imagenet_arch(source.ckpt)
    if arch is not None:
        model = load_imagenet(
            arch,
            weights=source.weights,
            labels=source.labels,
            mean=list(source.mean) if source.mean is not None else None,
            std=list(source.std) if source.std is not None else None,
        )
        weights_file = Path(model.source)
        provenance = {
            "imagenet": {"arch": arch, "weights": model.source},
            "checkpoint": {"path": None, "sha256": sha256(weights_file) if weights_file.is_file() else None},
            "train_config": None,
        }
        # No run folder: explain folders of ImageNet models go below runs_dir/imagenet_<arch>/explain/.
        return LoadedModel(model, Path(source.runs_dir) / f"imagenet_{arch}", provenance)
    if source.weights or source.labels:
        raise CatdogError("weights= and labels= are for ckpt=imagenet:<arch>: a catdog checkpoint carries its own")
    checkpoint = resolve_checkpoint(source.ckpt, source.runs_dir)
    model = load_classifier(checkpoint)
    run_dir = run_dir_of(checkpoint)
    config_file = run_dir / ".hydra" / "config.yaml"
    provenance = {
        "checkpoint": {"path": str(checkpoint.resolve()), "sha256": sha256(checkpoint)},
        "train_config": (
            {"path": str(config_file.resolve()), "sha256": sha256(config_file)} if config_file.is_file() else None
        ),
    }
    return LoadedModel(model, run_dir, provenance, checkpoint)


def fold_for_inference(
    model: ClassifierModule | PretrainedClassifier, settings: ExplainSettings, explainers: list[Explainer]
) -> dict[str, Any]:
    """Fold BatchNorm into the convolutions before it (``fold_batchnorm=true``): same maps, faster forwards.

    Layers this run hooks (the explainers', and the grid's) keep their own outputs. Not done for
    ``metrics=[sanity]`` (its randomised copy of the network must still have BatchNorm layers), nor under
    bf16 autocast: there the folded weights round differently, and maps moved further from fp32 than bf16
    alone (bench/bf16_tolerance.py, bench/RESULTS.md), while in fp32 folding is exact to float rounding.

    Returns:
        The record for summary.json: ``{"folded": N}``, or ``{"folded": 0, "reason": ...}``.
    """
    runtime = settings.runtime
    if not runtime.fold_batchnorm:
        return {"folded": 0, "reason": "fold_batchnorm=false"}
    if "sanity" in settings.metrics:
        return {"folded": 0, "reason": "metrics=[sanity] randomises the unfolded network"}
    if resolve_precision(runtime.precision, runtime.accelerator)[1]["used"] == "bf16":
        return {"folded": 0, "reason": "bf16 autocast: folding would add rounding error to the maps"}
    hooked = [explainer.module for explainer in explainers if getattr(explainer, "module", None) is not None]
    if settings.grid:
        hooked += [resolve_layer(model.net, layer)[1] for layer in grid_layers(settings, arch_spec(model.hparams.arch))]
    return {"folded": fold_batchnorm(model.net.eval(), keep=hooked)}
