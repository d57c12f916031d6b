"""The one pass over the images: penultimate embeddings, the run's own logits, and per-image traits.

The pass runs on the same Lightning prediction engine as explain (:mod:`catdog.explain.engine`): every
rank (process) embeds a contiguous share of the images in its own DataLoader workers and streams its rows
and embeddings into a shard (``<triage folder>/.shards/rank<R>/``); rank 0 joins the shards in image order,
so ``devices=N strategy=ddp`` gives the tables one process gives.

Which backbone embeds (``triage.features``) matters for the label audit: a backbone fine-tuned on these
labels has fitted their errors too, so its embeddings put a mislabelled cat among the dogs. The
pretrained backbone (never shown these labels) is used when the run's backbone was fine-tuned and its
pretrained weights are at hand; a frozen-backbone run's checkpoint *is* that backbone; a run trained from
scratch has nothing else (recorded, with the reason, in summary.json and per row as ``prob_source``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, RichProgressBar
from torch.utils.data import DataLoader, Dataset, default_collate

from catdog.allocator import reuse_freed_memory
from catdog.data import BadImageError, build_transform, load_rgb
from catdog.errors import CatdogError
from catdog.explain.engine import SHARDS, RowSink, open_shard, read_shards, resolve_precision, share_of
from catdog.models import (
    ClassifierModule,
    build_model,
    fold_batchnorm,
    get_submodule,
)

log = logging.getLogger(__name__)

__all__ = ["FeatureNet", "Features", "choose_feature_net", "embed_images"]

TRAITS = ("width", "height", "aspect", "brightness", "grayscale", "map_area")


@dataclass
class FeatureNet:
    """The network whose penultimate layer embeds, and what it is.

    ``same_as_model``: it is the run's own network, so its logits are the run's predictions.
    """

    net: torch.nn.Module
    source: str  # "checkpoint" or "pretrained"
    reason: str
    same_as_model: bool
    backbone_saw_labels: bool


@dataclass
class Features:
    """The result of the pass, in image order (unreadable images are in ``skipped``, not here)."""

    table: pd.DataFrame  # path, label, split, traits, sha256
    embeddings: np.ndarray  # [N, D] float32
    model_probs: np.ndarray | None  # [N, C] the run's own softmax, when the feature net is the run's network
    skipped: pd.DataFrame  # path, reason
    stats: dict[str, Any]


def choose_feature_net(model: ClassifierModule, mode: str) -> FeatureNet:
    """The embedding network for ``triage.features=auto|checkpoint|pretrained``.

    Raises:
        CatdogError: ``pretrained`` for a run without pretrained weights, or weights that cannot be loaded.
    """
    hp = model.hparams
    frozen = bool(hp.get("freeze_backbone"))
    weights = hp.get("weights")
    if mode == "checkpoint" or (mode == "auto" and frozen):
        reason = (
            "the run's backbone was frozen: its embeddings are the pretrained ones, never fitted to these labels"
            if frozen
            else "triage.features=checkpoint: the run's backbone was trained on these labels"
        )
        return FeatureNet(model.net, "checkpoint", reason, True, not frozen)
    if weights in (None, "none", "null"):
        if mode == "pretrained":
            raise CatdogError(
                "triage.features=pretrained: this run was trained from scratch (no pretrained weights): "
                "use triage.features=auto or checkpoint"
            )
        reason = "trained from scratch: no backbone exists that has not seen these labels"
        return FeatureNet(model.net, "checkpoint", reason, True, True)
    try:
        net = build_model(hp.arch, len(hp.class_names), weights).eval()
    except CatdogError as err:
        if mode == "pretrained":
            raise
        reason = f"the pretrained weights could not be loaded ({err}); the run's backbone saw these labels"
        return FeatureNet(model.net, "checkpoint", reason, True, True)
    if hp.get("channels_last", True):
        net = net.to(memory_format=torch.channels_last)
    return FeatureNet(
        net, "pretrained", f"the pretrained backbone ({weights}): never fitted to these labels", False, False
    )


# ---------------------------------------------------------------------------------------------
# Decoding in DataLoader workers: the model input and the photo's measurable traits
# ---------------------------------------------------------------------------------------------
def image_traits(rgb: np.ndarray) -> dict[str, float]:
    """Size, aspect (width / height), brightness (mean luma, 0..1) and grayscale (all channels alike)."""
    height, width = rgb.shape[:2]
    small = rgb[:: max(1, height // 128), :: max(1, width // 128)].astype(np.int16)  # traits need no full res
    luma = small @ np.array([0.299, 0.587, 0.114])
    spread = np.abs(small[..., 0] - small[..., 1]).mean() + np.abs(small[..., 1] - small[..., 2]).mean()
    return {
        "width": float(width),
        "height": float(height),
        "aspect": round(width / height, 4),
        "brightness": round(float(luma.mean()) / 255.0, 4),
        "grayscale": float(spread < 2.0),
    }


class FeatureDataset(Dataset):
    """One image: the model input, its traits and the hash of its bytes; unreadable files as an error."""

    def __init__(self, paths: Sequence[str], transform: Callable[[np.ndarray], torch.Tensor], offset: int) -> None:
        self.paths, self.transform, self.offset = list(paths), transform, offset

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            rgb = load_rgb(path)
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except (BadImageError, OSError) as err:
            return {"index": self.offset + index, "error": str(err) or type(err).__name__}
        return {
            "index": self.offset + index,
            "error": None,
            "image": self.transform(rgb),
            "row": {**image_traits(rgb), "sha256": digest},
        }


def collate_features(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [item for item in items if item["error"] is None]
    return {
        "images": default_collate([item["image"] for item in good]) if good else None,
        "indices": [item["index"] for item in good],
        "rows": [item["row"] for item in good],
        "errors": [(item["index"], item["error"]) for item in items if item["error"] is not None],
    }


class FeaturePredictor(pl.LightningModule):
    """``Trainer.predict`` of the feature net: the input of its final Linear layer, its softmax, and the
    area of the predicted class's exact CAM (when the feature net is the run's network and its head allows
    exact CAM: the same forward pass gives the map at the cost of one matrix product)."""

    def __init__(
        self, feature: FeatureNet, fc_name: str, explainer: Any, paths: list[str], transform: Callable, settings: Any
    ) -> None:
        super().__init__()
        self.net = feature.net
        self.keep_logits = feature.same_as_model
        self.explainer = explainer if feature.same_as_model else None
        self.head = get_submodule(self.net, fc_name)
        self.paths, self.transform = paths, transform
        self.batch_size, self.num_workers = settings.batch_size, settings.num_workers

    def predict_dataloader(self) -> DataLoader:
        start, stop = share_of(len(self.paths), self.global_rank, self.trainer.world_size)
        return DataLoader(
            FeatureDataset(self.paths[start:stop], self.transform, offset=start),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_features,
            persistent_workers=False,
        )

    def transfer_batch_to_device(
        self, batch: dict[str, Any], device: torch.device, dataloader_idx: int
    ) -> dict[str, Any]:
        if batch["images"] is not None:
            batch["images"] = batch["images"].to(device, non_blocking=True)
        return batch

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, np.ndarray] | None:
        if batch["images"] is None:
            return None
        x = batch["images"].contiguous(memory_format=torch.channels_last)
        captured: list[torch.Tensor] = []
        handle = self.head.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        area = None
        try:
            if self.explainer is not None:
                out = self.explainer.explain(x, None, topk=1)
                logits, area = out.logits, map_area(out.maps[:, 0].float())
            else:
                with torch.inference_mode():
                    logits = self.net(x)
        finally:
            handle.remove()
        return {
            "embeddings": captured[0].float().flatten(1).cpu().numpy(),
            "probs": logits.float().softmax(dim=1).cpu().numpy() if self.keep_logits else None,
            "map_area": area,
        }


def map_area(maps: torch.Tensor) -> np.ndarray:
    """Share of each map's cells at or above half its range (explain's area50), ``[B]``."""
    flat = maps.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    scaled = (flat - low) / (high - low).clamp(min=1e-12)
    return (scaled >= 0.5).float().mean(dim=1).cpu().numpy()


class FeatureShardWriter(BasePredictionWriter):
    """One rank's rows, embeddings and probabilities, streamed into its shard every batch."""

    def __init__(self, out_dir: Path | None) -> None:
        super().__init__(write_interval="batch")
        self.out_dir, self.shard, self.rows = out_dir, None, None
        self.skipped: list[tuple[int, str]] = []
        self.dims: dict[str, int] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.out_dir, self.shard = open_shard(trainer, self.out_dir, ("embeddings.bin", "probs.bin"))
        self.rows = RowSink(self.shard / "rows.pkl", 256)

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.skipped.extend(batch["errors"])
        if prediction is None:
            return
        for name in ("embeddings", "probs"):
            array = prediction[name]
            if array is None:
                continue
            self.dims[name] = int(array.shape[1])
            with open(self.shard / f"{name}.bin", "ab") as handle:
                handle.write(np.ascontiguousarray(array, dtype=np.float32).tobytes())
        areas = prediction["map_area"]
        for position, (index, row) in enumerate(zip(batch["indices"], batch["rows"])):
            self.rows.add({"index": index, **row, "map_area": float(areas[position]) if areas is not None else np.nan})

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows.flush()
        meta = {"rank": trainer.global_rank, "skipped": self.skipped, "dims": self.dims}
        (self.shard / "meta.json").write_text(json.dumps(meta))
        trainer.strategy.barrier("catdog-triage-shards")


