"""The board's summary, order, filters, pages, kiosk view, timeline and revisions in process (#22): counts
over all deployments, what needs attention first, every value escaped, the query's junk ignored."""

from __future__ import annotations

import html
import re

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient

from tests.unit.builders import API, reported
from tests.unit.readside import NOW, ReadSide, read_side
from watcher import config
from watcher.config import Settings
from watcher.config.settings import StorageSettings
from watcher.domain.model import DeploymentKey
from watcher.domain.settings import AnalysisSettings
from watcher.exposition.rendering import Exposition
from watcher.runtime.compose import Watcher
from watcher.selfmetrics import SelfMetrics
from watcher.web.app import make_app
from watcher.web.board import Board
from watcher.web.boardparts import KIOSK_ROWS, PAGE_ROWS, Query, WatcherHealth
from watcher.web.boardtimeline import grafana_link

HOSTILE = "<img src=x onerror=alert(1)>\"'&"
SCRIPT = [  # (name, environment, version, status), a minute apart
    ("search", "production", "3.0.0", "success"),
    ("checkout", "production", "1.0.0", "success"),
    ("payments", "production", "2.0.0", "success"),
    ("inventory", "staging", "0.9.0", "success"),
    ("checkout", "production", "1.1.0", "failed"),
    ("payments", "production", "2.1.0", "in_progress"),
    (HOSTILE, HOSTILE, "1.0.0", "in_progress"),
]


def scripted() -> tuple[web.Application, ReadSide]:
    app, side = read_side()
    for minute, (name, environment, version, status) in enumerate(SCRIPT):
        at = NOW + 60 * minute
        side.submit(reported(version, status, at, key=DeploymentKey(name, environment), started_at=at))
    return app, side


def names(page: str) -> list[str]:
    return [html.unescape(n) for n in re.findall(r'<tr[^>]*? data-name="([^"]*)"', page.split('id="deployments"')[1])]


def count(page: str, status: str) -> int:
    return int(re.findall(rf'data-count="{status}">(\d+)<', page)[0])


async def test_summary_and_attention_order(aiohttp_client: AiohttpClient) -> None:
    """Counts by status and the day's rollouts; failed, then in progress, then the rest, newest first."""
    app, _ = scripted()
    client = await aiohttp_client(app)
    page = await (await client.get("/")).text()
    assert [count(page, s) for s in ("failed", "in_progress", "success", "removed", "rollouts")] == [1, 2, 2, 0, 7]
    assert names(page) == ["checkout", HOSTILE, "payments", "inventory", "search"]
    assert re.search(r'<div class="reason" title="[^"]+">[^<]+</div>', page)  # the failure's reason, in the row
    by_name = await (await client.get("/", params={"order": "name"})).text()
    assert names(by_name) == sorted(names(page))
    failed = await (await client.get("/", params={"status": "failed"})).text()
    assert names(failed) == ["checkout"] and count(failed, "success") == 2  # counts over every status
    staging = await (await client.get("/", params={"environment": "staging"})).text()
    assert names(staging) == ["inventory"] and count(staging, "success") == 1 and count(staging, "rollouts") == 1
    assert "<img" not in page.replace('<link rel="icon"', "")
    assert html.escape(HOSTILE, quote=True) in page


async def test_junk_in_the_query_is_ignored(aiohttp_client: AiohttpClient) -> None:
    app, _ = scripted()
    client = await aiohttp_client(app)
    for params in ({"status": "<x>", "order": "'", "page": "-3"}, {"page": "1e999"}, {"page": "99999999"}):
        answer = await client.get("/", params=params)
        assert answer.status == 200
    assert Query.of({"status": "nope", "page": "x"}) == Query()
    assert Query.of({"kiosk": "", "status": "failed", "page": "2"}).href(page=1) == "./?status=failed&kiosk"


async def test_pages_and_kiosk(aiohttp_client: AiohttpClient) -> None:
    """5,000 deployments: a page of rows, links to the next, the counts over all; the kiosk shows the 30 first."""
    app, side = read_side()
    side.submit(reported("1.0.0", "success", NOW))
    side.copies(API, 5000)
    client = await aiohttp_client(app)
    page = await (await client.get("/")).text()
    assert len(names(page)) == PAGE_ROWS and count(page, "success") == 5000
    assert 'rel="next" href="./?page=2"' in page and "page 1 of 50" in page
    last = await (await client.get("/", params={"page": "50"})).text()
    assert names(last)[-1] == "service-4999" or names(last)[0] != names(page)[0]
    kiosk = await (await client.get("/?kiosk")).text()
    assert len(names(kiosk)) == KIOSK_ROWS and 'class="kiosk"' in kiosk and "<form" not in kiosk
    assert "and 4970 more" in kiosk


