"""The board at ``/``: the deployments as a server-rendered table, and one deployment in detail.

The pages work without JavaScript; ``static/board.js`` (shipped in the package, no build step)
then keeps them current from the event stream. Label values are untrusted: every value goes
through ``html.escape`` here and through ``textContent`` in the script, and the
Content-Security-Policy allows no inline script (nor anything from elsewhere).

The table (milliseconds at a hundred rows, half a second at 5,000) is rendered in a worker thread,
one rendering at a time, and kept as bytes until the state changes or an age it shows would read
differently: a burst of loads costs one rendering, and the event loop (``/health``, ``/metrics``,
Docker's events) never waits for it.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import hashlib
import html
import importlib.resources
import math
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from watcher.display import age, age_changes_in, size
from watcher.domain.model import DeploymentKey, State
from watcher.domain.settings import RuleSettings
from watcher.selfmetrics import SelfMetrics
from watcher.web import boardanalysis, boardfeed, boardparts, boardtimeline, views
from watcher.web.boardparts import Query, WatcherHealth
from watcher.web.stream import EventStream

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
STATIC = {"board.js": "text/javascript", "board.css": "text/css", "favicon.svg": "image/svg+xml"}
PAGES_KEPT = 16  # rendered tables kept, one per query asked for (any text: bounded)
UNKNOWN_HEALTH = WatcherHealth()
COLUMNS = ("Deployment", "Environment", "Status", "Version", "Revision", "Age", "Health", "CPU", "Memory",
           "Last versions")  # fmt: skip


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def detail_href(key: DeploymentKey) -> str:
    return "deployment?" + urllib.parse.urlencode({"environment": key.environment, "name": key.name})


def when(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def health_text(row: dict[str, Any]) -> str:
    if row["removed"]:
        return "removed"  # no container left: not failing checks, gone
    checks: dict[str, bool] = row["health_checks"]
    if not checks:
        return "—"
    failing = [name for name, ok in checks.items() if not ok]
    return "healthy" if not failing else "failing: " + ", ".join(failing)


def health_class(row: dict[str, Any]) -> str:
    return "removed" if row["removed"] else "ok" if row["healthy"] else "bad"


def row_html(row: dict[str, Any], *, now: float) -> str:
    key = DeploymentKey(row["name"], row["environment"])
    failed = row["status"] == "failed" and row["reason"]  # the failure's reason, in the row
    cells = [
        f'<td class="name"><a href="{_e(detail_href(key))}" title="{_e(key.name)}">{_e(key.name)}</a></td>',
        f'<td title="{_e(key.environment)}">{_e(key.environment)}</td>',
        f'<td class="status status-{_e(row["status"])}">{_e(row["status"].replace("_", " "))}'
        + (' <span class="tag">rollback</span>' if row["rollback"] else "")
        + (f'<div class="reason" title="{_e(row["reason"])}">{_e(row["reason"])}</div>' if failed else "")
        + boardanalysis.row_cell(row["analysis"], now=now)
        + "</td>",
        f'<td title="{_e(row["commit"])}">{_e(row["version"])}</td>',
        f"<td>{row['revision']}</td>",
        f'<td data-since="{row["started_at"]}" title="{_e(when(row["started_at"]))}">'
        f"{_e(age(now - row['started_at']))}</td>",
        f'<td class="health health-{health_class(row)}">{_e(health_text(row))}</td>',
        f"<td>{row['cpu_seconds']:.1f} s</td>",
        f"<td>{_e(size(row['memory_bytes'], separator=' '))}</td>",
        f"<td>{_e(', '.join(row['last_versions']))}</td>",
    ]
    removed = ' class="removed"' if row["removed"] else ""
    status = "removed" if row["removed"] else row["status"]
    return (
        f'<tr{removed} data-name="{_e(key.name)}" data-environment="{_e(key.environment)}" data-status="{_e(status)}"'
        f' data-started="{row["started_at"]}">{"".join(cells)}</tr>'
    )


def _page(title: str, body: str, *, last_id: str, extra: Iterable[tuple[str, str]] = (), kiosk: bool = False) -> str:
    """A whole page; ``last_id`` is the stream's newest event when its state was read: the script follows on from it."""
    data = " ".join(f'data-{name}="{_e(value)}"' for name, value in (("last-event-id", last_id), *extra))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><link rel="icon" href="static/favicon.svg"><link rel="stylesheet" href="static/board.css"><script src="static/board.js" defer></script>
