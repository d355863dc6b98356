"""Observations of instances (containers): seen in full, changed by an event, gone.

A new instance joins the current rollout (a replica), starts a new rollout (a new version, or
another try of a failed one), or is a leftover older than the current rollout. An observation
older than the last one applied to its instance is stale and ignored.
"""

from __future__ import annotations

import dataclasses

from watcher.domain import rollouts, rules, services, times
from watcher.domain.events import HealthChanged, StaleObservation
from watcher.domain.model import Deployment, Health, Instance, Judge, Member, Rollout, Status
from watcher.domain.observations import (
    InstanceChange,
    InstanceExited,
    InstanceGone,
    InstanceHealth,
    InstanceOOMKilled,
    InstanceStarted,
    InstanceStopRequested,
)
from watcher.domain.txn import Txn, with_member, without_member


def seen(txn: Txn, instance: Instance, *, at: float, witnessed: bool, listed: bool = False) -> None:
    """The instance in full. ``witnessed``: seen as it happened, not found by a resync;
    ``listed``: part of a resync's list, judged once the whole list is applied."""
    if instance.service_id:
        services.task_seen(txn, instance, at=at, listed=listed)
        return
    key = instance.identity.key
    deployment = txn.deployments.get(key)
    if deployment is None:
        if not rollouts.has_room(txn, key):
            return
        rollout = new_rollout(txn, instance, revision=1, rollback=False, witnessed=witnessed, previous_version="")
        deployment = rollouts.create(txn, key, rollout)
    member = deployment.members.get(instance.id)
    # A container list is newer than anything applied before it, even when the clock went
    # back since (a state file written before a reboot, a volume moved to another host).
    if member is not None and at < member.updated_at and not listed:
        txn.emit(StaleObservation(key=key, at=txn.now, instance_id=instance.id))
        return
    deployment = with_member(
        deployment,
        Member(instance, at, member.cpu_nanos, member.memory_bytes) if member else Member(instance, at),
    )
    txn.own(instance.id, key)
    if member is None:
        deployment = _arrived(txn, deployment, instance, witnessed=witnessed)
    else:
        _health_changed(txn, deployment, before=member.instance, after=instance, at=at)
        if instance.exited_at is not None:
            deployment = rollouts.revise_if_premature(
                txn, deployment, before=member.instance, after=instance, at=instance.exited_at
            )
    txn.put(deployment if listed else rollouts.evaluate(txn, deployment))


def changed(txn: Txn, change: InstanceChange) -> None:
    """An event of a known instance: started, stop requested, exited, OOM-killed, health, gone."""
    key = txn.owners.get(change.instance_id)
    if key is None:
        return  # not ours (untracked or rejected)
    deployment = txn.deployments[key]
    member = deployment.members[change.instance_id]
    if change.at < member.updated_at:
        txn.emit(StaleObservation(key=key, at=txn.now, instance_id=change.instance_id))
        return
    if isinstance(change, InstanceGone):
        txn.put(rollouts.evaluate(txn, without_member(txn, deployment, change.instance_id)))
        return
    instance = member.instance
    match change:
        case InstanceStarted():
            # What Docker resets on a start; the health check's result starts over.
            instance = dataclasses.replace(
                instance, running=True, running_since=change.at, exit_code=None, exited_at=None,
                exit_requested=False, oom_killed=False, start_error="",
                health=Health.STARTING if instance.has_healthcheck else Health.NONE,
            )  # fmt: skip
        case InstanceStopRequested():
            # Already exited: an inspect answering late may have seen the stop this asks for.
            instance = dataclasses.replace(instance, exit_requested=instance.running or instance.exit_requested)
        case InstanceExited(exit_code=code):
            instance = dataclasses.replace(
                instance, running=False, running_since=None, exit_code=code, exited_at=change.at
            )
        case InstanceOOMKilled():
            instance = dataclasses.replace(instance, oom_killed=True)
        case InstanceHealth(health=health):
            instance = dataclasses.replace(instance, health=health)
    _health_changed(txn, deployment, before=member.instance, after=instance, at=change.at)
    deployment = with_member(deployment, dataclasses.replace(member, instance=instance, updated_at=change.at))
    deployment = rollouts.revise_if_premature(txn, deployment, before=member.instance, after=instance, at=change.at)
    txn.put(rollouts.evaluate(txn, deployment))


