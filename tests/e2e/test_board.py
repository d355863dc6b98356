"""The board in a real headless Chromium (Debian's), driven by Playwright, against a real watcher on the
real daemon: the table, a change arriving live without a reload, the detail view, hostile label
values shown as text; screenshots kept as artifacts.

Playwright drives the system's Chromium (``executable_path``): no browser download. The
screenshots go to $BOARD_SCREENSHOTS when set, else to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Dialog, Page, expect, sync_playwright

from tests.conftest import Containers, WatcherProcess, WatcherSetup, require_binary
from tests.e2e.conftest import CHROMIUM_ARGS

TOKEN = "board-token-" + uuid.uuid4().hex
HOSTILE = "<img src=x onerror=alert(1)>"

pytestmark = [pytest.mark.docker, pytest.mark.browser]


class Prometheus:
    """Answers every instant query with one sample of ``value`` (what the test sets): a stand-in for the
    Prometheus a check queries (the real one is in tests/integration/)."""

    def __init__(self) -> None:
        self.value = 0.004
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                body = {"status": "success", "data": {"resultType": "vector",
                        "result": [{"metric": {}, "value": [0, repr(fake.value)]}]}}  # fmt: skip
                encoded = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(encoded)))
                self.end_headers()
                self.wfile.write(encoded)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Prometheus]:
    fake = Prometheus()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


@pytest.fixture(scope="module")
def watcher_setup(prometheus: Prometheus, tmp_path_factory: pytest.TempPathFactory) -> WatcherSetup:
    # A check the deployments of test_an_analysis_is_live ask for: measured every second for a minute.
    config = tmp_path_factory.mktemp("config") / "watcher.yml"
    config.write_text(f"""
analysis:
  prometheus_url: {prometheus.url}
  interval_seconds: 1
  window_seconds: 60
  failure_limit: 2
  checks:
    - name: error_rate
      query: sum(rate(errors{{job="{{{{deployment}}}}"}}[1m]))
      max: 0.02
""")
    return WatcherSetup(
        ("--rollout.stable-seconds=2", "--stats.interval-seconds=1"),
        env={"WATCHER_API_TOKEN": TOKEN, "WATCHER_CONFIG_FILE": str(config)},
    )


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("BOARD_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def report(watcher: WatcherProcess, name: str, version: str, status: str, environment: str = "production",
           **extra: Any) -> None:  # fmt: skip
    body = json.dumps({"deployment": name, "environment": environment, "version": version, "status": status, **extra})
    request = urllib.request.Request(watcher.url + "/api/v1/deployments", data=body.encode(), method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    urllib.request.urlopen(request, timeout=10).close()


class Watched:
    """A page with what it did: navigations, dialogs, console errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.navigations = 0
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("framenavigated", lambda frame: self._navigated(frame.parent_frame is None))
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _navigated(self, main: bool) -> None:
        self.navigations += main

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


def row(page: Page, name: str) -> str:
    """A CSS selector for the table row of ``name`` (attribute values quoted by JSON's rules)."""
    return f"#deployments tbody tr[data-name={json.dumps(name)}]"