</head><body {data}{' class="kiosk"' if kiosk else ""}>
<header><h1><a href="./">deployment-watcher</a></h1>
<nav aria-label="Pages of the watcher"><a href="timeline">timeline</a> <a href="metrics">/metrics</a> <a href="health">/health</a> <a href="ready">/ready</a>
<a href="api/v1/deployments">JSON API</a> <a href="api/v1/openapi.json">OpenAPI</a>
<a href="api/v1/events">event stream</a> <span id="live" class="live">static page</span></nav></header>
<main>{body}</main></body></html>
"""


def board_html(
    state: State, *, settings: RuleSettings, last_id: str, query: Query, now: float,
    health: WatcherHealth = UNKNOWN_HEALTH,
) -> tuple[str, float]:  # fmt: skip
    """The board's page, and the seconds it stays current (until an age in it reads differently)."""
    environments = sorted({key.environment for key in state.deployments})
    listed = boardparts.shown(state, query)
    chosen = boardparts.ordered(listed, query)
    first = (query.page - 1) * query.rows
    summaries = [views.summary(d, settings=settings) for d in chosen[first : first + query.rows]]
    rows = [row_html(row, now=now) for row in summaries]
    day = boardfeed.started_since(state, since=now - boardfeed.DAY, environment=query.environment)
    current_for = min(
        (
            min(age_changes_in(now - row["started_at"]), boardanalysis.changes_in(row["analysis"], now=now))
            for row in summaries
        ),
        default=math.inf,
    )
    current_for = min(current_for, *(at + boardfeed.DAY - now for at in day), math.inf)
    heads = "".join(f"<th>{name}</th>" for name in COLUMNS)
    bar = boardparts.summary_bar(boardparts.counts(listed), rollouts_24h=len(day), health=health, query=query)
    body = f"""{bar}{boardparts.controls(query, environments)}
<table id="deployments"><caption class="visually-hidden">Deployments</caption><thead><tr>{heads}</tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<p id="empty" class="empty"{" hidden" if rows else ""}>No deployments yet.</p>{boardparts.pager(query, len(chosen))}"""
    extra = [("view", "board"), ("environment", query.environment), ("status", query.status),
             ("order", query.order), ("rows", str(query.rows)), ("page", str(query.page))]  # fmt: skip
    title = "deployment-watcher"
    return _page(title, body, last_id=last_id, extra=extra, kiosk=query.kiosk), current_for