def _health_changed(txn: Txn, deployment: Deployment, *, before: Instance, after: Instance, at: float) -> None:
    """Tell when the health of an instance of the current rollout changed (what a board or a CI gate shows)."""
    rollout = deployment.rollout
    if after.health is not before.health and after.id in rollout.members:
        txn.emit(
            HealthChanged(
                key=deployment.key, at=at, revision=rollout.revision, version=rollout.version, instance_id=after.id,
                before=before.health, after=after.health,
            )
        )  # fmt: skip


def add_leftover(txn: Txn, instance: Instance, *, at: float) -> None:
    """An instance older than its deployment's current rollout: a member, of no rollout."""
    if instance.service_id:
        services.task_seen(txn, instance, at=at, listed=True)
        return
    deployment = txn.deployments.get(instance.identity.key)
    if deployment is None:
        return  # rejected by the cap
    txn.own(instance.id, deployment.key)
    txn.put(with_member(deployment, Member(instance, at)))


def new_rollout(
    txn: Txn, instance: Instance, *, revision: int, rollback: bool, witnessed: bool, previous_version: str
) -> Rollout:
    """The rollout ``instance`` starts, judged by its containers; ``previous_version``: the one before it."""
    identity = instance.identity
    start = identity.deployed_at
    # A deployment.timestamp (it differs from the creation) after now: skew, the creation time is used.
    if start != identity.created_at and times.refused(
        txn, identity.key, "deployment.timestamp", start, latest=txn.now, what=times.OBSERVED,
        instead="using the container's creation time",
    ):  # fmt: skip
        start = identity.created_at
    commit_time = times.commit_time(txn, identity.key, identity.commit_time, started_at=start)
    return rollouts.new(
        txn, revision=revision, version=identity.version, commit=identity.commit, image=identity.image,
        started_at=start, judge=Judge.CONTAINERS, witnessed=witnessed, key=identity.key,
        deadline_seconds=identity.progress_deadline_seconds, trigger_created_at=identity.created_at,
        rollback=rollback, members=frozenset({instance.id}), commit_time=commit_time, hotfix=identity.hotfix,
        analysis=identity.analysis, previous_version=previous_version,
    )  # fmt: skip


def _arrived(txn: Txn, deployment: Deployment, instance: Instance, *, witnessed: bool) -> Deployment:
    """A new instance: it joins the current rollout, starts a new one, or is a leftover."""
    rollout = deployment.rollout
    if instance.id in rollout.members:
        return deployment
    new_version = instance.identity.version != rollout.version
    if not new_version and rollout.status is not Status.FAILED:
        # Another replica (or a recreate) of what is deployed, or the first container of a
        # rollout that deploy tooling announced (which learns its image from it).
        joined = dataclasses.replace(
            rollouts.joined_first(rollout, instance),
            members=rollout.members | {instance.id},
            image=rollout.image or instance.identity.image,
        )
        return dataclasses.replace(deployment, rollout=joined)
    if instance.identity.created_at < rollout.trigger_created_at:
        return deployment  # older than the current rollout: arrived late, changes nothing
    # A new version, or another try of a failed one.
    rollback = rules.is_rollback(instance.identity.version, rollout.version, deployment.history)
    started = new_rollout(
        txn, instance, revision=rollout.revision + 1, rollback=rollback, witnessed=witnessed,
        previous_version=rollout.version,
    )  # fmt: skip
    return rollouts.begin(txn, deployment, started)
