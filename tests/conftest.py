"""Fixtures shared by the test files (plain helper functions are in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tiny_train_cfg


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder trained once per session: one CPU epoch at 32 px on 12 demo images per class, no test stage.

    Shared by every test that needs a trained run to read: evaluate, reload, tamper with a copy of a
    checkpoint. Tests may add output folders (evaluate/, explain/) but must not change its files.
    """
    from catdog.pipelines.train import train

    tmp = tmp_path_factory.mktemp("tiny_run")
    train(tiny_train_cfg(tmp, "test=false"))
    return tmp / "run"