def detail_html(detail: dict[str, Any], *, last_id: str, now: float, grafana_url: str = "") -> str:
    key = DeploymentKey(detail["name"], detail["environment"])
    facts = [
        ("Status", detail["status"].replace("_", " ") + (" (rollback)" if detail["rollback"] else "")),
        ("Reason", detail["reason"] or "—"),
        ("Version", detail["version"]),
        ("Commit", detail["commit"] or "—"),
        ("Image", detail["image"] or "—"),
        ("Revision", detail["revision"]),
        ("Judged by", detail["judge"].replace("_", " ")),
        ("Started", when(detail["started_at"])),
        ("Finished", when(detail["finished_at"])),
        ("Duration", "—" if detail["duration_seconds"] is None else f"{detail['duration_seconds']:.1f} s"),
        ("Health", health_text(detail)),
        ("CPU", f"{detail['cpu_seconds']:.1f} s"),
        ("Memory", size(detail["memory_bytes"], separator=" ")),
        ("Rollbacks", detail["rollbacks"]),
    ]
    field_names = ("status", "reason", "version", "commit", "image", "revision", "judge", "started_at",
                   "finished_at", "duration_seconds", "health", "cpu_seconds", "memory_bytes", "rollbacks")  # fmt: skip
    status_class = f' class="status status-{_e(detail["status"])}"'
    dl = "".join(
        f'<dt>{_e(label)}</dt><dd data-field="{field}"{status_class if field == "status" else ""}>{_e(value)}</dd>'
        for (label, value), field in zip(facts, field_names, strict=True)
    )
    checks = "".join(
        f'<li class="health-{"ok" if ok else "bad"}">{_e(name)}: {"passes" if ok else "fails"}</li>'
        for name, ok in detail["health_checks"].items()
    )
    members = "".join(
        "<tr>"
        f"<td><code>{_e(m['id'][:12])}</code></td><td>{_e(m['version'])}</td>"
        f"<td>{'yes' if m['current'] else 'no'}</td><td>{'running' if m['running'] else 'stopped'}</td>"
        f"<td>{_e(m['health'])}</td><td>{'—' if m['exit_code'] is None else m['exit_code']}</td>"
        f"<td>{m['restart_count']}</td><td>{m['cpu_seconds']:.1f} s</td><td>{_e(size(m['memory_bytes'], separator=' '))}</td>"
        "</tr>"
        for m in detail["members"]
    )
    body = f"""<p><a href="./">← all deployments</a></p>
<h2 id="title">{_e(key.name)} <small>{_e(key.environment)}</small></h2>
{boardtimeline.incident_links(detail, grafana_url=grafana_url)}
<section><h3>Current rollout</h3><dl id="facts" class="facts">{dl}</dl>
<h4>Health checks</h4><ul id="checks">{checks or "<li>none (no container of it seen)</li>"}</ul></section>
{boardanalysis.section(detail["analysis"], now=now)}
<section><h3>Containers</h3><table id="members"><thead><tr><th>Id</th><th>Version</th><th>Current</th>
<th>State</th><th>Health</th><th>Exit code</th><th>Restarts</th><th>CPU</th><th>Memory</th></tr></thead>
<tbody>{members}</tbody></table></section>
{boardtimeline.revisions(detail["revisions"])}
<section><h3>Events</h3><ol id="events" class="events"><li class="quiet">live events of this deployment appear here
</li></ol></section>"""
    extra = [("view", "detail"), ("environment", key.environment), ("name", key.name)]
    return _page(f"{key.name} ({key.environment}) · deployment-watcher", body, last_id=last_id, extra=extra)


@dataclass(frozen=True, slots=True)
class Rendered:
    """The board's page as rendered from ``state``, when the stream's newest event was ``last_id``."""

    state: State
    last_id: str
    health: WatcherHealth
    until: float  # the clock's time when an age shown reads differently
    body: bytes
    etag: str


def render_board(
    state: State, *, settings: RuleSettings, last_id: str, query: Query, now: float, health: WatcherHealth
) -> Rendered:
    """The page as bytes with its ETag (in a worker thread: the state is immutable)."""
    page, current_for = board_html(state, settings=settings, last_id=last_id, query=query, now=now, health=health)
    body = page.encode()
    return Rendered(state, last_id, health, now + current_for, body, hashlib.blake2b(body, digest_size=16).hexdigest())


