"""The rollouts the board shows, from the revisions the watcher keeps (``Deployment.revisions``, with
the current rollout first): the timeline across deployments is the JSON API's feed
(``GET /api/v1/rollouts``), and the summary counts the rollouts started in the last day."""

from __future__ import annotations

from itertools import takewhile

from watcher.domain.model import State
from watcher.domain.revisions import newest_first
from watcher.web import rollouts, views

DAY = 86400.0
TIMELINE_ROWS = 500  # rollouts on the timeline page at most (newest first)


def timeline(state: State, *, since: float, limit: int = TIMELINE_ROWS) -> list[views.Json]:
    """Rollouts of every deployment that started at ``since`` or later, newest first, at most ``limit``."""
    return rollouts.feed(state, since=since, limit=limit)


def started_since(state: State, *, since: float, environment: str = "") -> list[float]:
    """When each rollout that started at ``since`` or later started (the summary counts them)."""
    return [
        record.started_at
        for d in state.deployments.values()
        if not d.usage_only and d.rollout.started_at >= since and (not environment or d.key.environment == environment)
        for record in takewhile(lambda r: r.started_at >= since, newest_first(d))
    ]
