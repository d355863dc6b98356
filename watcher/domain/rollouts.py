"""A deployment's rollouts over time: one begins, the rules judge it, its status changes.

``change_status`` is the one place a rollout's status changes, and it says so with an event:
in progress → success | failed is a ``RolloutFinished``, a final verdict changed after the fact
a ``RolloutRevised``. ``new`` is the one constructor of a rollout, whatever source tells of it, and
the one place its progress deadline is set; it begins in progress (``create``, ``begin``),
superseding the previous one.
"""

from __future__ import annotations

import dataclasses

from watcher.domain import dora, revisions, rules, times
from watcher.domain.analysis import Mode, Outcome, Request, build, ended, measuring, outcome_at_end
from watcher.domain.events import (
    AnalysisFinished,
    DeploymentRejected,
    RolloutFinished,
    RolloutRevised,
    RolloutStarted,
    RolloutSuperseded,
)
from watcher.domain.model import Deployment, DeploymentKey, Instance, Judge, Rollout, Status, VersionSeen
from watcher.domain.settings import RuleSettings
from watcher.domain.txn import Txn


def change_status(
    txn: Txn, deployment: Deployment, status: Status, reason: str, *, at: float, by: Judge, recorded: bool = False
) -> Deployment:
    """The current rollout with its new verdict ``status`` (never back to in progress), decided by ``by`` at ``at``;
    ``recorded``: ``at`` is the source's own record of when it happened (an orchestrator's record of an
    update's completion), known even when a resync is what finds it."""
    assert status is not Status.IN_PROGRESS, "a rollout goes back to in progress only as a new rollout"
    deployment, gated = _analysed(txn, deployment, status)
    if gated:
        return deployment
    rollout = deployment.rollout
    known = recorded or not txn.resyncing  # when it happened
    key, revision, version = deployment.key, rollout.revision, rollout.version
    if rollout.status is not Status.IN_PROGRESS:
        revised = RolloutRevised(
            key=key, at=at, revision=revision, version=version, before=rollout.status, after=status,
            reason=reason, by=by,
        )  # fmt: skip
        txn.emit(revised)
        return _kept(
            txn,
            dataclasses.replace(
                deployment,
                rollout=dataclasses.replace(rollout, status=status, reason=reason),
                dora=dora.record(deployment.dora, revised, rollout=rollout, timed=known),
            ),
        )
    # A finish found by a resync (after a restart or reconnect) happened at an unknown time; one
    # before the start (the engine's clock ahead of ours) has no duration either, never 0 s.
    timed = rollout.witnessed and known
    if timed and times.refused_finish(txn, key, at, started_at=rollout.started_at, instead="no duration"):
        timed = False
    duration = at - rollout.started_at if timed else None
    # An in-progress rollout has no reason but the one it began with (a rollback the watcher asked for).
    reason = reason or rollout.reason
    finished = RolloutFinished(
        key=key, at=at, revision=revision, version=version, status=status, reason=reason, by=by, duration=duration
    )
    txn.emit(finished)
    return _kept(
        txn,
        dataclasses.replace(
            deployment,
            rollout=dataclasses.replace(rollout, status=status, finished_at=at, reason=reason),
            durations=deployment.durations if duration is None else deployment.durations.observe(duration),
            dora=dora.record(deployment.dora, finished, rollout=rollout, timed=known),
        ),
    )


def _kept(txn: Txn, deployment: Deployment, *, superseded_by: int | None = None) -> Deployment:
    """The one place a rollout is recorded among the deployment's revisions (``watcher.domain.revisions``):
    at its verdicts, its analysis's end, and when a new rollout supersedes it."""
    return revisions.kept(deployment, limit=txn.settings.retention.revisions, superseded_by=superseded_by)


def _analysed(txn: Txn, deployment: Deployment, status: Status) -> tuple[Deployment, bool]:
    """The one hook of a rollout's analysis in its verdicts, and whether a gate analysis holds the
    rollout in progress. The first success of a rollout under analysis begins the measurements;
    a failure of its own ends an analysis still running (so none stays running for a finished rollout)."""
    rollout, under = deployment.rollout, deployment.rollout.analysis
    if under is None or under.outcome is not Outcome.RUNNING:
        return deployment, False
    if status is Status.FAILED:
        return end_analysis(
            txn, deployment, Outcome.INCONCLUSIVE, "the rollout failed before its analysis ended"
        ), False
    if rollout.status is not Status.IN_PROGRESS:
        return deployment, False
    if under.measuring_since is None:
        under = measuring(under, now=txn.now, window=txn.settings.analysis.window_seconds)
        assert under.ends_at is not None
        # The progress deadline cannot fail a rollout its gate analysis holds in progress.
        deadline = max(rollout.deadline_at, under.ends_at) if under.mode is Mode.GATE else rollout.deadline_at
        rollout = dataclasses.replace(rollout, analysis=under, deadline_at=deadline)
        deployment = dataclasses.replace(deployment, rollout=rollout)
    return deployment, under.mode is Mode.GATE


