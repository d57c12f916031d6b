"""One console line per epoch, kept in the terminal's history (the progress bar redraws; these lines stay)."""

from __future__ import annotations

import time

import pytorch_lightning as pl


def _metric(trainer: pl.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class EpochLines(pl.Callback):
    """After each epoch's validation: ``epoch 3/8  train loss 0.512  val loss 0.431  val acc 0.911  12.4 s``,
    and ``*best`` when best.ckpt was written at that epoch (see :class:`catdog.callbacks.BestCheckpoint`).

    Args:
        train_loss, val_loss, val_acc: the logged metric names.
    """

    def __init__(self, train_loss: str = "train/loss", val_loss: str = "val/loss", val_acc: str = "val/acc") -> None:
        self.keys = (train_loss, val_loss, val_acc)
        self.start = time.perf_counter()
        self.pending: tuple[str, int] | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning runs checkpoint callbacks after all others: the line is printed at the next hook, when
        # best.ckpt has been decided for this epoch.
        if trainer.is_global_zero and not trainer.sanity_checking:
            self.pending = (self.line(trainer), trainer.current_epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._flush(trainer)

    def _flush(self, trainer: pl.Trainer) -> None:
        if self.pending is None:
            return
        text, epoch = self.pending
        self.pending = None
        if getattr(trainer.checkpoint_callback, "best_epoch", None) == epoch:
            text += "  *best"
        print(text, flush=True)

    def line(self, trainer: pl.Trainer) -> str:
        """The epoch's line (1-based epoch numbers, as the progress bar of :class:`EpochProgressBar`)."""
        train_loss, val_loss, val_acc = (_metric(trainer, key) for key in self.keys)
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        shown = str(total) if total and total > 0 else "?"
        return (
            f"epoch {epoch:>{len(shown)}}/{shown}  train loss {_fmt(train_loss, '.4f')}  "
            f"val loss {_fmt(val_loss, '.4f')}  val acc {_fmt(val_acc, '.3f')}  "
            f"{time.perf_counter() - self.start:6.1f} s"
        )
