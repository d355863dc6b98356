"""The board's pages in process: the table and the detail, escaped, with a CSP that forbids inline
script, the landing links, the filter, and the shipped script and style."""

from __future__ import annotations

import asyncio
import html
import importlib.resources
import re
import time
from html.parser import HTMLParser

from pytest_aiohttp import AiohttpClient

from tests.unit.builders import ANALYSED, API, measured, reported, started
from tests.unit.readside import NOW, ReadSide, read_side
from watcher.display import age, age_changes_in
from watcher.domain.analysis import Request
from watcher.domain.model import DeploymentKey
from watcher.domain.observations import InstanceExited, InstanceGone, Tick
from watcher.web.board import PAGES_KEPT
from watcher.web.boardparts import PAGE_ROWS

HOSTILE = "<img src=x onerror=alert(1)>\"'&"


class Parsed(HTMLParser):
    """What a browser would build: elements, attributes, script tags and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Parsed:
    parsed = Parsed()
    parsed.feed(page)
    return parsed


async def test_the_table_shows_each_deployment(aiohttp_client: AiohttpClient) -> None:
    """/ is a table with one row per deployment: status, version, revision, age, health, resources, versions."""
    app, side = read_side()
    client = await aiohttp_client(app)
    side.submit(started("a", "1.0.0", NOW), Tick(NOW + 11), started("b", "2.0.0", NOW + 20))
    side.clock.now = NOW + 200
    answer = await client.get("/")
    assert answer.status == 200 and answer.content_type == "text/html"
    page = await answer.text()
    rows = re.findall(r"<tr[^>]*data-name=.*?</tr>", page)
    assert len(rows) == 1
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td.*?</td>", rows[0])]
    assert cells == ["api", "production", "in progress", "2.0.0", "2", "3m", "healthy", "0.0 s", "0 B", "2.0.0, 1.0.0"]
    assert 'class="status status-in_progress"' in rows[0]
    assert 'href="deployment?environment=production&amp;name=api"' in rows[0]


async def test_a_removed_deployment_shows_as_removed_not_broken(aiohttp_client: AiohttpClient) -> None:
    """No container left: the row says removed (grey, not a failing check in red), and so does the detail;
    a deployment whose container only stopped is failing, in red."""
    app, side = read_side()
    client = await aiohttp_client(app)
    side.submit(started("a", "1.0.0", NOW), Tick(NOW + 11), InstanceGone(NOW + 20, "a"))
    web = DeploymentKey("web", "production")
    side.submit(started("w", "1.0.0", NOW, key=web), Tick(NOW + 11), InstanceExited(NOW + 20, "w", 1))
    page = await (await client.get("/?order=name")).text()
    removed, stopped = re.findall(r"<tr[^>]*data-name=.*?</tr>", page)
    assert removed.startswith('<tr class="removed" data-name="api"')
    assert '<td class="health health-removed">removed</td>' in removed
    assert '<td class="health health-bad">failing: containers_running</td>' in stopped and "removed" not in stopped
    detail = await (await client.get("/deployment", params={"environment": "production", "name": "api"})).text()
    assert '<dd data-field="health">removed</dd>' in detail


async def test_landing_links_stay(aiohttp_client: AiohttpClient) -> None:
    """The board links /metrics, /health, /ready and the API, relative (so a path prefix works)."""
    app, _ = read_side()
    client = await aiohttp_client(app)
    links = {attrs.get("href") for tag, attrs in parse(await (await client.get("/")).text()).tags if tag == "a"}
    assert {"metrics", "health", "ready", "api/v1/deployments", "api/v1/openapi.json", "api/v1/events"} <= links


async def test_filter_by_environment(aiohttp_client: AiohttpClient) -> None:
    """?environment= keeps that environment's rows; the select lists every environment."""
    app, side = read_side()
    client = await aiohttp_client(app)
    side.submit(reported("1", "success", NOW), reported("2", "success", NOW, key=DeploymentKey("web", "staging")))
    page = await (await client.get("/", params={"environment": "staging"})).text()
    assert re.findall(r'<tr data-name="([^"]*)"', page) == ["web"]
    assert '<option value="staging" selected>' in page and '<option value="production">' in page


