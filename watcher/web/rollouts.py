"""``GET /api/v1/rollouts?since=&limit=``: the rollouts of every deployment, newest first (by start),
the current ones (in progress too) among them; what the board's timeline, chat bots and scripts read.

Bounded work per request, whatever the state holds (5,000 deployments × 50 revisions): each
deployment's revisions are already newest first, so they are merged lazily (``heapq.merge``), each
read only down to ``since``, and only the first ``limit`` are made JSON.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from collections.abc import Iterator, Mapping

from watcher.domain.model import Deployment, DeploymentKey, RevisionRecord, State
from watcher.domain.revisions import newest_first
from watcher.web import views

PATH = "/api/v1/rollouts"
DEFAULT_SECONDS = 86400.0  # since: the last 24 h unless asked
DEFAULT_LIMIT, MAX_LIMIT = 500, 5000


class BadQuery(ValueError):
    """A query parameter that cannot be read: a 400, saying which."""


def parse(query: Mapping[str, str], *, now: float) -> tuple[float, int]:
    """``since`` (unix seconds, default 24 h ago) and ``limit`` (1 … 5000, default 500) of a query; BadQuery."""
    since = now - DEFAULT_SECONDS
    if "since" in query:
        try:
            since = float(query["since"])
        except ValueError:
            raise BadQuery(f"since: {query['since']!r:.40} is not a number of unix seconds") from None
        if not math.isfinite(since):
            raise BadQuery("since: must be a finite number of unix seconds")
    limit = DEFAULT_LIMIT
    if "limit" in query:
        raw = query["limit"]
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
            raise BadQuery(f"limit: {raw!r:.40} is not a whole number from 1 to {MAX_LIMIT}")
        limit = int(raw)
    return since, limit


def _since(deployment: Deployment, since: float) -> Iterator[tuple[float, DeploymentKey, RevisionRecord]]:
    """A deployment's rollouts started at ``since`` or later, newest first (stops at the first older one)."""
    for record in newest_first(deployment):
        if record.started_at < since:
            return
        yield record.started_at, deployment.key, record


def feed(state: State, *, since: float, limit: int) -> list[views.Json]:
    """The rollouts of every deployment started at ``since`` or later, newest first, at most ``limit``."""
    merged = heapq.merge(
        *(_since(d, since) for d in state.deployments.values() if not d.usage_only),
        key=lambda item: item[0],
        reverse=True,
    )
    return [
        {"deployment": key.name, "environment": key.environment, **views.revision_view(record)}
        for _, key, record in itertools.islice(merged, limit)
    ]


def body(state: State, *, since: float, limit: int) -> bytes:
    return json.dumps(
        {"rollouts": feed(state, since=since, limit=limit)}, separators=(",", ":"), allow_nan=False
    ).encode()
