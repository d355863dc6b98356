"""The rollout rules: when a rollout's containers make it a success or a failure. Pure functions.

A rollout judged by its containers succeeds once every container of it (one stopped on request
aside) is ready: healthy by its HEALTHCHECK, or running for the stable time without one. It fails
when one of them crashes, is OOM-killed, turns unhealthy or restart-loops, or at the progress
deadline. A ``deployment.status`` label overrides the rules; deploy tooling judges what it reports.
"""

from __future__ import annotations

from collections.abc import Iterable

from watcher.domain import versions
from watcher.domain.model import Deployment, Health, Instance, Judge, Rollout, Status, UpdateState, VersionSeen
from watcher.domain.settings import RuleSettings

# The checks exported per deployment (deployment_health_check).
CHECK_HEALTHCHECK = "docker_healthcheck"
CHECK_RUNNING = "containers_running"
CHECK_OOM = "no_oom_kill"
CHECK_RESTARTS = "no_restart_loop"
CHECK_REPLICAS = "replicas_running"  # an orchestrated service: its running tasks reach the desired ones

# Why a rollout whose containers, or service, were removed before its verdict failed at its deadline.
REMOVED = "every container of it was removed"
SERVICE_REMOVED = "the service was removed before its verdict"


def verdict(deployment: Deployment, *, now: float, settings: RuleSettings) -> tuple[Status, str] | None:
    """The in-progress rollout's status and reason, now; None while it is still undecided."""
    rollout = deployment.rollout
    if rollout.judge is Judge.ORCHESTRATOR:
        return orchestrated(deployment, now=now)
    if rollout.judge is not Judge.CONTAINERS:
        # The tooling judges what it reported; the deadline catches one that went silent.
        if now >= rollout.deadline_at:
            return Status.FAILED, "no final report within the progress deadline"
        return None
    current = deployment.current()
    overrides = [i for i in current if i.identity.status_override is not None]
    if overrides:
        status = max(overrides, key=lambda i: i.identity.created_at).identity.status_override
        assert status is not None
        return None if status is Status.IN_PROGRESS else (status, "set by the deployment.status label")
    for instance in current:
        problem = failure(instance, settings=settings)
        if problem:
            return Status.FAILED, f"container {instance.id[:12]} {problem}"
    considered = [i for i in current if not (i.exit_code is not None and i.exit_requested)]
    if considered and all(ready(i, now=now, settings=settings) for i in considered):
        return Status.SUCCESS, ""
    if now >= rollout.deadline_at:
        # Until then a container may be created and not started yet (a staged deploy), or none be
        # left (a redeploy script's `docker rm -f` before its `docker run`): say which it was.
        if not current:
            return Status.FAILED, f"not healthy within the progress deadline: {REMOVED}"
        idle = next((i for i in considered if not i.running and i.exit_code is None), None)
        because = f": container {idle.id[:12]} is not running (never started, or paused)" if idle else ""
        return Status.FAILED, f"not healthy within the progress deadline{because}"
    return None


def orchestrated(deployment: Deployment, *, now: float) -> tuple[Status, str] | None:
    """The verdict of an orchestrated service's update state on its in-progress rollout; None while undecided.

    ``completed``, ``rollback_completed``, or no update state (a new service, an update outside the
    task template), is a success once the running replicas reach the desired ones: a rollback is a
    rollout of its own, which succeeds once back (the update it rolled back failed when it began, so
    DORA counts one failure and its recovery); ``paused`` and ``rollback_paused`` fail. The progress
    deadline catches an update that never finishes, and one whose service was removed (a service
    created again under its name until then continues it).
    A deployment known from its tasks alone (no service followed here) is judged by nobody.
    """
    service = deployment.service
    if service is None:
        return None
    if service.removed:
        return (Status.FAILED, SERVICE_REMOVED) if now >= deployment.rollout.deadline_at else None
    state, message = service.update_state, service.message
    match state:
        case UpdateState.PAUSED | UpdateState.ROLLBACK_PAUSED:
            return Status.FAILED, f"{state.value}: {message}" if message else state.value
        case UpdateState.COMPLETED | UpdateState.NONE | UpdateState.ROLLBACK_COMPLETED if (
            service.running >= service.desired
        ):
            if service.rolled_back_failure:  # the orchestrator's own rollback says why it happened
                return Status.SUCCESS, f"rolled back: {message}" if message else "rolled back"
            return Status.SUCCESS, ""
    if now >= deployment.rollout.deadline_at:
        return Status.FAILED, f"{service.running} of {service.desired} replicas running within the progress deadline"
    return None


def premature(rollout: Rollout, *, before: Instance, after: Instance, at: float, settings: RuleSettings) -> str:
    """Why a success judged on the stable time was premature, or '' when it was not.

    It was when a container of the rollout failed (``at``: when, by the source's clock) before
    its stable time was up: the watcher was behind the event stream, and a tick judged while the
    failure waited to be read.
    """
    if (
        rollout.status is not Status.SUCCESS
        or before.id not in rollout.members
        or before.has_healthcheck  # success came from a `healthy` event, in stream order
        or before.running_since is None
        or at >= before.running_since + stable_seconds(before, settings=settings)
    ):
        return ""
    problem = failure(after, settings=settings)
    return f"container {before.id[:12]} {problem} before its stable time was up" if problem else ""


def failure(instance: Instance, *, settings: RuleSettings) -> str:
    """What is wrong with the instance, in words ('' for nothing)."""
    if instance.start_error:
        return f"could not be started: {instance.start_error}"
    if instance.oom_killed:
        return "was OOM-killed"
    if instance.exit_code is not None and not instance.exit_requested:
        return f"exited with code {instance.exit_code}"
    if instance.health is Health.UNHEALTHY:
        return "turned unhealthy"
    if instance.restart_count >= settings.rollout.restart_limit:
        return f"restarted {instance.restart_count} times"
    return ""


def ready(instance: Instance, *, now: float, settings: RuleSettings) -> bool:
    if not instance.running or not instance.inspected:
        return False
    if instance.has_healthcheck:
        return instance.health is Health.HEALTHY
    stable = stable_seconds(instance, settings=settings)
    return instance.running_since is not None and now - instance.running_since >= stable


def stable_seconds(instance: Instance, *, settings: RuleSettings) -> float:
    stable = instance.identity.stable_seconds
    return settings.rollout.stable_seconds if stable is None else stable


def health_checks(deployment: Deployment, *, settings: RuleSettings) -> dict[str, bool]:
    """Each check of the current rollout's instances: True passes."""
    if deployment.service is not None:
        # An orchestrated service's tasks run across the cluster: the orchestrator's count is the check.
        return {CHECK_REPLICAS: deployment.service.running >= deployment.service.desired}
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
