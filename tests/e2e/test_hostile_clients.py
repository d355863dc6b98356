"""The board against hostile or greedy clients, in a real headless Chromium (Debian's, driven by
Playwright). DNS rebinding: a web site whose name resolves to the watcher's address
(``--host-resolver-rules`` stands in for the attacker's DNS) gets a 403 for its page and for what its
script fetches; the same browser reaches the board by the address, by localhost and by a name in
web.allowed_hosts. A full event stream: the board says so and connects once there is room. No Docker
Engine needed: deployments come through the CI/CD API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.conftest import API_TOKEN, WatcherProcess, report_service, start_watcher, stream

pytestmark = [pytest.mark.browser]
RULES = "MAP attacker.example 127.0.0.1, MAP watcher.example.com 127.0.0.1"


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[WatcherProcess]:
    process = start_watcher(
        tmp_path, f"--docker.host=unix://{tmp_path}/no-docker.sock", "--stats.enabled=false",
        "--web.allowed-hosts=watcher.example.com", "--web.max-stream-clients=1", env={"WATCHER_API_TOKEN": API_TOKEN},
    )  # fmt: skip
    try:
        yield process
    finally:
        process.stop_cleanly()


@pytest.fixture
def chromium_args() -> list[str]:
    """The attacker's DNS: its name, and the allowed one, resolve to the watcher's address."""
    return [f"--host-resolver-rules={RULES}"]


def test_a_rebound_name_gets_nothing(watcher: WatcherProcess, browser: BrowserContext) -> None:
    """403 for the page and its fetches under the attacker's name; 200 by address, localhost, allowed name."""
    page = browser.new_page()
    answer = page.goto(f"http://attacker.example:{watcher.port}/")
    assert answer is not None and answer.status == 403
    assert "DNS rebinding" in page.content()
    # The attacker's script, same-origin under the rebound name.
    fetched = page.evaluate("fetch('/api/v1/deployments').then(r => r.status)")
    assert fetched == 403
    for url in (watcher.url, f"http://localhost:{watcher.port}", f"http://watcher.example.com:{watcher.port}"):
        answer = page.goto(url + "/")
        assert answer is not None and answer.status == 200, url
        assert page.evaluate("fetch('api/v1/deployments').then(r => r.status)") == 200, url


def test_a_full_stream_is_retried(watcher: WatcherProcess, browser: BrowserContext) -> None:
    """The one stream slot taken: the board says the stream is full (an EventSource gives up on a 503);
    once the slot is free it connects after Retry-After and shows the events it missed."""
    held, answer = stream(watcher.port, "127.0.0.1")
    assert answer.startswith("HTTP/1.1 200")
    page = browser.new_page()
    page.goto(watcher.url + "/")
    expect(page.locator("#live")).to_have_text("stream full, retrying…")
    held.close()  # the watcher notices within a second
    report_service(watcher, 7)  # an event the board has not seen: it gets it from where it left off
    expect(page.locator("#live")).to_have_text("live", timeout=15000)
    expect(page.locator('tr[data-name="service-0007"]')).to_have_count(1)