class Board:
    """The board's routes: ``/``, ``/deployment?environment=…&name=…`` and its two static files."""

    def __init__(
        self, *, snapshot: Callable[[], State], settings: RuleSettings, stream: EventStream,
        clock: Callable[[], float], metrics: SelfMetrics, health: Callable[[], WatcherHealth] = WatcherHealth,
        grafana_url: str = "",
    ) -> None:  # fmt: skip
        self._snapshot, self._settings, self._stream, self._clock = snapshot, settings, stream, clock
        self._metrics, self._health, self._grafana_url = metrics, health, grafana_url
        self._pages: collections.OrderedDict[Query, Rendered] = collections.OrderedDict()  # by query
        self._rendering = asyncio.Lock()
        files = importlib.resources.files("watcher.web") / "static"
        self._static = {name: (files / name).read_bytes() for name in STATIC}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.board),
            web.get("/deployment", self.detail),
            web.get("/timeline", self.timeline),
            web.get("/static/{file}", self.static),
        ]

    async def board(self, request: web.Request) -> web.Response:
        query = Query.of(request.query)
        page = self._current(query) or await self._render(query)
        # no-cache, not no-store: a browser may keep the page and ask whether it changed (ETag).
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        if any(tag.value == page.etag for tag in request.if_none_match or ()):
            response = web.Response(status=304, headers=headers)
        else:
            response = web.Response(body=page.body, content_type="text/html", charset="utf-8", headers=headers)
        response.etag = page.etag
        return response

    def _current(self, query: Query) -> Rendered | None:
        """The page kept for ``query``, when it still shows the state, the health and the ages as they are."""
        page = self._pages.get(query)
        if page is None or page.state is not self._snapshot() or page.last_id != self._stream.last_id:
            return None
        if self._clock() >= page.until or page.health != self._health():
            return None
        self._pages.move_to_end(query)
        return page

    async def _render(self, query: Query) -> Rendered:
        # One rendering at a time: loads that arrive meanwhile find its page when they get the lock.
        async with self._rendering:
            page = self._current(query)
            if page is not None:
                return page
            # Read together, on the loop: the page's last event id is the one its state includes.
            state, last_id, now, health = self._snapshot(), self._stream.last_id, self._clock(), self._health()
            page = await asyncio.to_thread(
                render_board, state, settings=self._settings, last_id=last_id, query=query, now=now, health=health
            )
            self._metrics.board_renders.inc()
            # Pages of an older state are never served again: dropped, they keep no old state alive.
            kept = [(q, kept) for q, kept in self._pages.items() if kept.state is state and q != query]
            self._pages = collections.OrderedDict([*kept[-(PAGES_KEPT - 1) :], (query, page)])
            return page

    async def timeline(self, request: web.Request) -> web.Response:
        """Rollouts across deployments, newest first: the last 24 h, or ``?hours=`` (up to 30 days)."""
        try:
            hours = min(max(float(request.query.get("hours", "24")), 1 / 60), boardtimeline.MAX_HOURS)
        except ValueError:
            hours = 24.0
        if not math.isfinite(hours):
            hours = 24.0
        state, last_id, now = self._snapshot(), self._stream.last_id, self._clock()
        items = await asyncio.to_thread(boardfeed.timeline, state, since=now - hours * 3600)
        body = boardtimeline.timeline(items, hours=hours)
        extra = [("view", "timeline"), ("since", str(now - hours * 3600))]
        return _html(_page("timeline · deployment-watcher", body, last_id=last_id, extra=extra))

    async def detail(self, request: web.Request) -> web.Response:
        key = DeploymentKey(request.query.get("name", ""), request.query.get("environment", ""))
        deployment = self._snapshot().deployments.get(key)
        if deployment is None:
            body = f'<p>No deployment {_e(key.name)} in {_e(key.environment)}. <a href="./">All deployments</a></p>'
            return _html(_page("not found · deployment-watcher", body, last_id=self._stream.last_id), status=404)
        detail = views.detail(deployment, settings=self._settings)
        page = detail_html(detail, last_id=self._stream.last_id, now=self._clock(), grafana_url=self._grafana_url)
        return _html(page)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in self._static:
            raise web.HTTPNotFound()
        return web.Response(
            body=self._static[name],
            content_type=STATIC[name],
            charset=None if name.endswith(".svg") else "utf-8",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )


def _html(page: str, *, status: int = 200) -> web.Response:
    return web.Response(
        text=page, status=status, content_type="text/html", charset="utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
    )  # fmt: skip
