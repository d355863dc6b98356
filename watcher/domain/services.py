"""An orchestrator's services (Swarm's, today): rollouts the orchestrator judges, and the task containers
that belong to them. The source translates its engine's words; nothing here reads them.

A service's deployment begins a rollout when its task template changes (an update, a rollback);
a scale or a label change of the service itself is no new revision. Its update state judges the
rollout (``rules.orchestrated``). A rollback is a rollout back to the previous template, started
by the orchestrator (``rollback_started``) or by hand, unless it undoes a rollback (a step
forward), or a version that orders below the current.

Task containers join their service's deployment (found by the service id, else by their labels)
for their CPU and memory only: they never start or judge a rollout, and on a node that follows no
services (a worker) their deployment has nothing else. Read before their service (the container and
service lists race after a restart), they change nothing of the rollout the service then begins.
"""

from __future__ import annotations

import dataclasses

from watcher.domain import rollouts, rules
from watcher.domain.model import (
    Deployment,
    DeploymentKey,
    Dora,
    Initiator,
    Instance,
    Judge,
    Member,
    Rollout,
    Status,
)
from watcher.domain.observations import ServiceGone, ServiceSeen, ServicesListed, ServicesReleased
from watcher.domain.txn import Txn, with_member, without_member


def seen(txn: Txn, seen: ServiceSeen) -> None:
    """The service now: a new deployment, a new rollout, or news of the current one."""
    deployment, moving = _claim(txn, seen)
    if deployment is None or not deployment.begun:
        if deployment is None and not rollouts.has_room(txn, seen.key):
            return
        deployment = _first(txn, seen, tasks=deployment)
    elif _is_new_rollout(deployment, seen):
        deployment = _begin(txn, deployment, seen)
    deployment = _gather(txn, deployment, moving)
    previous = deployment.service
    service = seen.service
    if previous is not None:
        service = dataclasses.replace(service, rolled_back_failure=previous.rolled_back_failure)
    deployment = rollouts.adopt(dataclasses.replace(deployment, service=service, gone_since=None), Judge.ORCHESTRATOR)
    txn.put(_judge(txn, deployment, seen))


def gone(txn: Txn, gone: ServiceGone) -> None:
    """Removed: the deployment stays exported for the retention time, as one with no containers."""
    deployment = find(txn, gone.service_id)
    if deployment is None or deployment.service is None:
        return
    txn.put(
        dataclasses.replace(
            deployment,
            service=dataclasses.replace(deployment.service, removed=True),
            gone_since=deployment.gone_since or gone.at,
        )
    )


def listed(txn: Txn, listed: ServicesListed) -> None:
    """Every service now: the known ones missing from the list were removed meanwhile."""
    txn.resyncing = True
    present = {s.service.id for s in listed.services}
    for deployment in list(txn.deployments.values()):
        if deployment.service is not None and not deployment.service.removed and deployment.service.id not in present:
            gone(txn, ServiceGone(listed.at, deployment.service.id))
    for service in listed.services:
        seen(txn, service)


def released(txn: Txn, released: ServicesReleased) -> None:
    """Another watcher speaks for the orchestrator now: keep only what the tasks here say."""
    for deployment in list(txn.deployments.values()):
        if deployment.service is not None:
            txn.put(
                dataclasses.replace(
                    deployment,
                    service=None,
                    gone_since=deployment.gone_since or (None if deployment.members else released.at),
                )
            )


def find(txn: Txn, service_id: str) -> Deployment | None:
    """The deployment of the service ``service_id``, if known."""
    key = txn.index.services.get(service_id)
    return None if key is None else txn.deployments.get(key)


# -- task containers


def home(txn: Txn, instance: Instance) -> DeploymentKey:
    """The deployment a container belongs to: a task's is its service's, when known."""
    if instance.service_id:
        deployment = find(txn, instance.service_id)
        if deployment is not None:
            return deployment.key
    return instance.identity.key


