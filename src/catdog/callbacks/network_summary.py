"""The network's layers and parameter counts at the start of training (instead of Lightning's summary,
which lists catdog's metric modules with zero parameters and a FLOPs column of zeros)."""

from __future__ import annotations

import pytorch_lightning as pl
from torch import nn


def _count(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f} M" if count >= 10_000 else f"{count:,}"


class NetworkSummary(pl.Callback):
    """Prints the network (``pl_module.net``): its top-level blocks with their parameters, then totals.

    Args:
        max_rows: at most this many blocks (the rest are summed in one line).
    """

    def __init__(self, max_rows: int = 16) -> None:
        self.max_rows = max_rows

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            print("\n".join(summary_lines(pl_module, self.max_rows)), flush=True)


def summary_lines(pl_module: pl.LightningModule, max_rows: int = 16) -> list[str]:
    """``Network: resnet18, 3 classes, 112 px input`` and one line per top-level block of the network."""
    net = getattr(pl_module, "net", pl_module)
    hp = getattr(pl_module, "hparams", {})
    classes = len(hp.get("class_names") or [])
    head = f"Network: {hp.get('arch', type(net).__name__)}, {classes} classes, {hp.get('image_size')} px input"
    rows = [(name, type(child).__name__, _count(child), _count(child, True)) for name, child in net.named_children()]
    rows = [row for row in rows if row[2]] or rows  # parameter-free blocks (ReLU, pooling) are not the network's size
    width = max([len(name) for name, *_ in rows] + [5])
    lines = [head, f"  {'block':<{width}}  {'type':<18} {'params':>9}  trainable"]
    for name, kind, total, trainable in rows[:max_rows]:
        state = "yes" if trainable == total else "frozen" if trainable == 0 else _millions(trainable)
        lines.append(f"  {name:<{width}}  {kind:<18} {_millions(total):>9}  {state}")
    if len(rows) > max_rows:
        rest = sum(row[2] for row in rows[max_rows:])
        lines.append(f"  ... {len(rows) - max_rows} more blocks, {_millions(rest)}")
    total, trainable = _count(net), _count(net, True)
    lines.append(f"  total {_millions(total)} parameters, {_millions(trainable)} trainable")
    return lines
