"""The board's view of a rollout's analysis (``views.analysis_view``'s JSON): a compact line in the
table's status cell, a section on the detail page. ``static/board.js`` renders the same from the
stream: the classes and texts here are the script's."""

from __future__ import annotations

import html
from typing import Any

from watcher.display import age

RESULTS = ("pass", "fail", "nodata", "error")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def figure(value: float | str | None) -> str:
    """A check's value as the board shows it: 6 significant digits, +Inf/-Inf, — for none."""
    if value is None:
        return "—"
    return value if isinstance(value, str) else f"{value:.6g}"


def limits(check: dict[str, Any]) -> str:
    """``max 0.02, +50% over baseline``: what fails a measurement."""
    said = [f"{name} {figure(check[name])}" for name in ("min", "max") if check[name] is not None]
    increase = check["max_increase"]
    if isinstance(increase, float | int):
        said.append(f"+{increase:.0%} over baseline")
    return ", ".join(said) or "—"


def state_text(analysis: dict[str, Any], *, now: float) -> str:
    """``analysing, 4m left`` (or ``waiting for the containers``), ``analysis passed`` …"""
    if analysis["status"] != "running":
        return f"analysis {analysis['status']}"
    if analysis["ends_at"] is None:
        return "analysis waits for the containers"
    return f"analysing, {age(analysis['ends_at'] - now)} left"


def brief(check: dict[str, Any]) -> str:
    """``error_rate 0.004 → 0.005 (pass 2, fail 0)``: before → after and the counts that matter."""
    counts = check["measurements"]
    return (
        f"{check['name']} {figure(check['baseline'])} → {figure(check['current'])}"
        f" (pass {counts['pass']}, fail {counts['fail']})"
    )


def _state_span(analysis: dict[str, Any], *, now: float) -> str:
    until = f' data-until="{analysis["ends_at"]}"' if analysis["status"] == "running" and analysis["ends_at"] else ""
    return f'<span class="analysis analysis-{_e(analysis["status"])}"{until}>{_e(state_text(analysis, now=now))}</span>'


def row_cell(analysis: dict[str, Any] | None, *, now: float) -> str:
    """What the status cell of the table adds for an analysis: its state, one line per check."""
    if analysis is None:
        return ""
    lines = "".join(f'<div class="check-brief">{_e(brief(check))}</div>' for check in analysis["checks"])
    return f"<div>{_state_span(analysis, now=now)}</div>{lines}"


def section(analysis: dict[str, Any] | None, *, now: float) -> str:
    """The detail page's section: the analysis' state and reason, each check's before and after."""
    if analysis is None:
        return '<section id="analysis"><h3>Analysis</h3><p class="quiet">none for this rollout</p></section>'
    reason = f" — {_e(analysis['reason'])}" if analysis["reason"] else ""
    head = (
        f"<p>{_state_span(analysis, now=now)} <small>{_e(analysis['mode'])} mode, failures"
        f" {analysis['failures']} of {analysis['failure_limit']}"
        f"{', rollback asked' if analysis['rollback_done'] else ''}</small>"
        f'<span class="reason">{reason}</span></p>'
    )
    rows = "".join(
        f'<tr data-check="{_e(c["name"])}"><td>{_e(c["name"])}</td><td><code>{_e(c["query"])}</code></td>'
        f"<td>{_e(figure(c['baseline']))}</td><td>{_e(figure(c['current']))}</td><td>{_e(limits(c))}</td>"
        + "".join(f"<td>{c['measurements'][r]}</td>" for r in RESULTS)
        + f"<td>{_e(c['last'] or '—')}</td></tr>"
        for c in analysis["checks"]
    )
    return f"""<section id="analysis"><h3>Analysis</h3>{head}
<table id="analysis-checks"><thead><tr><th>Check</th><th>Query</th><th>Baseline</th><th>Current</th><th>Limits</th>
<th>Pass</th><th>Fail</th><th>No data</th><th>Error</th><th>Last</th></tr></thead><tbody>{rows}</tbody></table></section>"""


def changes_in(analysis: dict[str, Any] | None, *, now: float) -> float:
    """Seconds until the time left it shows reads differently (a page showing it is current until then)."""
    if analysis is None or analysis["status"] != "running" or analysis["ends_at"] is None:
        return float("inf")
    left = float(analysis["ends_at"]) - now
    if left <= 0:
        return float("inf")  # the window's end is a change of the state, which renders the page again
    length = next((length for length in (86400, 3600, 60) if left >= length), 1)
    return max(left % length, 0.001)
