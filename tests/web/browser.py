"""Playwright driving Debian's Chromium (``/usr/bin/chromium``; ``make chromium``).

Headless, without a sandbox (tests run as root in a container), with background
networking off: the browser talks to nothing but the dashboard under test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update",
    "--disable-default-apps", "--disable-sync", "--no-first-run", "--disable-extensions",
    "--metrics-recording-only", "--disable-domain-reliability", "--no-pings",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--disable-dev-shm-usage",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser, closed afterwards; skips without it."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Chromium is not installed (make chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
