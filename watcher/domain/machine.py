"""The state machine: ``apply(state, observation, now) → new state``. Pure: no I/O, no clock.

A deployment is (name, environment). Its current *rollout* is the last time a new version
appeared (in a container, or in a report from deploy tooling); a rollout goes
in_progress → success | failed and then stays so until the next.
State is immutable: a scrape reads one ``State`` object and never sees a half-applied change.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from watcher.domain import versions
from watcher.domain.model import (
    Deployment,
    DeploymentKey,
    Health,
    Instance,
    Member,
    Rollout,
    State,
    Status,
    Usage,
    VersionSeen,
)
from watcher.domain.observations import (
    InstanceChange,
    InstanceExited,
    InstanceGone,
    InstanceHealth,
    InstanceOOMKilled,
    InstanceSeen,
    InstanceStarted,
    InstanceStopRequested,
    Observation,
    Resync,
    RolloutReported,
    Tick,
    UsageSampled,
)
from watcher.domain.settings import RuleSettings

CHECK_HEALTHCHECK = "docker_healthcheck"
CHECK_RUNNING = "containers_running"
CHECK_OOM = "no_oom_kill"
CHECK_RESTARTS = "no_restart_loop"

REPORTED_REASON = "reported by deploy tooling"


@dataclass(frozen=True, slots=True)
class Note:
    """Something worth a log line or a counter; the caller does the I/O."""

    kind: str  # rollout_started | rollout_finished | superseded | revised | rejected | dropped | stale
    key: DeploymentKey
    message: str


class Step(NamedTuple):
    state: State
    notes: tuple[Note, ...]


def apply(state: State, observation: Observation, *, now: float, settings: RuleSettings) -> Step:
    """The new state after one observation; the same object when nothing changed."""
    txn = _Txn(state, now=now, settings=settings)
    match observation:
        case InstanceSeen(at=at, instance=instance):
            txn.seen(instance, at=at, witnessed=True)
        case (
            InstanceStarted()
            | InstanceStopRequested()
            | InstanceExited()
            | InstanceOOMKilled()
            | InstanceHealth()
            | InstanceGone()
        ):
            txn.change(observation)
        case Resync():
            txn.resync(observation)
        case UsageSampled(usage=usage):
            txn.usage(usage)
        case Tick():
            txn.tick()
        case RolloutReported():
            txn.reported(observation)
    return txn.result()


def health_checks(deployment: Deployment, *, settings: RuleSettings) -> dict[str, bool]:
    """Each check of the current rollout's instances: True passes."""
    if not deployment.rollout.members:
        return {}  # reported by deploy tooling, no container of it seen: nothing to check
    current = deployment.current()
    checks = {
        CHECK_RUNNING: bool(current) and all(i.running for i in current),
        CHECK_OOM: not any(i.oom_killed for i in current),
        CHECK_RESTARTS: not any(i.restart_count >= settings.rollout.restart_limit for i in current),
    }
    # A container running on its start event alone may have a health check: not passed until inspected.
    unknown = any(i.running and not i.inspected for i in current)
    if unknown or any(i.has_healthcheck for i in current):
        checks[CHECK_HEALTHCHECK] = not unknown and all(
            i.health is Health.HEALTHY for i in current if i.has_healthcheck and i.running
        )
    return checks


def is_healthy(deployment: Deployment, *, settings: RuleSettings) -> bool:
    return all(health_checks(deployment, settings=settings).values())


def is_rollback(new: str, current: str, history: Iterable[VersionSeen]) -> bool:
    """Going to a version that orders below the current one, or, for versions with no
    order (SHAs, `latest`), back to one deployed before the current one."""
    order = versions.compare(new, current)
    if order is not None:
        return order < 0
    return any(seen.version == new for seen in history if seen.version != current)


