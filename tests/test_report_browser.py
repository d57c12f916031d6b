"""The report in a real browser: headless Debian Chromium driven by Playwright (no browser download).

Skips when Playwright or /usr/bin/chromium is missing (tests/browser.py). Set CATDOG_SCREENSHOTS=<folder> to
keep screenshots of the summary, the gallery and the per-image view.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from browser import open_page, playwright_or_skip, shot
from helpers import HOSTILE, compare_config, make_images, make_run

from catdog.pipelines.compare import compare
from catdog.report import read_explain_dir, write_report

pytestmark = pytest.mark.slow  # a real browser: seconds per page

playwright_or_skip()  # skips this module without Playwright or Chromium


@pytest.fixture
def report(tmp_path: Path) -> Path:
    """Two experiments on 6 images (one with a hostile name); B breaks one image and fixes three; explain's layers."""
    names = [("cat", "a.jpg"), ("cat", HOSTILE), ("cat", "c.jpg"), ("dog", "d.jpg"), ("dog", "e.jpg"), ("dog", "f.jpg")]
    paths = make_images(tmp_path / "photos", names)
    cams = np.random.default_rng(0).normal(size=(6, 4, 4)).astype(np.float32)
    runs = tmp_path / "runs"
    a = make_run(
        runs, "A", paths, ["cat", "cat", "dog", "dog", "cat", "cat"], [0.9, 0.8, 0.7, 0.95, 0.6, 0.85], cams,
        config={"model": {"freeze_backbone": True}}, overrides=["model.freeze_backbone=true"],
        in_box=[True, False, True, True, False, True], layers=True,
    )  # fmt: skip
    b = make_run(
        runs, "B", paths, ["dog", "cat", "cat", "dog", "dog", "dog"], [0.7, 0.9, 0.8, 0.9, 0.75, 0.65], cams[::-1],
        config={"model": {"freeze_backbone": False}}, overrides=["model.freeze_backbone=false"],
        in_box=[True, True, True, False, True, True], layers=True,
    )  # fmt: skip
    cfg = compare_config(tmp_path, runs=[str(a.parent.parent), str(b.parent.parent)], out_dir=str(tmp_path / "compare"))
    return Path(compare(cfg)["report"])


def _open(browser: object, index: Path) -> tuple[object, list[str]]:
    page, problems = open_page(browser, index.resolve().as_uri())
    page.wait_for_selector(".tile")
    return page, problems


