"""What the state machine says happened, one typed event per kind of thing; ``apply()`` returns them in order.

Every event names its deployment (``key``) and when it happened (``at``, unix seconds, the
source's clock where the observation says, else the machine's ``now``). ``kind`` is the stable
name the watcher counts it under (``deployment_watcher_state_changes_total{kind}``) and
``message`` the text it logs. The runtime hands each event to its subscribers (log, counter…).

A rollback is a ``RolloutStarted`` with ``rollback=True``: one thing happens (a rollout to an
older version begins), counted once; subscribe to it with ``case RolloutStarted(rollback=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, get_args

from watcher.domain.analysis import Mode, Outcome, Result
from watcher.domain.model import DeploymentKey, Health, Judge, Status


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """What every event carries: its deployment and when it happened."""

    key: DeploymentKey
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RevisionEvent(Event):
    """An event about one rollout of the deployment: its revision and version."""

    revision: int
    version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutStarted(RevisionEvent):
    """A new current rollout: a new version (or another try of a failed one) appeared."""

    kind: ClassVar[str] = "rollout_started"
    commit: str
    rollback: bool  # to a version older than the one before
    judge: Judge

    @property
    def message(self) -> str:
        return f"{'rollback' if self.rollback else 'rollout'} to {self.version} started (revision {self.revision})"


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutFinished(RevisionEvent):
    """An in-progress rollout got its verdict, from ``by``."""

    kind: ClassVar[str] = "rollout_finished"
    status: Status
    reason: str
    by: Judge
    duration: float | None  # seconds from its start; None when its start or end time is unknown

    @property
    def message(self) -> str:
        return (
            f"revision {self.revision} ({self.version}) {self.status.text}"
            + (f": {self.reason}" if self.reason else "")
            + (f" after {self.duration:.1f} s" if self.duration is not None else "")
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutRevised(RevisionEvent):
    """A finished rollout's verdict changed after the fact: deploy tooling corrected it, or a
    success judged on the stable time proved premature (a container had failed before it was up)."""

    kind: ClassVar[str] = "revised"
    before: Status
    after: Status
    reason: str
    by: Judge

    @property
    def message(self) -> str:
        if self.by is Judge.DEPLOY_TOOLING:
            return f"revision {self.revision} ({self.version}) corrected to {self.after.text} by deploy tooling"
        return f"revision {self.revision} ({self.version}) {self.after.text} after all: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutSuperseded(RevisionEvent):
    """A rollout still in progress was replaced by a newer one (a ``RolloutStarted`` follows)."""

    kind: ClassVar[str] = "superseded"

    @property
    def message(self) -> str:
        return f"revision {self.revision} superseded before it finished"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthChanged(RevisionEvent):
    """A HEALTHCHECK verdict of an instance of the current rollout changed (a start resets it)."""

    kind: ClassVar[str] = "health_changed"
    instance_id: str
    before: Health
    after: Health

    @property
    def message(self) -> str:
        return (
            f"container {self.instance_id[:12]} of revision {self.revision} {self.before.value} -> {self.after.value}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentChanged(RevisionEvent):
    """What the deployment shows changed (a container started, stopped or was inspected; its
    checks; a replica count; a detail learned from a report) and no other event of the step says
    so: a board or a stream client keeps the row current from its events alone."""

    kind: ClassVar[str] = "changed"
    current: int  # instances of the current rollout that still exist
    running: int  # of them, running
    failing: tuple[str, ...]  # the health checks that fail, in the order they are listed

    @property
    def message(self) -> str:
        health = "failing: " + ", ".join(self.failing) if self.failing else "healthy"
        return (
            f"revision {self.revision} ({self.version}): {self.running} of {self.current} containers running, {health}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentRemoved(RevisionEvent):
    """No instance of it is left: removed, not broken. Kept for ``retention.gone_seconds`` (a
    ``DeploymentDropped`` follows) unless it comes back (``DeploymentReturned``)."""

    kind: ClassVar[str] = "removed"
    why: str

    @property
    def message(self) -> str:
        return f"removed: {self.why}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentReturned(RevisionEvent):
    """A removed deployment has an instance again (a container of it, its Swarm service)."""

    kind: ClassVar[str] = "returned"

    @property
    def message(self) -> str:
        return f"back after its removal, at revision {self.revision} ({self.version})"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentRejected(Event):
    """A new deployment not tracked: the cap on deployments is reached (a guard against label explosions)."""

    kind: ClassVar[str] = "rejected"
    cap: int

    @property
    def message(self) -> str:
        return f"cap of {self.cap} deployments reached"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentDropped(Event):
    """A deployment past its retention: no longer tracked nor exported."""

    kind: ClassVar[str] = "dropped"
    why: str

    @property
    def message(self) -> str:
        return f"{self.why}; no longer exported"


@dataclass(frozen=True, slots=True, kw_only=True)
class StaleObservation(Event):
    """An observation older than what the state holds, ignored: of an instance, or a report of a version."""

    kind: ClassVar[str] = "stale"
    instance_id: str | None = None  # an observation of this instance, older than its last one
    version: str | None = None  # a report of this version, older than the current rollout

    @property
    def message(self) -> str:
        if self.instance_id is not None:
            return f"ignored an observation of {self.instance_id[:12]} older than the last one"
        return f"ignored a report of {self.version} older than the current rollout"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeRefused(Event):
    """A time written down by another clock that cannot be true (``domain.times``): not used, ``instead`` is."""

    kind: ClassVar[str] = "clock_skew"
    source: str  # which time (times.SOURCES)
    value: float
    bound: float  # the moment it may not pass (or, for a finish, precede)
    what: str  # that moment in words
    instead: str  # what is used in its place

    @property
    def message(self) -> str:
        side = "after" if self.value > self.bound else "before"
        return (
            f"{self.source} lies {abs(self.value - self.bound):.0f} s {side} {self.what} (clock skew?); {self.instead}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisMeasured(RevisionEvent):
    """A check of the current rollout's analysis measured (``of_baseline``: its value at the rollout's start,
    where ``result`` is pass for a value, else nodata or error)."""

    kind: ClassVar[str] = "analysis_measured"
    check: str
    result: Result
    value: float | None
    baseline: float | None
    of_baseline: bool = False
    reason: str = ""  # a failure's figures, or the query's error

    @property
    def message(self) -> str:
        what = "baseline of " if self.of_baseline else ""
        value = "no data" if self.value is None else f"{self.value:.6g}"
        said = f" ({self.reason})" if self.reason else ""
        result = "" if self.of_baseline else f" {self.result.value}"
        return f"analysis of revision {self.revision}: {what}{self.check} = {value}{result}{said}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisFinished(RevisionEvent):
    """The analysis of a rollout ended: passed, failed, or inconclusive (nothing measured, or the rollout
    failed first)."""

    kind: ClassVar[str] = "analysis_finished"
    outcome: Outcome
    mode: Mode
    reason: str
    rollback: bool = False  # the watcher will ask the orchestrator to roll back

    @property
    def message(self) -> str:
        return (
            f"{self.mode.value} analysis of revision {self.revision} ({self.version}) {self.outcome.text}"
            + (f": {self.reason}" if self.reason else "")
            + ("; rolling back" if self.rollback else "")
        )


DomainEvent = (
    RolloutStarted
    | RolloutFinished
    | RolloutSuperseded
    | RolloutRevised
    | DeploymentRejected
    | DeploymentDropped
    | StaleObservation
    | HealthChanged
    | DeploymentChanged
    | DeploymentRemoved
    | DeploymentReturned
    | TimeRefused
    | AnalysisMeasured
    | AnalysisFinished
)
EVENT_TYPES: tuple[type[DomainEvent], ...] = get_args(DomainEvent)