def end_analysis(txn: Txn, deployment: Deployment, outcome: Outcome, reason: str) -> Deployment:
    """The current rollout's analysis ended with ``outcome`` (said with an ``AnalysisFinished``)."""
    rollout, under = deployment.rollout, deployment.rollout.analysis
    assert under is not None
    under = ended(under, outcome, reason)
    deployment = dataclasses.replace(deployment, rollout=dataclasses.replace(rollout, analysis=under))
    if rollout.status is not Status.IN_PROGRESS:  # an observed analysis ends after the verdict: recorded again
        deployment = _kept(txn, deployment)
    txn.emit(
        AnalysisFinished(
            key=deployment.key, at=txn.now, revision=rollout.revision, version=rollout.version, outcome=outcome,
            mode=under.mode, reason=reason, rollback=rollback_wanted(deployment, txn.settings),
        )
    )  # fmt: skip
    return deployment


def rollback_wanted(deployment: Deployment, settings: RuleSettings) -> bool:
    """Whether the watcher is to ask the orchestrator to roll the current rollout back: its gate
    analysis failed, asking for it (``deployment.analysis.on_failure=rollback``), the configuration
    allows it, and the deployment is an orchestrated service (a container cannot be rolled back). Not
    a rollout that is itself a rollback: Swarm's previous spec is then the newer version it went back
    from, and the watcher never goes back and forth."""
    under = deployment.rollout.analysis
    return (
        under is not None
        and not deployment.rollout.rollback
        and under.outcome is Outcome.FAILED
        and under.mode is Mode.GATE
        and under.rollback
        and not under.rollback_done
        and settings.analysis.allow_rollback
        and deployment.service is not None
    )


def conclude(txn: Txn, deployment: Deployment) -> Deployment:
    """The current rollout's analysis ends when its window has passed: a gate analysis's rollout succeeds
    (its analysis passed, or was inconclusive: judged as if unanalysed)."""
    under = deployment.rollout.analysis
    if under is None or under.outcome is not Outcome.RUNNING or under.ends_at is None or txn.now < under.ends_at:
        return deployment
    outcome, reason = outcome_at_end(under)
    deployment = end_analysis(txn, deployment, outcome, reason)
    if under.mode is not Mode.GATE or deployment.rollout.status is not Status.IN_PROGRESS:
        return deployment
    said = f"analysis inconclusive: {reason}" if outcome is Outcome.INCONCLUSIVE else ""
    return change_status(txn, deployment, Status.SUCCESS, said, at=txn.now, by=deployment.rollout.judge)


def evaluate(txn: Txn, deployment: Deployment) -> Deployment:
    """The rules applied to the current rollout, now."""
    deployment = conclude(txn, deployment)
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
    witnessed: bool, key: DeploymentKey, deadline_seconds: float | None = None,
    trigger_created_at: float | None = None, rollback: bool = False, members: frozenset[str] = frozenset(),
    commit_time: float | None = None, hotfix: bool = False, analysis: Request | None = None,
    previous_version: str = "",
) -> Rollout:  # fmt: skip
    """A rollout the watcher sees begin now (``txn.now``), whichever source tells of it first.

    ``started_at`` is when it began by its source's word (a label, a report, the orchestrator), the
    start of its duration; its progress deadline (``deadline_seconds``, None: the configured one)
    counts from now, the moment the watcher saw it begin, never from that word (``domain.times``): a
    rollout found late (a resync after a restart, a task container seen before its service, a CI job
    reporting long after its start) keeps its full deadline, and the verdict does not depend on which
    source was read first. ``trigger_created_at``: when what started it was created (default: the start).
    ``analysis``: the checks it asks for, run when analysis is on; ``previous_version``: the version
    before it (for the checks' ``{{previous_version}}``).
    """
    seconds = txn.settings.rollout.progress_deadline_seconds if deadline_seconds is None else deadline_seconds
    configured = txn.settings.analysis
    analysed = None
    if analysis is not None and configured.enabled:
        values = {
            "deployment": key.name, "environment": key.environment, "version": version,
            "previous_version": previous_version, "host": configured.host,
        }  # fmt: skip
        analysed = build(analysis, configured.checks, values)
    return Rollout(
        revision=revision, version=version, commit=commit, image=image, started_at=started_at, rollback=rollback,
        members=members, trigger_created_at=started_at if trigger_created_at is None else trigger_created_at,
        deadline_at=txn.now + seconds, seen_at=txn.now, witnessed=witnessed, judge=judge, commit_time=commit_time,
        hotfix=hotfix, analysis=analysed,
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
    deployment = _kept(txn, deployment, superseded_by=rollout.revision)
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
