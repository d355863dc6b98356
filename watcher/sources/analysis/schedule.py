"""What to ask Prometheus now: the due measurements of the analyses under way, each once.

From a state snapshot: for the current rollout of each deployment whose analysis is running,
each check whose baseline is not taken yet is asked at the rollout's start, and once measuring began, each check is asked now when its last measurement is an interval
old, until the window ends. The schedule remembers what is in flight and when each query was last
sent, so a query is never asked twice at once nor more than once an interval, even when its answer
changes nothing in the state (a stale revision, an error the core drops).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from watcher.domain.analysis import Analysis, Measured, Outcome
from watcher.domain.model import DeploymentKey, Rollout, State

QueryId = tuple[DeploymentKey, int, str, bool]  # deployment, revision, check, baseline


@dataclass(frozen=True, slots=True)
class Query:
    """One query of one check of one rollout."""

    key: DeploymentKey
    revision: int
    check: str
    promql: str  # the check's query with its placeholders filled, as the analysis holds it
    baseline: bool  # the value at the rollout's start
    at: float | None  # the instant it is evaluated at (the rollout's start, for a baseline); None: now

    @property
    def id(self) -> QueryId:
        return (self.key, self.revision, self.check, self.baseline)


@dataclass
class Schedule:
    """The queries due, minus those in flight or sent less than an interval ago."""

    interval: float
    in_flight: set[QueryId] = field(default_factory=set)
    sent: dict[QueryId, float] = field(default_factory=dict)  # when each query was last sent

    def due(self, state: State, now: float) -> list[Query]:
        """The queries to send now; each is ``started`` by the caller, then ``finished``."""
        wanted: list[Query] = []
        for deployment in state.deployments.values():
            rollout = deployment.rollout
            analysis = rollout.analysis
            if analysis is None or analysis.outcome is not Outcome.RUNNING:
                continue
            for measured in analysis.checks:
                wanted += _wanted(deployment.key, rollout, analysis, measured, now=now, interval=self.interval)
        # What no analysis under way asks for any more is forgotten: the memory follows the state.
        asked = {query.id for query in wanted}
        self.sent = {i: at for i, at in self.sent.items() if i in asked}
        return [q for q in wanted if q.id not in self.in_flight and not self._recent(q.id, now)]

    def _recent(self, query: QueryId, now: float) -> bool:
        last = self.sent.get(query)
        return last is not None and now < last + self.interval

    def started(self, query: Query) -> None:
        self.in_flight.add(query.id)

    def finished(self, query: Query, *, sent_at: float) -> None:
        self.in_flight.discard(query.id)
        self.sent[query.id] = sent_at


def _wanted(
    key: DeploymentKey, rollout: Rollout, analysis: Analysis, measured: Measured, *, now: float, interval: float
) -> Iterator[Query]:
    """The queries this check of this rollout wants now (ignoring what is in flight)."""
    name, promql = measured.check.name, measured.check.query
    if analysis.ends_at is not None and now >= analysis.ends_at:
        return  # the window is over: the core ends the analysis at its next tick
    # Asked at the rollout's start, a baseline means the same whenever it is asked: one that failed
    # (an error) is asked again an interval later, even once measuring began (a success reported at once).
    if not measured.baseline_taken:
        yield Query(key, rollout.revision, name, promql, baseline=True, at=rollout.started_at)
    if analysis.measuring_since is None:
        return
    if measured.measured_at is not None and now < measured.measured_at + interval:
        return
    yield Query(key, rollout.revision, name, promql, baseline=False, at=None)