def test_compare_report_in_chromium(browser: object, report: Path) -> None:
    page, problems = _open(browser, report)
    shot(page, "summary.png", full_page=True)
    assert page.locator("#gallery .tile").count() == 6
    assert "Showing 6 of 6" in page.locator("#count").inner_text()
    assert page.locator("table.numbers").first.locator("tbody tr").count() == 2  # one row per experiment

    # The hostile file name is text, not an element.
    tile = page.locator(".tile .name", has_text=HOSTILE)
    assert tile.count() == 1 and tile.inner_text() == HOSTILE
    assert page.locator('img[src="x"]').count() == 0

    # Filters change what is shown: flipped = right in one experiment, wrong in the other (a, c, e, f).
    page.select_option("#filter-outcome", "flipped")
    assert page.locator("#gallery .tile").count() == 4
    page.select_option("#filter-outcome", "incorrect")
    page.select_option("#filter-exp", "0")  # A is wrong on c, e, f
    assert page.locator("#gallery .tile").count() == 3
    page.select_option("#filter-truth", "dog")
    assert page.locator("#gallery .tile").count() == 2
    page.select_option("#filter-outcome", "all")
    page.select_option("#filter-truth", "any")
    page.select_option("#filter-exp", "all")
    page.select_option("#filter-sort", "confidence-asc")
    assert page.locator("#gallery .tile").count() == 6
    page.locator("#gallery-section").scroll_into_view_if_needed()
    shot(page, "gallery.png")

    # Per-image view: both experiments side by side at full size, then closed with Escape.
    page.locator(".tile", has_text=HOSTILE).click()
    viewer = page.locator("#viewer")
    assert viewer.is_visible()
    assert viewer.locator(".panel").count() == 2
    assert viewer.locator("#viewer-title").inner_text() == HOSTILE
    assert page.locator('img[src="x"]').count() == 0
    page.wait_for_function("Array.from(document.querySelectorAll('#viewer .panel img')).every(i => i.naturalWidth > 0)")
    shot(page, "image_view.png")
    # Both experiments' maps on the same photo at the same size: compared at one scale (issue 20 item 7).
    boxes = page.evaluate(
        """Array.from(document.querySelectorAll('#viewer .panel .layers')).map(l => {
             const a = l.querySelector('.photo').getBoundingClientRect();
             const b = l.querySelector('.heat').getBoundingClientRect();
             return [a.width, a.height, a.x - b.x, a.y - b.y, a.width - b.width, a.height - b.height]; })"""
    )
    assert len(boxes) == 2 and boxes[0][0] > 200
    assert boxes[0][:2] == pytest.approx(boxes[1][:2], abs=1)
    assert all(max(map(abs, box[2:])) < 1 for box in boxes)
    # The image view has its own heatmap switch and opacity, in step with the gallery's.
    page.locator("#opacity-viewer").fill("30")
    assert page.evaluate("getComputedStyle(document.querySelector('#viewer .heat')).opacity") == "0.3"
    page.locator("#toggle-heat-viewer").uncheck()
    assert page.locator("#viewer .heat").first.is_hidden() and not page.locator("#toggle-heat").is_checked()
    page.locator("#toggle-heat-viewer").check()
    page.keyboard.press("ArrowRight")
    assert viewer.locator("#viewer-title").inner_text() != HOSTILE
    page.keyboard.press("Escape")
    assert not viewer.is_visible()

    # Every picture the page shows loaded (assets copied or linked correctly).
    broken = page.evaluate(
        "Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)"
    )
    assert broken == []
    assert problems == []
    page.close()


