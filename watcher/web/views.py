"""The state as JSON-ready values: what the read API, the event stream and the board show. Pure.

Times are unix seconds (null when unknown), sizes bytes, CPU seconds; nothing depends on the
clock, so an answer depends on the state alone and can be cached as long as the state lasts.
The shapes are the schemas of ``openapi.json`` (a unit test checks them against it).
"""

from __future__ import annotations

import math
from typing import Any

from watcher.domain import rules
from watcher.domain.analysis import Analysis, Result
from watcher.domain.events import (
    AnalysisFinished,
    AnalysisMeasured,
    DeploymentChanged,
    DeploymentDropped,
    DeploymentRemoved,
    DeploymentReturned,
    DomainEvent,
    HealthChanged,
    RevisionEvent,
    RolloutFinished,
    RolloutRevised,
    RolloutStarted,
    RolloutSuperseded,
)
from watcher.domain.model import Deployment, Member, RevisionRecord, Rollout
from watcher.domain.revisions import newest_first
from watcher.domain.settings import RuleSettings
from watcher.wire import StreamEvent

LAST_VERSIONS = 5  # versions listed per deployment in the list (the detail has the whole history)

Json = dict[str, Any]


def summary(deployment: Deployment, *, settings: RuleSettings) -> Json:
    """One row of the list: the current rollout, its health and resources, the last versions."""
    rollout = deployment.rollout
    checks = rules.health_checks(deployment, settings=settings)
    current = deployment.current()
    return {
        "name": deployment.key.name,
        "environment": deployment.key.environment,
        "status": rollout.status.text,
        "revision": rollout.revision,
        "version": rollout.version,
        "commit": rollout.commit,
        "image": rollout.image,
        "rollback": rollout.rollback,
        "reason": rollout.reason,
        "judge": rollout.judge.value,
        "started_at": rollout.started_at,
        "finished_at": rollout.finished_at,
        "duration_seconds": duration(rollout),
        "healthy": all(checks.values()),
        "health_checks": checks,
        "instances": {"current": len(current), "running": sum(1 for i in current if i.running)},
        "cpu_seconds": deployment.cpu_seconds,
        "memory_bytes": deployment.memory_bytes,
        "rollbacks": deployment.rollbacks,
        "removed": deployment.removed,
        "gone_since": deployment.gone_since,
        "last_versions": [seen.version for seen in deployment.history[:LAST_VERSIONS]],
        "analysis": None if rollout.analysis is None else analysis_view(rollout.analysis, settings=settings),
    }


def detail(deployment: Deployment, *, settings: RuleSettings) -> Json:
    """One deployment in full: the summary, the current rollout's deadline, every instance, the history."""
    rollout = deployment.rollout
    return {
        **summary(deployment, settings=settings),
        "deadline_at": rollout.deadline_at,
        "durations": {"count": deployment.durations.count, "sum_seconds": deployment.durations.total},
        "members": [
            member_view(member, current=member_id in rollout.members)
            for member_id, member in sorted(deployment.members.items())
        ],
        "history": [
            {"version": seen.version, "commit": seen.commit, "revision": seen.revision, "started_at": seen.started_at}
            for seen in deployment.history
        ],
        "revisions": [revision_view(record) for record in newest_first(deployment)],
    }


def revision_view(record: RevisionRecord) -> Json:
    """One rollout kept (or the current one): an item of the detail's ``revisions``, and of the rollouts feed
    with its deployment and environment."""
    return {
        "revision": record.revision,
        "version": record.version,
        "previous_version": record.previous_version,
        "commit": record.commit,
        "status": record.status.text,
        "reason": record.reason,
        "judge": record.judge.value,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "duration_seconds": record.duration,
        "rollback": record.rollback,
        "analysis": record.analysis,
    }


def analysis_view(analysis: Analysis, *, settings: RuleSettings) -> Json:
    """The current rollout's analysis: where it stands, and each check's query, limits and figures."""
    return {
        "mode": analysis.mode.value,
        "status": analysis.outcome.text,
        "measuring_since": analysis.measuring_since,
        "ends_at": analysis.ends_at,
        "reason": analysis.reason,
        "failures": analysis.failures,
        "failure_limit": settings.analysis.failure_limit,
        "rollback": analysis.rollback,
        "rollback_done": analysis.rollback_done,
        "checks": [
            {
                "name": m.check.name,
                "query": m.check.query,
                "min": figure(m.check.min),
                "max": figure(m.check.max),
                "max_increase": figure(m.check.max_increase),
                "baseline": figure(m.baseline),
                "current": figure(m.current),
                "measurements": {result.value: m.count(result) for result in Result},
                "last": None if m.last is None else m.last.value,
            }
            for m in analysis.checks
        ],
    }


