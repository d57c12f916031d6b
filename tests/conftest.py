"""Fixtures shared by the test files (plain helper functions are in helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Nothing heavy is imported here: with pytest-xdist the controlling process loads this file but runs no test, and
# helpers.py imports torch and Lightning (~7 s). The fixtures import what they need.


@pytest.fixture(scope="session")
def tiny_training(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """train()'s summary of a run trained once per session: two CPU epochs at 32 px on 12 demo images per class,
    then the test stage (test_metrics.json, confusion_matrix.png).

    Two epochs so "the best epoch" is a choice (the sweep objective is the best val/acc, not the last).
    """
    from helpers import tiny_train_cfg

    from catdog.pipelines.train import train

    tmp = tmp_path_factory.mktemp("tiny_run")
    return train(tiny_train_cfg(tmp, "trainer.max_epochs=2"))


@pytest.fixture(scope="session")
def tiny_run(tiny_training: dict[str, Any]) -> Path:
    """The run folder of ``tiny_training``.

    Shared by every test that needs a trained run to read: evaluate, reload, tamper with a copy of a
    checkpoint. Tests may add output folders (evaluate/, explain/) but must not change its files.
    """
    return Path(tiny_training["run_dir"])


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for every browser test (tests/browser.py); skips without it."""
    from browser import launched

    with launched() as chromium:
        yield chromium
