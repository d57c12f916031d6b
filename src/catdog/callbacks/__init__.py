"""Lightning callbacks of catdog's training console and checkpoints (one file per callback; conf/callbacks)."""

from catdog.callbacks.best_checkpoint import BestCheckpoint
from catdog.callbacks.epoch_lines import EpochLines
from catdog.callbacks.network_summary import NetworkSummary
from catdog.callbacks.progress_bar import EpochProgressBar

__all__ = ["BestCheckpoint", "EpochLines", "EpochProgressBar", "NetworkSummary"]