def merge_feature_shards(
    out_dir: Path, images: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None, pd.DataFrame]:
    """Join the ranks' shards in image order: rows, embeddings, probabilities (or None), skipped."""
    root = out_dir / SHARDS
    found = read_shards(root, "triage")
    shards, metas = found.folders, found.metas
    empty = pd.DataFrame(columns=["index", *TRAITS, "sha256"])
    rows = pd.concat(found.frames, ignore_index=True) if found.frames else empty
    dims = {key: value for meta in metas for key, value in meta["dims"].items()}
    arrays: dict[str, np.ndarray | None] = {}
    for name in ("embeddings", "probs"):
        if name not in dims:
            arrays[name] = None if name == "probs" else np.zeros((0, 0), np.float32)
            continue
        parts = [np.fromfile(shard / f"{name}.bin", dtype=np.float32).reshape(-1, dims[name]) for shard in shards]
        arrays[name] = np.concatenate(parts) if parts else np.zeros((0, dims[name]), np.float32)
    order = rows["index"].astype(int).to_numpy()
    skipped_pairs = sorted((int(i), reason) for meta in metas for i, reason in meta["skipped"])
    if len(order) + len(skipped_pairs) != len(images) or len(set(order.tolist())) != len(order):
        raise CatdogError(
            f"merging the shards gave {len(order)} + {len(skipped_pairs)} skipped images for {len(images)}: "
            "run triage again"
        )
    table = images.iloc[order].reset_index(drop=True)
    for column in (*TRAITS, "sha256"):
        table[column] = rows[column].to_numpy()
    table["grayscale"] = table["grayscale"].astype(bool)
    skipped = pd.DataFrame(
        [(images["path"].iloc[i], reason) for i, reason in skipped_pairs], columns=["path", "reason"]
    )
    shutil.rmtree(root, ignore_errors=True)
    return table, arrays["embeddings"], arrays["probs"], skipped


