"""The HTML report: numbers, escaping, assets. Built from hand-made explain folders (no model, helpers.make_run)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
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
    # Every picture lives inside the report folder (the explain folder's overlays as files/<experiment>/...).
    assert hostile["runs"][0]["full"].startswith("files/0/incorrect/cat_as_dog/")
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
    out = make_run(
        tmp_path / "runs", "A", paths, ["cat", "dog", "dog"], [0.9, 0.8, 0.7], np.ones((3, 2, 2), np.float32)
    )
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


# --- issue 20 item 5: a report that starts from the mistakes, portable on its own --------------
def _data(page: str) -> dict:
    return json.loads(
        re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1)
    )


def _urls(page: str) -> list[str]:
    """Every picture URL of the page: <img src> of the static part and the gallery data's pictures."""
    found = re.findall(r"<img src='([^']+)'", page)
    for img in _data(page)["images"]:
        for run in img["runs"]:
            found += [run[key] for key in ("full", "photo", "heat", "thumb") if run.get(key)]
    return found


def test_report_folder_is_portable_on_its_own(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg"), ("dog", "c.jpg")])
    out = make_run(
        tmp_path / "runs", "solo", paths, ["cat", "cat", "dog"], [0.9, 0.6, 0.8], np.zeros((3, 2, 2)), layers=True
    )
    write_report(out / "report", [read_explain_dir(out)])
    moved = tmp_path / "elsewhere" / "report"
    shutil.copytree(out / "report", moved)  # e.g. zipped and sent: the explain folder stays behind
    page = (moved / "index.html").read_text(encoding="utf-8")
    urls = _urls(page)
    assert len(urls) >= 3 * 3 and not any(url.startswith(("../", "/")) or "://" in url for url in urls)
    for url in urls:
        assert (moved / url).is_file(), url
    assert "self-contained" in page


def test_gallery_shows_text_free_layers_and_the_real_file_name(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", [("cat", "cat.169.jpg"), ("dog", "IMG 0001 (copy).jpg")])
    out = make_run(tmp_path / "runs", "solo", paths, ["cat", "cat"], [0.9, 0.6], np.zeros((2, 2, 2)), layers=True)
    index = write_report(out / "report", [read_explain_dir(out)])
    images = _data(index.read_text(encoding="utf-8"))["images"]
    assert sorted(img["name"] for img in images) == ["IMG 0001 (copy).jpg", "cat.169.jpg"]  # not the overlay's name
    for img in images:
        run = img["runs"][0]
        overlay = Path(run["full"]).relative_to("files/0").as_posix()
        # The card's picture is explain's photo + heatmap layers, not the overlay with its burned-in label.
        assert (index.parent / run["photo"]).read_bytes() == (out / "thumbs" / overlay).read_bytes()
        assert (index.parent / run["heat"]).read_bytes() == (out / "thumbs" / "heat" / overlay).read_bytes()
        assert run["thumb"] is None


def test_report_title_names_the_task_the_data_and_the_checkpoint(one_run: Path) -> None:
    page = write_report(one_run / "report", [read_explain_dir(one_run)]).read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", page, re.S).group(1)
    assert "cat / dog classifier (resnet18)" in title
    assert "split.csv [test]" in title and "best.ckpt" in title
    assert "<h1>cat / dog classifier (resnet18)</h1>" in page


def test_explain_report_help_names_no_experiment_selector(one_run: Path) -> None:
    page = write_report(one_run / "report", [read_explain_dir(one_run)]).read_text(encoding="utf-8")
    help_text = re.search(r"<details class=\"help\">(.*?)</details>", page, re.S).group(1)
    assert "Experiment" not in help_text and "flipped" not in help_text.lower()
    assert "mistakes, highest loss" in help_text


def test_report_lists_the_most_confused_pairs_and_a_colour_legend(tmp_path: Path) -> None:
    names = [("cat", "a.jpg"), ("cat", "b.jpg"), ("cat", "c.jpg"), ("dog", "d.jpg"), ("fox", "e.jpg"), ("fox", "f.jpg")]
    paths = make_images(tmp_path / "photos", names)
    out = make_run(
        tmp_path / "runs",
        "solo",
        paths,
        ["dog", "dog", "cat", "cat", "dog", "fox"],
        [0.8] * 6,
        np.zeros((6, 2, 2)),
        class_names=["cat", "dog", "fox"],
    )
    page = write_report(out / "report", [read_explain_dir(out)]).read_text(encoding="utf-8")
    confused = re.search(r"<section id='confused'>(.*?)</section>", page, re.S).group(1)
    entries = re.findall(r"data-true='(\w+)' data-pred='(\w+)'>.*?</button> (\d+) ", confused)
    assert entries == [("cat", "dog", "2"), ("dog", "cat", "1"), ("fox", "dog", "1")]  # most frequent first
    assert "66.7% of cat" in confused
    legend = re.search(r"<div class='legend' id='legend'>(.*?)</div>", page, re.S).group(1)
    assert "linear-gradient(to right, rgb(0,0,128) 0%" in legend  # JET, as the overlays draw it
    assert "least evidence" in legend and "most evidence" in legend


def test_compare_report_help_keeps_the_experiment_selector(one_run: Path) -> None:
    exp = read_explain_dir(one_run)
    other = read_explain_dir(one_run, label="other")
    page = write_report(one_run.parent / "both", [exp, other]).read_text(encoding="utf-8")
    assert 'chosen under "Experiment"' in page and "cat / dog classifier (resnet18): solo vs other" in page


# --- issue 19 item 2: every file the report reads or copies stays inside its folder ---------------
def _secret(tmp_path: Path) -> tuple[Path, bytes]:
    secret = tmp_path / "elsewhere" / "passwd"
    secret.parent.mkdir(exist_ok=True)
    payload = b"\xff\xd8root:x:0:0 secret " + bytes(range(32))
    secret.write_bytes(payload)
    return secret, payload


def _published(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


def test_symlinked_thumbnail_and_curves_are_never_copied(one_run: Path, tmp_path: Path) -> None:
    secret, payload = _secret(tmp_path)
    overlay = pd.read_csv(one_run / "predictions.csv")["overlay"][0]
    link = one_run / "thumbs" / overlay
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)  # the demonstrated attack: thumbs/<overlay> -> /etc/passwd
    curves = one_run.parents[1] / "curves.png"
    curves.unlink()
    curves.symlink_to(secret)  # a symlinked curves.png in the run folder
    report = write_report(tmp_path / "report", [read_explain_dir(one_run)])  # not beside: copies
    assert payload not in _published(report.parent)
    page = report.read_text()
    assert "curves_0.png" not in page
    inside = write_report(one_run / "report", [read_explain_dir(one_run)])  # beside: links
    assert payload not in _published(inside.parent)
    data = re.search(r'id="report-data">(.*?)</script>', inside.read_text(), re.S).group(1)
    for image in json.loads(data)["images"]:  # the symlinked thumbnail is not linked either
        urls = [run.get(key) or "" for run in image["runs"] for key in ("photo", "thumb")]
        assert not any(f"thumbs/{overlay}" in url for url in urls)


def test_symlinked_explain_files_are_not_read(one_run: Path, tmp_path: Path) -> None:
    _secret(tmp_path)
    other = tmp_path / "elsewhere" / "predictions.csv"
    (one_run / "predictions.csv").rename(other)
    (one_run / "predictions.csv").symlink_to(other)  # a file outside the folder posing as its table
    with pytest.raises(CatdogError, match="outside") as err:
        read_explain_dir(one_run)
    assert "\n" not in str(err.value)
