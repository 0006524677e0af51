"""A headless browser for the tests: Playwright driving Debian's chromium (``/usr/bin/chromium``).

Playwright launches the system's chromium (``executable_path``), never a browser of its own: no
``playwright install``, no download (the machines reach no host but the package registries). The
flags keep chromium off the network except for the pages a test opens. Pages are Playwright's
own (``goto`` waits for the load event, ``wait_for_function`` polls a condition in the page).
"""

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from playwright.async_api import Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_or_skip() -> str:
    """The chromium binary; in CI (``CI`` set) a missing browser fails the test instead of skipping."""
    binary = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if binary is None:
        message = "chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


@asynccontextmanager
async def headless_page(binary: str, width: int = 1400, height: int = 1000) -> AsyncIterator[Page]:
    """A page of a fresh headless chromium (its own temporary profile), closed on the way out."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=binary, headless=True, chromium_sandbox=False, args=FLAGS
        )
        try:
            yield await browser.new_page(viewport={"width": width, "height": height})
        finally:
            await browser.close()


async def submit(page: Page, expression: str) -> None:
    """Run ``expression`` (which submits a form) and wait for the next page to load."""
    async with page.expect_navigation():
        await page.evaluate(expression)


async def screenshot(page: Page) -> bytes:
    """A PNG of the whole page, not just the window."""
    return await page.screenshot(full_page=True)
