"""What adapters report to the state machine, in words that name no source.

Containers are one source, deploy tooling reporting through the CI/CD API another, and the
orchestrator (services: Swarm's, on its leader manager) a third; each source translates its
engine's words into these.
Every observation carries ``at``: when it happened, in unix seconds of the source's clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from watcher.domain.analysis import Request
from watcher.domain.model import DeploymentKey, Health, Initiator, Instance, OrchestratedService, Origin, Status, Usage


@dataclass(frozen=True, slots=True)
class Observed:
    """What every observation carries: when it happened (``at``)."""

    at: float


@dataclass(frozen=True, slots=True)
class InstanceSeen(Observed):
    """An instance in full: created, started, or inspected."""

    instance: Instance


@dataclass(frozen=True, slots=True)
class InstanceObservation(Observed):
    """A change of one known instance, by its id."""

    instance_id: str


@dataclass(frozen=True, slots=True)
class InstanceStarted(InstanceObservation):
    """Started (or restarted): running from ``at``, as the start event says; the full facts
    (health check, restart count) follow in an ``InstanceSeen``."""


@dataclass(frozen=True, slots=True)
class InstanceStopRequested(InstanceObservation):
    """A stop was asked for (a stop signal): the exit that follows is no crash."""


@dataclass(frozen=True, slots=True)
class InstanceExited(InstanceObservation):
    exit_code: int


@dataclass(frozen=True, slots=True)
class InstanceOOMKilled(InstanceObservation):
    """The kernel killed a process of it for want of memory."""


@dataclass(frozen=True, slots=True)
class InstanceHealth(InstanceObservation):
    health: Health


@dataclass(frozen=True, slots=True)
class InstanceGone(InstanceObservation):
    """Removed: it leaves its deployment."""


@dataclass(frozen=True, slots=True)
class Resync(Observed):
    """Everything a source has now; its instances missing here are gone."""

    source: Origin
    instances: tuple[Instance, ...]


@dataclass(frozen=True, slots=True)
class UsageSampled(Observed):
    usage: Mapping[str, Usage]


@dataclass(frozen=True, slots=True)
class Tick(Observed):
    """Time passed: time-based rules (stable time, deadlines, retention) may fire."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentObservation(Observed):
    """What a source says of one deployment, by its key."""

    key: DeploymentKey


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutReported(DeploymentObservation):
    """Deploy tooling (CI/CD) says where a rollout of ``version`` stands.

    ``at`` is when the report was received; ``started_at`` and ``finished_at`` are the
    tooling's own times, None when it did not say.
    """

    version: str
    commit: str
    status: Status
    started_at: float | None = None
    finished_at: float | None = None
    commit_time: float | None = None  # when the commit was made
    hotfix: bool = False  # the tooling marks the change as a hotfix
    analysis: Request | None = None  # the checks it asks for (``analysis``)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSeen(DeploymentObservation):
    """A service as its orchestrator has it now, with the identity its labels give.

    ``changed_at``: when its current task template was deployed (the update's start, else the
    service's last change); ``finished_at``: when the orchestrator says the update completed, if it
    does; ``rollback_by``: who started the rollback its update state is in (if it is in one).
    """

    service: OrchestratedService
    version: str
    commit: str
    image: str
    changed_at: float
    finished_at: float | None = None
    progress_deadline_seconds: float | None = None
    rollback_by: Initiator = Initiator.ORCHESTRATOR
    analysis: Request | None = None  # the checks its labels ask for


@dataclass(frozen=True, slots=True)
class ServiceGone(Observed):
    """The service was removed."""

    service_id: str


@dataclass(frozen=True, slots=True)
class ServicesListed(Observed):
    """Every service the orchestrator has now (a resync); the ones missing here were removed."""

    services: tuple[ServiceSeen, ...]


@dataclass(frozen=True, slots=True)
class ServicesReleased(Observed):
    """This watcher no longer speaks for the orchestrator (not the Swarm leader any more): its
    deployments keep their Swarm tasks' CPU and memory, and another watcher exports the rest."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisMeasured(DeploymentObservation):
    """The analysis source measured a check of rollout ``revision`` of ``key``: ``value`` (None: no
    data) or ``error`` (the query failed); ``baseline``: the value at the rollout's start."""

    revision: int
    check: str
    value: float | None
    error: str = ""
    baseline: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackAsked(DeploymentObservation):
    """The orchestrator was asked to roll back rollout ``revision`` of ``key`` (its analysis failed);
    ``error``: the request failed (it is not asked again)."""

    revision: int
    error: str = ""


AnalysisObservation = AnalysisMeasured | RollbackAsked

ServiceObservation = ServiceSeen | ServiceGone | ServicesListed | ServicesReleased

InstanceChange = (
    InstanceStarted | InstanceStopRequested | InstanceExited | InstanceOOMKilled | InstanceHealth | InstanceGone
)
Observation = (
    InstanceSeen
    | InstanceChange
    | Resync
    | UsageSampled
    | Tick
    | RolloutReported
    | ServiceObservation
    | AnalysisObservation
)
