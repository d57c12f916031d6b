"""Issue 20 item 4: explain's closing summary tells the truth: one photo's prediction and overlay path (by its
real file name), only files actually written, grid/ when written, a warning for label folders that are not
the model's classes."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import explain_cfg, save_checkpoint, write_images

from catdog.explain.pipeline import explain

CLASSES = ["cat", "dog"]


def test_one_photo_prints_its_prediction_and_overlay_and_only_written_files(tmp_path: Path, capsys) -> None:
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt", CLASSES, favourite=0)
    photo = write_images(tmp_path / "in", {"x": 1})[0].rename(tmp_path / "in" / "cat.169.png")
    summary = explain(explain_cfg(ckpt, f"input={photo}", "grid=true", "grid_methods=[gradcam]", "layers=null"))
    out = capsys.readouterr().out
    folder = Path(summary["out_dir"])
    assert re.search(r"^Explained 1 image \(0 skipped\) in ", out, re.MULTILINE)
    line = next(line for line in out.splitlines() if line.strip().startswith("cat.169.png: "))
    assert re.search(r"cat.169.png: cat \d+\.\d% \| dog \d+\.\d% -> (.+)$", line)
    overlay = Path(line.split(" -> ", 1)[1])
    assert overlay.is_file() and overlay.is_relative_to(folder)
    assert "confusion_matrix.png" not in out and "top_losses.png" not in out  # unlabelled: not written
    assert not (folder / "confusion_matrix.png").exists() and not (folder / "top_losses.png").exists()
    assert "predictions.csv, summary.json" in out
    grid = re.search(r"^  grid/: (\S+)", out, re.MULTILINE)
    assert grid and (folder / "grid" / grid.group(1).rstrip(",")).is_file()
    assert "Warning" not in out


def test_label_folders_that_are_not_classes_get_a_warning(tmp_path: Path, capsys) -> None:
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt", CLASSES, favourite=0)
    write_images(tmp_path / "pets", {"cats": 2, "dogs": 2})
    explain(explain_cfg(ckpt, f"data.root={tmp_path / 'pets'}"))
    out = capsys.readouterr().out
    assert re.search(
        r"^Warning: the folders cats/, dogs/ in .*pets are not the model's classes \(cat, dog\): their images were "
        r"explained as unlabelled", out, re.MULTILINE)
    # Named like the classes: scored, no warning.
    write_images(tmp_path / "named", {"cat": 2, "dog": 2})
    explain(explain_cfg(ckpt, f"data.root={tmp_path / 'named'}"))
    out = capsys.readouterr().out
    assert "Warning" not in out and re.search(r"accuracy 50\.00% on 4 labelled", out)
    assert "confusion_matrix.png" in out
