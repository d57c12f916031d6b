"""runs.py: which checkpoint a run folder means, and output folders (issue #19 items 5, 10)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catdog.runs import resolve_checkpoint


def test_run_folder_resolves_to_its_newest_best_checkpoint(tmp_path: Path) -> None:
    """A run folder reused by an older catdog holds best.ckpt (stale) and best-v1.ckpt (the new run's)."""
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    stale, fresh = checkpoints / "best.ckpt", checkpoints / "best-v1.ckpt"
    stale.write_bytes(b"old")
    fresh.write_bytes(b"new")
    os.utime(stale, (1_000_000, 1_000_000))
    assert resolve_checkpoint(tmp_path / "run") == fresh
    os.utime(fresh, (900_000, 900_000))
    assert resolve_checkpoint(tmp_path / "run") == stale