class _Txn:
    """One apply(): copy-on-write over the previous state, plus the notes it makes."""

    def __init__(self, base: State, *, now: float, settings: RuleSettings) -> None:
        self.base = base
        self.now = now
        self.settings = settings
        self.notes: list[Note] = []
        self.resyncing = False  # what a resync reveals happened at some unknown time before it
        self._deployments: dict[DeploymentKey, Deployment] | None = None
        self._owners: dict[str, DeploymentKey] | None = None

    # -- copy-on-write access

    @property
    def deployments(self) -> Mapping[DeploymentKey, Deployment]:
        return self.base.deployments if self._deployments is None else self._deployments

    @property
    def owners(self) -> Mapping[str, DeploymentKey]:
        return self.base.owners if self._owners is None else self._owners

    def put(self, deployment: Deployment) -> None:
        if self._deployments is None:
            self._deployments = dict(self.base.deployments)
        self._deployments[deployment.key] = deployment

    def drop(self, key: DeploymentKey) -> None:
        if self._deployments is None:
            self._deployments = dict(self.base.deployments)
        del self._deployments[key]

    def own(self, instance_id: str, key: DeploymentKey | None) -> None:
        if self._owners is None:
            self._owners = dict(self.base.owners)
        if key is None:
            self._owners.pop(instance_id, None)
        else:
            self._owners[instance_id] = key

    def note(self, kind: str, key: DeploymentKey, message: str) -> None:
        self.notes.append(Note(kind, key, message))

    def result(self) -> Step:
        if self._deployments is None and self._owners is None:
            return Step(self.base, tuple(self.notes))
        return Step(State(self.deployments, self.owners), tuple(self.notes))

    # -- observations

    def seen(self, instance: Instance, *, at: float, witnessed: bool, listed: bool = False) -> None:
        key = instance.identity.key
        deployment = self.deployments.get(key)
        if deployment is None:
            if not self._has_room(key):
                return
            deployment = self._create(key, self._new_rollout(instance, revision=1, rollback=False, witnessed=witnessed))
        member = deployment.members.get(instance.id)
        # A container list is newer than anything applied before it, even when the clock went
        # back since (a state file written before a reboot, a volume moved to another host).
        if member is not None and at < member.updated_at and not listed:
            self.note("stale", key, f"ignored an observation of {instance.id[:12]} older than the last one")
            return
        deployment = _with_member(
            deployment,
            Member(instance, at, member.cpu_nanos, member.memory_bytes) if member else Member(instance, at),
        )
        self.own(instance.id, key)
        if member is None:
            deployment = self._arrived(deployment, instance, witnessed=witnessed)
        elif instance.exited_at is not None:
            deployment = self._revised(deployment, before=member.instance, after=instance, at=instance.exited_at)
        self.put(deployment if listed else self._evaluate(deployment))

    def _has_room(self, key: DeploymentKey) -> bool:
        """Whether a new deployment may be tracked (the cap guards against label explosions)."""
        if len(self.deployments) < self.settings.retention.max_deployments:
            return True
        self.note("rejected", key, f"cap of {self.settings.retention.max_deployments} deployments reached")
        return False

    def _create(self, key: DeploymentKey, rollout: Rollout) -> Deployment:
        self.note("rollout_started", key, _started_message(rollout))
        return Deployment(
            key=key,
            rollout=rollout,
            history=(VersionSeen(rollout.version, rollout.commit, rollout.revision, rollout.started_at),),
        )

    def _arrived(self, deployment: Deployment, instance: Instance, *, witnessed: bool) -> Deployment:
        """A new instance: it joins the current rollout, starts a new one, or is a leftover."""
        rollout = deployment.rollout
        if instance.id in rollout.members:
            return deployment
        new_version = instance.identity.version != rollout.version
        if not new_version and rollout.status is not Status.FAILED:
            # Another replica (or a recreate) of what is deployed, or the first container of a
            # rollout that deploy tooling announced.
            return dataclasses.replace(deployment, rollout=_join(rollout, instance))
        if instance.identity.created_at < rollout.trigger_created_at:
            return deployment  # older than the current rollout: arrived late, changes nothing
        # A new version, or another try of a failed one.
        return self._start(deployment, instance, witnessed=witnessed)

    def _start(self, deployment: Deployment, instance: Instance, *, witnessed: bool) -> Deployment:
        previous = deployment.rollout
        rollback = is_rollback(instance.identity.version, previous.version, deployment.history)
        rollout = self._new_rollout(instance, revision=previous.revision + 1, rollback=rollback, witnessed=witnessed)
        return self._begin(deployment, rollout)

    def _begin(self, deployment: Deployment, rollout: Rollout) -> Deployment:
        """``rollout`` becomes the current one: history, rollback count and notes follow."""
        previous = deployment.rollout
        if previous.status is Status.IN_PROGRESS:
            self.note("superseded", deployment.key, f"revision {previous.revision} superseded before it finished")
        entry = VersionSeen(rollout.version, rollout.commit, rollout.revision, rollout.started_at)
        older = (h for h in deployment.history if (h.version, h.commit) != (entry.version, entry.commit))
        history = (entry, *older)
        self.note("rollout_started", deployment.key, _started_message(rollout))
        return dataclasses.replace(
            deployment,
            rollout=rollout,
            history=history[: self.settings.retention.history_versions],
            rollbacks=deployment.rollbacks + rollout.rollback,
        )

    def _new_rollout(self, instance: Instance, *, revision: int, rollback: bool, witnessed: bool) -> Rollout:
        identity = instance.identity
        deadline = identity.progress_deadline_seconds
        if deadline is None:
            deadline = self.settings.rollout.progress_deadline_seconds
        # A rollout found by a resync may have begun long ago: its deadline runs from now.
        deadline_from = identity.deployed_at if witnessed else max(identity.deployed_at, self.now)
        return Rollout(
            revision=revision,
            version=identity.version,
            commit=identity.commit,
            image=identity.image,
            started_at=identity.deployed_at,
            rollback=rollback,
            members=frozenset({instance.id}),
            trigger_created_at=identity.created_at,
            deadline_at=deadline_from + deadline,
            witnessed=witnessed,
        )

    def change(self, change: InstanceChange) -> None:
        key = self.owners.get(change.instance_id)
        if key is None:
            return  # not ours (untracked or rejected)
        deployment = self.deployments[key]
        member = deployment.members[change.instance_id]
        if change.at < member.updated_at:
            self.note("stale", key, f"ignored an observation of {change.instance_id[:12]} older than the last one")
            return
        if isinstance(change, InstanceGone):
            self.put(self._evaluate(self._remove(deployment, change.instance_id)))
            return
        instance = member.instance
        match change:
            case InstanceStarted():
                # What Docker resets on a start; the health check's result starts over.
                instance = dataclasses.replace(
                    instance, running=True, running_since=change.at, exit_code=None, exited_at=None,
                    exit_requested=False, oom_killed=False,
                    health=Health.STARTING if instance.has_healthcheck else Health.NONE,
                )  # fmt: skip
            case InstanceStopRequested():
                instance = dataclasses.replace(instance, exit_requested=instance.running)
            case InstanceExited(exit_code=code):
                instance = dataclasses.replace(
                    instance, running=False, running_since=None, exit_code=code, exited_at=change.at
                )
            case InstanceOOMKilled():
                instance = dataclasses.replace(instance, oom_killed=True)
            case InstanceHealth(health=health):
                instance = dataclasses.replace(instance, health=health)
        deployment = _with_member(deployment, dataclasses.replace(member, instance=instance, updated_at=change.at))
        self.put(self._evaluate(self._revised(deployment, before=member.instance, after=instance, at=change.at)))

    def _remove(self, deployment: Deployment, instance_id: str) -> Deployment:
        members = dict(deployment.members)
        member = members.pop(instance_id)
        self.own(instance_id, None)
        return dataclasses.replace(
            deployment,
            members=members,
            retired_cpu_nanos=deployment.retired_cpu_nanos + member.cpu_nanos,
            gone_since=deployment.gone_since if members else (deployment.gone_since or self.now),
        )

    def resync(self, resync: Resync) -> None:
        self.resyncing = True
        listed = {i.id: i for i in resync.instances}
        for instance_id, key in list(self.owners.items()):
            deployment = self.deployments[key]
            instance = listed.get(instance_id)
            if instance is None:
                if deployment.members[instance_id].instance.source == resync.source:
                    self.put(self._remove(deployment, instance_id))
            elif instance.identity.key != key:
                # Read as another deployment's now: the label settings changed across a restart.
                self.put(self._remove(deployment, instance_id))
        known = [i for i in resync.instances if i.id in self.owners]
        new = sorted((i for i in resync.instances if i.id not in self.owners), key=lambda i: i.identity.created_at)
        for instance in known:
            self.seen(instance, at=resync.at, witnessed=False, listed=True)
        # Judged once the whole list is applied, not one replica's news against another's old state.
        for key in dict.fromkeys(i.identity.key for i in known):
            self.put(self._evaluate(self.deployments[key]))
        # What appeared while we were not looking is one rollout per deployment, to the newest
        # version (its replicas with it); older new instances are leftovers.
        by_key: dict[DeploymentKey, list[Instance]] = {}
        for instance in new:
            by_key.setdefault(instance.identity.key, []).append(instance)
        for group in by_key.values():
            newest = group[-1].identity.version
            first = next(i for i in group if i.identity.version == newest)
            for instance in [first] + [i for i in group if i is not first and i.identity.version == newest]:
                self.seen(instance, at=resync.at, witnessed=False)
            for instance in group:
                if instance.identity.version != newest:
                    self._add_leftover(instance, at=resync.at)
        self.tick()

    def _add_leftover(self, instance: Instance, *, at: float) -> None:
        deployment = self.deployments.get(instance.identity.key)
        if deployment is None:
            return  # rejected by the cap
        self.own(instance.id, deployment.key)
        self.put(_with_member(deployment, Member(instance, at)))

    def usage(self, usage: Mapping[str, Usage]) -> None:
        changed: dict[DeploymentKey, dict[str, Member]] = {}
        retired: dict[DeploymentKey, int] = {}
        for instance_id, sample in usage.items():
            key = self.owners.get(instance_id)
            cpu_nanos = _cpu_nanos(sample)
            if key is None or cpu_nanos is None:
                continue
            member = self.deployments[key].members[instance_id]
            if (member.cpu_nanos, member.memory_bytes) == (cpu_nanos, sample.memory_bytes):
                continue  # an idle container: no new state, so nothing to render or save
            members = changed.setdefault(key, dict(self.deployments[key].members))
            if cpu_nanos < member.cpu_nanos:
                # The container restarted and its cgroup counter began again.
                retired[key] = retired.get(key, 0) + member.cpu_nanos
            members[instance_id] = dataclasses.replace(member, cpu_nanos=cpu_nanos, memory_bytes=sample.memory_bytes)
        for key, members in changed.items():
            deployment = self.deployments[key]
            self.put(
                dataclasses.replace(
                    deployment,
                    members=members,
                    retired_cpu_nanos=deployment.retired_cpu_nanos + retired.get(key, 0),
                )
            )

    def reported(self, report: RolloutReported) -> None:
        deployment = self.deployments.get(report.key)
        if deployment is None:
            if not self._has_room(report.key):
                return
            rollout = self._reported_rollout(report, revision=1, rollback=False)
            deployment = self._settle(self._create(report.key, rollout), report)
        else:
            updated = self._report_on(deployment, report)
            if updated is None:
                return
            deployment = updated
        self.put(dataclasses.replace(deployment, reported_at=report.at))

    def _report_on(self, deployment: Deployment, report: RolloutReported) -> Deployment | None:
        """A report about a known deployment; None when it is stale."""
        current = deployment.rollout
        if report.version != current.version:
            when = next(t for t in (report.started_at, report.finished_at, report.at) if t is not None)
            if when < current.started_at:
                # E.g. a slow pipeline finishing after a newer one began.
                self.note(
                    "stale", deployment.key, f"ignored a report of {report.version} older than the current rollout"
                )
                return None
            rollback = is_rollback(report.version, current.version, deployment.history)
            rollout = self._reported_rollout(report, revision=current.revision + 1, rollback=rollback)
            return self._settle(self._begin(deployment, rollout), report)
        if report.status is Status.IN_PROGRESS:
            if current.status is Status.IN_PROGRESS:
                # Announced after its containers appeared: from now on the tooling judges it.
                return deployment if current.reported else _adopt(deployment)
            start = report.at if report.started_at is None else report.started_at
            if current.finished_at is not None and start > current.finished_at:
                # Deploying the same version again: another try, or a redeploy.
                return self._begin(
                    deployment, self._reported_rollout(report, revision=current.revision + 1, rollback=False)
                )
            return deployment  # late news of the rollout that already finished
        if current.status is Status.IN_PROGRESS:
            return self._settle(_adopt(deployment), report)
        if current.status is not report.status:
            # The tooling knows better (e.g. smoke tests failed after the containers turned healthy).
            self.note(
                "rollout_finished",
                deployment.key,
                f"revision {current.revision} ({current.version}) corrected to {report.status.text} by deploy tooling",
            )
            rollout = dataclasses.replace(current, status=report.status, reason=REPORTED_REASON, reported=True)
            return dataclasses.replace(deployment, rollout=rollout)
        return deployment  # said again

    def _reported_rollout(self, report: RolloutReported, *, revision: int, rollback: bool) -> Rollout:
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
            deadline_at=start + self.settings.rollout.progress_deadline_seconds,
            witnessed=report.started_at is not None or not final,  # a final report alone has no duration
            reported=True,
        )

    def _settle(self, deployment: Deployment, report: RolloutReported) -> Deployment:
        """A final report finishes the current rollout at the time it gives."""
        if report.status is Status.IN_PROGRESS:
            return deployment
        end = report.at if report.finished_at is None else report.finished_at
        return self._finish(deployment, report.status, REPORTED_REASON, at=end)

    def tick(self) -> None:
        for key, deployment in list(self.deployments.items()):
            expired = self._expired(deployment)
            if expired:
                self.drop(key)
                self.note("dropped", key, f"{expired}; no longer exported")
            elif deployment.rollout.status is Status.IN_PROGRESS:
                evaluated = self._evaluate(deployment)
                if evaluated is not deployment:
                    self.put(evaluated)

    def _expired(self, deployment: Deployment) -> str:
        """Why a deployment is no longer exported, or '' while it is kept."""
        if deployment.members:
            return ""
        gone, kept = self.settings.retention.gone_seconds, self.settings.api.retention_seconds
        if deployment.gone_since is not None and self.now - deployment.gone_since < gone:
            return ""
        if deployment.reported_at is None:
            return f"no containers for {gone:g} s"
        if self.now - deployment.reported_at < kept:
            return ""
        return f"no containers, and no report for {kept:g} s"

    # -- the rollout rules

    def _evaluate(self, deployment: Deployment) -> Deployment:
        rollout = deployment.rollout
        if rollout.status is not Status.IN_PROGRESS or not (deployment.members or rollout.reported):
            return deployment  # the rules never change a finished rollout; one with nothing left waits
        verdict = self._verdict(deployment)
        if verdict is None:
            return deployment
        return self._finish(deployment, *verdict, at=self.now)

    def _finish(self, deployment: Deployment, status: Status, reason: str, *, at: float) -> Deployment:
        rollout = deployment.rollout
        # A finish found by a resync (after a restart or reconnect) happened at an unknown time.
        timed = rollout.witnessed and not self.resyncing
        duration = max(0.0, at - rollout.started_at)
        finished = dataclasses.replace(rollout, status=status, finished_at=at, reason=reason)
        self.note(
            "rollout_finished",
            deployment.key,
            f"revision {rollout.revision} ({rollout.version}) {status.text}"
            + (f": {reason}" if reason else "")
            + (f" after {duration:.1f} s" if timed else ""),
        )
        durations = deployment.durations.observe(duration) if timed else deployment.durations
        return dataclasses.replace(deployment, rollout=finished, durations=durations)

    def _verdict(self, deployment: Deployment) -> tuple[Status, str] | None:
        if deployment.rollout.reported:
            # Deploy tooling judges what it reported; the deadline catches a job that died.
            if self.now >= deployment.rollout.deadline_at:
                return Status.FAILED, "no final report within the progress deadline"
            return None
        current = deployment.current()
        overrides = [i for i in current if i.identity.status_override is not None]
        if overrides:
            status = max(overrides, key=lambda i: i.identity.created_at).identity.status_override
            assert status is not None
            return None if status is Status.IN_PROGRESS else (status, "set by the deployment.status label")
        for instance in current:
            failure = self._failure(instance)
            if failure:
                return Status.FAILED, f"container {instance.id[:12]} {failure}"
        considered = [i for i in current if not (i.exit_code is not None and i.exit_requested)]
        if considered and all(self._ready(i) for i in considered):
            return Status.SUCCESS, ""
        if self.now >= deployment.rollout.deadline_at:
            return Status.FAILED, "not healthy within the progress deadline"
        return None

    def _revised(self, deployment: Deployment, *, before: Instance, after: Instance, at: float) -> Deployment:
        """A success judged on the stable time was premature when a container of the rollout
        failed (``at``: when, by the source's clock) before its stable time was up: the watcher
        was behind the event stream, and a tick judged while the failure waited to be read.
        The success becomes a failure."""
        rollout = deployment.rollout
        if (
            rollout.status is not Status.SUCCESS
            or before.id not in rollout.members
            or before.has_healthcheck  # success came from a `healthy` event, in stream order
            or before.running_since is None
            or at >= before.running_since + self._stable_seconds(before)
        ):
            return deployment
        failure = self._failure(after)
        if not failure:
            return deployment
        reason = f"container {before.id[:12]} {failure} before its stable time was up"
        self.note(
            "revised", deployment.key, f"revision {rollout.revision} ({rollout.version}) failed after all: " + reason
        )
        revised = dataclasses.replace(rollout, status=Status.FAILED, reason=reason)
        return dataclasses.replace(deployment, rollout=revised)

    def _failure(self, instance: Instance) -> str:
        if instance.oom_killed:
            return "was OOM-killed"
        if instance.exit_code is not None and not instance.exit_requested:
            return f"exited with code {instance.exit_code}"
        if instance.health is Health.UNHEALTHY:
            return "turned unhealthy"
        if instance.restart_count >= self.settings.rollout.restart_limit:
            return f"restarted {instance.restart_count} times"
        return ""

    def _ready(self, instance: Instance) -> bool:
        if not instance.running or not instance.inspected:
            return False
        if instance.has_healthcheck:
            return instance.health is Health.HEALTHY
        stable = self._stable_seconds(instance)
        return instance.running_since is not None and self.now - instance.running_since >= stable

    def _stable_seconds(self, instance: Instance) -> float:
        stable = instance.identity.stable_seconds
        return self.settings.rollout.stable_seconds if stable is None else stable


def _cpu_nanos(sample: Usage) -> int | None:
    """The sample's CPU in nanoseconds; None for a sample no source makes sense of (NaN,
    negative, beyond the 64-bit nanosecond counter of a cgroup)."""
    nanos = sample.cpu_seconds * 1e9
    if not (0 <= nanos < 2.0**64 and 0 <= sample.memory_bytes < math.inf):
        return None
    return round(nanos)


def _with_member(deployment: Deployment, member: Member) -> Deployment:
    members = dict(deployment.members)
    members[member.instance.id] = member
    return dataclasses.replace(deployment, members=members, gone_since=None)


def _adopt(deployment: Deployment) -> Deployment:
    return dataclasses.replace(deployment, rollout=dataclasses.replace(deployment.rollout, reported=True))


def _join(rollout: Rollout, instance: Instance) -> Rollout:
    # A rollout reported by deploy tooling learns its image from its first container.
    return dataclasses.replace(
        rollout, members=rollout.members | {instance.id}, image=rollout.image or instance.identity.image
    )


def _started_message(rollout: Rollout) -> str:
    kind = "rollback" if rollout.rollback else "rollout"
    return f"{kind} to {rollout.version} started (revision {rollout.revision})"
