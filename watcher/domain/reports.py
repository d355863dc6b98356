"""Reports from deploy tooling (CI/CD) about a rollout: announced, finished, corrected.

A rollout that deploy tooling announced or finished is judged by its reports from then on, not
by the container rules (the progress deadline still catches a job that died). A report of an
older rollout than the current one is stale; a final report about a finished rollout with
another status corrects it. Its times that lie after its arrival (clock skew) are refused as if
the tooling had not sent them (``domain.times``).
"""

from __future__ import annotations

import dataclasses

from watcher.domain import rollouts, rules, times
from watcher.domain.events import StaleObservation
from watcher.domain.model import Deployment, Judge, Rollout, Status
from watcher.domain.observations import RolloutReported
from watcher.domain.txn import Txn

REPORTED_REASON = "reported by deploy tooling"
ARRIVAL = "using the report's arrival"


def reported(txn: Txn, report: RolloutReported) -> None:
    report = _observed(txn, report)
    deployment = txn.deployments.get(report.key)
    if deployment is None:
        if not rollouts.has_room(txn, report.key):
            return
        rollout = _rollout(txn, report, revision=1, rollback=False, previous="")
        deployment = _settle(txn, rollouts.create(txn, report.key, rollout), report)
    else:
        updated = _report_on(txn, deployment, report)
        if updated is None:
            return
        deployment = updated
    txn.put(dataclasses.replace(deployment, reported_at=report.at))


def _observed(txn: Txn, report: RolloutReported) -> RolloutReported:
    """``report`` without the times that lie after its arrival: they are not used, the arrival is (and
    no lead time), as when the tooling sends none. A start 8 h ahead would else freeze the deployment:
    every later container a leftover, every later report stale."""

    def sane(source: str, value: float | None, instead: str) -> float | None:
        if value is None or times.refused(
            txn, report.key, source, value, latest=report.at, what=times.OBSERVED, instead=instead
        ):
            return None
        return value

    return dataclasses.replace(
        report,
        started_at=sane("started_at", report.started_at, ARRIVAL),
        finished_at=sane("finished_at", report.finished_at, ARRIVAL),
        commit_time=sane("commit_time", report.commit_time, times.NO_LEAD_TIME),
    )


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
        rollout = _rollout(txn, report, revision=current.revision + 1, rollback=rollback, previous=current.version)
        return _settle(txn, rollouts.begin(txn, deployment, rollout), report)
    deployment = _learn(txn, deployment, report)
    if report.status is Status.IN_PROGRESS:
        if current.status is Status.IN_PROGRESS:
            # Announced after its containers appeared: from now on the tooling judges it.
            return rollouts.adopt(deployment, Judge.DEPLOY_TOOLING)
        start = report.at if report.started_at is None else report.started_at
        if current.finished_at is not None and start > current.finished_at:
            # Deploying the same version again: another try, or a redeploy.
            redeploy = _rollout(txn, report, revision=current.revision + 1, rollback=False, previous=current.version)
            return rollouts.begin(txn, deployment, _joined(deployment, redeploy, since=current.finished_at))
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


def _learn(txn: Txn, deployment: Deployment, report: RolloutReported) -> Deployment:
    """The current rollout with the commit time and hotfix mark that a report of it adds (its labels lacked them)."""
    rollout = deployment.rollout
    commit_time = rollout.commit_time
    if commit_time is None and report.commit_time is not None:
        commit_time = times.commit_time(txn, report.key, report.commit_time, started_at=rollout.started_at)
    if commit_time == rollout.commit_time and rollout.hotfix >= report.hotfix:
        return deployment
    learnt = dataclasses.replace(rollout, commit_time=commit_time, hotfix=rollout.hotfix or report.hotfix)
    return dataclasses.replace(deployment, rollout=learnt)


def _rollout(txn: Txn, report: RolloutReported, *, revision: int, rollback: bool, previous: str) -> Rollout:
    """The rollout a report of a new version (or a redeploy) starts, judged by the tooling."""
    final = report.status is not Status.IN_PROGRESS
    end = report.at if report.finished_at is None else report.finished_at
    start = report.started_at if report.started_at is not None else (end if final else report.at)
    # Its deadline counts from the report's arrival, not from its started_at: a job may report late.
    return rollouts.new(
        txn, revision=revision, version=report.version, commit=report.commit, image="", started_at=start,
        judge=Judge.DEPLOY_TOOLING, rollback=rollback, key=report.key,
        witnessed=report.started_at is not None or not final,  # a final report alone has no duration
        commit_time=times.commit_time(txn, report.key, report.commit_time, started_at=start), hotfix=report.hotfix,
        analysis=report.analysis, previous_version=previous,
    )  # fmt: skip


def _joined(deployment: Deployment, rollout: Rollout, *, since: float) -> Rollout:
    """The redeploy ``rollout`` with the instances of its version created after the rollout before it
    finished (``since``): read just before the report (the two race), they joined that one, and are
    this one's, as they would be read just after the report."""
    joined = [
        m.instance for m in deployment.members.values()
        if m.instance.identity.version == rollout.version and m.instance.identity.created_at > since
    ]  # fmt: skip
    if not joined:
        return rollout
    first = rollouts.joined_first(rollout, joined[0])
    return dataclasses.replace(first, members=frozenset(i.id for i in joined), image=joined[0].identity.image)


def _settle(txn: Txn, deployment: Deployment, report: RolloutReported) -> Deployment:
    """A final report finishes the current rollout at the time it gives."""
    if report.status is Status.IN_PROGRESS:
        return deployment
    end = report.at if report.finished_at is None else report.finished_at
    if times.refused_finish(txn, report.key, end, started_at=deployment.rollout.started_at, instead=ARRIVAL):
        end = report.at  # not before the start: a rollout never finishes before it starts
    return rollouts.change_status(txn, deployment, report.status, REPORTED_REASON, at=end, by=Judge.DEPLOY_TOOLING)