def figure(value: float | None) -> float | str | None:
    """A value as JSON has it: ±Inf (a query may answer it) as the strings "+Inf" and "-Inf", as
    Prometheus writes them, NaN as null (JSON has neither)."""
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def member_view(member: Member, *, current: bool) -> Json:
    instance = member.instance
    return {
        "id": instance.id,
        "current": current,  # of the current rollout (else a leftover of an older one)
        "version": instance.identity.version,
        "image": instance.identity.image,
        "running": instance.running,
        "running_since": instance.running_since,
        "has_healthcheck": instance.has_healthcheck,
        "health": instance.health.value,
        "exit_code": instance.exit_code,
        "oom_killed": instance.oom_killed,
        "restart_count": instance.restart_count,
        "cpu_seconds": member.cpu_nanos / 1e9,
        "memory_bytes": member.memory_bytes,
    }


def duration(rollout: Rollout) -> float | None:
    """Seconds from start to verdict of a finished rollout that was seen as it began; else None (also for
    a verdict before the start, by a clock ahead of ours: never 0 s, as the state machine records it)."""
    if rollout.finished_at is None or not rollout.witnessed or rollout.finished_at < rollout.started_at:
        return None
    return rollout.finished_at - rollout.started_at


def event_view(event: DomainEvent) -> tuple[StreamEvent, Json] | None:
    """The stream's name and fields for ``event``; None for events the stream does not carry
    (a rejected deployment, a stale observation: nothing changed)."""
    shown = _event_fields(event)
    if shown is None:
        return None
    name, fields = shown
    if isinstance(event, RevisionEvent):  # of one rollout: which
        fields = {"revision": event.revision, "version": event.version, **fields}
    return name, {"event": name, "name": event.key.name, "environment": event.key.environment, "at": event.at,
                  **fields}  # fmt: skip


def _event_fields(event: DomainEvent) -> tuple[StreamEvent, Json] | None:
    """The stream's name for ``event``, and its fields but the rollout's revision and version."""
    match event:
        case RolloutStarted():
            name = StreamEvent.ROLLBACK_STARTED if event.rollback else StreamEvent.ROLLOUT_STARTED
            return name, {"commit": event.commit, "rollback": event.rollback, "judge": event.judge.value}
        case RolloutFinished():
            return StreamEvent.ROLLOUT_FINISHED, {"status": event.status.text, "reason": event.reason,
                                                  "judge": event.by.value, "duration_seconds": event.duration}  # fmt: skip
        case RolloutRevised():
            return StreamEvent.ROLLOUT_REVISED, {"before": event.before.text, "status": event.after.text,
                                                 "reason": event.reason, "judge": event.by.value}  # fmt: skip
        case RolloutSuperseded():
            return StreamEvent.ROLLOUT_SUPERSEDED, {}
        case HealthChanged():
            return StreamEvent.HEALTH_CHANGED, {"instance": event.instance_id, "before": event.before.value,
                                                "health": event.after.value}  # fmt: skip
        case DeploymentChanged():
            return StreamEvent.DEPLOYMENT_CHANGED, {"current": event.current, "running": event.running,
                                                    "failing": list(event.failing)}  # fmt: skip
        case DeploymentRemoved():
            return StreamEvent.DEPLOYMENT_REMOVED, {"reason": event.why}
        case DeploymentReturned():
            return StreamEvent.DEPLOYMENT_RETURNED, {}
        case AnalysisMeasured():
            return StreamEvent.ANALYSIS_MEASURED, {"check": event.check, "result": event.result.value,
                "value": figure(event.value), "baseline": figure(event.baseline), "of_baseline": event.of_baseline,
                "reason": event.reason}  # fmt: skip
        case AnalysisFinished():
            return StreamEvent.ANALYSIS_FINISHED, {"outcome": event.outcome.text, "mode": event.mode.value,
                                                   "reason": event.reason, "rollback": event.rollback}  # fmt: skip
        case DeploymentDropped():
            return StreamEvent.DEPLOYMENT_GONE, {"reason": event.why}
    return None
