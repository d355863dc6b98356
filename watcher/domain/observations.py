"""What adapters report to the state machine, in words that name no source.

Containers are one source, deploy tooling reporting through the CI/CD API another, and the
orchestrator (services: Swarm's, on its leader manager) a third; each source translates its
engine's words into these.
Every observation carries ``at``: when it happened, in unix seconds of the source's clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from watcher.domain.model import DeploymentKey, Health, Initiator, Instance, OrchestratedService, Origin, Status, Usage


@dataclass(frozen=True, slots=True)
class InstanceSeen:
    """An instance in full: created, started, or inspected."""

    at: float
    instance: Instance


@dataclass(frozen=True, slots=True)
class InstanceStarted:
    """Started (or restarted): running from ``at``, as the start event says; the full facts
    (health check, restart count) follow in an ``InstanceSeen``."""

    at: float
    instance_id: str


@dataclass(frozen=True, slots=True)
class InstanceStopRequested:
    at: float
    instance_id: str


@dataclass(frozen=True, slots=True)
class InstanceExited:
    at: float
    instance_id: str
    exit_code: int


@dataclass(frozen=True, slots=True)
class InstanceOOMKilled:
    at: float
    instance_id: str


@dataclass(frozen=True, slots=True)
class InstanceHealth:
    at: float
    instance_id: str
    health: Health


@dataclass(frozen=True, slots=True)
class InstanceGone:
    at: float
    instance_id: str


@dataclass(frozen=True, slots=True)
class Resync:
    """Everything a source has now; its instances missing here are gone."""

    at: float
    source: Origin
    instances: tuple[Instance, ...]


@dataclass(frozen=True, slots=True)
class UsageSampled:
    at: float
    usage: Mapping[str, Usage]


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: time-based rules (stable time, deadlines, retention) may fire."""

    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutReported:
    """Deploy tooling (CI/CD) says where a rollout of ``version`` stands.

    ``at`` is when the report was received; ``started_at`` and ``finished_at`` are the
    tooling's own times, None when it did not say.
    """

    at: float
    key: DeploymentKey
    version: str
    commit: str
    status: Status
    started_at: float | None = None
    finished_at: float | None = None
    commit_time: float | None = None  # when the commit was made
    hotfix: bool = False  # the tooling marks the change as a hotfix


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSeen:
    """A service as its orchestrator has it now, with the identity its labels give.

    ``changed_at``: when its current task template was deployed (the update's start, else the
    service's last change); ``finished_at``: when the orchestrator says the update completed, if it
    does; ``rollback_by``: who started the rollback its update state is in (if it is in one).
    """

    at: float
    key: DeploymentKey
    service: OrchestratedService
    version: str
    commit: str
    image: str
    changed_at: float
    finished_at: float | None = None
    progress_deadline_seconds: float | None = None
    rollback_by: Initiator = Initiator.ORCHESTRATOR


@dataclass(frozen=True, slots=True)
class ServiceGone:
    """The service was removed."""

    at: float
    service_id: str


@dataclass(frozen=True, slots=True)
class ServicesListed:
    """Every service the orchestrator has now (a resync); the ones missing here were removed."""

    at: float
    services: tuple[ServiceSeen, ...]


@dataclass(frozen=True, slots=True)
class ServicesReleased:
    """This watcher no longer speaks for the orchestrator (not the Swarm leader any more): its
    deployments keep their Swarm tasks' CPU and memory, and another watcher exports the rest."""

    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisMeasured:
    """The analysis source measured a check of rollout ``revision`` of ``key``: ``value`` (None: no
    data) or ``error`` (the query failed); ``baseline``: the value at the rollout's start."""

    at: float
    key: DeploymentKey
    revision: int
    check: str
    value: float | None
    error: str = ""
    baseline: bool = False


ServiceObservation = ServiceSeen | ServiceGone | ServicesListed | ServicesReleased

InstanceChange = (
    InstanceStarted | InstanceStopRequested | InstanceExited | InstanceOOMKilled | InstanceHealth | InstanceGone
)
Observation = (
    InstanceSeen | InstanceChange | Resync | UsageSampled | Tick | RolloutReported | ServiceObservation
    | AnalysisMeasured
)  # fmt: skip
