"""Explain as Lightning prediction: one code path for 1 process, N processes and M nodes.

Every rank (process) gets a contiguous share of the images, decodes it in its own DataLoader workers,
runs the explainer, draws and writes its overlays, and streams its rows and raw maps into a *shard*
(``<explain folder>/.shards/rank<R>/``). When all ranks are done, :func:`merge_shards` (rank 0) joins the
shards in image order into the files a single process writes (predictions.csv, skipped.csv, cams.npz), so
1 and N processes give the same explain folder. A single process goes through the same shard and merge
code, which is what makes that true by construction rather than by care.

Launch (see README "Many processes and nodes"): ``devices=N num_nodes=M strategy=ddp`` either directly
(Lightning starts the other local processes itself), under ``torchrun``, or under SLURM ``srun``.

Memory is flat in the number of images: overlays are written by a bounded thread pool, rows are flushed
to the shard every batch, maps are appended to a raw file and packed into cams.npz chunk by chunk, and the
DataLoader workers ship only a bounded-size copy of each original (``overlay.max_size``), never a 12 MP
photo.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import pickle
import re
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset, default_collate

from catdog.allocator import reuse_freed_memory
from catdog.console import quiet_lightning
from catdog.data import BadImageError, build_transform, load_rgb
from catdog.data.selection import Annotations
from catdog.errors import CatdogError
from catdog.explain.methods import explainer_for
from catdog.explain.render import SKIP_REASON, BoundedWriter, OverlayJobs, OverlayStyle, bounded_copy, render_or_skip
from catdog.explain.settings import EngineSettings
from catdog.maps.explainers import Explainer
from catdog.quality.faithfulness import Faithfulness

log = logging.getLogger(__name__)

__all__ = [
    "SKIP_REASON",
    "ExplainBatch",
    "ExplainDataset",
    "ShardWriter",
    "collate_explain",
    "global_rank_from_env",
    "merge_shards",
    "resolve_precision",
    "run_explain",
    "share_of",
]

SHARDS = ".shards"
# The CAM self-check compares spatial mean + bias with the logit; bf16 keeps ~3 significant digits,
# so a deviation of a few thousandths *of the logits' size* is normal there: bf16 is held to 5e-2 or 1%
# of the largest |logit|, whichever is larger; float32 to 1e-3.
CAM_CHECK_TOLERANCE = {"32": 1e-3, "bf16": 5e-2}
CAM_CHECK_RELATIVE = {"32": 0.0, "bf16": 1e-2}


# ---------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------
def cpu_flags() -> set[str] | None:
    """The CPU feature flags from /proc/cpuinfo (Linux), or None when they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    match = re.search(r"^flags\s*:\s*(.*)$", text, flags=re.MULTILINE)
    return set(match.group(1).split()) if match else None