async def test_label_values_are_escaped_everywhere(aiohttp_client: AiohttpClient) -> None:
    """A name and version full of markup come out as text, in the table and in the detail."""
    app, side = read_side()
    client = await aiohttp_client(app)
    key = DeploymentKey(HOSTILE, HOSTILE)
    side.submit(reported(HOSTILE, "in_progress", NOW, key=key))
    for path, params in (("/", {}), ("/deployment", {"environment": HOSTILE, "name": HOSTILE})):
        answer = await client.get(path, params=params)
        assert answer.status == 200
        parsed = parse(await answer.text())
        assert not any(tag == "img" for tag, _ in parsed.tags), path
        assert HOSTILE in "".join(parsed.text), path
        assert [attrs.get("src") for tag, attrs in parsed.tags if tag == "script"] == ["static/board.js"]


async def test_pages_forbid_inline_script(aiohttp_client: AiohttpClient) -> None:
    """Every page and static file carries the CSP: scripts from the watcher itself only, nothing inline."""
    app, side = read_side()
    client = await aiohttp_client(app)
    side.submit(reported("1", "success", NOW))
    for path in ("/", "/deployment?environment=production&name=api", "/deployment?name=none",
                 "/static/board.js", "/static/board.css"):  # fmt: skip
        answer = await client.get(path)
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp, path
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_detail_view(aiohttp_client: AiohttpClient) -> None:
    """/deployment?environment=&name= shows the rollout, its containers and its history; unknown: 404."""
    app, side = read_side()
    client = await aiohttp_client(app)
    side.submit(started("a", "1.0.0", NOW), Tick(NOW + 11), started("b", "2.0.0", NOW + 20))
    page = await (await client.get("/deployment", params={"environment": "production", "name": "api"})).text()
    assert '<dd data-field="status" class="status status-in_progress">in progress</dd>' in page
    assert '<dd data-field="revision">2</dd>' in page
    assert re.findall(r"<td><code>(\w+)</code></td><td>([\d.]+)</td>", page) == [("a", "1.0.0"), ("b", "2.0.0")]
    history = page.split('id="revisions"')[1]
    found = re.findall(r'<tr data-revision="\d"><td>(\d)</td><td>([^<]+)</td>', history)
    assert found == [("2", "1.0.0 → 2.0.0"), ("1", "1.0.0")]
    assert 'data-view="detail"' in page and 'data-name="api"' in page
    missing = await client.get("/deployment", params={"environment": "production", "name": "nope"})
    assert missing.status == 404 and "nope" in await missing.text()


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


async def test_a_rollout_under_analysis_shows_it_and_each_checks_before_and_after(
    aiohttp_client: AiohttpClient,
) -> None:
    """The row says "analysing" with the time left, and each check's baseline → current with its counts; the
    detail page has a table of the checks (query, limits, every count); once failed, the reason."""
    app, side = read_side(settings=ANALYSED)
    client = await aiohttp_client(app)
    side.submit(
        started("a", "1.0.0", NOW, analysis=Request(checks=("error_rate", "p99"))),
        measured(NOW + 1, 0.004, baseline=True), Tick(NOW + 20), measured(NOW + 30, 0.005),
    )  # fmt: skip
    side.clock.now = NOW + 80  # 240 s of the window left
    row = re.findall(r"<tr[^>]*data-name=.*?</tr>", await (await client.get("/")).text())[0]
    status = text_of(re.findall(r'<td class="status.*?</td>', row)[0])
    assert status == "in progressanalysing, 4m lefterror_rate 0.004 → 0.005 (pass 1, fail 0)p99 — → — (pass 0, fail 0)"
    assert f'data-until="{NOW + 320}"' in row
    page = await (await client.get("/deployment", params={"environment": "production", "name": "api"})).text()
    checks = page.split('id="analysis-checks"')[1]
    cells = [text_of(c) for c in re.findall(r"<td>.*?</td>", checks.split("</tr>")[1])]
    assert cells == [
        "error_rate", 'sum(rate(errors{job="api"}[1m]))', "0.004", "0.005", "max 0.02, +50% over baseline",
        "1", "0", "0", "0", "pass",
    ]  # fmt: skip
    side.submit(measured(NOW + 90, 0.041), measured(NOW + 120, 0.041))
    row = re.findall(r"<tr[^>]*data-name=.*?</tr>", await (await client.get("/")).text())[0]
    assert "analysis failed" in text_of(row) and "status-failed" in row
    page = await (await client.get("/deployment", params={"environment": "production", "name": "api"})).text()
    section = text_of(page.split('id="analysis"')[1])
    assert "analysis failed" in section and "analysis error_rate: 0.041 > max 0.02 (baseline 0.004)" in section