def test_the_board_is_live(watcher: WatcherProcess, containers: Containers, browser: BrowserContext,
                           screenshots: Path) -> None:  # fmt: skip
    """The table shows the deployments; a change arrives without a reload; the detail view opens and is live too."""
    tag = uuid.uuid4().hex[:6]
    shop, api = f"shop-{tag}", f"api-{tag}"
    containers.run(labels={"deployment.name": shop, "deployment.environment": "staging",
                           "deployment.version": "1.4.0", "deployment.commit": "9f1c2ab"})  # fmt: skip
    report(watcher, api, "2.0.0", "success")
    report(watcher, api, "2.1.0", "in_progress")
    watcher.wait_for("the container's deployment", lambda: watcher.get(f"/api/v1/deployments/staging/{shop}")[0] == 200)
    page = browser.new_page()
    watched = Watched(page)
    page.goto(watcher.url + "/")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator(row(page, api) + " td.status")).to_have_text("in progress")
    expect(page.locator(row(page, shop) + " td").nth(3)).to_have_text("1.4.0")
    expect(page.locator(row(page, shop) + " td.status")).to_have_text("success", timeout=15000)  # live, by stable time
    assert page.locator(row(page, api) + " td").nth(9).inner_text() == "2.1.0, 2.0.0"
    page.screenshot(path=screenshots / "board.png", full_page=True, animations="disabled")

    report(watcher, api, "2.1.0", "failed")
    expect(page.locator(row(page, api) + " td.status")).to_contain_text("failed")
    expect(page.locator(row(page, api) + " td.status .reason")).to_have_text("reported by deploy tooling")
    report(watcher, f"new-{tag}", "0.1.0", "in_progress")  # a new row, in its sorted place
    expect(page.locator(row(page, f"new-{tag}"))).to_have_count(1)
    assert watched.navigations == 1, "the page reloaded"

    page.locator(row(page, api) + " a").click()
    expect(page.locator("#title")).to_contain_text(api)
    expect(page.locator("#facts dd[data-field=status]")).to_have_text("failed")
    expect(page.locator("#live")).to_have_text("live")
    report(watcher, api, "2.2.0", "in_progress")
    expect(page.locator("#facts dd[data-field=version]")).to_have_text("2.2.0")
    expect(page.locator("#events li").first).to_contain_text("revision 3 (2.2.0) started")
    expect(page.locator("#revisions tbody tr")).to_have_count(3)  # every revision, refetched
    page.screenshot(path=screenshots / "board-detail.png", full_page=True, animations="disabled")
    page.goto(watcher.url + "/deployment?" + urllib.parse.urlencode({"environment": "staging", "name": shop}))
    expect(page.locator("#members tbody tr")).to_have_count(1)  # the container, running, current
    expect(page.locator("#checks li")).to_have_count(3)
    page.screenshot(path=screenshots / "board-containers.png", full_page=True, animations="disabled")
    assert watched.errors == [] and watched.dialogs == []


def test_an_analysis_is_live(watcher: WatcherProcess, prometheus: Prometheus, browser: BrowserContext,
                             screenshots: Path) -> None:  # fmt: skip
    """A rollout under a gate analysis shows "analysing" with the time left and its check's baseline → current
    in the row and on the detail page, counts going up live; when its error rate goes past the limit it fails,
    the reason naming the check and the figures, without a reload."""
    name = f"analysed-{uuid.uuid4().hex[:6]}"
    prometheus.value = 0.004
    report(watcher, name, "1.0.0", "in_progress", analysis=["error_rate"])

    def baseline_taken() -> bool:
        answer = json.loads(watcher.get(f"/api/v1/deployments/production/{name}")[2])
        return bool(answer["analysis"]["checks"][0]["baseline"] == 0.004)

    watcher.wait_for("the check's baseline", baseline_taken)
    report(watcher, name, "1.0.0", "success", analysis=["error_rate"])  # the analysis' window begins
    page = browser.new_page()
    watched = Watched(page)
    page.goto(watcher.url + "/")
    status = page.locator(row(page, name) + " td.status")
    expect(status).to_contain_text("in progress")
    expect(status.locator("span.analysis-running")).to_have_text(re.compile(r"analysing, \d+s left"))
    expect(status.locator(".check-brief")).to_have_text(re.compile(r"error_rate 0\.004 → 0\.004 \(pass [2-9]"))
    page.screenshot(path=screenshots / "board-analysis.png", full_page=True, animations="disabled")

    page.locator(row(page, name) + " a").click()
    expect(page.locator("#facts dd[data-field=status]")).to_have_text("in progress")
    expect(page.locator("#analysis .analysis-running")).to_contain_text("left")
    cells = page.locator("#analysis-checks tbody tr[data-check=error_rate] td")
    expect(cells.nth(2)).to_have_text("0.004")  # the baseline
    expect(cells.nth(4)).to_have_text("max 0.02")
    passes = int(cells.nth(5).inner_text())
    expect(cells.nth(5)).not_to_have_text(str(passes))  # counted live
    prometheus.value = 0.041
    reason = "analysis error_rate: 0.041 > max 0.02 (baseline 0.004)"
    expect(page.locator("#facts dd[data-field=status]")).to_have_text("failed")
    expect(page.locator("#facts dd[data-field=reason]")).to_have_text(reason)
    expect(page.locator("#analysis .analysis-failed")).to_have_text("analysis failed")
    expect(page.locator("#analysis .reason")).to_have_text(" — " + reason)
    expect(cells.nth(3)).to_have_text("0.041")
    expect(cells.nth(6)).to_have_text("2")  # the failure limit
    expect(page.locator("#events li").filter(has_text="analysis finished")).to_contain_text(f"failed: {reason}")
    page.screenshot(path=screenshots / "board-analysis-failed.png", full_page=True, animations="disabled")
    assert watched.navigations == 2, "the page reloaded"  # the board, then the detail page
    assert watched.errors == [] and watched.dialogs == []


