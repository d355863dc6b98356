"""The state machine: ``apply(state, observation, now) → (new state, events)``. Pure: no I/O, no clock.

A deployment is (name, environment). Its current *rollout* is the last time a new version
appeared (in a container, or in a report from deploy tooling); a rollout goes
in_progress → success | failed and then stays so until the next.
State is immutable: a scrape reads one ``State`` object and never sees a half-applied change.

Where each part lives: ``instances`` (container observations), ``resync``, ``usage``,
``reports`` (deploy tooling), ``services`` (an orchestrator's services and their tasks), ``retention`` (time passing), ``rollouts`` (a rollout begins, its
status changes), ``shown`` (what a deployment shows changed: told once per step), ``rules`` (when it succeeds or fails), ``txn`` (copy-on-write over the state),
``analyses`` (a rollout's checks measured), ``events`` (what the machine says happened).
"""

from __future__ import annotations

from typing import NamedTuple

from watcher.domain import analyses, instances, reports, resync, retention, services, shown, usage
from watcher.domain.events import DomainEvent
from watcher.domain.model import DeploymentKey, Judge, State
from watcher.domain.observations import (
    AnalysisMeasured,
    InstanceExited,
    InstanceGone,
    InstanceHealth,
    InstanceOOMKilled,
    InstanceSeen,
    InstanceStarted,
    InstanceStopRequested,
    Observation,
    Resync,
    RollbackAsked,
    RolloutReported,
    ServiceGone,
    ServiceSeen,
    ServicesListed,
    ServicesReleased,
    Tick,
    UsageSampled,
)
from watcher.domain.settings import RuleSettings
from watcher.domain.txn import Txn


class Changes(NamedTuple):
    """The keys whose entries a step may have changed (put, replaced or removed): what the state file's
    journal writes, so a save costs what changed rather than a walk of every deployment (issue #21)."""

    deployments: frozenset[DeploymentKey] = frozenset()
    retired: frozenset[DeploymentKey] = frozenset()

    def __or__(self, other: object) -> Changes:
        if not isinstance(other, Changes):
            return NotImplemented
        return Changes(self.deployments | other.deployments, self.retired | other.retired)


NO_CHANGES = Changes()


class Step(NamedTuple):
    state: State  # the previous state itself when nothing changed
    events: tuple[DomainEvent, ...]  # in the order they happened
    changes: Changes = NO_CHANGES  # empty when nothing changed


def apply(state: State, observation: Observation, *, now: float, settings: RuleSettings) -> Step:
    """The new state after one observation, and what happened."""
    txn = Txn(state, now=now, settings=settings)
    match observation:
        case InstanceSeen(at=at, instance=instance):
            instances.seen(txn, instance, at=at, witnessed=True)
        case (
            InstanceStarted()
            | InstanceStopRequested()
            | InstanceExited()
            | InstanceOOMKilled()
            | InstanceHealth()
            | InstanceGone()
        ):
            instances.changed(txn, observation)
        case Resync():
            resync.resync(txn, observation)
        case UsageSampled(usage=sampled):
            usage.sampled(txn, sampled)
        case Tick():
            retention.tick(txn)
        case RolloutReported():
            reports.reported(txn, observation)
        case ServiceSeen():
            services.seen(txn, observation)
        case ServiceGone():
            services.gone(txn, observation)
        case ServicesListed():
            services.listed(txn, observation)
            retention.tick(txn, judged_by=(Judge.ORCHESTRATOR,))
        case ServicesReleased():
            services.released(txn, observation)
        case AnalysisMeasured() | RollbackAsked():
            analyses.observed(txn, observation)
    if not isinstance(observation, UsageSampled):  # CPU and memory samples change nothing else shown
        shown.tell(txn)
    state = txn.state()
    if state is txn.base:
        return Step(state, tuple(txn.events))
    return Step(state, tuple(txn.events), Changes(frozenset(txn.changed), frozenset(txn.changed_retired)))