def task_seen(txn: Txn, instance: Instance, *, at: float, listed: bool) -> None:
    """A task container in full: a member of its service's deployment, for its CPU and memory."""
    key = home(txn, instance)
    if not key.name:
        return  # no name of its own, and its service is not followed here
    deployment = txn.deployments.get(key)
    if deployment is None:
        if not rollouts.has_room(txn, key):
            return
        deployment = _tasks_only(txn, key, instance)
    member = deployment.members.get(instance.id)
    if member is not None and at < member.updated_at and not listed:
        return  # stale: a newer observation of it was applied
    instance = _as_of(instance, key)
    member = dataclasses.replace(member, instance=instance, updated_at=at) if member else Member(instance, at)
    txn.own(instance.id, key)
    txn.put(with_member(deployment, member))


def _tasks_only(txn: Txn, key: DeploymentKey, instance: Instance) -> Deployment:
    """A deployment known from a task container alone: judged by nobody here (a worker, or a
    manager whose service list has not said yet), so no rollout event either. When its service is
    seen, the service's first rollout replaces this one, as if the service had been read first: its
    rollout only holds what the labels say, and no history (``Deployment.begun``)."""
    identity = instance.identity
    rollout = rollouts.new(
        txn, revision=1, version=identity.version, commit=identity.commit, image=identity.image,
        started_at=identity.deployed_at, judge=Judge.ORCHESTRATOR, witnessed=False, key=key,
        trigger_created_at=identity.created_at,
    )  # fmt: skip
    return Deployment(key=key, rollout=rollout)


# -- rollouts


def _claim(txn: Txn, seen: ServiceSeen) -> tuple[Deployment | None, list[Member]]:
    """The service's deployment under the key its labels give now, and task containers to move
    into it: those of its old key (its labels changed) and those that joined another deployment
    before the service was seen (by their own labels)."""
    moving: list[Member] = []
    deployment = find(txn, seen.service.id)
    if deployment is not None and deployment.key != seen.key:
        txn.drop(deployment.key)  # the old key's series leave with it
        if deployment.dora != Dora():
            txn.retire(deployment.key, deployment.dora)  # as retention drops one (domain.retention)
        moving += deployment.members.values()
        for instance_id in deployment.members:
            txn.own(instance_id, None)
        deployment = None
    # The deployments holding its tasks, from the index: no walk of every deployment's members.
    holders = [txn.deployments.get(key) for key in sorted(txn.index.tasks.get(seen.service.id, ())) if key != seen.key]
    strays = [
        (d.key, m) for d in holders if d is not None
        for m in d.members.values() if m.instance.service_id == seen.service.id
    ]  # fmt: skip
    for key, member in strays:
        other = without_member(txn, txn.deployments[key], member.instance.id)
        if other.members or other.service is not None or other.rollout.judge is not Judge.ORCHESTRATOR:
            txn.put(other)
        else:
            txn.drop(key)  # only ever a placeholder of these tasks
        moving.append(member)
    return deployment or txn.deployments.get(seen.key), moving


def _gather(txn: Txn, deployment: Deployment, moving: list[Member]) -> Deployment:
    for member in moving:
        txn.own(member.instance.id, deployment.key)
        deployment = with_member(
            deployment, dataclasses.replace(member, instance=_as_of(member.instance, deployment.key))
        )
    return deployment


def _as_of(instance: Instance, key: DeploymentKey) -> Instance:
    """A task container as a member of ``key``: what its own labels said gives way to its service's."""
    if instance.identity.key == key:
        return instance
    return dataclasses.replace(instance, identity=dataclasses.replace(instance.identity, key=key))


