"""What adapters report to the state machine, in words that name no source.

Containers are one source and deploy tooling reporting through the CI/CD API another;
Swarm tasks would be a new adapter that produces these same observations.
Every observation carries ``at``: when it happened, in unix seconds of the source's clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple


class Status(enum.Enum):
    """A rollout's status; the value is what ``deployment_status`` exports."""

    FAILED = 0
    SUCCESS = 1
    IN_PROGRESS = 2

    @property
    def text(self) -> str:
        return self.name.lower()


class Health(enum.Enum):
    """A HEALTHCHECK's verdict, as Docker reports it (``NONE``: no healthcheck result)."""

    NONE = "none"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class DeploymentKey(NamedTuple):
    name: str
    environment: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """What an instance's labels say it is; fixed for its lifetime."""

    key: DeploymentKey
    version: str
    commit: str
    image: str
    created_at: float
    deployed_at: float  # deploy start: the deployment.timestamp label, else created_at
    status_override: Status | None = None
    stable_seconds: float | None = None  # per-deployment tuning; None: the configured default
    progress_deadline_seconds: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    """One running unit of a deployment (a container), as last seen in full."""

    id: str
    identity: Identity
    running: bool
    running_since: float | None = None
    has_healthcheck: bool = False
    health: Health = Health.NONE
    exit_code: int | None = None  # set while exited
    exited_at: float | None = None  # when it exited, while exited (if the source knows)
    exit_requested: bool = False  # the exit followed a stop request: not a crash
    oom_killed: bool = False
    restart_count: int = 0
    source: str = "container"
    # False while known from events alone: whether it has a health check (hence when it is
    # ready) is only in the full facts, so the rules wait for them.
    inspected: bool = True


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_seconds: float  # cumulative since the instance (re)started
    memory_bytes: float  # working set


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
    source: str
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


InstanceChange = (
    InstanceStarted | InstanceStopRequested | InstanceExited | InstanceOOMKilled | InstanceHealth | InstanceGone
)
Observation = InstanceSeen | InstanceChange | Resync | UsageSampled | Tick | RolloutReported
