"""What a deployment shows (its current rollout, checks, instances, whether it is removed), and
the events that tell each change of it, whatever part of the machine made the change.

Verdicts and starts have events of their own; a container that starts, stops or is inspected, a
replica count, a detail a report adds, or the last instance going away changed the deployment
silently before, so a board fed by the stream showed a row the JSON API no longer did. Telling
it here, once per step, closes that for every path (instances, resyncs, services, reports, time).
"""

from __future__ import annotations

from typing import NamedTuple

from watcher.domain import rules
from watcher.domain.events import DeploymentChanged, DeploymentRemoved, DeploymentReturned, StaleObservation
from watcher.domain.model import Deployment, Rollout
from watcher.domain.settings import RuleSettings
from watcher.domain.txn import Txn


class Shown(NamedTuple):
    """A deployment as the read side shows it, less CPU and memory (which change with every sample)."""

    rollout: Rollout
    checks: dict[str, bool]
    current: int
    running: int
    removed: bool
    gone_since: float | None


def shown(deployment: Deployment, *, settings: RuleSettings) -> Shown:
    current = deployment.current()
    return Shown(
        deployment.rollout,
        rules.health_checks(deployment, settings=settings),
        len(current),
        sum(1 for i in current if i.running),
        deployment.removed,
        deployment.gone_since,
    )


def tell(txn: Txn) -> None:
    """After a step: each deployment that became removed or came back says so, and each that
    changed with no event of its own gets a ``DeploymentChanged``."""
    told = {e.key for e in txn.events if not isinstance(e, StaleObservation)}
    for key in txn.touched:
        before, after = txn.base.deployments.get(key), txn.deployments.get(key)
        if before is None or after is None or before is after or after.usage_only:
            continue  # new or dropped (told by their own events), or not shown
        rollout = after.rollout
        if after.removed != before.removed:
            if after.removed:
                removed = after.service is not None and after.service.removed
                why = "its Swarm service was removed" if removed else "no container of it is left"
                at = txn.now if after.gone_since is None else after.gone_since
                txn.emit(DeploymentRemoved(key=key, at=at, revision=rollout.revision, version=rollout.version, why=why))
            else:
                txn.emit(DeploymentReturned(key=key, at=txn.now, revision=rollout.revision, version=rollout.version))
            continue
        if key in told:
            continue  # another event of the step carries the deployment as it is now
        now = shown(after, settings=txn.settings)
        if now == shown(before, settings=txn.settings):
            continue
        txn.emit(
            DeploymentChanged(
                key=key, at=txn.now, revision=rollout.revision, version=rollout.version, current=now.current,
                running=now.running, failing=tuple(name for name, ok in now.checks.items() if not ok),
            )
        )  # fmt: skip
