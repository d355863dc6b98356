"""A deployment's rollouts over time: one begins, the rules judge it, its status changes.

``change_status`` is the one place a rollout's status changes, and it says so with an event:
in progress → success | failed is a ``RolloutFinished``, a final verdict changed after the fact
a ``RolloutRevised``. ``new`` is the one constructor of a rollout, whatever source tells of it, and
the one place its progress deadline is set; it begins in progress (``create``, ``begin``),
superseding the previous one.
"""

from __future__ import annotations

import dataclasses

from watcher.domain import dora, rules, times
from watcher.domain.events import (
    DeploymentRejected,
    RolloutFinished,
    RolloutRevised,
    RolloutStarted,
    RolloutSuperseded,
)
from watcher.domain.model import Deployment, DeploymentKey, Instance, Judge, Rollout, Status, VersionSeen
from watcher.domain.txn import Txn


def change_status(
    txn: Txn, deployment: Deployment, status: Status, reason: str, *, at: float, by: Judge, recorded: bool = False
) -> Deployment:
    """The current rollout with its new verdict ``status`` (never back to in progress), decided by ``by`` at ``at``;
    ``recorded``: ``at`` is the source's own record of when it happened (an orchestrator's record of an
    update's completion), known even when a resync is what finds it."""
    rollout = deployment.rollout
    assert status is not Status.IN_PROGRESS, "a rollout goes back to in progress only as a new rollout"
    known = recorded or not txn.resyncing  # when it happened
    key, revision, version = deployment.key, rollout.revision, rollout.version
    if rollout.status is not Status.IN_PROGRESS:
        revised = RolloutRevised(
            key=key, at=at, revision=revision, version=version, before=rollout.status, after=status,
            reason=reason, by=by,
        )  # fmt: skip
        txn.emit(revised)
        return dataclasses.replace(
            deployment,
            rollout=dataclasses.replace(rollout, status=status, reason=reason),
            dora=dora.record(deployment.dora, revised, rollout=rollout, timed=known),
        )
    # A finish found by a resync (after a restart or reconnect) happened at an unknown time; one
    # before the start (the engine's clock ahead of ours) has no duration either, never 0 s.
    timed = rollout.witnessed and known
    if timed and times.refused_finish(txn, key, at, started_at=rollout.started_at, instead="no duration"):
        timed = False
    duration = at - rollout.started_at if timed else None
    finished = RolloutFinished(
        key=key, at=at, revision=revision, version=version, status=status, reason=reason, by=by, duration=duration
    )
    txn.emit(finished)
    return dataclasses.replace(
        deployment,
        rollout=dataclasses.replace(rollout, status=status, finished_at=at, reason=reason),
        durations=deployment.durations if duration is None else deployment.durations.observe(duration),
        dora=dora.record(deployment.dora, finished, rollout=rollout, timed=known),
    )


def evaluate(txn: Txn, deployment: Deployment) -> Deployment:
    """The rules applied to the current rollout, now."""
    rollout = deployment.rollout
    if rollout.status is not Status.IN_PROGRESS:
        return deployment  # the rules never change a finished rollout
    verdict = rules.verdict(deployment, now=txn.now, settings=txn.settings)
    if verdict is None:
        return deployment
    return change_status(txn, deployment, *verdict, at=txn.now, by=rollout.judge)


def revise_if_premature(
    txn: Txn, deployment: Deployment, *, before: Instance, after: Instance, at: float
) -> Deployment:
    """A success judged on the stable time becomes a failure when it proves premature (``rules.premature``)."""
    reason = rules.premature(deployment.rollout, before=before, after=after, at=at, settings=txn.settings)
    if not reason:
        return deployment
    return change_status(txn, deployment, Status.FAILED, reason, at=at, by=Judge.CONTAINERS)


def adopt(deployment: Deployment, judge: Judge) -> Deployment:
    """From now on ``judge`` decides the current rollout (e.g. deploy tooling announced it after its containers)."""
    if deployment.rollout.judge is judge:
        return deployment
    return dataclasses.replace(deployment, rollout=dataclasses.replace(deployment.rollout, judge=judge))


