"""The HTML report: numbers, escaping, assets. Built from hand-made explain folders (no model).

``make_run`` is shared with test_compare.py and test_report_browser.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from catdog.errors import CatdogError
from catdog.overlay import draw_label, label_text, safe_name, save_image
from catdog.report import experiment_table, read_explain_dir, script_json, write_report

CLASSES = ["cat", "dog"]
HOSTILE = "<img src=x onerror=alert(1)>.jpg"


def make_images(root: Path, names: Sequence[tuple[str, str]]) -> list[str]:
    """Tiny photos root/<class>/<name>; returns their absolute paths."""
    paths = []
    for i, (label, name) in enumerate(names):
        image = np.full((24, 32, 3), 40 * i % 255, dtype=np.uint8)
        paths.append(str(save_image(root / label / name, image).resolve()))
    return paths


def make_run(
    base: Path,
    name: str,
    paths: Sequence[str],
    preds: Sequence[str],
    probs: Sequence[float],
    cams: np.ndarray,
    *,
    overrides: Sequence[str] = (),
    config: dict | None = None,
    class_names: Sequence[str] = CLASSES,
    in_box: Sequence[bool] | None = None,
    stamp: str = "2026-01-01_00-00-00",
    run_files: bool = True,
) -> Path:
    """A run folder with .hydra/, split.csv, curves.png, a stub checkpoint and one explain folder.

    Args:
        paths: image paths; their true class is their parent folder's name.
        preds: predicted class per image; probs: its probability (the other classes share the rest).
        cams: raw predicted-class maps [N, h, w].
        run_files: write the run folder's own files (False: only add another explain folder).

    Returns:
        The explain folder.
    """
    run = base / name
    if run_files:
        _write_run_files(run, paths, overrides, config, class_names)
    out = run / "explain" / stamp
    rows = []
    for i, (path, pred, prob) in enumerate(zip(paths, preds, probs)):
        true = Path(path).parent.name
        folder = f"correct/{pred}" if true == pred else f"incorrect/{true}_as_{pred}"
        overlay = f"{folder}/{min(999, round((1 - prob) * 1000)):04d}_{safe_name(Path(path).stem)}.jpg"
        picture = np.zeros((48, 64, 3), dtype=np.uint8)
        picture[:, : 8 * (i + 1) % 64] = (200, 30, 30)
        save_image(out / overlay, draw_label(picture, label_text(pred, prob, true)))
        p = {c: (prob if c == pred else (1 - prob) / (len(class_names) - 1)) for c in class_names}
        row = {
            "path": path,
            "true": true,
            "pred": pred,
            **{f"p_{c}": p[c] for c in class_names},
            "loss": -math.log(p[true]),
            "correct": true == pred,
            "peak_x": 0,
            "peak_y": 0,
            "area50": 0.5,
            "overlay": overlay,
        }
        if in_box is not None:
            row["in_box"] = in_box[i]
        rows.append(row)
    pd.DataFrame(rows).to_csv(out / "predictions.csv", index=False)
    pd.DataFrame(columns=["path", "reason"]).to_csv(out / "skipped.csv", index=False)
    index = {c: i for i, c in enumerate(class_names)}
    class_idx = np.array([[index[p], index[Path(t).parent.name]] for p, t in zip(preds, paths)])
    both = np.stack([cams, cams], axis=1).astype(np.float16)
    np.savez_compressed(
        out / "cams.npz", cams=both, class_idx=class_idx, paths=np.array(paths), class_names=np.array(class_names)
    )
    summary = {
        "images": len(rows),
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "class_names": list(class_names),
        "arch": "resnet18",
        "pointing_game": None,
        "checkpoint": {"path": str((run / "checkpoints" / "best.ckpt").resolve()), "sha256": "ab" * 32},
        "train_config": {"path": str((run / ".hydra" / "config.yaml").resolve()), "sha256": "cd" * 32},
    }
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def _write_run_files(
    run: Path, paths: Sequence[str], overrides: Sequence[str], config: dict | None, class_names: Sequence[str]
) -> None:
    """.hydra/, split.csv (every image in test), curves.png and a stub checkpoint holding the class names."""
    hydra = run / ".hydra"
    hydra.mkdir(parents=True, exist_ok=True)
    config = config or {"model": {"arch": "resnet18"}, "optimizer": {"lr": 0.001}}
    OmegaConf.save(OmegaConf.create(config), hydra / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), hydra / "overrides.yaml")
    choices = {"hydra": {"runtime": {"choices": {"model": "resnet18", "hydra/launcher": "basic"}}}}
    OmegaConf.save(OmegaConf.create(choices), hydra / "hydra.yaml")
    labels = [Path(p).parent.name for p in paths]
    pd.DataFrame({"path": paths, "label": labels, "split": "test"}).to_csv(run / "split.csv", index=False)
    save_image(run / "curves.png", np.full((40, 60, 3), 200, dtype=np.uint8))
    (run / "checkpoints").mkdir(exist_ok=True)
    stub = {"hyper_parameters": {"class_names": list(class_names)}, "state_dict": {}}
    torch.save(stub, run / "checkpoints" / "best.ckpt")


@pytest.fixture
def one_run(tmp_path: Path) -> Path:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("cat", HOSTILE), ("dog", "c.jpg"), ("dog", "d.jpg")])
    cams = np.arange(4 * 9, dtype=np.float32).reshape(4, 3, 3)
    return make_run(
        tmp_path / "runs",
        "solo",
        paths,
        ["cat", "dog", "dog", "dog"],
        [0.9, 0.8, 0.7, 0.6],
        cams,
        in_box=[True, False, True, True],
    )


def test_experiment_table_numbers(one_run: Path) -> None:
    table = experiment_table([read_explain_dir(one_run)]).iloc[0]
    assert table["experiment"] == "solo"  # the run folder's name
    assert table["accuracy"] == pytest.approx(3 / 4)
    assert table["recall_cat"] == pytest.approx(1 / 2) and table["recall_dog"] == pytest.approx(1.0)
    assert table["mean_confidence"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.6) / 4)
    assert table["pointing_game"] == pytest.approx(3 / 4)
    assert table["checkpoint_sha256"] == "ab" * 32


def test_script_json_cannot_close_the_script_element() -> None:
    data = {"name": "</script><script>alert(1)</script> & <!-- \u2028", "x": math.nan}
    text = script_json(data)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == dict(data, x=None)


def test_single_run_report_is_escaped_and_self_contained(one_run: Path) -> None:
    index = write_report(one_run / "report", [read_explain_dir(one_run)])
    page = index.read_text(encoding="utf-8")
    assert "<img src=x" not in page  # the hostile file name only appears escaped
    assert "onerror=alert(1)" in page.replace("\\u003c", "<")  # ... but it is there, as data
    assert "http://" not in page and "https://" not in page  # no CDN, no network
    data = json.loads(
        re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1)
    )
    assert len(data["images"]) == 4 and data["experiments"] == ["solo"]
    hostile = next(img for img in data["images"] if img["name"] == HOSTILE)
    assert hostile["runs"][0]["pred"] == "dog" and hostile["runs"][0]["correct"] is False
    # The explain folder's own overlays are referenced relatively, thumbnails and summary pictures live inside.
    assert hostile["runs"][0]["full"].startswith("../incorrect/cat_as_dog/")
    for img in data["images"]:
        assert (index.parent / img["runs"][0]["full"]).is_file()
        assert (index.parent / img["runs"][0]["thumb"]).is_file()
    assert (index.parent / "assets" / "confusion_0.png").is_file() and (
        index.parent / "assets" / "curves_0.png"
    ).is_file()
    assert "Pointing game" in page and "Recall cat" in page


def test_report_rejects_duplicate_labels(one_run: Path) -> None:
    exp = read_explain_dir(one_run)
    with pytest.raises(CatdogError, match="unique"):
        write_report(one_run / "report", [exp, read_explain_dir(one_run)])


def test_read_explain_dir_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(CatdogError, match="predictions.csv"):
        read_explain_dir(tmp_path)
