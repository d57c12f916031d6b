"""Headless Debian Chromium driven by Playwright (no browser download), for the report and triage page tests.

A test module calls :func:`playwright_or_skip` at import (it skips the module when Playwright or Chromium is
missing; CI installs both in .ci/run) and uses the ``browser`` fixture of conftest.py. Set
CATDOG_SCREENSHOTS=<folder> to keep the screenshots the tests take with :func:`shot`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

CHROMIUM = os.environ.get("CATDOG_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def playwright_or_skip() -> ModuleType:
    """``playwright.sync_api``; skips the calling test module when it or Chromium is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e .[dev])")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver", allow_module_level=True)
    return sync_api


@contextmanager
def launched() -> Iterator[object]:
    """A headless Chromium for the block."""
    with playwright_or_skip().sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


def open_page(browser: object, url: str) -> tuple[object, list[str]]:
    """A new 1280x900 page at ``url`` and the list it fills with every page error, console error, dialog and
    request that leaves the disk (the reports are offline: all of them are problems)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(f"console: {message.text}") if message.type == "error" else None)
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.on(
        "request",
        lambda request: (
            problems.append(f"network: {request.url}") if not request.url.startswith(("file:", "data:")) else None
        ),
    )
    page.goto(url)
    return page, problems


def shot(page: object, name: str, full_page: bool = False) -> None:
    """A screenshot into $CATDOG_SCREENSHOTS, when set."""
    folder = os.environ.get("CATDOG_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=full_page)
