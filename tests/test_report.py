"""The HTML report: numbers, escaping, assets. Built from hand-made explain folders (no model, helpers.make_run)."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import HOSTILE, make_images, make_run

from catdog.errors import CatdogError
from catdog.report import experiment_table, read_explain_dir, script_json, write_report


@pytest.fixture
def one_run(tmp_path: Path) -> Path:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("cat", HOSTILE), ("dog", "c.jpg"), ("dog", "d.jpg")])
    cams = np.arange(4 * 9, dtype=np.float32).reshape(4, 3, 3)
    preds, probs = ["cat", "dog", "dog", "dog"], [0.9, 0.8, 0.7, 0.6]
    return make_run(tmp_path / "runs", "solo", paths, preds, probs, cams, in_box=[True, False, True, True])


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


def test_report_never_copies_files_outside_the_explain_folder(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg"), ("dog", "c.jpg")])
    out = make_run(tmp_path / "runs", "A", paths, ["cat", "dog", "dog"], [0.9, 0.8, 0.7], np.ones((3, 2, 2), np.float32))
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not for the report " + os.urandom(16))
    frame = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    escape = os.path.relpath(secret, out)
    frame.loc[0, "overlay"] = escape  # ../../../secret.jpg
    frame.loc[1, "overlay"] = str(secret)  # absolute
    (out / "link.jpg").symlink_to(secret)
    frame.loc[2, "overlay"] = "link.jpg"  # a symlink inside the folder pointing out of it
    frame.to_csv(out / "predictions.csv", index=False)
    report = write_report(tmp_path / "report", [read_explain_dir(out)])
    copied = [p.read_bytes() for p in report.parent.rglob("*") if p.is_file()]
    assert secret.read_bytes() not in copied
    page = report.read_text()
    assert "secret.jpg" not in page and "link.jpg" not in page


def test_report_takes_curves_only_from_the_run_holding_the_explain_folder(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg")])
    out = make_run(tmp_path / "runs", "A", paths, ["cat", "dog"], [0.9, 0.8], np.ones((2, 2, 2), np.float32))
    moved = tmp_path / "moved"
    out.rename(moved)  # no longer inside a run folder: the run is taken from summary.json
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "checkpoints").mkdir(parents=True)
    secret = cv2.imencode(".png", np.full((5, 5, 3), 7, np.uint8))[1].tobytes()
    (elsewhere / "curves.png").write_bytes(secret)
    summary = json.loads((moved / "summary.json").read_text())
    summary["checkpoint"]["path"] = str(elsewhere / "checkpoints" / "best.ckpt")
    (moved / "summary.json").write_text(json.dumps(summary))
    report = write_report(tmp_path / "report", [read_explain_dir(moved)])
    assert secret not in [p.read_bytes() for p in report.parent.rglob("*") if p.is_file()]
