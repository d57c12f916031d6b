"""The Triage page in a real browser (headless Debian Chromium, Playwright), and the explain report's link to it.

Skips when Playwright or Chromium is missing (tests/browser.py). Set CATDOG_SCREENSHOTS=<folder> to
keep a screenshot of the whole page.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser import open_page, playwright_or_skip, shot
from helpers import HOSTILE, make_config
from test_triage import COLOURS, colour_images, save_run, splits_of, triage_cfg

from catdog.triage.pipeline import triage

pytestmark = pytest.mark.slow  # a real browser and a triage with context reliance: seconds

SECTIONS = ["label-issues", "duplicates", "outliers", "slices", "context"]

playwright_or_skip()  # skips this module without Playwright or Chromium


@pytest.fixture(scope="module")
def triaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run on 3 x 40 colour images: 6 labels flipped (one photo with a hostile name among them), one train
    photo copied into the test split (a leak); triaged with context reliance into the run's triage/ folder."""
    tmp = tmp_path_factory.mktemp("triage_browser")
    data = tmp / "data"
    images = colour_images(data, 40, seed=3)
    hostile = Path(images[0][0]).with_name(HOSTILE)
    Path(images[0][0]).rename(hostile)
    images[0] = (str(hostile), images[0][1])
    names = sorted(COLOURS)
    flipped = {0, 10, 45, 60, 90, 110}
    rows = []
    for i, ((path, label), split) in enumerate(zip(images, splits_of(len(images)))):
        if i in flipped:
            label = names[(names.index(label) + 1) % len(names)]
        rows.append((path, label, split))
    train_path, train_label, _ = next(r for r in rows if r[2] == "train" and rows.index(r) not in flipped)
    leak = Path(train_path).with_name("leaked_copy.png")
    shutil.copyfile(train_path, leak)
    rows.append((str(leak), train_label, "test"))
    run = save_run(tmp / "run", rows, data)
    summary = triage(triage_cfg(run, run / "triage" / "t1", "context.split=all"))
    return run, Path(summary["out_dir"])


def test_triage_page_in_chromium(browser: object, triaged: tuple[Path, Path]) -> None:
    _, folder = triaged
    page, problems = open_page(browser, (folder / "report" / "index.html").resolve().as_uri())
    assert page.title() == "catdog triage"
    assert re.search(r"Test accuracy \d+\.\d\d% \(", page.locator("header").inner_text())
    assert [page.locator(f"section#{key} h2").count() for key in SECTIONS] == [1] * len(SECTIONS)

    # Label issues: one row per suspect, worst first, each with its maps; the hostile name is text.
    issues = page.locator("section#label-issues tbody tr")
    assert issues.count() >= 5
    assert page.locator("section#label-issues tbody tr td:nth-child(1)").all_inner_texts()[:3] == ["1", "2", "3"]
    assert page.locator("section#label-issues tbody tr img").count() >= 5
    assert page.locator("section#label-issues td", has_text=HOSTILE).count() == 1
    assert page.locator('img[src="x"]').count() == 0
    # The copied photo is a near-duplicate pair across splits: a leak, shown with both photos.
    leak_row = page.locator("section#duplicates tbody tr", has_text="leaked_copy.png")
    assert leak_row.count() == 1 and leak_row.locator("img").count() == 2
    assert page.locator("section#context table").count() >= 1

    # Every picture loaded, and every picture is a link to a file inside the triage folder.
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    broken = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)")
    assert broken == []
    hrefs = page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    assert hrefs
    for href in hrefs:
        target = Path(unquote(urlparse(href).path))
        assert target.is_file() and target.resolve().is_relative_to(folder.resolve()), href
    shot(page, "triage.png", full_page=True)

    # Clicking a label issue's picture opens its maps.
    with page.expect_navigation():
        issues.first.locator("a").first.click()
    assert page.url.endswith(".png") or page.url.endswith(".jpg")
    assert page.evaluate("document.images.length === 1 && document.images[0].naturalWidth > 0")
    assert problems == []
    page.close()


def test_the_explain_report_links_to_the_triage_page(browser: object, triaged: tuple[Path, Path]) -> None:
    from catdog.explain.pipeline import explain

    run, folder = triaged
    overrides = [f"ckpt={run}", "data.num_workers=0", "precision=32", "data.split=test"]
    explained = explain(make_config("explain", overrides))
    page, problems = open_page(browser, (Path(explained["out_dir"]) / "report" / "index.html").resolve().as_uri())
    page.wait_for_selector(".tile")
    link = page.locator("a", has_text=f"triage {folder.name}")
    assert link.count() == 1
    with page.expect_navigation():
        link.click()
    assert page.title() == "catdog triage"
    assert all(page.locator(f"section#{key}").count() == 1 for key in SECTIONS)
    assert problems == []
    page.close()
