"""What catdog prints: Lightning's chatter filtered (one mechanism for train, evaluate and explain), and
Rich progress for long phases that Lightning does not run.

Lightning prints hardware lines ("GPU available: False"), an advertisement for its cloud logger, a model
summary of every sub-module (catdog's metric modules included) and warnings that do not apply to catdog's
runs. :func:`quiet_lightning` hides exactly those; every other warning and error still shows.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator

__all__ = ["LIGHTNING_NOISE", "progress", "quiet_lightning"]

# Info loggers whose lines are noise on catdog's console: device availability, "Seed set to", the
# litlogger tip, "Restoring states from the checkpoint path" (catdog says which checkpoint it tests).
_INFO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning_fabric.utilities.seed",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
)

# Warnings that say nothing about the user's run (regular expressions matched at the message start).
LIGHTNING_NOISE = (
    # Lightning's own code calls a deprecated torch API (twice per run).
    r".*isinstance\(treespec, LeafSpec\)",
    # Small datasets have fewer batches per epoch than log_every_n_steps: catdog logs per epoch.
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # A frozen backbone keeps its BatchNorm layers in eval mode on purpose (model.freeze_backbone).
    r"Found \d+ module\(s\) in eval mode at the start of training",
    # The CSV logger writes into the run folder, which already holds split.csv.
    r"Experiment logs directory .* exists and is not empty",
)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within the block, Lightning's info lines and the warnings of :data:`LIGHTNING_NOISE` are not shown.

    Warnings and errors other than those still show (e.g. "GPU available but not used").
    """
    loggers = [logging.getLogger(name) for name in _INFO_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in LIGHTNING_NOISE:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A phase with a Rich progress bar on a terminal (steps done, elapsed, remaining); yields ``advance(n=1)``.

    Without a terminal (a log file, a pipe) it prints the description when the phase starts and its duration
    when it ends: no control characters in logs.
    """
    start = time.perf_counter()
    if not sys.stdout.isatty():
        print(f"{description} ...", flush=True)
        yield lambda steps=1: None
        print(f"{description}: done in {time.perf_counter() - start:.1f} s", flush=True)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task(description, total=total)
        yield lambda steps=1: bar.advance(task, steps)