def test_single_run_report_in_chromium(browser: object, tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg"), ("dog", HOSTILE)])
    explain_dir = make_run(
        tmp_path / "runs", "solo", paths, ["cat", "cat", "dog"], [0.9, 0.6, 0.8], np.zeros((3, 2, 2), np.float32)
    )
    index = write_report(explain_dir / "report", [read_explain_dir(explain_dir)])
    page, problems = _open(browser, index)
    assert page.locator("#gallery .tile").count() == 1  # it opens on the one mistake
    assert page.locator("#filter-exp").count() == 0  # one experiment: no experiment picker, no flips
    assert page.locator("#filter-outcome option[value=flipped]").count() == 0
    page.select_option("#filter-outcome", "all")
    assert page.locator("#gallery .tile").count() == 3
    page.select_option("#filter-pred", "dog")
    assert page.locator(".tile .name").all_inner_texts() == [HOSTILE]
    page.locator(".tile").first.click()
    page.wait_for_function("Array.from(document.querySelectorAll('#viewer .panel img')).every(i => i.naturalWidth > 0)")
    assert problems == []
    page.close()


# --- issue 20 item 5: a report that starts from the mistakes ------------------------------------------
@pytest.fixture
def mistakes_report(tmp_path: Path) -> Path:
    """12 images, 5 mistakes of different losses; explain's photo and heatmap layers; one hostile name."""
    names = (
        [("cat", f"cat.{i}.jpg") for i in range(6)] + [("dog", f"dog.{i}.jpg") for i in range(5)] + [("dog", HOSTILE)]
    )
    paths = make_images(tmp_path / "photos", names)
    preds = ["cat", "cat", "cat", "dog", "dog", "cat", "cat", "dog", "cat", "dog", "cat", "dog"]
    probs = [0.9, 0.95, 0.99, 0.7, 0.9, 0.6, 0.97, 0.96, 0.8, 0.99, 0.55, 0.98]
    out = make_run(tmp_path / "runs", "solo", paths, preds, probs, np.zeros((12, 2, 2), np.float32), layers=True)
    return write_report(out / "report", [read_explain_dir(out)])


def _names(page: object) -> list[str]:
    return page.locator("#gallery .tile .name").all_inner_texts()


def test_report_opens_on_the_mistakes_with_search_and_heatmap_controls(browser: object, mistakes_report: Path) -> None:
    page, problems = _open(browser, mistakes_report)
    shot(page, "report_top.png")
    # The first tiles, on the first screen, are the mistakes, the highest loss first (loss = -log p(true)).
    assert _names(page) == ["dog.0.jpg", "cat.4.jpg", "dog.2.jpg", "cat.3.jpg", "dog.4.jpg"]
    assert page.locator("#gallery .tile .bad").count() == 5 and page.locator("#gallery .tile .ok").count() == 0
    assert page.locator("#gallery .tile").first.bounding_box()["y"] < 900  # visible without scrolling
    assert page.locator("#gallery-title").inner_text().startswith("Mistakes, sorted by loss")
    assert "cat / dog classifier" in page.title() and "best.ckpt" in page.title()
    assert "Experiment" not in page.locator("details.help").inner_text()

    # Thumbnails: the photo with its heatmap layer exactly over it, aspect kept (no letterbox, no square).
    boxes = page.evaluate(
        """Array.from(document.querySelectorAll('#gallery .layers')).map(l => {
             const p = l.querySelector('.photo'), h = l.querySelector('.heat');
             const a = p.getBoundingClientRect(), b = h.getBoundingClientRect();
             return [a.width / a.height, p.naturalWidth / p.naturalHeight, a.x - b.x, a.y - b.y, a.width - b.width,
                     a.height - b.height, getComputedStyle(h).opacity]; })"""
    )
    assert len(boxes) == 5
    for shown, natural, *offsets, opacity in boxes:
        assert shown == pytest.approx(natural, rel=0.03) and max(map(abs, offsets)) < 1 and opacity == "0.5"

    # Photo / heatmap toggle and opacity.
    page.locator("#toggle-heat").uncheck()
    assert page.locator("#gallery .heat").first.is_hidden() and page.locator("#gallery .photo").first.is_visible()
    page.locator("#toggle-heat").check()
    assert page.locator("#gallery .heat").first.is_visible()
    page.locator("#opacity").fill("80")
    assert page.evaluate("getComputedStyle(document.querySelector('#gallery .heat')).opacity") == "0.8"

    # File-name search, within the current filter, then over every image.
    page.locator("#search").fill("cat.")
    assert _names(page) == ["cat.4.jpg", "cat.3.jpg"]
    page.select_option("#filter-outcome", "all")
    assert len(_names(page)) == 6
    page.locator("#search").fill("<img")
    assert _names(page) == [HOSTILE]
    page.locator("#search").fill("")

    # A most-confused pair filters the gallery to its mistakes.
    page.locator("button.confused[data-true=dog][data-pred=cat]").click()
    assert _names(page) == ["dog.0.jpg", "dog.2.jpg", "dog.4.jpg"]
    page.locator("#gallery-section").scroll_into_view_if_needed()
    shot(page, "report_mistakes.png")
    assert problems == []
    page.close()


def test_report_folder_copied_alone_shows_every_picture(browser: object, mistakes_report: Path, tmp_path: Path) -> None:
    moved = tmp_path / "sent" / "report"
    shutil.copytree(mistakes_report.parent, moved)
    page, problems = _open(browser, moved / "index.html")
    page.select_option("#filter-outcome", "all")
    page.locator(".tile").first.click()
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    broken = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)")
    assert broken == [] and problems == []
    page.close()