def test_health_is_live_and_removed_is_not_red(watcher: WatcherProcess, containers: Containers,
                                               browser: BrowserContext, screenshots: Path) -> None:  # fmt: skip
    """A rollout whose verdict is minutes away: the row turns healthy once its container runs and is
    inspected, without a reload; its container removed, the row says removed, in grey, not failing."""
    name = f"live-{uuid.uuid4().hex[:6]}"
    page = browser.new_page()
    watched = Watched(page)
    page.goto(watcher.url + "/?environment=staging")
    expect(page.locator("#live")).to_have_text("live")
    container = containers.run(labels={"deployment.name": name, "deployment.environment": "staging",
                                       "deployment.version": "1.0.0", "deployment.stable_seconds": "600"})  # fmt: skip
    health = page.locator(row(page, name) + " td.health")
    expect(health).to_have_text("healthy", timeout=15000)
    expect(page.locator(row(page, name) + " td.status")).to_have_text("in progress")
    containers.remove(container)
    expect(health).to_have_text("removed", timeout=15000)
    expect(health).to_have_class("health health-removed")
    expect(page.locator(row(page, name))).to_have_class(re.compile(r"\bremoved\b"))
    assert health.evaluate("cell => getComputedStyle(cell).color") == "rgb(95, 99, 104)"  # grey, not red
    page.screenshot(path=screenshots / "board-removed.png", full_page=True, animations="disabled")
    assert watched.navigations == 1, "the page reloaded"
    assert watched.errors == [] and watched.dialogs == []


def test_a_hostile_name_is_text(watcher: WatcherProcess, browser: BrowserContext, screenshots: Path) -> None:
    """A deployment named like markup shows as that text, rendered by the server and by the script; nothing runs."""
    report(watcher, HOSTILE, HOSTILE, "in_progress", environment=HOSTILE)
    page = browser.new_page()
    watched = Watched(page)
    page.goto(watcher.url + "/")
    expect(page.locator("#live")).to_have_text("live")
    hostile_row = page.locator(row(page, HOSTILE))
    expect(hostile_row.locator("td").first).to_have_text(HOSTILE)
    report(watcher, HOSTILE, "<script>alert(2)</script>", "in_progress", environment=HOSTILE)  # drawn by the script
    expect(hostile_row.locator("td").nth(3)).to_have_text("<script>alert(2)</script>")
    assert page.locator("#deployments img, #deployments script").count() == 0
    hostile_row.locator("a").click()
    expect(page.locator("#title")).to_contain_text(HOSTILE)
    report(watcher, HOSTILE, "<b onmouseover=alert(3)>x</b>", "in_progress", environment=HOSTILE)
    expect(page.locator("#events li").first).to_contain_text("<b onmouseover=alert(3)>x</b>")
    assert page.locator("main img, main b").count() == 0
    page.screenshot(path=screenshots / "board-hostile.png", full_page=True, animations="disabled")
    assert watched.dialogs == [], f"a dialog fired: {watched.dialogs}"
    assert watched.errors == []


def test_the_board_works_without_javascript(watcher: WatcherProcess, tmp_path: Path) -> None:
    """With scripting off, the table and the detail view are all there, server-rendered."""
    name = f"nojs-{uuid.uuid4().hex[:6]}"
    report(watcher, name, "3.0.0", "success")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=require_binary("chromium"), headless=True, args=CHROMIUM_ARGS,
            java_script_enabled=False,
        )  # fmt: skip
        try:
            page = context.new_page()
            page.goto(watcher.url + "/?environment=production")
            expect(page.locator(row(page, name) + " td.status")).to_have_text("success")
            expect(page.locator("#live")).to_have_text("static page")
            page.locator(row(page, name) + " a").click()
            expect(page.locator("#facts dd[data-field=version]")).to_have_text("3.0.0")
        finally:
            context.close()
