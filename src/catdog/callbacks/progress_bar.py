"""Lightning's Rich progress bar, counting epochs from 1 like the epoch lines and the closing summary."""

from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar


class EpochProgressBar(RichProgressBar):
    """:class:`~pytorch_lightning.callbacks.RichProgressBar` whose description reads ``Epoch 3/8`` for the
    third of eight epochs (Lightning's reads ``Epoch 2/7``)."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = super()._get_train_description(current_epoch + 1)
        total = self.trainer.max_epochs
        if total is not None and total > 0:
            description = description.replace(f"/{total - 1}", f"/{total}", 1)
        return description