def exact_cam_or_none(model: ClassifierModule) -> Any:
    """The run's exact-CAM explainer (its checkpoint's layers), or None where the head does not allow it."""
    from catdog.explain.methods import explainer_for
    from catdog.maps.explainers import ExactCAM

    try:
        explainer = explainer_for(model, "cam")
    except CatdogError:
        return None
    return explainer if isinstance(explainer, ExactCAM) else None


def embed_images(
    model: ClassifierModule, feature: FeatureNet, images: pd.DataFrame, out_dir: Path | None, settings: Any
) -> Features | None:
    """Embed every image of ``images`` (columns path, label, split) on the Lightning prediction engine.

    Returns:
        On rank 0 the merged :class:`Features`; on other ranks None.
    """
    import time

    hp = model.hparams
    lightning_precision, record = resolve_precision(settings.precision, settings.accelerator)
    folded = 0
    if record["used"] == "32":  # folding is exact in fp32 only (see catdog.explain.pipeline)
        folded = fold_batchnorm(feature.net.eval(), keep=[get_submodule(feature.net, hp.feature_layer)])
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    predictor = FeaturePredictor(
        feature, hp.fc_layer, exact_cam_or_none(model), images["path"].tolist(), transform, settings
    )
    writer = FeatureShardWriter(out_dir)
    trainer = pl.Trainer(
        accelerator=settings.accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        strategy=settings.strategy,
        precision=lightning_precision,
        callbacks=[writer, RichProgressBar()],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # contiguous shares, no padding duplicates
    )
    start = time.perf_counter()
    with reuse_freed_memory(settings.tune_malloc) as malloc:
        trainer.predict(predictor, return_predictions=False)
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return None
    table, embeddings, probs, skipped = merge_feature_shards(writer.out_dir, images)
    stats = {
        "seconds": round(seconds, 2),
        "images_per_second": round(len(table) / seconds, 1) if seconds > 0 else None,
        "precision": record["used"],
        "precision_check": record,
        "batchnorm_folded": folded,
        "processes": trainer.world_size,
        "malloc": malloc,
        "dim": int(embeddings.shape[1]) if embeddings.size else 0,
    }
    return Features(table, embeddings, probs, skipped, stats)
