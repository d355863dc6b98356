"""Fixtures shared by the end-to-end tests: Debian's headless Chromium driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, sync_playwright

from tests.conftest import require_binary

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture
def chromium_args() -> list[str]:
    """Chromium's flags besides CHROMIUM_ARGS; a module overrides this fixture for more (e.g. host rules)."""
    return []


@pytest.fixture
def browser(tmp_path: Path, chromium_args: list[str]) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile; fails (never skips) when it is not installed."""
    executable = require_binary("chromium")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=executable, headless=True, args=[*CHROMIUM_ARGS, *chromium_args],
            viewport={"width": 1280, "height": 720},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()