async def test_timeline_and_revisions_escape_every_name(aiohttp_client: AiohttpClient) -> None:
    """The timeline: newest first, version from → to, verdicts; the detail: every revision."""
    app, _ = scripted()
    client = await aiohttp_client(app)
    answer = await client.get("/timeline")
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'self';")
    page = await answer.text()
    rows = re.findall(r'<tr data-name="([^"]*)" data-environment="[^"]*" data-revision="(\d+)">', page)
    assert [(html.unescape(n), int(r)) for n, r in rows] == [
        (HOSTILE, 1),
        ("payments", 2),
        ("checkout", 2),
        ("inventory", 1),
        ("payments", 1),
        ("checkout", 1),
        ("search", 1),
    ]
    assert "1.0.0 → 1.1.0" in page and "<img" not in page.replace('<link rel="icon"', "")
    assert (await client.get("/timeline", params={"hours": "nan"})).status == 200
    minute = await (await client.get("/timeline", params={"hours": "0"})).text()  # a minute at least
    assert minute.split('id="timeline"')[1].count("<tr data-name=") == 2  # at 6 and 5 minutes
    detail = await (await client.get("/deployment", params={"environment": "production", "name": "checkout"})).text()
    revisions = detail.split('id="revisions"')[1]
    assert re.findall(r'<tr data-revision="(\d)">', revisions) == ["2", "1"]
    assert 'class="status status-failed">failed' in revisions


def test_grafana_link_is_a_filled_in_template() -> None:
    template = "https://g.example.com/d/x?var-app={deployment}&var-env={environment}"
    assert grafana_link(template, name=HOSTILE, environment="a b") == (
        "https://g.example.com/d/x?var-app=%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E%22%27%26&var-env=a%20b"
    )
    assert grafana_link("javascript:alert(1)//{deployment}", name="x", environment="y") is None
    assert WatcherHealth() == WatcherHealth(docker=True, swarm=False, analysis=False)


def test_the_watchers_health_as_the_summary_shows_it() -> None:
    """Docker connected is the Docker source's freshness (what /ready reads); Swarm followed only for the
    leader's watcher; analysis on with a Prometheus configured."""
    service = Watcher(Settings(storage=StorageSettings(directory="")))
    health = service.own_health()
    assert health.docker is service.ready() is False  # not connected yet
    assert health.swarm is False and health.analysis is False
    analysed = Watcher(Settings(storage=StorageSettings(directory=""),
                                analysis=AnalysisSettings(prometheus_url="http://prometheus:9090")))  # fmt: skip
    assert analysed.own_health().analysis is True


async def test_a_change_of_the_watchers_health_renders_the_board_again(aiohttp_client: AiohttpClient) -> None:
    _, side = scripted()
    now = [WatcherHealth(docker=True)]
    metrics = SelfMetrics(CollectorRegistry())
    board = Board(snapshot=side.core.snapshot, settings=side.core.settings, stream=side.stream, clock=side.clock,
                  metrics=metrics, health=lambda: now[0])  # fmt: skip
    exposition = Exposition(snapshot=side.core.snapshot, registry=CollectorRegistry(), settings=side.core.settings,
                            metrics=metrics)  # fmt: skip
    client = await aiohttp_client(make_app(exposition=exposition, ready=lambda: True, board=board))
    assert "Docker connected" in await (await client.get("/")).text()
    now[0] = WatcherHealth(docker=False, swarm=True, analysis=True)
    page = await (await client.get("/")).text()
    assert "Docker not connected" in page and "Swarm followed" in page and "Analysis on" in page


def test_a_grafana_url_is_an_http_url() -> None:
    """web.grafana_url: a template of an http(s) URL, checked when the settings load."""
    template = "https://g.example.com/d/x?var-app={deployment}"
    assert config.load(environ={}, flags={"web.grafana_url": template}).web.grafana_url == template
    with pytest.raises(config.ConfigError, match=r"web\.grafana_url must be an http"):
        config.load(environ={}, flags={"web.grafana_url": "javascript:alert(1)"})
