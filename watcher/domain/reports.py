"""Reports from deploy tooling (CI/CD) about a rollout: announced, finished, corrected.

A rollout that deploy tooling announced or finished is judged by its reports from then on, not
by the container rules (the progress deadline still catches a job that died). A report of an
older rollout than the current one is stale; a final report about a finished rollout with
another status corrects it.
"""

from __future__ import annotations

import dataclasses

from watcher.domain import rollouts, rules
from watcher.domain.events import StaleObservation
from watcher.domain.model import Deployment, Judge, Rollout, Status
from watcher.domain.observations import RolloutReported
from watcher.domain.txn import Txn

REPORTED_REASON = "reported by deploy tooling"


def reported(txn: Txn, report: RolloutReported) -> None:
    deployment = txn.deployments.get(report.key)
    if deployment is None:
        if not rollouts.has_room(txn, report.key):
            return
        rollout = _rollout(txn, report, revision=1, rollback=False)
        deployment = _settle(txn, rollouts.create(txn, report.key, rollout), report)
    else:
        updated = _report_on(txn, deployment, report)
        if updated is None:
            return
        deployment = updated
    txn.put(dataclasses.replace(deployment, reported_at=report.at))


def _report_on(txn: Txn, deployment: Deployment, report: RolloutReported) -> Deployment | None:
    """A report about a known deployment; None when it is stale."""
    current = deployment.rollout
    if report.version != current.version:
        when = next(t for t in (report.started_at, report.finished_at, report.at) if t is not None)
        if when < current.started_at:
            # E.g. a slow pipeline finishing after a newer one began.
            txn.emit(StaleObservation(key=deployment.key, at=txn.now, version=report.version))
            return None
        rollback = rules.is_rollback(report.version, current.version, deployment.history)
        rollout = _rollout(txn, report, revision=current.revision + 1, rollback=rollback)
        return _settle(txn, rollouts.begin(txn, deployment, rollout), report)
    deployment = _learn(deployment, report)
    if report.status is Status.IN_PROGRESS:
        if current.status is Status.IN_PROGRESS:
            # Announced after its containers appeared: from now on the tooling judges it.
            return rollouts.adopt(deployment, Judge.DEPLOY_TOOLING)
        start = report.at if report.started_at is None else report.started_at
        if current.finished_at is not None and start > current.finished_at:
            # Deploying the same version again: another try, or a redeploy.
            return rollouts.begin(txn, deployment, _rollout(txn, report, revision=current.revision + 1, rollback=False))
        return deployment  # late news of the rollout that already finished
    if current.status is Status.IN_PROGRESS:
        return _settle(txn, rollouts.adopt(deployment, Judge.DEPLOY_TOOLING), report)
    if current.status is not report.status:
        # The tooling knows better (e.g. smoke tests failed after the containers turned healthy).
        adopted = rollouts.adopt(deployment, Judge.DEPLOY_TOOLING)
        return rollouts.change_status(
            txn, adopted, report.status, REPORTED_REASON, at=report.at, by=Judge.DEPLOY_TOOLING
        )
    return deployment  # said again


def _learn(deployment: Deployment, report: RolloutReported) -> Deployment:
    """The current rollout with the commit time and hotfix mark that a report of it adds (its labels lacked them)."""
    rollout = deployment.rollout
    commit_time = rollout.commit_time if rollout.commit_time is not None else report.commit_time
    if commit_time == rollout.commit_time and rollout.hotfix >= report.hotfix:
        return deployment
    learnt = dataclasses.replace(rollout, commit_time=commit_time, hotfix=rollout.hotfix or report.hotfix)
    return dataclasses.replace(deployment, rollout=learnt)


def _rollout(txn: Txn, report: RolloutReported, *, revision: int, rollback: bool) -> Rollout:
    """The rollout a report of a new version (or a redeploy) starts, judged by the tooling."""
    final = report.status is not Status.IN_PROGRESS
    end = report.at if report.finished_at is None else report.finished_at
    start = report.started_at if report.started_at is not None else (end if final else report.at)
    return Rollout(
        revision=revision,
        version=report.version,
        commit=report.commit,
        image="",
        started_at=start,
        rollback=rollback,
        trigger_created_at=start,
        # From when the report came, not from its started_at (times.py): a job may report late.
        deadline_at=report.at + txn.settings.rollout.progress_deadline_seconds,
        witnessed=report.started_at is not None or not final,  # a final report alone has no duration
        judge=Judge.DEPLOY_TOOLING,
        commit_time=report.commit_time,
        hotfix=report.hotfix,
    )


def _settle(txn: Txn, deployment: Deployment, report: RolloutReported) -> Deployment:
    """A final report finishes the current rollout at the time it gives."""
    if report.status is Status.IN_PROGRESS:
        return deployment
    end = report.at if report.finished_at is None else report.finished_at
    return rollouts.change_status(txn, deployment, report.status, REPORTED_REASON, at=end, by=Judge.DEPLOY_TOOLING)
