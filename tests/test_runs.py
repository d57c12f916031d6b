"""runs.py: which checkpoint a run folder means, and output folders (issue #19 items 5, 10)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from helpers import one_line

from catdog.errors import CatdogError
from catdog.runs import resolve_checkpoint, staged_output_dir


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


@pytest.mark.parametrize("length", [247, 250, 255])
def test_out_dir_names_up_to_255_bytes_are_staged(tmp_path: Path, length: int) -> None:
    """Issue #19 item 5: the staging name ``.<name>.partial`` of a 247-255 byte name is too long."""
    final = tmp_path / ("é" * ((length - 1) // 2) + "x" * ((length - 1) % 2 + 1))
    assert len(final.name.encode()) == length
    with staged_output_dir(final) as out:
        (out / "a.txt").write_text("done")
    assert (final / "a.txt").read_text() == "done"
    with staged_output_dir(final, overwrite=True) as out:
        (out / "a.txt").write_text("again")
    assert (final / "a.txt").read_text() == "again"
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_out_dir_name_too_long_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CatdogError, match="255") as err:
        with staged_output_dir(tmp_path / ("x" * 256)):
            pass
    one_line(err)


def test_disk_full_while_writing_is_a_one_line_error_and_keeps_the_old_result(tmp_path: Path) -> None:
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old result")
    with pytest.raises(CatdogError, match="No space left") as err:
        with staged_output_dir(final, overwrite=True) as out:
            (out / "half.txt").write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    one_line(err)
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
