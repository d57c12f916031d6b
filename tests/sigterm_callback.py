"""A test-only Lightning callback that sends the training process a real SIGTERM at a given step.

Used by test_resume.py through the config (``+callbacks.kill._target_=sigterm_callback.SigtermAtStep``)
so the kill lands at the same point of an epoch every time.
"""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class SigtermAtStep(pl.Callback):
    """Sends SIGTERM to this process right after optimizer step ``step`` (once)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.sent = False

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if not self.sent and trainer.global_step == self.step:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
