"""The rollouts a deployment keeps: each revision as it ended, newest first, at most
``retention.revisions`` of them (``Deployment.revisions``). Pure.

``rollouts`` records the current rollout here whenever it is given a verdict (a finish, a revision
of it, its analysis's end) and when a new rollout supersedes it: a revision is recorded again, in
place, each time, so its record is its last word. The current rollout is in the record once it has
a verdict; ``newest_first`` adds it while in progress, for the readers (the rollouts feed, the detail).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from watcher.domain.model import Deployment, RevisionRecord, Rollout, Status


def duration(rollout: Rollout) -> float | None:
    """Seconds from start to verdict of a finished rollout seen as it began; None when unknown (also a
    verdict before the start, by a clock ahead of ours: never 0 s)."""
    if rollout.finished_at is None or not rollout.witnessed or rollout.finished_at < rollout.started_at:
        return None
    return rollout.finished_at - rollout.started_at


def previous_version(deployment: Deployment, revision: int) -> str:
    """The version deployed before ``revision`` ("" when none is known): the newest entry of the history
    older than it."""
    return next((seen.version for seen in deployment.history if seen.revision < revision), "")


def record_of(deployment: Deployment, rollout: Rollout, *, reason: str | None = None) -> RevisionRecord:
    """What is kept of ``rollout``, a rollout of ``deployment`` (its reason replaced by ``reason`` if given)."""
    return RevisionRecord(
        revision=rollout.revision, version=rollout.version, previous_version=previous_version(deployment, rollout.revision),
        commit=rollout.commit, status=rollout.status, reason=rollout.reason if reason is None else reason,
        judge=rollout.judge, started_at=rollout.started_at, finished_at=rollout.finished_at,
        duration=duration(rollout), rollback=rollout.rollback,
        analysis=None if rollout.analysis is None else rollout.analysis.outcome.text,
    )  # fmt: skip


def kept(deployment: Deployment, *, limit: int, superseded_by: int | None = None) -> Deployment:
    """``deployment`` with its current rollout recorded (replacing an older record of the same revision),
    the oldest beyond ``limit`` left out. ``superseded_by``: the revision that replaces a rollout still in
    progress, which its record's reason names."""
    rollout = deployment.rollout
    reason = None
    if superseded_by is not None and rollout.status is Status.IN_PROGRESS:
        reason = f"superseded by revision {superseded_by}" + (f" ({rollout.reason})" if rollout.reason else "")
    record = record_of(deployment, rollout, reason=reason)
    older = deployment.revisions
    if older and older[0].revision == record.revision:
        if older[0] == record:
            return deployment
        older = older[1:]
    elif any(r.revision == record.revision for r in older):
        older = tuple(r for r in older if r.revision != record.revision)
    return dataclasses.replace(deployment, revisions=(record, *older)[:limit])


def newest_first(deployment: Deployment) -> Iterator[RevisionRecord]:
    """Every revision known, newest first: the current rollout (as it stands, in progress too), then the
    records of the older ones."""
    current = deployment.rollout
    yield record_of(deployment, current)
    for record in deployment.revisions:
        if record.revision != current.revision:
            yield record
