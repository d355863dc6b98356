"""What changed when: the timeline of rollouts across deployments, a deployment's every revision, and
the links that help in an incident. Items are ``boardfeed``'s (the JSON API's shapes); every value is
escaped here, and ``static/board.js`` draws the same rows from the stream with ``textContent``."""

from __future__ import annotations

import datetime
import html
import urllib.parse
from typing import Any

MAX_HOURS = 30 * 24.0
VERDICTS = {"in_progress": "in progress", "success": "success", "failed": "failed"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.1f} s"


def _verdict(item: dict[str, Any]) -> str:
    status = str(item["status"])
    mark = ' <span class="tag">rollback</span>' if item["rollback"] else ""
    return f'<td class="status status-{_e(status)}">{_e(VERDICTS.get(status, status))}{mark}</td>'


def _change(item: dict[str, Any]) -> str:
    before = item["previous_version"]
    return f"{_e(before)} → {_e(item['version'])}" if before else _e(item["version"])


def timeline(items: list[dict[str, Any]], *, hours: float) -> str:
    """The timeline's page body: newest first, with links to a longer span."""
    rows = "".join(
        f'<tr data-name="{_e(i["deployment"])}" data-environment="{_e(i["environment"])}"'
        f' data-revision="{i["revision"]}"><td><time>{_e(_when(i["started_at"]))}</time></td>'
        f'<td><a href="{_e(_detail(i))}" title="{_e(i["deployment"])}">{_e(i["deployment"])}</a></td>'
        f"<td>{_e(i['environment'])}</td><td>{_change(i)}</td>{_verdict(i)}"
        f'<td class="reason">{_e(i["reason"])}</td><td>{_duration(i["duration_seconds"])}</td></tr>'
        for i in items
    )
    span = f"{hours:g} h" if hours < 48 else f"{hours / 24:g} days"
    longer = " ".join(
        f'<a href="timeline?hours={h:g}"{" aria-current=page" if h == hours else ""}>{label}</a>'
        for h, label in ((1, "1 h"), (24, "24 h"), (168, "7 days"), (720, "30 days"))
    )
    return f"""<h2>Rollouts in the last {_e(span)}</h2><p class="filter">Show the last: {longer}</p>
<table id="timeline"><caption class="visually-hidden">Rollouts, newest first</caption><thead><tr><th>Started</th>
<th>Deployment</th><th>Environment</th><th>Version</th><th>Verdict</th><th>Reason</th><th>Duration</th></tr></thead>
<tbody>{rows}</tbody></table><p id="empty" class="empty"{" hidden" if items else ""}>No rollouts in this span.</p>"""


def _detail(item: dict[str, Any]) -> str:
    return "deployment?" + urllib.parse.urlencode({"environment": item["environment"], "name": item["deployment"]})


def revision_rows(items: list[dict[str, Any]]) -> str:
    return "".join(
        f'<tr data-revision="{i["revision"]}"><td>{i["revision"]}</td><td>{_change(i)}</td>'
        f"<td><code>{_e(i['commit'] or '—')}</code></td>{_verdict(i)}<td>{_e(i['reason'] or '—')}</td>"
        f"<td>{_e(str(i['judge']).replace('_', ' '))}</td><td>{_e(_when(i['started_at']))}</td>"
        f"<td>{_duration(i['duration_seconds'])}</td>"
        f"<td>{_e(i['analysis'] or '—')}</td></tr>"  # the analysis's outcome; its figures are in the reason
        for i in items
    )


def revisions(items: list[dict[str, Any]]) -> str:
    """The detail page's every revision (not distinct versions), newest first."""
    return f"""<section><h3>Revisions</h3><table id="revisions"><thead><tr><th>Revision</th><th>Version</th>
<th>Commit</th><th>Verdict</th><th>Reason</th><th>Judged by</th><th>Started</th><th>Duration</th><th>Analysis</th>
</tr></thead><tbody>{revision_rows(items)}</tbody></table></section>"""


def grafana_link(template: str, *, name: str, environment: str) -> str | None:
    """``web.grafana_url`` with {deployment} and {environment} filled in (URL-encoded); None unless http(s)."""
    if not template.startswith(("http://", "https://")):
        return None
    quote = urllib.parse.quote
    return template.replace("{deployment}", quote(name, safe="")).replace("{environment}", quote(environment, safe=""))


def incident_links(detail: dict[str, Any], *, grafana_url: str) -> str:
    """The Grafana dashboard (when configured) and a ``docker logs`` line per container."""
    link = grafana_link(grafana_url, name=detail["name"], environment=detail["environment"])
    items = [f'<li><a href="{_e(link)}" rel="noopener noreferrer">Grafana dashboard</a></li>'] if link else []
    items += [
        f"<li><code>docker logs --tail 200 {_e(m['id'][:12])}</code>{' (current)' if m['current'] else ''}</li>"
        for m in detail["members"]
    ]
    if not items:
        return ""
    return f'<section id="links"><h3>In an incident</h3><ul class="links">{"".join(items)}</ul></section>'