def has_room(txn: Txn, key: DeploymentKey) -> bool:
    """Whether a new deployment may be tracked (the cap guards against label explosions)."""
    cap = txn.settings.retention.max_deployments
    if len(txn.deployments) < cap:
        return True
    txn.emit(DeploymentRejected(key=key, at=txn.now, cap=cap))
    return False


def new(
    txn: Txn, *, revision: int, version: str, commit: str, image: str, started_at: float, judge: Judge,
    witnessed: bool, deadline_seconds: float | None = None, trigger_created_at: float | None = None,
    rollback: bool = False, members: frozenset[str] = frozenset(), commit_time: float | None = None,
    hotfix: bool = False,
) -> Rollout:  # fmt: skip
    """A rollout the watcher sees begin now (``txn.now``), whichever source tells of it first.

    ``started_at`` is when it began by its source's word (a label, a report, the orchestrator), the
    start of its duration; its progress deadline (``deadline_seconds``, None: the configured one)
    counts from now, the moment the watcher saw it begin, never from that word (``domain.times``): a
    rollout found late (a resync after a restart, a task container seen before its service, a CI job
    reporting long after its start) keeps its full deadline, and the verdict does not depend on which
    source was read first. ``trigger_created_at``: when what started it was created (default: the start).
    """
    seconds = txn.settings.rollout.progress_deadline_seconds if deadline_seconds is None else deadline_seconds
    return Rollout(
        revision=revision, version=version, commit=commit, image=image, started_at=started_at, rollback=rollback,
        members=members, trigger_created_at=started_at if trigger_created_at is None else trigger_created_at,
        deadline_at=txn.now + seconds, seen_at=txn.now, witnessed=witnessed, judge=judge, commit_time=commit_time,
        hotfix=hotfix,
    )  # fmt: skip


def joined_first(rollout: Rollout, instance: Instance) -> Rollout:
    """The rollout deploy tooling announced, as its first instance joins: that instance's deadline
    label sets the deadline the report could not, from when the rollout was seen, as when the
    instance is read before the report."""
    seconds = instance.identity.progress_deadline_seconds
    if rollout.members or rollout.judge is not Judge.DEPLOY_TOOLING or seconds is None or rollout.seen_at is None:
        return rollout
    return dataclasses.replace(rollout, deadline_at=rollout.seen_at + seconds)


def create(txn: Txn, key: DeploymentKey, rollout: Rollout) -> Deployment:
    """A new deployment, its first rollout just begun (with the DORA figures it had, if it was dropped)."""
    txn.emit(_started(key, rollout))
    return Deployment(
        key=key,
        rollout=rollout,
        history=(VersionSeen(rollout.version, rollout.commit, rollout.revision, rollout.started_at),),
        dora=txn.revive(key),
    )


def begin(txn: Txn, deployment: Deployment, rollout: Rollout) -> Deployment:
    """``rollout`` becomes the current one: history, rollback count and events follow."""
    previous = deployment.rollout
    if previous.status is Status.IN_PROGRESS:
        txn.emit(
            RolloutSuperseded(
                key=deployment.key, at=rollout.started_at, revision=previous.revision, version=previous.version
            )
        )
    entry = VersionSeen(rollout.version, rollout.commit, rollout.revision, rollout.started_at)
    older = (h for h in deployment.history if (h.version, h.commit) != (entry.version, entry.commit))
    history = (entry, *older)
    started = _started(deployment.key, rollout)
    txn.emit(started)
    return dataclasses.replace(
        deployment,
        rollout=rollout,
        history=history[: txn.settings.retention.history_versions],
        rollbacks=deployment.rollbacks + rollout.rollback,
        dora=dora.record(deployment.dora, started, rollout=rollout, previous=previous),
    )


def _started(key: DeploymentKey, rollout: Rollout) -> RolloutStarted:
    return RolloutStarted(
        key=key, at=rollout.started_at, revision=rollout.revision, version=rollout.version, commit=rollout.commit,
        rollback=rollout.rollback, judge=rollout.judge,
    )  # fmt: skip
