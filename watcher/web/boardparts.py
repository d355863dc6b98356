"""The board's controls and its summary: what a page asks for (environment, status, order, page, kiosk),
the deployments in that order, and the bar above the table (counts by status, rollouts in the last
24 h, the watcher's own health), readable from across a room. ``static/board.js`` keeps the same
order: the attributes here are the script's."""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, replace

from watcher.domain.model import Deployment, State

STATUSES = ("failed", "in_progress", "success", "removed")  # the order "attention" sorts in
LABELS = {"failed": "failed", "in_progress": "in progress", "success": "succeeded", "removed": "removed"}
ORDERS = ("attention", "name")
PAGE_ROWS = 100  # rows per page: a board of 5,000 deployments paints its first page at once
KIOSK_ROWS = 30  # a wall screen shows the 30 that need attention first, all on one 1080p screen
MAX_PAGE = 10_000


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True, slots=True)
class Query:
    """What a board URL asks for (every field in the URL, so a screen can be bookmarked)."""

    environment: str = ""
    status: str = ""  # one of STATUSES, or "" for all
    order: str = "attention"
    page: int = 1
    kiosk: bool = False

    @classmethod
    def of(cls, query: Mapping[str, str]) -> Query:
        status, order = query.get("status", ""), query.get("order", "attention")
        try:
            page = min(max(int(query.get("page", "1")), 1), MAX_PAGE)
        except ValueError:
            page = 1
        return cls(
            environment=query.get("environment", ""), status=status if status in STATUSES else "",
            order=order if order in ORDERS else "attention", page=page, kiosk="kiosk" in query,
        )  # fmt: skip

    @property
    def rows(self) -> int:
        return KIOSK_ROWS if self.kiosk else PAGE_ROWS

    def href(self, **changes: object) -> str:
        """This query with ``changes``, as a relative URL (defaults left out)."""
        q = replace(self, **changes)  # type: ignore[arg-type]
        pairs = [("environment", q.environment), ("status", q.status)]
        pairs += [("order", q.order if q.order != "attention" else ""), ("page", str(q.page) if q.page > 1 else "")]
        query = urllib.parse.urlencode([(k, v) for k, v in pairs if v])
        if q.kiosk:
            query = f"{query}&kiosk" if query else "kiosk"
        return "./" + ("?" + query if query else "")


@dataclass(frozen=True, slots=True)
class WatcherHealth:
    """The watcher's own health, as the summary shows it (what ``/ready`` reads of its sources)."""

    docker: bool = True  # connected to the Docker Engine and resynced
    swarm: bool = False  # following Swarm services (the leader's watcher)
    analysis: bool = False  # a Prometheus to analyse rollouts against is configured


def status_of(deployment: Deployment) -> str:
    return "removed" if deployment.removed else deployment.rollout.status.text


def shown(state: State, query: Query) -> list[Deployment]:
    """The deployments of the environment asked for (every status), those the board lists."""
    return [
        d
        for d in state.deployments.values()
        if not d.usage_only and (not query.environment or d.key.environment == query.environment)
    ]


def counts(deployments: list[Deployment]) -> dict[str, int]:
    found = dict.fromkeys(STATUSES, 0)
    for deployment in deployments:
        found[status_of(deployment)] += 1
    return found


def ordered(deployments: list[Deployment], query: Query) -> list[Deployment]:
    """Of the status asked for, in the order asked for: by name, or what needs attention first (failed,
    in progress, succeeded, removed; the most recent first within each)."""
    chosen = [d for d in deployments if not query.status or status_of(d) == query.status]
    if query.order == "name":
        return sorted(chosen, key=lambda d: d.key)
    rank = {status: index for index, status in enumerate(STATUSES)}
    return sorted(chosen, key=lambda d: (rank[status_of(d)], -d.rollout.started_at, d.key))


def summary_bar(found: Mapping[str, int], *, rollouts_24h: int, health: WatcherHealth, query: Query) -> str:
    """The counts by status (links that filter, but on a wall screen), the day's rollouts, the watcher's health."""
    tiles = []
    for status in STATUSES:
        inner = f'<span class="count" data-count="{status}">{found[status]}</span> {LABELS[status]}'
        selected = " selected" if query.status == status else ""
        if query.kiosk:
            tiles.append(f'<li class="tile tile-{status}{selected}">{inner}</li>')
        else:
            href = query.href(status="" if query.status == status else status, page=1)
            tiles.append(f'<li class="tile tile-{status}{selected}"><a href="{_e(href)}">{inner}</a></li>')
    tiles.append(f'<li class="tile tile-rollouts"><span class="count" data-count="rollouts">{rollouts_24h}</span>'
                 " rollouts in 24 h</li>")  # fmt: skip
    checks = (
        ("docker", "Docker", health.docker, "connected", "not connected"),
        ("swarm", "Swarm", health.swarm, "followed", "not followed"),
        ("analysis", "Analysis", health.analysis, "on", "off"),
    )
    marks = "".join(
        f'<li class="own own-{"ok" if ok else "off"}" data-own="{key}">{label} {yes if ok else no}</li>'
        for key, label, ok, yes, no in checks
    )
    return (f'<section id="summary" class="summary" aria-label="Summary"><ul class="tiles">{"".join(tiles)}</ul>'
            f'<ul class="own-health" aria-label="The watcher">{marks}</ul></section>')  # fmt: skip


def controls(query: Query, environments: list[str]) -> str:
    """The filter form (environment, status, order): a GET, so the URL says what is shown."""
    if query.kiosk:
        return ""
    env_options = "".join(
        f'<option value="{_e(env)}"{" selected" if env == query.environment else ""}>{_e(env)}</option>'
        for env in environments
    )
    status_options = "".join(
        f'<option value="{s}"{" selected" if s == query.status else ""}>{LABELS[s]}</option>' for s in STATUSES
    )
    order_options = "".join(
        f'<option value="{o}"{" selected" if o == query.order else ""}>{"needs attention first" if o == "attention" else "name"}</option>'
        for o in ORDERS
    )
    return f"""<form method="get" action="./" class="filter"><label>Environment
<select name="environment"><option value="">all</option>{env_options}</select></label>
<label>Status <select name="status"><option value="">all</option>{status_options}</select></label>
<label>Order <select name="order">{order_options}</select></label>
<button type="submit">Filter</button> <a href="{_e(query.href(kiosk=True, page=1))}">wall screen</a>
<a href="timeline">timeline</a></form>"""


def pager(query: Query, total: int) -> str:
    """Links to the pages before and after (the counts above are over all of them)."""
    pages = max(1, -(-total // query.rows))
    if query.kiosk:
        more = total - query.rows
        return f'<p class="more">and {more} more</p>' if more > 0 else ""
    if pages == 1:
        return ""
    links = [f"page {min(query.page, pages)} of {pages} ({total} deployments)"]
    if query.page > 1:
        links.insert(0, f'<a rel="prev" href="{_e(query.href(page=query.page - 1))}">← previous</a>')
    if query.page < pages:
        links.append(f'<a rel="next" href="{_e(query.href(page=query.page + 1))}">next →</a>')
    return f'<nav class="pager" aria-label="Pages">{" ".join(links)}</nav>'