async def test_the_script_and_style_ship_in_the_package(aiohttp_client: AiohttpClient) -> None:
    """/static/board.js and board.css are the package's files; nothing else is served from there."""
    app, _ = read_side()
    client = await aiohttp_client(app)
    files = importlib.resources.files("watcher.web") / "static"
    script = await client.get("/static/board.js")
    assert script.content_type == "text/javascript"
    assert await script.read() == (files / "board.js").read_bytes()
    assert (await client.get("/static/board.css")).content_type == "text/css"
    assert (await client.get("/static/../openapi.json")).status == 404
    assert (await client.get("/static/nothing.js")).status == 404


def test_the_script_never_writes_html() -> None:
    """board.js sets text only: no innerHTML, outerHTML, insertAdjacentHTML, document.write or eval."""
    script = (importlib.resources.files("watcher.web") / "static" / "board.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


def test_ages_read_like_docker_ps() -> None:
    """42s, 5m, 3h, 2d; a clock behind the start is 0s."""
    assert [age(s) for s in (42, 300, 3 * 3600 + 5, 2 * 86400 + 1, -5)] == ["42s", "5m", "3h", "2d", "0s"]


def renders(side: ReadSide) -> float | None:
    return side.registry.get_sample_value("deployment_watcher_board_renders_total")


async def test_the_table_is_rendered_once_per_change(aiohttp_client: AiohttpClient) -> None:
    """20 loads at once cost one rendering; the page is served from memory (and 304 for its ETag) until the
    state changes, another environment is asked for, or an age it shows would read differently."""
    app, side = read_side()
    client = await aiohttp_client(app)
    side.submit(reported("1.0.0", "success", NOW))
    side.clock.now = NOW + 180  # the age reads 3m until NOW + 240
    pages = await asyncio.gather(*(client.get("/") for _ in range(20)))
    assert {page.status for page in pages} == {200} and renders(side) == 1
    etag = pages[0].headers["ETag"]
    assert len({await page.text() for page in pages}) == 1 and "<td" in await pages[0].text()
    side.clock.now = NOW + 239
    unchanged = await client.get("/", headers={"If-None-Match": etag})
    assert unchanged.status == 304 and renders(side) == 1
    side.clock.now = NOW + 240
    aged = await client.get("/", headers={"If-None-Match": etag})
    assert aged.status == 200 and ">4m</td>" in await aged.text() and renders(side) == 2
    side.submit(reported("1.1.0", "in_progress", NOW + 241))
    changed = await (await client.get("/")).text()
    assert ">1.1.0</td>" in changed and renders(side) == 3
    assert f'data-last-event-id="{side.stream.last_id}"' in changed
    await client.get("/", params={"environment": "staging"})
    await client.get("/")
    assert renders(side) == 4
    for n in range(PAGES_KEPT):  # any filter text: the pages kept are bounded, the oldest go first
        await client.get("/", params={"environment": f"env-{n}"})
    await client.get("/", params={"environment": "env-1"})
    await client.get("/")
    assert renders(side) == 4 + PAGES_KEPT + 1


async def test_health_answers_while_5000_rows_load(aiohttp_client: AiohttpClient) -> None:
    """20 loads of the board at 5,000 deployments at once: /health answers within a second meanwhile
    (rendered on the loop, one after the other, they held it for seconds)."""
    app, side = read_side()
    side.submit(reported("1.0.0", "success", NOW))
    side.copies(API, 5000)
    client = await aiohttp_client(app)

    async def load() -> int:
        answer = await client.get("/")
        return (await answer.read()).count(b"<tr data-name=")

    async def health() -> float:
        started = time.monotonic()
        assert (await client.get("/health")).status == 200
        return time.monotonic() - started

    loads = [asyncio.create_task(load()) for _ in range(20)]
    probes = []
    while not all(task.done() for task in loads):
        probes.append(await health())
        await asyncio.sleep(0.05)
    assert [await task for task in loads] == [PAGE_ROWS] * 20  # a page of them; the counts are over all
    assert max(probes) < 1.0, probes
    assert renders(side) == 1


def test_an_age_reads_the_same_until_its_next_unit() -> None:
    """age_changes_in: the seconds until the text of age() changes (the board's page is current until then)."""
    for seconds in (0, 0.25, 42.5, 59.9, 60, 299, 3 * 3600 + 5, 2 * 86400 + 1, -5):
        later = seconds + age_changes_in(seconds)
        assert age(later - 1e-6) == age(seconds) != age(later), seconds
