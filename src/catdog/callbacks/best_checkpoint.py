"""best.ckpt that breaks ties of the monitored metric with a second one (val/loss by default)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """:class:`~pytorch_lightning.callbacks.ModelCheckpoint` (``save_top_k=1``) that, when the monitored metric
    equals the best so far, keeps the epoch with the better ``tie_breaker`` metric.

    A small validation set saturates accuracy: with 21 images val/acc is 1.0 from the first epoch on, and
    plain ModelCheckpoint keeps that first epoch even when later ones have a much lower validation loss.
    Also records the epoch of the best checkpoint (``best_epoch``) for the console and test_metrics.json.

    Args:
        tie_breaker: the metric compared on ties (null: plain ModelCheckpoint behaviour).
        tie_breaker_mode: ``min`` (a loss) or ``max``.
        **kwargs: ModelCheckpoint's arguments.
    """

    def __init__(self, tie_breaker: str | None = "val/loss", tie_breaker_mode: str = "min", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if tie_breaker_mode not in ("min", "max"):
            raise ValueError(f"tie_breaker_mode={tie_breaker_mode!r}: use min or max")
        self.tie_breaker = tie_breaker
        self.tie_breaker_mode = tie_breaker_mode
        self.best_epoch: int | None = None
        self.best_tie_value: float | None = None

    def check_monitor_top_k(self, trainer: pl.Trainer, current: torch.Tensor | None = None) -> bool:
        if super().check_monitor_top_k(trainer, current):
            return True
        if current is None or self.save_top_k != 1 or not self.best_k_models or self.tie_breaker is None:
            return False
        best = self.best_k_models[self.kth_best_model_path]
        value = trainer.callback_metrics.get(self.tie_breaker)
        if value is None or self.best_tie_value is None or float(current) != float(best):
            return False
        better = (
            float(value) < self.best_tie_value if self.tie_breaker_mode == "min" else float(value) > self.best_tie_value
        )
        return bool(trainer.strategy.reduce_boolean_decision(better))

    def _update_best_and_save(
        self, current: torch.Tensor, trainer: pl.Trainer, monitor_candidates: dict[str, torch.Tensor]
    ) -> None:
        self.best_epoch = int(trainer.current_epoch)
        value = trainer.callback_metrics.get(self.tie_breaker) if self.tie_breaker else None
        self.best_tie_value = None if value is None else float(value)
        super()._update_best_and_save(current, trainer, monitor_candidates)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_epoch": self.best_epoch, "best_tie_value": self.best_tie_value}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_epoch = state_dict.get("best_epoch")
        self.best_tie_value = state_dict.get("best_tie_value")
