"""Object masks beside the images or in masks.csv: one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import one_line

from catdog.errors import CatdogError


def test_empty_masks_cell_is_one_line(tmp_path: Path) -> None:
    from catdog.data.masks import find_masks

    (tmp_path / "masks.csv").write_text("path,mask\na.png,\n")
    with pytest.raises(CatdogError, match="empty cell") as err:
        find_masks(tmp_path, [str(tmp_path / "a.png")])
    assert "masks.csv" in one_line(err)
