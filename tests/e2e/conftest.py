"""Browser tests: the system Chromium (Debian package) driven by Playwright, against the demo greenhouse.

Never ``playwright install``: ``scripts/setup.sh test`` installs Debian's chromium when it is missing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = os.environ.get("HYDRO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 740}


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run scripts/setup.sh test (it apt-get installs chromium)")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless system Chromium."""
    _require_chromium()
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
def demo_settings(tmp_path: Path) -> Any:
    """The demo greenhouse on free ports in tmp_path."""
    from gateway.settings import apply_overrides, settings_from_mapping
    from gateway.sim.demo import demo_config
    from tests.conftest import free_port

    data = apply_overrides(demo_config(tmp_path / "demo"), {"broker.port": free_port(), "web.port": free_port()})
    return settings_from_mapping(data, "<demo>")


async def new_page(browser: Browser, viewport: dict[str, int], errors: list[str]) -> Page:
    """A page in a fresh context that records script errors (a page must never throw)."""
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    return page


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
