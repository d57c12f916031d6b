"""An exponential moving average (EMA) of the weights that validation, best.ckpt and test all use.

Built on Lightning's :class:`~pytorch_lightning.callbacks.WeightAveraging` (which swaps the averaged
weights in for validation, saves them as the checkpoint's ``state_dict`` and keeps the raw ones in
``current_model_state`` for resuming), with two changes that a short fine-tune needs:

- a warm-up of the decay, ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as timm's
  ``ModelEmaV2``/TF's ``ExponentialMovingAverage(num_updates=...)``): a few hundred steps with the
  fixed 0.999 of ``EMAWeightAveraging`` would keep the average near the first step's weights,
  i.e. near the randomly initialised head;
- loading a checkpoint outside fitting (``trainer.test(ckpt_path=best.ckpt)`` after ``fit``)
  keeps the averaged weights: Lightning's callback would put the raw weights back, so the test
  would not measure the weights that validation chose.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging
from pytorch_lightning.trainer.states import TrainerFn

from catdog.errors import CatdogError


class EMAWeights(WeightAveraging):
    """EMA of all parameters and buffers (BatchNorm statistics too), updated after every optimizer step.

    Args:
        decay: the decay once warmed up, in ``[0, 1)``; the average's horizon is about
            ``1 / (1 - decay)`` steps (0.98: ~50 steps, one epoch of 1,600 images in batches of 32).
        warmup: use the warm-up ``min(decay, (1 + n) / (10 + n))``; False: ``decay`` from the start.
        start_step: first optimizer step (0-based) that updates the average; before it the
            average is not touched (it starts as a copy of the weights at that step).

    Raises:
        CatdogError: a decay outside ``[0, 1)`` or a negative start step.
    """

    def __init__(self, decay: float = 0.98, warmup: bool = True, start_step: int = 0) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= float(decay) < 1.0:
            raise CatdogError(f"callbacks.ema.decay must be a number in [0, 1), got {decay!r}: e.g. 0.98")
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise CatdogError(f"callbacks.ema.start_step must be an integer >= 0, got {start_step!r}")
        self.decay, self.warmup, self.start_step = float(decay), bool(warmup), int(start_step)
        super().__init__(use_buffers=True, avg_fn=self._average)

    @torch.no_grad()
    def _average(self, average: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        """The new average of one tensor after ``updates`` earlier updates (counters are copied)."""
        if not torch.is_floating_point(average):  # BatchNorm's num_batches_tracked
            return current
        decay = self.decay
        if self.warmup:
            n = float(updates)
            decay = min(decay, (1.0 + n) / (10.0 + n))
        return torch.lerp(average, current.to(average.dtype), 1.0 - decay)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After every optimizer step from ``start_step`` on; never at epoch ends."""
        return step_idx is not None and step_idx >= self.start_step

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Testing/validating a checkpoint: its state_dict already holds the averaged weights,
        # which are the ones to evaluate; only a resumed fit restores the raw weights.
        if trainer.state.fn != TrainerFn.FITTING:
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