def large_explain_dir(root: Path, count: int) -> Path:
    """An explain folder of ``count`` images, as explain writes it (overlays, thumbs/, tables), made fast:
    the rows are synthetic and 16 overlay files are shared by all of them."""
    rng = np.random.default_rng(0)
    out = root / "explain" / "big"
    rels = []
    for k in range(16):
        rel = f"correct/cat/{k:04d}_shared_{k}.jpg"
        picture = np.full((60, 80, 3), 15 * k, np.uint8)
        for folder in (out, out / "thumbs"):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / rel), picture)
        rels.append(rel)
    p_cat = rng.uniform(0, 1, count)
    true = np.where(rng.uniform(0, 1, count) < 0.5, "cat", "dog")
    pred = np.where(p_cat >= 0.5, "cat", "dog")
    pd.DataFrame(
        {
            "path": [f"/photos/{t}/img_{i:05d}.jpg" for i, t in enumerate(true)],
            "true": true,
            "pred": pred,
            "p_cat": p_cat,
            "p_dog": 1 - p_cat,
            "loss": -np.log(np.where(true == "cat", p_cat, 1 - p_cat).clip(1e-6)),
            "correct": true == pred,
            "overlay": [rels[i % 16] for i in range(count)],
        }
    ).to_csv(out / "predictions.csv", index=False)
    (out / "summary.json").write_text(json.dumps({"class_names": ["cat", "dog"], "images": count}))
    return out


def test_report_of_20000_images_opens_within_seconds(browser: object, tmp_path: Path) -> None:
    explain_dir = large_explain_dir(tmp_path, 20_000)
    index = write_report(explain_dir / "report", [read_explain_dir(explain_dir)])
    assert not any((explain_dir / "report" / "thumbs").iterdir())  # explain's thumbnails used, none decoded again
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.goto(index.resolve().as_uri(), timeout=10_000)
    # The gallery is paged: its first page renders within a few seconds even with 20,000 images.
    page.wait_for_selector("#gallery .tile", timeout=5_000)
    tiles = page.locator("#gallery .tile").count()
    assert 0 < tiles <= 100
    expected = int(pd.read_csv(explain_dir / "predictions.csv")["correct"].eq(False).sum())
    assert f"of {expected} matching images" in page.locator("#count").inner_text()  # it opens on the mistakes
    page.select_option("#filter-outcome", "all", timeout=5_000)  # filtering all 20,000 stays interactive
    page.wait_for_function("document.getElementById('count').textContent.includes('of 20000 matching')", timeout=5_000)
    page.locator("#more").click(timeout=5_000)
    assert page.locator("#gallery .tile").count() == 2 * tiles
    broken = page.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0).length")
    assert broken == 0 and problems == []
    page.close()


def test_a_class_named_any_filters_like_any_other(browser: object, tmp_path: Path) -> None:
    """Issue 19 item 11: "any" was the filters' no-filter value, so the class "any" could not be chosen."""
    classes = ["any", "cat"]
    paths = make_images(tmp_path / "photos", [("any", "a.jpg"), ("cat", "b.jpg"), ("cat", "c.jpg")])
    explain_dir = make_run(
        tmp_path / "runs", "solo", paths, ["any", "any", "cat"], [0.9, 0.6, 0.8], np.zeros((3, 2, 2), np.float32),
        class_names=classes,
    )
    index = write_report(explain_dir / "report", [read_explain_dir(explain_dir)])
    page, problems = _open(browser, index)
    page.select_option("#filter-outcome", "all")  # the report opens on the mistakes
    assert page.locator("#gallery .tile").count() == 3
    page.select_option("#filter-truth", value="c:any")
    assert page.locator(".tile .name").all_inner_texts() == ["a.jpg"]
    page.select_option("#filter-truth", value="any")
    page.select_option("#filter-pred", value="c:any")
    assert sorted(page.locator(".tile .name").all_inner_texts()) == ["a.jpg", "b.jpg"]
    assert problems == []
    page.close()