def _first(txn: Txn, seen: ServiceSeen, *, tasks: Deployment | None) -> Deployment:
    """The service's first rollout here; ``tasks``: its deployment known from task containers before
    (which of the container and service lists comes first is chance), whose members it keeps."""
    deployment = rollouts.create(txn, seen.key, _rollout(txn, seen, revision=1, rollback=False, previous=""))
    if tasks is None:
        return deployment
    return dataclasses.replace(deployment, members=tasks.members, retired_cpu_nanos=tasks.retired_cpu_nanos)


def _is_new_rollout(deployment: Deployment, seen: ServiceSeen) -> bool:
    previous = deployment.service
    if previous is None:
        # Followed here before, then by another watcher (leadership moved and came back): a new
        # rollout only when the version differs from what is known.
        return (deployment.rollout.version, deployment.rollout.commit) != (seen.version, seen.commit)
    return previous.template != seen.service.template


def _begin(txn: Txn, deployment: Deployment, seen: ServiceSeen) -> Deployment:
    """A new template: an update, or a rollback to the previous one."""
    state = seen.service.update_state
    if state.rolling_back:
        # A rollback swaps back to the previous template: the rollback of a rollback (or of an
        # update to an older version) is a step forward again, whatever the versions say.
        rollback = not deployment.rollout.rollback
    else:
        rollback = rules.is_rollback(seen.version, deployment.rollout.version, deployment.history)
    # The source says who started it: a person, or the orchestrator after the update failed. A
    # watcher behind the events (or restarted) may not have seen the update finish: its status cannot tell.
    automatic = state.rolling_back and seen.rollback_by is Initiator.ORCHESTRATOR
    if automatic and deployment.rollout.status is Status.IN_PROGRESS:
        # The orchestrator rolls back an update that failed: that update's verdict first.
        deployment = rollouts.change_status(
            txn, deployment, Status.FAILED, seen.service.message or "rolled back by the orchestrator",
            at=seen.changed_at, by=Judge.ORCHESTRATOR,
        )  # fmt: skip
    rollout = _rollout(
        txn, seen, revision=deployment.rollout.revision + 1, rollback=rollback, previous=deployment.rollout.version
    )
    asked = deployment.rollout.analysis
    if state.rolling_back and asked is not None and asked.rollback_done:
        # The rollback the watcher asked for: its verdict says why it happened (rollouts.change_status keeps it).
        why = f"rolled back: the analysis of revision {deployment.rollout.revision} asked for it ({asked.reason})"
        rollout = dataclasses.replace(rollout, reason=why)
    deployment = rollouts.begin(txn, deployment, rollout)
    if deployment.service is not None:
        deployment = dataclasses.replace(
            deployment, service=dataclasses.replace(deployment.service, rolled_back_failure=automatic)
        )
    return deployment


def _rollout(txn: Txn, seen: ServiceSeen, *, revision: int, rollback: bool, previous: str) -> Rollout:
    return rollouts.new(
        txn, revision=revision, version=seen.version, commit=seen.commit, image=seen.image,
        started_at=seen.changed_at, judge=Judge.ORCHESTRATOR, witnessed=not txn.resyncing, key=seen.key,
        deadline_seconds=seen.progress_deadline_seconds, rollback=rollback, analysis=seen.analysis,
        previous_version=previous,
    )  # fmt: skip


def _judge(txn: Txn, deployment: Deployment, seen: ServiceSeen) -> Deployment:
    """The orchestrator's verdict on the current rollout, as of this observation."""
    if deployment.rollout.status is not Status.IN_PROGRESS:
        return deployment
    verdict = rules.orchestrated(deployment, now=txn.now)
    if verdict is None:
        return deployment
    finished = seen.finished_at
    if finished is not None and finished >= deployment.rollout.started_at:
        # The orchestrator records when an update completed: a listing that finds it knows when, as an
        # event would.
        return rollouts.change_status(txn, deployment, *verdict, at=finished, by=Judge.ORCHESTRATOR, recorded=True)
    return rollouts.change_status(txn, deployment, *verdict, at=seen.at, by=Judge.ORCHESTRATOR)
