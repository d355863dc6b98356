"""The rollouts the board shows: every revision of a deployment (its detail page) and the timeline
across deployments, in the shapes of the JSON API (``revisions`` of a deployment's detail; the items of
``GET /api/v1/rollouts``, newest first).

Until the watcher keeps a record of each revision (``Deployment.revisions``), these are made from
what the state has: the current rollout in full, and the history's earlier revisions (version,
commit, start) with an unknown verdict. ``revisions`` below is the one place that reads them: point
it at the recorded revisions and the board, the timeline and the summary's count follow.
"""

from __future__ import annotations

from typing import Any

from watcher.domain.model import Deployment, State
from watcher.domain.settings import RuleSettings
from watcher.web import views

Json = dict[str, Any]
DAY = 86400.0
TIMELINE_ROWS = 500  # rollouts on the timeline page at most (newest first)


def revisions(deployment: Deployment, *, settings: RuleSettings) -> list[Json]:
    """The deployment's revisions, newest first: revision, version, previous_version, commit, status,
    reason, judge, started_at, finished_at, duration_seconds, rollback, analysis."""
    rollout = deployment.rollout
    older = [seen for seen in deployment.history if seen.revision < rollout.revision]
    current = views.summary(deployment, settings=settings)
    items: list[Json] = [
        {
            "revision": rollout.revision, "version": rollout.version,
            "previous_version": older[0].version if older else None, "commit": rollout.commit,
            "status": current["status"], "reason": current["reason"], "judge": current["judge"],
            "started_at": rollout.started_at, "finished_at": rollout.finished_at,
            "duration_seconds": current["duration_seconds"], "rollback": rollout.rollback,
            "analysis": current["analysis"],
        }
    ]  # fmt: skip
    for index, seen in enumerate(older):
        before = older[index + 1].version if index + 1 < len(older) else None
        items.append({
            "revision": seen.revision, "version": seen.version, "previous_version": before, "commit": seen.commit,
            "status": "unknown", "reason": "", "judge": current["judge"], "started_at": seen.started_at,
            "finished_at": None, "duration_seconds": None, "rollback": False, "analysis": None,
        })  # fmt: skip
    return items


def rollouts(state: State, *, settings: RuleSettings, since: float, limit: int = TIMELINE_ROWS) -> list[Json]:
    """Rollouts of every deployment that started at ``since`` or later, newest first, at most ``limit``."""
    found: list[Json] = []
    for deployment in state.deployments.values():
        if deployment.usage_only or deployment.rollout.started_at < since:
            continue
        key = deployment.key
        for item in revisions(deployment, settings=settings):
            if item["started_at"] < since:
                break  # newest first
            found.append({"deployment": key.name, "environment": key.environment, **item})
    found.sort(key=lambda item: (-item["started_at"], item["deployment"], item["environment"]))
    return found[:limit]


def started_since(state: State, *, since: float, environment: str = "") -> list[float]:
    """When each rollout that started at ``since`` or later started (the summary counts them)."""
    return [
        d.rollout.started_at
        for d in state.deployments.values()
        if not d.usage_only and d.rollout.started_at >= since and (not environment or d.key.environment == environment)
    ] + [
        seen.started_at
        for d in state.deployments.values()
        if not d.usage_only and d.rollout.started_at >= since and (not environment or d.key.environment == environment)
        for seen in d.history
        if seen.revision < d.rollout.revision and seen.started_at >= since
    ]