@functools.cache  # once per process: explain asks twice (folding, then the run) and must get one answer
def _bf16_speedup_cpu() -> float:
    """Time a small convolution in bf16 and fp32 on the CPU; fp32 time / bf16 time (about 0.1 s)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    x = torch.randn(8, 64, 28, 28).contiguous(memory_format=torch.channels_last)
    conv = conv.to(memory_format=torch.channels_last)

    def timed(bf16: bool) -> float:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            conv(x)  # warm-up: oneDNN picks and compiles its kernel
            start = time.perf_counter()
            for _ in range(3):
                conv(x)
            return time.perf_counter() - start

    return timed(False) / max(timed(True), 1e-9)


def resolve_precision(requested: str, accelerator: str) -> tuple[str, dict[str, Any]]:
    """Turn ``precision=auto|32|bf16`` into a Lightning precision and a record for summary.json.

    ``auto`` picks bf16 autocast where the hardware runs bf16 natively: a CUDA GPU that supports it, or a
    CPU with AVX512-BF16 or AMX (read from the CPU flags; where no flags can be read, a 0.1 s timing of a
    convolution in both precisions decides). Elsewhere bf16 is emulated and several times slower, so
    ``auto`` keeps fp32.

    Args:
        requested: ``"auto"``, ``"32"`` or ``"bf16"``.
        accelerator: ``"cpu"``, ``"gpu"``/``"cuda"`` or ``"auto"`` (a GPU when one is present).

    Returns:
        Lightning's precision name (``"bf16-mixed"`` or ``"32-true"``) and
        ``{"requested", "used", "device", "reason"}``.

    Raises:
        CatdogError: an unknown precision.
    """
    requested = str(requested)
    if requested not in ("auto", "32", "bf16"):
        raise CatdogError(f"precision={requested} is not supported: use auto, 32 or bf16")
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    device = torch.cuda.get_device_name(0) if gpu and torch.cuda.is_available() else "cpu"
    if requested != "auto":
        used, reason = requested, "requested"
    elif gpu:
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        used, reason = ("bf16", "GPU supports bf16") if native else ("32", "GPU without bf16 support")
    else:
        flags = cpu_flags()
        if flags is not None:
            native = sorted(flags & {"avx512_bf16", "amx_bf16"})
            used = "bf16" if native else "32"
            reason = f"CPU flags: {', '.join(native)}" if native else "CPU has neither avx512_bf16 nor amx_bf16"
        else:
            speedup = _bf16_speedup_cpu()
            used = "bf16" if speedup >= 1.2 else "32"
            reason = f"timed check: bf16 convolution {speedup:.2f}x the speed of fp32"
    record = {"requested": requested, "used": used, "device": device, "reason": reason}
    return ("bf16-mixed" if used == "bf16" else "32-true"), record


# ---------------------------------------------------------------------------------------------
# Decoding in DataLoader workers
# ---------------------------------------------------------------------------------------------
class ExplainDataset(Dataset):
    """Decodes one image: the model input, and a bounded-size copy of the original for the overlay.

    Unreadable files are returned as an error instead of raising, so one bad file never stops a run.

    Args:
        paths: image files.
        transform: array -> model input tensor.
        max_side: longest side of the overlay copy (None: the original size).
        offset: global index of ``paths[0]`` (a rank's share starts there).
    """

    def __init__(
        self,
        paths: Sequence[str],
        transform: Callable[[np.ndarray], torch.Tensor],
        max_side: int | None = None,
        offset: int = 0,
    ) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.max_side = max_side
        self.offset = offset

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            rgb = load_rgb(self.paths[index])
        except BadImageError as err:
            return {"index": self.offset + index, "error": str(err)}
        small = bounded_copy(rgb, self.max_side)
        return {
            "index": self.offset + index,
            "error": None,
            "image": self.transform(rgb),
            "original": torch.from_numpy(np.ascontiguousarray(small)),
            "size": rgb.shape[:2],
        }


@dataclass
class ExplainBatch:
    """A collated batch. ``pin_memory`` pins only the model input: originals stay on the CPU.

    The originals (of different sizes) travel as one flat uint8 buffer, one shared-memory segment per
    batch from a DataLoader worker instead of one per image; ``originals`` gives each as a view.
    """

    images: torch.Tensor | None
    indices: list[int]
    packed_originals: torch.Tensor  # uint8 [sum of H*W*3], the originals one after the other
    original_shapes: list[tuple[int, ...]]
    sizes: list[tuple[int, int]]
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def originals(self) -> list[torch.Tensor]:
        """Each original, ``uint8 [H, W, 3]`` (views of the packed buffer, in row order)."""
        views, offset = [], 0
        for shape in self.original_shapes:
            count = math.prod(shape)
            views.append(self.packed_originals[offset : offset + count].view(shape))
            offset += count
        return views

    def pin_memory(self) -> ExplainBatch:
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self

    def __getitem__(self, key: str) -> Any:  # batch["images"] as with the former dict batches
        return getattr(self, key)


def _concatenate(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The tensors' elements one after the other, in shared memory when called in a DataLoader worker.

    Writing straight into shared memory (as ``default_collate`` does for the model input) saves the
    copy the worker would otherwise make when it sends the batch.
    """
    total = sum(tensor.numel() for tensor in tensors)
    if not tensors:
        return torch.empty(0, dtype=torch.uint8)
    if torch.utils.data.get_worker_info() is not None:
        storage = tensors[0]._typed_storage()._new_shared(total, device=tensors[0].device)
        out = tensors[0].new(storage).resize_(total)
    else:
        out = tensors[0].new_empty(total)
    return torch.cat([tensor.reshape(-1) for tensor in tensors], out=out)


def collate_explain(items: list[dict[str, Any]]) -> ExplainBatch:
    """Stack the readable images; pack the originals (their sizes differ) into one buffer; errors aside."""
    good = [item for item in items if item["error"] is None]
    return ExplainBatch(
        images=default_collate([item["image"] for item in good]) if good else None,
        indices=[item["index"] for item in good],
        packed_originals=_concatenate([item["original"] for item in good]),
        original_shapes=[tuple(item["original"].shape) for item in good],
        sizes=[tuple(item["size"]) for item in good],
        errors=[(item["index"], item["error"]) for item in items if item["error"] is not None],
    )


def share_of(count: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous ``[start, stop)`` slice of ``count`` images that rank ``rank`` of ``world`` explains."""
    return count * rank // world, count * (rank + 1) // world


def global_rank_from_env() -> int:
    """This process's global rank as the launchers (Lightning, torchrun, SLURM) set it; 0 when unset."""
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key) not in (None, ""):
            return int(os.environ[key])
    local = os.environ.get("LOCAL_RANK")
    # Lightning's own launcher sets LOCAL_RANK and NODE_RANK in the processes it starts.
    if local not in (None, ""):
        return int(os.environ.get("NODE_RANK", 0)) * int(os.environ.get("LOCAL_WORLD_SIZE", 1) or 1) + int(local)
    return 0


# ---------------------------------------------------------------------------------------------
# The Lightning module: one explainer call per batch
# ---------------------------------------------------------------------------------------------
class ExplainPredictor(pl.LightningModule):
    """Wraps a classifier and its explainer for ``Trainer.predict``; builds each rank's DataLoader.

    Args:
        net: the classifier network (moved to the device by Lightning; the explainer holds the same one).
        explainer: makes the maps (and owns its gradient mode), ``settings.topk`` per image.
        paths: all images, in order; labels: their class index (-1 unknown).
        transform: array -> model input (see :class:`ExplainDataset`).
        settings: DataLoader sizes and the overlay copy's ``max_side``.
        channels_last: feed the network channels-last tensors.
        columns_fn: ``(images, explanation) -> one dict per image`` of extra predictions.csv columns
            computed on the batch (the opt-in faithfulness metrics), or None.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        explainer: Explainer,
        paths: list[str],
        labels: list[int],
        transform: Callable[[np.ndarray], torch.Tensor],
        settings: EngineSettings,
        channels_last: bool = True,
        columns_fn: Callable[[torch.Tensor, Any], list[dict[str, Any]]] | None = None,
    ) -> None:
        super().__init__()
        self.columns_fn = columns_fn
        self.net = net
        self.explainer = explainer
        self.paths, self.labels = paths, labels
        self.transform, self.settings = transform, settings
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def predict_dataloader(self) -> DataLoader:
        start, stop = share_of(len(self.paths), self.global_rank, self.trainer.world_size)
        return DataLoader(
            ExplainDataset(self.paths[start:stop], self.transform, self.settings.max_side, offset=start),
            batch_size=self.settings.batch_size,
            num_workers=self.settings.num_workers,
            collate_fn=collate_explain,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def transfer_batch_to_device(self, batch: ExplainBatch, device: torch.device, dataloader_idx: int) -> ExplainBatch:
        # Only the model input goes to the device; originals are drawn on by CPU threads.
        if batch.images is not None:
            batch.images = batch.images.to(device, non_blocking=True)
        return batch

    def predict_step(self, batch: ExplainBatch, batch_idx: int) -> dict[str, Any] | None:
        if batch.images is None:
            return None
        x = batch.images.contiguous(memory_format=self.memory_format)
        true = torch.tensor([self.labels[i] for i in batch.indices], dtype=torch.long, device=x.device)
        explained = self.explainer.explain(x, true_labels=true, topk=self.settings.topk)  # the one method-specific call
        logits = explained.logits.float()
        if not torch.isfinite(logits).all():  # else NaN probabilities crash the overlays' confidence prefix
            raise CatdogError(
                f"the model outputs NaN or infinity (batch {batch_idx}): its weights overflow on these images; "
                "use an earlier checkpoint or retrain with a lower learning rate"
            )
        losses = F.cross_entropy(logits, true.clamp(min=0), reduction="none")
        return {
            "probs": logits.softmax(dim=1).cpu().numpy(),
            "losses": losses.cpu().numpy(),
            "class_idx": explained.class_idx.cpu().numpy(),
            "maps": explained.maps.float().cpu().numpy(),
            "stats": explained.stats,
            "columns": self.columns_fn(x, explained) if self.columns_fn is not None else None,
        }


# ---------------------------------------------------------------------------------------------
# Each rank's writer: overlays, rows and maps into its shard
# ---------------------------------------------------------------------------------------------
class ShardWriter(BasePredictionWriter):
    """Writes one rank's share into its shard folder: overlays (drawn by its pool of writer threads), the
    rows they return, and the raw maps. It owns all of this rank's writing.

    Args:
        out_dir: the explain folder (rank 0's; other ranks receive it by broadcast in ``setup``).
        overlays: turns each batch into overlay jobs (names, paths, annotations).
        style: how overlays look.
        settings: writer threads, ``save_cams``, and ``batch_size`` (rows per chunk, jobs in flight).
    """

    def __init__(
        self, out_dir: Path | None, overlays: OverlayJobs, style: OverlayStyle, settings: EngineSettings
    ) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = out_dir
        self.overlays, self.style, self.settings = overlays, style, settings
        self.save_cams = settings.save_cams
        self.rows: RowSink | None = None
        self.pool: BoundedWriter | None = None
        self.shard: Path | None = None
        self.skipped: list[tuple[int, str]] = []
        self.stats: dict[str, float] = {}
        self.map_shape: tuple[int, ...] | None = None
        self.max_abs = 0.0
        self.count = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.out_dir, self.shard = open_shard(trainer, self.out_dir, ("cams.bin", "class_idx.bin"))
        self.rows = RowSink(self.shard / "rows.pkl", self.settings.batch_size)
        self.pool = BoundedWriter(
            functools.partial(render_or_skip, style=self.style),
            self.settings.writers,
            max_pending=2 * self.settings.batch_size,
            on_result=self.rows.add,
        )

    def emit_maps(self, cams: np.ndarray, class_idx: np.ndarray) -> None:
        """Append one batch's maps (float32) and class indices (int64) to the shard's raw files."""
        if not self.save_cams:
            return
        cams = np.ascontiguousarray(cams, dtype=np.float32)
        if self.map_shape is None:
            self.map_shape = cams.shape[1:]
        elif cams.shape[1:] != self.map_shape:
            raise CatdogError(f"the explainer returned maps of shape {cams.shape[1:]} after {self.map_shape}")
        if cams.size:
            self.max_abs = max(self.max_abs, float(np.abs(cams).max()))
        with open(self.shard / "cams.bin", "ab") as handle:
            handle.write(cams.tobytes())
        with open(self.shard / "class_idx.bin", "ab") as handle:
            handle.write(np.ascontiguousarray(class_idx, dtype=np.int64).tobytes())

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: ExplainBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.skipped.extend(batch.errors)
        if prediction is None:
            return
        for key, value in prediction["stats"].items():  # worst case over batches
            self.stats[key] = max(self.stats.get(key, value), value)
        self.count += len(batch.indices)
        self.emit_maps(prediction["maps"], prediction["class_idx"])
        for job in self.overlays.jobs(batch, prediction, self.out_dir):
            self.pool.submit(job)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.pool.close()  # the last rows reach self.rows before it returns
        self.rows.flush()
        meta = {
            "rank": trainer.global_rank,
            "images": self.count,
            "skipped": self.skipped,
            "stats": self.stats,
            "map_shape": list(self.map_shape) if self.map_shape is not None else None,
            "max_abs": self.max_abs,
        }
        (self.shard / "meta.json").write_text(json.dumps(meta))
        trainer.strategy.barrier("catdog-explain-shards")  # every shard is complete before rank 0 merges


def open_shard(trainer: pl.Trainer, out_dir: Path | None, files: Sequence[str]) -> tuple[Path, Path]:
    """This process's shard folder ``<out_dir>/.shards/rank<N>/`` with ``files`` created empty; the output
    folder is rank 0's (the other ranks may have none yet). Returns (output folder, shard folder)."""
    out_dir = Path(trainer.strategy.broadcast(str(out_dir) if out_dir else None, src=0))
    shard = out_dir / SHARDS / f"rank{trainer.global_rank}"
    shard.mkdir(parents=True, exist_ok=True)
    for name in files:
        (shard / name).write_bytes(b"")
    return out_dir, shard


class RowSink:
    """Appends rows to a shard's ``rows.pkl`` in chunks: a sequence of pickled DataFrames."""

    def __init__(self, path: Path, chunk: int) -> None:
        self.path, self.chunk = path, max(1, chunk)
        self.buffer: list[dict[str, Any]] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    def add(self, row: dict[str, Any]) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            with open(self.path, "ab") as handle:
                pickle.dump(pd.DataFrame(self.buffer), handle, protocol=pickle.HIGHEST_PROTOCOL)
            self.buffer = []


def read_row_chunks(path: Path) -> Iterator[pd.DataFrame]:
    """The DataFrames a :class:`RowSink` wrote, in order (our own file: pickle is safe here)."""
    with open(path, "rb") as handle:
        while True:
            try:
                yield pickle.load(handle)
            except EOFError:
                return


@dataclass(frozen=True)
class Shards:
    """What the ranks wrote into ``<out_dir>/.shards``, in rank order (ranks take contiguous slices of
    the inputs, so rank order is input order): each shard's folder, its meta.json, and all their rows."""

    folders: list[Path]
    metas: list[dict[str, Any]]
    frames: list[pd.DataFrame]


def read_shards(root: Path, stage: str) -> Shards:
    """Every rank's shard below ``root``: explain's and triage's merge steps start here.

    Raises:
        CatdogError: a shard lacks its meta.json (its process stopped early): run ``stage`` again.
    """
    folders = sorted((p for p in root.glob("rank*") if p.is_dir()), key=lambda p: int(p.name[4:]))
    metas = []
    for shard in folders:
        if not (shard / "meta.json").is_file():
            raise CatdogError(f"{shard} is incomplete: a process stopped early; run {stage} again")
        metas.append(json.loads((shard / "meta.json").read_text()))
    frames = [frame for shard in folders for frame in read_row_chunks(shard / "rows.pkl") if len(frame)]
    return Shards(folders, metas, frames)


# ---------------------------------------------------------------------------------------------
# Rank 0: join the shards into the explain folder
# ---------------------------------------------------------------------------------------------
def merge_shards(
    out_dir: Path,
    paths: list[str],
    class_names: list[str],
    describe: dict[str, Any],
    save_cams: bool,
    chunk_images: int = 1024,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Join every rank's shard, in image order, into predictions.csv, skipped.csv and cams.npz.

    Ranks explain contiguous slices, so concatenating the shards by rank keeps the input order. The maps
    are copied into cams.npz ``chunk_images`` images at a time (float16 unless a value exceeds its range).

    Args:
        out_dir: the explain folder holding ``.shards/``.
        paths: all images, in order (index -> path).
        class_names: class names in index order.
        describe: the explainer's description (method, layer), stored in cams.npz.
        save_cams: write cams.npz.
        chunk_images: images per copied chunk of maps.

    Returns:
        predictions, skipped (path, reason), and merged statistics.

    Raises:
        CatdogError: a shard is missing (a rank died) or images are lost or duplicated.
    """
    root = out_dir / SHARDS
    shards = read_shards(root, "explain")
    metas = shards.metas
    predictions = pd.concat(shards.frames, ignore_index=True) if shards.frames else pd.DataFrame()
    skipped_pairs = sorted((int(i), reason) for meta in metas for i, reason in meta["skipped"])
    skipped = pd.DataFrame([(paths[i], reason) for i, reason in skipped_pairs], columns=["path", "reason"])

    explained = predictions["path"].tolist() if len(predictions) else []
    if len(explained) + len(skipped) != len(paths) or len(set(explained)) != len(explained):
        raise CatdogError(
            f"merging the shards gave {len(explained)} explained + {len(skipped)} skipped images for "
            f"{len(paths)} inputs: run explain again"
        )
    keep = None  # rows (and maps) to keep, when some overlays failed
    if SKIP_REASON in predictions.columns:
        failed = predictions[SKIP_REASON].notna()
        keep = (~failed).to_numpy()
        position = {path: i for i, path in enumerate(paths)}
        failures = predictions.loc[failed, ["path", SKIP_REASON]].rename(columns={SKIP_REASON: "reason"})
        skipped = pd.concat([skipped, failures], ignore_index=True)
        skipped = skipped.sort_values("path", key=lambda col: col.map(position), kind="stable").reset_index(drop=True)
        predictions = predictions[keep].drop(columns=[SKIP_REASON]).reset_index(drop=True)
        explained = predictions["path"].tolist()
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    skipped.to_csv(out_dir / "skipped.csv", index=False)

    stats: dict[str, float] = {}
    for meta in metas:
        for key, value in meta["stats"].items():
            stats[key] = max(stats.get(key, value), value)
    shapes = {tuple(meta["map_shape"]) for meta in metas if meta["map_shape"] is not None}
    if save_cams and shapes:
        if len(shapes) > 1:
            raise CatdogError(f"the processes returned maps of different shapes {sorted(shapes)}")
        _write_cams_npz(out_dir / "cams.npz", shards, explained, class_names, describe, chunk_images, keep)
    shutil.rmtree(root, ignore_errors=True)
    return predictions, skipped, {"stats": stats, "processes": len(shards.folders)}


def _write_cams_npz(
    target: Path,
    shards: Shards,
    explained: list[str],
    class_names: list[str],
    describe: dict[str, Any],
    chunk_images: int,
    keep: np.ndarray | None = None,
) -> None:
    """Stream the shards' raw maps (one shape, checked by the caller) into a compressed .npz that ``np.load``
    reads like ``np.savez_compressed``'s."""
    map_shape = next(tuple(meta["map_shape"]) for meta in shards.metas if meta["map_shape"] is not None)
    max_abs = max(meta["max_abs"] for meta in shards.metas)
    # float16 halves the file; a diverged model's maps can exceed its range, then keep float32.
    dtype = np.dtype(np.float16) if max_abs < np.finfo(np.float16).max else np.dtype(np.float32)
    per_image = int(np.prod(map_shape))
    count = len(explained)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for name, item_dtype, shape, source, item in (
            ("cams", dtype, (count, *map_shape), "cams.bin", (np.float32, per_image)),
            ("class_idx", np.dtype(np.int64), (count, map_shape[0]), "class_idx.bin", (np.int64, map_shape[0])),
        ):
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                header = {"descr": np.lib.format.dtype_to_descr(item_dtype), "fortran_order": False, "shape": shape}
                np.lib.format.write_array_header_2_0(handle, header)
                offset = 0  # images read so far, across shards (indexes ``keep``)
                for shard in shards.folders:
                    raw_dtype, stride = item
                    with open(shard / source, "rb") as raw:
                        while True:
                            block = np.fromfile(raw, dtype=raw_dtype, count=chunk_images * stride)
                            if not block.size:
                                break
                            if keep is not None:
                                rows = block.reshape(-1, stride)
                                block = rows[keep[offset : offset + len(rows)]]
                                offset += len(rows)
                            handle.write(block.astype(item_dtype).tobytes())
        small = {
            "paths": np.array(explained),
            "class_names": np.array(class_names),
            **{key: np.array(value) for key, value in describe.items()},
        }
        for name, array in small.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, array, allow_pickle=False)


# ---------------------------------------------------------------------------------------------
# The streaming core
# ---------------------------------------------------------------------------------------------
def run_explain(
    model: Any,
    images: pd.DataFrame,
    out_dir: Path | None,
    settings: EngineSettings,
    *,
    style: OverlayStyle,
    explainer: Explainer | None = None,
    annotations: Annotations | None = None,
    faithfulness: Faithfulness | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]] | None:
    """Lightning prediction over ``images``: batches in, overlays, rows and maps out. Usable without Hydra.

    Each process (rank) explains a contiguous share of ``images`` and writes a shard; rank 0 merges the
    shards into the explain folder. With one process it is the same code path.

    Args:
        model: a loaded classifier in eval mode (``ClassifierModule`` or ``PretrainedClassifier``).
        images: columns ``path`` and ``label`` (class name or None).
        out_dir: the explain folder (must exist on rank 0; other ranks get rank 0's, may pass None).
        settings: batch, worker, precision and device settings (:class:`~catdog.explain.settings.EngineSettings`).
        style: how overlays look.
        explainer: the method making the maps; default exact CAM at the checkpoint's feature layer.
        annotations: object boxes and masks by path (localization columns).
        faithfulness: opt-in faithfulness metrics, computed per batch (columns of predictions.csv).

    Returns:
        On rank 0: predictions (one row per readable image, input order), skipped (path, reason) and run
        statistics; on other ranks: None.
    """
    hp = model.hparams
    class_names = list(hp.class_names)
    explainer = explainer or explainer_for(model)
    overlays = OverlayJobs.for_images(images, class_names, annotations or Annotations(), settings.thumbnails)
    lightning_precision, precision_record = resolve_precision(settings.runtime.precision, settings.runtime.accelerator)
    channels_last = bool(hp.get("channels_last", True))
    if channels_last:
        model.net.to(memory_format=torch.channels_last)
    writer = ShardWriter(out_dir, overlays, style, settings)
    predictor = ExplainPredictor(
        model.net,
        explainer,
        overlays.paths,
        overlays.labels,
        build_transform(hp.image_size, hp.mean, hp.std, train=False),
        settings,
        channels_last,
        columns_fn=faithfulness.columns if faithfulness is not None else None,
    )
    with quiet_lightning():
        trainer = _trainer(settings, lightning_precision, writer)
        start = datetime.now()
        with reuse_freed_memory(settings.runtime.tune_malloc) as malloc:
            trainer.predict(predictor, return_predictions=False)
        seconds = (datetime.now() - start).total_seconds()
    if not trainer.is_global_zero:
        return None
    out_dir = writer.out_dir
    predictions, skipped, merged = merge_shards(
        out_dir, overlays.paths, class_names, explainer.describe(), settings.save_cams
    )
    _cam_self_check(merged["stats"], precision_record["used"])
    stats = {
        "cam_logit_max_deviation": merged["stats"].get("cam_logit_deviation"),
        "seconds": round(seconds, 2),
        "images_per_second": round(len(predictions) / seconds, 1) if seconds > 0 else None,
        "precision": precision_record["used"],
        "precision_check": precision_record,
        "processes": merged["processes"],
        "malloc": malloc,
        "accelerator": str(trainer.accelerator.__class__.__name__).replace("Accelerator", "").lower(),
    }
    return predictions, skipped, stats


def _trainer(settings: EngineSettings, precision: str, writer: ShardWriter) -> pl.Trainer:
    runtime = settings.runtime
    return pl.Trainer(
        accelerator=runtime.accelerator,
        devices=list(runtime.devices) if isinstance(runtime.devices, tuple) else runtime.devices,
        num_nodes=runtime.num_nodes,
        strategy=runtime.strategy,
        precision=precision,
        callbacks=[writer],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=settings.progress,
        inference_mode=False,  # gradient explainers enable gradients themselves; CAM uses inference_mode
        use_distributed_sampler=False,  # each rank takes its own contiguous share (no padding duplicates)
    )


def _cam_self_check(stats: dict[str, float], precision: str) -> None:
    """Warn when exact CAM's maps disagree with the logits by more than ``precision``'s rounding explains."""
    deviation = stats.get("cam_logit_deviation")
    # bf16 autocast rounds the features to 8 bits of mantissa: its maps agree with the logits less closely.
    relative = CAM_CHECK_RELATIVE.get(precision, CAM_CHECK_RELATIVE["bf16"])
    floor = CAM_CHECK_TOLERANCE.get(precision, CAM_CHECK_TOLERANCE["bf16"])
    tolerance = max(floor, relative * stats.get("logit_abs_max", 0.0))
    if deviation is not None and deviation > tolerance:
        log.warning(
            "CAM self-check: spatial mean + bias differs from the logit by %.2g (more than %g expected at %s)",
            deviation,
            tolerance,
            precision,
        )
